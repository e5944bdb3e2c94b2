// The vectorized recurrent pointwise passes for CPUs with AVX-512 F/BW/DQ/VL (ATen's AVX512
// capability). Built like pointwise_avx2.cpp; other compilers get the portable (DEFAULT) vector
// code under this name.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include "vec_baseline_includes.h"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
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
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define RNNF_VEC_NAMESPACE avx512
#include "pointwise_vec_impl.h"
#pragma GCC pop_options
#else
#define CPU_CAPABILITY DEFAULT
#define RNNF_VEC_NAMESPACE avx512
#include "pointwise_vec_impl.h"
#endif
