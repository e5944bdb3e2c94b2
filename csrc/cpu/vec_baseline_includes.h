// Included first by the translation units that build CPU kernels for a wider instruction set
// (through isa_avx2_begin.h / isa_avx512_begin.h): every header that
// ATen/cpu/vec/vec.h pulls in and that does NOT depend on CPU_CAPABILITY, so that it is compiled
// for the baseline ISA, before the unit enables AVX2 / AVX-512. Only the vector code itself
// (ATen/cpu/vec, torch/headeronly/cpu/vec, sleef.h, zmath.h: all inside capability-named
// namespaces), rnnfused's math headers (gate_math.h and the headers built on it: internal
// linkage on the host) and the kernels get the wider instructions, so the vector math inlines
// into the kernels and no inline function shared with the rest of the extension (or torch) is
// ever emitted in an AVX-only version.
#pragma once

#include <ATen/AccumulateType.h>
#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/TypeCast.h>
#include <c10/util/complex.h>
#include <c10/util/irange.h>
#include <c10/util/qint32.h>
#include <c10/util/qint8.h>
#include <c10/util/quint2x4.h>
#include <c10/util/quint4x2.h>
#include <c10/util/quint8.h>
#include <torch/headeronly/cpu/vec/intrinsics.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
