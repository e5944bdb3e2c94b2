// exp and tanh for float vectors, inlined into the vectorized kernels in place of SLEEF's
// out-of-line u10 calls (gate_math.h reaches them through its VectorMath hook). Included by the
// kernel files after their instruction set is on (isa_*_begin.h), so Vec<float> is that set's.
//
// Accuracy (checked in tests/test_cpu_kernels.py: float against float64 over the whole float
// range; double against the float64 reference over [-800, 800]): exp within 2 ulp (AVX2: 0 /
// +inf outside [-87.3, 88.3]; double: outside [-708, 709]); tanh and 1 / (1 + exp(-x)) within
// 2 ulp of their value (double: 4); NaN in -> NaN out, tanh(+-inf) = +-1.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <limits>

#include "rnnfused/gate_math.h"

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
namespace rnnfused {

template <>
struct VectorMath<at::vec::Vectorized<float>> {
  using V = at::vec::Vectorized<float>;

  // e^x = 2^n * e^r, n = round(x / ln 2), |r| <= ln(2) / 2, e^r by its Taylor series to r^7
  // (truncation 2.6e-8 relative). AVX-512's scalef multiplies by 2^n with float32's own overflow
  // to +inf and rounding into the subnormals, so only x beyond [-104, 89] (where e^x is 0 or
  // +inf anyway, and +-inf) is clamped. AVX2 builds 2^n from its exponent bits, which holds only
  // inside [-87.3, 88.3]: beyond it the result is set to 0 or +inf.
  static V exp(const V& x_in) {
#if defined(CPU_CAPABILITY_AVX512)
    const V x = at::vec::clamp(x_in, V(-104.f), V(89.f));  // keeps NaN
#else
    const V x = at::vec::clamp(x_in, V(-87.3f), V(88.3f));  // keeps NaN
#endif
    const V n = (x * V(1.44269504088896341f)).round();
    V r = at::vec::fmadd(n, V(-0.693145751953125f), x);  // ln 2 split hi + lo: n * hi is exact
    r = at::vec::fmadd(n, V(-1.428606765330187e-06f), r);
    V p(1.f / 5040.f);
    p = at::vec::fmadd(p, r, V(1.f / 720.f));
    p = at::vec::fmadd(p, r, V(1.f / 120.f));
    p = at::vec::fmadd(p, r, V(1.f / 24.f));
    p = at::vec::fmadd(p, r, V(1.f / 6.f));
    p = at::vec::fmadd(p, r, V(0.5f));
    p = at::vec::fmadd(p, r, V(1.f));
    p = at::vec::fmadd(p, r, V(1.f));
#if defined(CPU_CAPABILITY_AVX512)
    return V(_mm512_scalef_ps(p, n));
#else
    const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const V y = p * V(_mm256_castsi256_ps(exponent));
    return V::blendv(V::blendv(y, V(std::numeric_limits<float>::infinity()), x_in > V(88.3f)), V(0.f),
                     x_in < V(-87.3f));
#endif
  }

  // |x| < 0.625: x + x^3 P(x^2), P a least-squares fit (0.8 ulp); beyond: sign(x) (1 - 2 / (e^{2|x|} + 1)),
  // whose result is >= 0.55 so the subtraction loses nothing.
  static V tanh(const V& x) {
    const V a = x.abs();
    const V x2 = x * x;
    V p(-0.006154258269816637f);
    p = at::vec::fmadd(p, x2, V(0.021044891327619553f));
    p = at::vec::fmadd(p, x2, V(-0.05386369675397873f));
    p = at::vec::fmadd(p, x2, V(0.1333288848400116f));
    p = at::vec::fmadd(p, x2, V(-0.3333333134651184f));
    const V small = at::vec::fmadd(x * x2, p, x);
    const V large = V(1.f) - V(2.f) / (exp(a + a) + V(1.f));  // tanh(|x|)
#if defined(CPU_CAPABILITY_AVX512)
    // large >= 0 takes x's sign bit; AVX-512 masks select without ATen's vector-mask round trip.
    const __m512 signed_large = _mm512_or_ps(large, _mm512_and_ps(x, _mm512_set1_ps(-0.f)));
    return V(_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(0.625f), _CMP_LT_OQ), signed_large, small));
#else
    return V::blendv(V::blendv(large, V(0.f) - large, x < V(0.f)), small, a < V(0.625f));
#endif
  }
};

