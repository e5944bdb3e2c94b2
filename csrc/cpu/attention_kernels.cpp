// The attention row kernels for the DEFAULT CPU capability (any CPU): at::vec::Vectorized is
// ATen's portable implementation here. See attention_kernels.h.
#define CPU_CAPABILITY DEFAULT
#define RNNF_ATTENTION_TABLE attention_row_kernels_DEFAULT
#include "attention_kernels_impl.h"
