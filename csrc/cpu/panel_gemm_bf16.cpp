// The bfloat16 panel GEMM micro-kernel, for CPUs with AVX512-BF16 (vdpbf16ps: the dot product of
// bf16 pairs accumulated in float32, twice the float32 FMA rate). Same contract as the float
// kernel of pointwise_vec_impl.h (PanelGemmFn, panels.h), with the panel in pair ("VNNI") layout:
// row pair k/2 of a panel holds (W[k, n], W[k+1, n]) next to each other for its 64 columns, and
// A is read by pairs (its column stride must be 1). The whole K runs in float32 registers and C
// is rounded to bfloat16 once, at the end.
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RNNF_HAVE_BF16_KERNEL 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")
#include <immintrin.h>
#endif

#include "panel_gemm_bf16.h"

namespace rnnfused {
namespace avx512_bf16 {

#ifdef RNNF_HAVE_BF16_KERNEL
namespace {

constexpr int64_t kVecs = kBf16PanelWidth / 16;  // float32 accumulators per row of the tile
constexpr int64_t kTileRows = 6;

inline __m512 load_bf16(const c10::BFloat16* p, __mmask16 mask) {
  const __m256i bits = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

inline void store_bf16(c10::BFloat16* p, __m512 v, __mmask16 mask) {
  _mm256_mask_storeu_epi16(p, mask, (__m256i)_mm512_cvtneps_pbh(v));
}

// (a[k], a[k + 1]) as one 32-bit lane; the last pair of an odd K is (a[K - 1], 0).
inline __m512bh pair_at(const c10::BFloat16* a, int64_t k) {
  int32_t pair;
  std::memcpy(&pair, a + k, sizeof(pair));
  return (__m512bh)_mm512_set1_epi32(pair);
}
inline __m512bh last_of_odd(const c10::BFloat16* a, int64_t K) {
  uint16_t bits;
  std::memcpy(&bits, a + K - 1, sizeof(bits));
  return (__m512bh)_mm512_set1_epi32(int32_t(bits));
}

template <int64_t R>
void tile(const c10::BFloat16* a, int64_t lda, const c10::BFloat16* panel, int64_t K, c10::BFloat16* c,
          int64_t ldc, const __mmask16* masks, const c10::BFloat16* bias, bool accumulate) {
  __m512 acc[R][kVecs];
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t v = 0; v < kVecs; ++v) {
      acc[r][v] = accumulate ? load_bf16(c + r * ldc + v * 16, masks[v])
                             : (bias != nullptr ? load_bf16(bias + v * 16, masks[v]) : _mm512_setzero_ps());
    }
  }
  for (int64_t k = 0; k < K; k += 2) {
    const c10::BFloat16* panel_k = panel + k * kBf16PanelWidth;  // row pair k / 2
    __m512bh b[kVecs];
    for (int64_t v = 0; v < kVecs; ++v) b[v] = (__m512bh)_mm512_loadu_si512(panel_k + v * 32);
    const bool odd_tail = k + 1 == K;
    for (int64_t r = 0; r < R; ++r) {
      const __m512bh a_pair = odd_tail ? last_of_odd(a + r * lda, K) : pair_at(a + r * lda, k);
      for (int64_t v = 0; v < kVecs; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a_pair, b[v]);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t v = 0; v < kVecs; ++v) store_bf16(c + r * ldc + v * 16, acc[r][v], masks[v]);
  }
}

}  // namespace

bool supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

void panel_gemm(const c10::BFloat16* a, int64_t a_rs, int64_t /*a_cs: 1*/, const c10::BFloat16* panel,
                int64_t K, c10::BFloat16* c, int64_t ldc, int64_t rows, int64_t valid_cols,
                const c10::BFloat16* bias, bool accumulate) {
  __mmask16 masks[kVecs];
  for (int64_t v = 0; v < kVecs; ++v) {
    const int64_t n = std::max<int64_t>(0, std::min<int64_t>(16, valid_cols - v * 16));
    masks[v] = static_cast<__mmask16>((1u << n) - 1u);
  }
  int64_t r = 0;
  for (; r + kTileRows <= rows; r += kTileRows) {
    tile<kTileRows>(a + r * a_rs, a_rs, panel, K, c + r * ldc, ldc, masks, bias, accumulate);
  }
  const c10::BFloat16* a_rest = a + r * a_rs;
  c10::BFloat16* c_rest = c + r * ldc;
  switch (rows - r) {
    case 0: break;
    case 1: tile<1>(a_rest, a_rs, panel, K, c_rest, ldc, masks, bias, accumulate); break;
    case 2: tile<2>(a_rest, a_rs, panel, K, c_rest, ldc, masks, bias, accumulate); break;
    case 3: tile<3>(a_rest, a_rs, panel, K, c_rest, ldc, masks, bias, accumulate); break;
    case 4: tile<4>(a_rest, a_rs, panel, K, c_rest, ldc, masks, bias, accumulate); break;
    default: tile<5>(a_rest, a_rs, panel, K, c_rest, ldc, masks, bias, accumulate); break;
  }
}
#else
bool supported() { return false; }

void panel_gemm(const c10::BFloat16*, int64_t, int64_t, const c10::BFloat16*, int64_t, c10::BFloat16*, int64_t,
                int64_t, int64_t, const c10::BFloat16*, bool) {}
#endif

}  // namespace avx512_bf16
}  // namespace rnnfused

#ifdef RNNF_HAVE_BF16_KERNEL
#pragma GCC pop_options
#endif
