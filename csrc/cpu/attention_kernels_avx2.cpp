// The attention row kernels for CPUs with AVX2 + FMA (ATen's AVX2 capability): 8-float vectors
// and SLEEF's AVX2 tanh / exp. Built with a target pragma rather than per-file compiler flags
// (torch's BuildExtension has none); GCC does not define the ISA macros for a pragma, so the
// ones that sleef.h reads are defined by hand. Other compilers get a copy of the DEFAULT kernels
// under this name. See attention_kernels.h.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include "vec_baseline_includes.h"
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC diagnostic ignored "-Wpsabi"
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNF_ATTENTION_TABLE attention_row_kernels_AVX2
#include "attention_kernels_impl.h"
#pragma GCC pop_options
#else
#define CPU_CAPABILITY DEFAULT
#define RNNF_ATTENTION_TABLE attention_row_kernels_AVX2
#include "attention_kernels_impl.h"
#endif
