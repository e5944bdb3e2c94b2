// The vectorized recurrent pointwise passes for ATen's AVX512 capability.
#include "isa_avx512_begin.h"
#define RNNF_VEC_NAMESPACE avx512
#include "pointwise_vec_impl.h"
#include "isa_end.h"
