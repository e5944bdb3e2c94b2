// The vectorized recurrent kernels (pointwise passes, panel GEMMs) for ATen's AVX512 capability.
#include "isa_avx512_begin.h"
#define RNNF_VEC_NAMESPACE avx512
#include "pointwise_vec_impl.h"
#include "isa_end.h"
