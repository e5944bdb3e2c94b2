// The vectorized recurrent pointwise passes for ATen's AVX2 capability.
#include "isa_avx2_begin.h"
#define RNNF_VEC_NAMESPACE avx2
#include "pointwise_vec_impl.h"
#include "isa_end.h"
