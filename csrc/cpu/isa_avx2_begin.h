// Include first in a CPU kernel file built for ATen's AVX2 capability (AVX2 + FMA); include
// isa_end.h after the kernels. torch's BuildExtension has no per-file compiler flags, so the file
// includes the baseline headers first (vec_baseline_includes.h: nothing shared with the rest of
// the extension gets AVX2 code), then enables the instruction set with a target pragma and
// defines the ISA macros that GCC leaves unset for a pragma but ATen's and SLEEF's headers read.
// Other compilers build the portable (DEFAULT) vector code instead.
// No include guard: one inclusion per kernel file, by design.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include "vec_baseline_includes.h"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
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
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#else
#define CPU_CAPABILITY DEFAULT
#endif
