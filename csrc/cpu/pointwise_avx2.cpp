// The vectorized recurrent pointwise passes for CPUs with AVX2 + FMA (ATen's AVX2 capability).
// Built like attention_kernels_avx2.cpp: the baseline headers first, then a target pragma (torch's
// BuildExtension has no per-file compiler flags) and, since GCC does not define the ISA macros
// for a pragma, the ones ATen's and SLEEF's headers read. Other compilers get the portable
// (DEFAULT) vector code under this name.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include "vec_baseline_includes.h"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#pragma GCC diagnostic ignored "-Wpsabi"
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNF_VEC_NAMESPACE avx2
#include "pointwise_vec_impl.h"
#pragma GCC pop_options
#else
#define CPU_CAPABILITY DEFAULT
#define RNNF_VEC_NAMESPACE avx2
#include "pointwise_vec_impl.h"
#endif
