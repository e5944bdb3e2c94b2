// Include first in a CPU kernel file built for ATen's AVX512 capability (AVX-512 F/BW/DQ/VL);
// include isa_end.h after the kernels. Same scheme as isa_avx2_begin.h.
// No include guard: one inclusion per kernel file, by design.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include "vec_baseline_includes.h"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#pragma GCC diagnostic ignored "-Wpsabi"
#define RNNF_ISA_PUSHED 1
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
#else
#define CPU_CAPABILITY DEFAULT
#endif
