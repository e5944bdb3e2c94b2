// The bfloat16 panel GEMM micro-kernels. Same contract as the float kernel of
// pointwise_vec_impl.h (PanelGemmFn, panels.h), with the panel in pair ("VNNI") layout: row pair
// k/2 of a panel holds (W[k, n], W[k+1, n]) next to each other for its 64 columns, and A is read
// by pairs. The whole K accumulates in float32 and C is rounded to bfloat16 once, at the end.
//   avx512_bf16: vdpbf16ps, the dot product of bf16 pairs into 16 float32 lanes (CPUs with
//                AVX512-BF16).
//   amx_bf16:    AMX tiles (Sapphire Rapids and later): one tdpbf16ps multiplies a 16 x 32 tile
//                of A by a 32 x 16 tile of the panel, 16x the work of a vdpbf16ps.
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RNNF_HAVE_BF16_KERNEL 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16")
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "panel_gemm_bf16.h"
#include "pointwise_vec.h"

namespace rnnfused {
namespace avx512_bf16 {

#ifdef RNNF_HAVE_BF16_KERNEL
namespace {

constexpr int64_t kVecs = kBf16PanelWidth / 16;  // float32 accumulators per row of the tile
constexpr int64_t kTileRows = 6;

// Whole vectors (the common case) go through plain loads and stores: a load that reads what a
// masked store wrote must wait until the store has left the core's store buffer, where a plain
// store hands its data straight on (the next K part of a step GEMM and the pointwise pass read
// C right after this kernel wrote it).
inline __m512 load_bf16(const c10::BFloat16* p, __mmask16 mask) {
  const __m256i bits = mask == 0xffff ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                      : _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

inline void store_bf16(c10::BFloat16* p, __m512 v, __mmask16 mask) {
  const __m256i bits = (__m256i)_mm512_cvtneps_pbh(v);
  if (mask == 0xffff) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bits);
  } else {
    _mm256_mask_storeu_epi16(p, mask, bits);
  }
}

// masks[v]: the lanes of a panel's 16-column vector v that hold one of its valid_cols columns.
inline void column_masks(int64_t valid_cols, __mmask16 masks[kVecs]) {
  for (int64_t v = 0; v < kVecs; ++v) {
    const int64_t n = std::max<int64_t>(0, std::min<int64_t>(16, valid_cols - v * 16));
    masks[v] = static_cast<__mmask16>((1u << n) - 1u);
  }
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
          int64_t ldc, const __mmask16* masks, bool accumulate) {
  __m512 acc[R][kVecs];
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t v = 0; v < kVecs; ++v) {
      acc[r][v] = accumulate ? load_bf16(c + r * ldc + v * 16, masks[v]) : _mm512_setzero_ps();
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

void panel_gemm(const c10::BFloat16* a, int64_t lda, const c10::BFloat16* panel, int64_t K, c10::BFloat16* c,
                int64_t ldc, int64_t rows, int64_t valid_cols, bool accumulate) {
  __mmask16 masks[kVecs];
  column_masks(valid_cols, masks);
  for_each_row_tile(rows, kTileRows, [&](int64_t r, int64_t height) {
    const c10::BFloat16* a_r = a + r * lda;
    c10::BFloat16* c_r = c + r * ldc;
    switch (height) {
      case 1: return tile<1>(a_r, lda, panel, K, c_r, ldc, masks, accumulate);
      case 2: return tile<2>(a_r, lda, panel, K, c_r, ldc, masks, accumulate);
      case 3: return tile<3>(a_r, lda, panel, K, c_r, ldc, masks, accumulate);
      case 4: return tile<4>(a_r, lda, panel, K, c_r, ldc, masks, accumulate);
      case 5: return tile<5>(a_r, lda, panel, K, c_r, ldc, masks, accumulate);
      default: return tile<kTileRows>(a_r, lda, panel, K, c_r, ldc, masks, accumulate);
    }
  });
}
#else
bool supported() { return false; }

void panel_gemm(const c10::BFloat16*, int64_t, const c10::BFloat16*, int64_t, c10::BFloat16*, int64_t, int64_t,
                int64_t, bool) {}
#endif

}  // namespace avx512_bf16

namespace amx_bf16 {

#ifdef RNNF_HAVE_BF16_KERNEL
namespace {

// The tiles of one block of up to 16 rows of C (a panel's 64 columns = 4 tiles of 16):
//   0-3 C (float32, rows x 16)      4 A (rows x 32 bf16)     5 panel (16 pairs x 16 columns)
//   6, 7: A and panel for the last K % 32 (K even).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row
  uint8_t rows[16] = {};
};

TileConfig tile_config(int64_t rows, int64_t k_tail) {
  TileConfig config;
  for (int t = 0; t < 5; ++t) config.rows[t] = uint8_t(rows), config.colsb[t] = 64;  // C and A
  config.rows[5] = 16, config.colsb[5] = 64;
  if (k_tail > 0) {
    config.rows[6] = uint8_t(rows), config.colsb[6] = uint16_t(k_tail * 2);
    config.rows[7] = uint8_t(k_tail / 2), config.colsb[7] = 64;
  }
  return config;
}

constexpr int64_t kPairRowBytes = kBf16PanelWidth * 2 * sizeof(c10::BFloat16);  // one row pair of a panel

}  // namespace

bool supported() {
  static const bool usable = [] {
    const char* env = std::getenv("RNNFUSED_CPU_AMX");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    unsigned eax, ebx, ecx, edx;
    if (!avx512_bf16::supported() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool amx_bf16 = edx & (1u << 22), amx_tile = edx & (1u << 24);
    // Linux hands out the tile registers only to processes that ask (ARCH_REQ_XCOMP_PERM for
    // XFEATURE_XTILEDATA); without it the first tile instruction faults.
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return amx_bf16 && amx_tile && syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

void panel_gemm(const c10::BFloat16* a, int64_t lda, const c10::BFloat16* panel, int64_t K, c10::BFloat16* c,
                int64_t ldc, int64_t rows, int64_t valid_cols, bool accumulate) {
  if (K % 2 != 0) {  // a tile row pairs A's elements: an odd K leaves half a pair (rare; no tiles)
    avx512_bf16::panel_gemm(a, lda, panel, K, c, ldc, rows, valid_cols, accumulate);
    return;
  }
  const int64_t k_full = K / 32 * 32, k_tail = K - k_full;
  const int64_t a_stride = lda * int64_t(sizeof(c10::BFloat16));
  __mmask16 masks[avx512_bf16::kVecs];
  avx512_bf16::column_masks(valid_cols, masks);
  alignas(64) float c_tiles[4][16][16];  // the float32 products on their way out
  int64_t configured_rows = -1;
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t mr = std::min<int64_t>(16, rows - r0);
    if (mr != configured_rows) {
      // The configuration is per thread and other code (oneDNN) may have changed it since this
      // thread's last call: compare, and load only when it differs (loading costs ~150 ns).
      const TileConfig wanted = tile_config(mr, k_tail);
      TileConfig current;
      _tile_storeconfig(&current);
      if (std::memcmp(&current, &wanted, sizeof(TileConfig)) != 0) _tile_loadconfig(&wanted);
      configured_rows = mr;
    }
    const c10::BFloat16* a_block = a + r0 * lda;
    c10::BFloat16* c_block = c + r0 * ldc;
    _tile_zero(0);  // C's old values join in the epilogue (one pass over them instead of two)
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
// C tiles 0-3 += the K block of A from column k0 (tile a_tile) @ the panel's row pairs from
// k0 / 2, its four 16-column tiles loaded in turn into tile b_tile. Tile numbers are immediates.
#define RNNF_AMX_K_BLOCK(a_tile, b_tile, k0)                                                     \
  {                                                                                               \
    const char* pairs = reinterpret_cast<const char*>(panel + (k0) * kBf16PanelWidth);            \
    _tile_loadd(a_tile, a_block + (k0), a_stride);                                                \
    _tile_loadd(b_tile, pairs, kPairRowBytes);                                                    \
    _tile_dpbf16ps(0, a_tile, b_tile);                                                            \
    _tile_loadd(b_tile, pairs + 64, kPairRowBytes);                                               \
    _tile_dpbf16ps(1, a_tile, b_tile);                                                            \
    _tile_loadd(b_tile, pairs + 128, kPairRowBytes);                                              \
    _tile_dpbf16ps(2, a_tile, b_tile);                                                            \
    _tile_loadd(b_tile, pairs + 192, kPairRowBytes);                                              \
    _tile_dpbf16ps(3, a_tile, b_tile);                                                            \
  }
    for (int64_t k0 = 0; k0 < k_full; k0 += 32) RNNF_AMX_K_BLOCK(4, 5, k0)
    if (k_tail > 0) RNNF_AMX_K_BLOCK(6, 7, k_full)
#undef RNNF_AMX_K_BLOCK
    _tile_stored(0, c_tiles[0], 64);
    _tile_stored(1, c_tiles[1], 64);
    _tile_stored(2, c_tiles[2], 64);
    _tile_stored(3, c_tiles[3], 64);
    for (int64_t v = 0; v < avx512_bf16::kVecs && masks[v] != 0; ++v) {
      for (int64_t r = 0; r < mr; ++r) {
        c10::BFloat16* c_rv = c_block + r * ldc + v * 16;
        __m512 sum = _mm512_load_ps(c_tiles[v][r]);
        if (accumulate) sum = _mm512_add_ps(sum, avx512_bf16::load_bf16(c_rv, masks[v]));
        avx512_bf16::store_bf16(c_rv, sum, masks[v]);
      }
    }
  }
}
#else
bool supported() { return false; }

void panel_gemm(const c10::BFloat16*, int64_t, const c10::BFloat16*, int64_t, c10::BFloat16*, int64_t, int64_t,
                int64_t, bool) {}
#endif

}  // namespace amx_bf16
}  // namespace rnnfused

#ifdef RNNF_HAVE_BF16_KERNEL
#pragma GCC pop_options
#endif
