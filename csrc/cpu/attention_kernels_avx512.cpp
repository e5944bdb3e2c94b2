// The attention row kernels for ATen's AVX512 capability: 16-float vectors and SLEEF's AVX-512
// tanh / exp. See attention_kernels.h.
#include "isa_avx512_begin.h"
#define RNNF_ATTENTION_TABLE attention_row_kernels_AVX512
#include "attention_kernels_impl.h"
#include "isa_end.h"
