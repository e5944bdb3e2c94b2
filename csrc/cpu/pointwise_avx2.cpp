// The vectorized pointwise passes for CPUs with AVX2 + FMA (chosen at run time).
// setuptools compiles every source with the same flags, so this file turns the instruction set
// on for itself, and defines the feature macros the pragma leaves unset, which ATen's and
// SLEEF's headers test to choose their 256-bit code.
#pragma GCC target("avx,avx2,fma,f16c")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNF_VEC_NAMESPACE avx2
#include "pointwise_vec_impl.h"
