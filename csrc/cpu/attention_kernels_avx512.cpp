// The attention row kernels for CPUs with AVX-512 (F, BW, VL, DQ; ATen's AVX512 capability):
// 16-float vectors and SLEEF's AVX-512 tanh / exp. Built like attention_kernels_avx2.cpp (a
// target pragma, the ISA macros sleef.h reads defined by hand); other compilers get a copy of
// the DEFAULT kernels under this name. See attention_kernels.h.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include "vec_baseline_includes.h"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#pragma GCC diagnostic ignored "-Wpsabi"
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define RNNF_ATTENTION_TABLE attention_row_kernels_AVX512
#include "attention_kernels_impl.h"
#pragma GCC pop_options
#else
#define CPU_CAPABILITY DEFAULT
#define RNNF_ATTENTION_TABLE attention_row_kernels_AVX512
#include "attention_kernels_impl.h"
#endif
