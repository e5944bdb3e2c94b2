// The vectorized pointwise passes for CPUs with AVX-512 F/BW/DQ/VL (chosen at run time).
// Like pointwise_avx2.cpp, the file turns the instruction set on for itself and defines the
// feature macros that ATen's and SLEEF's headers test.
#pragma GCC target("avx,avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512DQ__ 1
#define __AVX512VL__ 1
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define RNNF_VEC_NAMESPACE avx512
#include "pointwise_vec_impl.h"
