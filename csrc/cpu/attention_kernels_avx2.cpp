// The attention row kernels for ATen's AVX2 capability: 8-float vectors and SLEEF's AVX2
// tanh / exp. See attention_kernels.h.
#include "isa_avx2_begin.h"
#define RNNF_ATTENTION_TABLE attention_row_kernels_AVX2
#include "attention_kernels_impl.h"
#include "isa_end.h"
