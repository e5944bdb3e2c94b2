// The vectorized recurrent kernels (pointwise passes, panel GEMMs) for ATen's AVX2 capability.
#include "isa_avx2_begin.h"
#define RNNF_VEC_NAMESPACE avx2
#include "pointwise_vec_impl.h"
#include "isa_end.h"