// The same for double vectors (SLEEF's double exp and tanh made the float64 pointwise pass as
// slow as the step's GEMM). Both go through e^r - 1 on the reduced argument, so tanh near 0
// loses nothing to cancellation.
template <>
struct VectorMath<at::vec::Vectorized<double>> {
  using V = at::vec::Vectorized<double>;

  // e^r - 1 for |r| <= ln(2) / 2: r + r^2 (1/2! + r/3! + ... + r^11/13!), truncation < 1e-17.
  static V expm1_reduced(const V& r) {
    double factorial = 6227020800.0;  // 13!
    V p(1.0 / factorial);
    for (int k = 12; k >= 2; --k) {
      factorial /= k + 1;
      p = at::vec::fmadd(p, r, V(1.0 / factorial));
    }
    return at::vec::fmadd(r * r, p, r);
  }

  // y * 2^n for integral n: AVX-512's scalef takes any n (overflow to +inf, rounding into the
  // subnormals); AVX2 builds 2^n from exponent bits, which hold n in [-1022, 1023] only.
  static V scale(const V& y, const V& n) {
#if defined(CPU_CAPABILITY_AVX512)
    return V(_mm512_scalef_pd(y, n));
#else
    const __m256i biased = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023));
    return y * V(_mm256_castsi256_pd(_mm256_slli_epi64(biased, 52)));
#endif
  }

  // x = n ln 2 + r, |r| <= ln(2) / 2 (ln 2 split hi + lo: n * hi is exact).
  static V reduce(const V& x, V& n) {
    n = (x * V(1.4426950408889634)).round();
    const V r = at::vec::fmadd(n, V(-6.93147180369123816490e-01), x);
    return at::vec::fmadd(n, V(-1.90821492927058770002e-10), r);
  }

  // AVX-512 (scalef) overflows to +inf and rounds into the subnormals by itself: x is clamped to
  // [-746, 710] only, where e^x is already 0 / +inf. AVX2: beyond [-708, 709] the result is set to
  // 0 or +inf (the true value is below 3e-308 or above 8e307).
  static V exp(const V& x_in) {
#if defined(CPU_CAPABILITY_AVX512)
    const V x = at::vec::clamp(x_in, V(-746.0), V(710.0));  // keeps NaN
#else
    const V x = at::vec::clamp(x_in, V(-708.0), V(709.0));  // keeps NaN
#endif
    V n;
    const V r = reduce(x, n);
    const V y = scale(expm1_reduced(r) + V(1.0), n);
#if defined(CPU_CAPABILITY_AVX512)
    return y;
#else
    return V::blendv(V::blendv(y, V(std::numeric_limits<double>::infinity()), x_in > V(709.0)), V(0.0),
                     x_in < V(-708.0));
#endif
  }

  // sign(x) m / (m + 2), m = e^{2|x|} - 1 = 2^n (e^r - 1) + (2^n - 1); |x| >= 20 gives +-1.
  static V tanh(const V& x) {
    const V a = at::vec::minimum(x.abs(), V(20.0));  // keeps NaN
    V n;
    const V r = reduce(a + a, n);
    const V m = scale(expm1_reduced(r), n) + (scale(V(1.0), n) - V(1.0));
    const V t = m / (m + V(2.0));
#if defined(CPU_CAPABILITY_AVX512)
    return V(_mm512_or_pd(t, _mm512_and_pd(x, _mm512_set1_pd(-0.0))));  // t >= 0 takes x's sign bit
#else
    return V::blendv(t, V(0.0) - t, x < V(0.0));
#endif
  }
};

}  // namespace rnnfused
#endif  // AVX2 / AVX-512: other capabilities keep the members (SLEEF or std)
