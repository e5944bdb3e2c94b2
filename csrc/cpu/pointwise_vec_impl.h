// The body of the vectorized CPU kernels (pointwise passes, panel GEMM micro-kernels, weight
// packing); included by pointwise_avx2.cpp and pointwise_avx512.cpp with CPU_CAPABILITY and
// RNNF_VEC_NAMESPACE defined (see pointwise_vec.h).
// Each pointwise function handles rows [begin, end) x hidden units [unit_begin, unit_end) of one
// time step: full SIMD vectors along the units, then one masked vector for the rest.
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "pointwise_vec.h"
#include "vec_math.h"

namespace rnnfused {
namespace RNNF_VEC_NAMESPACE {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// A lambda run once per vector of a hot loop: inlined, as a function body would be.
#if defined(__GNUC__)
#define RNNF_INLINE_LAMBDA __attribute__((always_inline))
#else
#define RNNF_INLINE_LAMBDA
#endif

// The first n <= Vec<A>::size() values at p, stored as S, in a vector of A (the 16-bit types
// widen to float, and round back to nearest even on store); lanes from n on read as zero and are
// never written. Whole vectors (n == size) are plain loads and stores (a 16-bit store converts
// the one vector and stores its half-width bits); the tail of a row of units goes through masks
// (float, double) or a small buffer (16-bit types).
template <typename S>
C10_ALWAYS_INLINE Vec<float> widen(const S* src) {
  Vec<float> v;
  if constexpr (std::is_same_v<S, at::BFloat16>) {
    at::vec::load_fp32_from_bf16(src, v);
  } else {
    at::vec::load_fp32_from_fp16(src, v);
  }
  return v;
}

template <typename A, typename S>
C10_ALWAYS_INLINE Vec<A> load(const S* p, int64_t n) {
  constexpr int64_t W = Vec<A>::size();
  if constexpr (std::is_same_v<S, A>) {
    return n == W ? Vec<A>::loadu(p) : Vec<A>::loadu(p, n);
  } else {
    static_assert(std::is_same_v<A, float>, "16-bit storage computes in float");
    if (n == W) return widen(p);
    S padded[W] = {};
    std::copy_n(p, n, padded);
    return widen(padded);
  }
}

template <typename S, typename A>
C10_ALWAYS_INLINE void store(const Vec<A>& v, S* p, int64_t n) {
  constexpr int64_t W = Vec<A>::size();
  if constexpr (std::is_same_v<S, A>) {
    n == W ? v.store(p) : v.store(p, n);
  } else {
    const auto bits = [&] {  // W values of S, rounded to nearest even
      if constexpr (std::is_same_v<S, at::BFloat16>) return at::vec::cvtfp32_bf16(v);
      else return at::vec::cvtfp32_fp16(v);
    }();
    static_assert(sizeof(bits) == W * sizeof(S));
    if (n == W) {
      std::memcpy(p, &bits, sizeof(bits));
    } else {
      std::memcpy(p, &bits, n * sizeof(S));
    }
  }
}

// Each row's units [unit_begin, unit_end) go by whole vectors, then one partial vector for the
// rest: f(row, j, n) for n = Vec<A>::size() units at j, then the n < size() left.
template <typename A, typename F>
C10_ALWAYS_INLINE void for_unit_vectors(int64_t begin, int64_t end, int64_t unit_begin, int64_t unit_end, const F& f) {
  constexpr int64_t W = Vec<A>::size();
  for (int64_t row = begin; row < end; ++row) {
    int64_t j = unit_begin;
    for (; j + W <= unit_end; j += W) f(row, j, W);
    if (j < unit_end) f(row, j, unit_end - j);
  }
}

// Two passes over chunks of kCellChunk units of a row: the gates and c_t, then h_t = o tanh(c_t)
// from o kept in A. In one pass each vector's tanh(c_t) waits at the end of a long dependency
// chain (three sigmoids and a tanh before it) and too few vectors overlap in the core; split,
// both passes are short independent chains per vector (measured on a Xeon with AVX-512, 16 rows
// x 128 units: float 4.2 -> 3.2 us, double 10.4 -> 8.1, bfloat16 4.8 -> 3.8).
constexpr int64_t kCellChunkVecs = 8;

template <bool kTraining, typename S, typename A>
void lstm_forward_rows(const LstmForwardStep<S, A>& p, int64_t begin, int64_t end, int64_t unit_begin,
                       int64_t unit_end) {
  const int64_t H = p.hidden_size;
  constexpr int64_t kCellChunk = kCellChunkVecs * Vec<A>::size();
  A out_gate[kCellChunk];  // o of the chunk's units (whole vectors, lanes past the units unused)
  for (int64_t row = begin; row < end; ++row) {
    for (int64_t u0 = unit_begin; u0 < unit_end; u0 += kCellChunk) {
      const int64_t u1 = std::min(unit_end, u0 + kCellChunk);
      for_unit_vectors<A>(row, row + 1, u0, u1, [&](int64_t, int64_t j, int64_t n) RNNF_INLINE_LAMBDA {
        S* gates = p.gates + row * p.gates_ld + j;
        A* c_state = p.c_state + row * H + j;
        Vec<A> i = load<A>(gates, n), f = load<A>(gates + H, n);
        Vec<A> g = load<A>(gates + 2 * H, n), o = load<A>(gates + 3 * H, n);
        for (const S* bias : {p.bias_ih, p.bias_hh}) {
          if (bias == nullptr) continue;
          bias += j;
          i = i + load<A>(bias, n), f = f + load<A>(bias + H, n);
          g = g + load<A>(bias + 2 * H, n), o = o + load<A>(bias + 3 * H, n);
        }
        Vec<A> c = load<A>(c_state, n);
        lstm_gates_and_cell_math(i, f, g, o, c);
        store(c, c_state, n);
        o.store(out_gate + (j - u0));
        if constexpr (kTraining) {
          store(i, gates, n), store(f, gates + H, n), store(g, gates + 2 * H, n), store(o, gates + 3 * H, n);
          store(c, p.c_saved + row * p.c_saved_ld + j, n);
        }
      });
      for_unit_vectors<A>(row, row + 1, u0, u1, [&](int64_t, int64_t j, int64_t n) RNNF_INLINE_LAMBDA {
        const Vec<A> h = lstm_hidden_math(Vec<A>::loadu(out_gate + (j - u0)), load<A>(p.c_state + row * H + j, n));
        store(h, p.h_out + row * p.h_out_ld + j, n);
        if (p.h_state != nullptr) store(h, p.h_state + row * H + j, n);
      });
    }
  }
}

template <typename S, typename A>
void lstm_backward_rows(const LstmBackwardStep<S, A>& p, int64_t begin, int64_t end, int64_t unit_begin,
                        int64_t unit_end) {
  const int64_t H = p.hidden_size;
  for_unit_vectors<A>(begin, end, unit_begin, unit_end, [&](int64_t row, int64_t j, int64_t n) RNNF_INLINE_LAMBDA {
    const S* gates = p.gates + row * p.gates_ld + j;
    const S* c_prev = (row < p.prev_rows ? p.c_prev + row * p.c_prev_ld : p.c_init + row * H) + j;
    A* grad_c = p.grad_c + row * H + j;
    S* grad_gates = p.grad_gates + row * p.grad_gates_ld + j;
    Vec<A> dh = p.grad_h != nullptr ? load<A>(p.grad_h + row * p.grad_h_ld + j, n) : Vec<A>(0);
    if (p.grad_h_extra != nullptr) dh = dh + load<A>(p.grad_h_extra + row * H + j, n);
    Vec<A> dc = load<A>(grad_c, n), di, df, dg, do_;
    lstm_cell_backward_math(load<A>(gates, n), load<A>(gates + H, n), load<A>(gates + 2 * H, n),
                            load<A>(gates + 3 * H, n), load<A>(p.c_saved + row * p.c_saved_ld + j, n),
                            load<A>(c_prev, n), dh, dc, di, df, dg, do_);
    store(dc, grad_c, n);
    store(di, grad_gates, n), store(df, grad_gates + H, n);
    store(dg, grad_gates + 2 * H, n), store(do_, grad_gates + 3 * H, n);
  });
}

template <Activation act, typename S, typename A>
void rnn_forward_rows(const RnnForwardStep<S>& p, int64_t begin, int64_t end, int64_t unit_begin,
                      int64_t unit_end) {
  const int64_t H = p.hidden_size;
  for_unit_vectors<A>(begin, end, unit_begin, unit_end, [&](int64_t row, int64_t j, int64_t n) RNNF_INLINE_LAMBDA {
    Vec<A> pre = load<A>(p.pre + row * p.pre_ld + j, n);
    if (p.bias_ih != nullptr) pre = pre + load<A>(p.bias_ih + j, n);
    if (p.bias_hh != nullptr) pre = pre + load<A>(p.bias_hh + j, n);
    const Vec<A> h = activate<act>(pre);
    store(h, p.h_out + row * p.h_out_ld + j, n);
    if (p.h_state != nullptr) store(h, p.h_state + row * H + j, n);
  });
}

template <Activation act, typename S, typename A>
void rnn_backward_rows(const RnnBackwardStep<S>& p, int64_t begin, int64_t end, int64_t unit_begin,
                       int64_t unit_end) {
  const int64_t H = p.hidden_size;
  for_unit_vectors<A>(begin, end, unit_begin, unit_end, [&](int64_t row, int64_t j, int64_t n) RNNF_INLINE_LAMBDA {
    Vec<A> dh = p.grad_h != nullptr ? load<A>(p.grad_h + row * p.grad_h_ld + j, n) : Vec<A>(0);
    if (p.grad_h_extra != nullptr) dh = dh + load<A>(p.grad_h_extra + row * H + j, n);
    const Vec<A> h = load<A>(p.h + row * p.h_ld + j, n);
    store(Vec<A>(dh * activate_grad_from_output<act>(h)), p.grad_pre + row * p.grad_pre_ld + j, n);
  });
}

// ---------------------------------------------------------------------------------------------
// The panel GEMM micro-kernel. C (rows, valid_cols) = init + A (rows, K) @ panel (K, width), where
// panel is one contiguous (K, panel_width<T>()) block of a packed weight (panels.h) and A is
// row-major (row stride lda). A tile of kTileRows rows keeps kTileRows x kPanelVecs accumulators
// in registers for the whole K loop: per k, one broadcast of A per row and kPanelVecs loads of
// the panel feed kTileRows * kPanelVecs FMAs. init is C itself (accumulate) or zero.

constexpr int64_t kPanelVecs = 4;
constexpr bool kAvx512Registers = sizeof(Vec<float>) == 64;
// 32 vector registers (AVX-512) hold 6 x 4 accumulators + 4 panel vectors + 1 broadcast; 16
// (AVX2) hold 3 x 4 accumulators + 1 panel vector + 3 broadcasts (the panel vector is loaded
// once per use; loads are cheaper than FMAs). Measured on Zen 1: 3 x 4 runs at ~93% of the
// core's FMA peak, 2 x 4 at ~75%.
constexpr int64_t kTileRows = kAvx512Registers ? 6 : 3;
// Tiles of at most this many rows keep a second accumulator set for odd k (too few
// accumulators to hide the FMA latency otherwise), where the registers allow.
constexpr int64_t kSplitTileRows = kAvx512Registers ? 2 : 1;

template <typename T>
int64_t panel_width() {
  return kPanelVecs * Vec<T>::size();
}

// Keeps a panel vector that a tile of R rows multiplies in a register. With fewer accumulators
// than the compiler has registers for, g++ folds the load into each FMA instead (a memory
// operand per row): R loads of the same vector per k, which made a 3-row tile as slow as a
// 6-row one and a 2-row tile 20% slower (AVX-512). AVX2 loads it once per use on purpose (see
// kTileRows).
template <typename T, int64_t R>
C10_ALWAYS_INLINE void keep_in_register(Vec<T>& v) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (R > 1) {
    std::conditional_t<std::is_same_v<T, float>, __m512, __m512d> raw = v;
    __asm__("" : "+v"(raw));  // an empty statement that needs raw in a vector register
    v = raw;
  }
#endif
}

// valid_cols: C's columns in this panel (the last panel of a group is zero-padded); the
// vectors past them are computed but neither read from nor written to C. kStrided: A's element
// (r, k) lies at a[r * lda + k * a_k] and the panel's row k at panel + k * ldb (strided_gemm);
// otherwise a_k is 1 and ldb the panel width (a packed panel), both known to the compiler. The
// tile covers V of the panel's vectors from vector v0 (a tall tile: half the panel).
template <typename T, int64_t R, bool kStrided, int64_t V = kPanelVecs>
void panel_tile(const T* a, int64_t lda, int64_t a_k_stride, const T* panel_in, int64_t ldb_stride, int64_t K,
                T* c_in, int64_t ldc, int64_t valid_cols_in, bool accumulate, int64_t v0 = 0) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t a_k = kStrided ? a_k_stride : 1;
  const int64_t ldb = kStrided ? ldb_stride : kPanelVecs * W;
  const T* panel = panel_in + v0 * W;
  T* c = c_in + v0 * W;
  const int64_t valid_cols = valid_cols_in - v0 * W;
  int64_t cols[V];  // C's columns in each vector of the tile: W, then fewer at the edge
  for (int64_t v = 0; v < V; ++v) cols[v] = std::clamp<int64_t>(valid_cols - v * W, 0, W);
  Vec<T> acc[R][V];
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t v = 0; v < V; ++v) {
      acc[r][v] = accumulate ? load<T>(c + r * ldc + v * W, cols[v]) : Vec<T>(T(0));
    }
  }
  int64_t k = 0;
  if constexpr (R <= kSplitTileRows) {
    // Too few accumulators to hide the FMA latency: odd k go to a second set, added at the end.
    Vec<T> odd[R][V];
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t v = 0; v < V; ++v) odd[r][v] = Vec<T>(T(0));
    }
    for (; k + 1 < K; k += 2) {
      for (int64_t v = 0; v < V; ++v) {
        Vec<T> b0 = Vec<T>::loadu(panel + k * ldb + v * W);
        Vec<T> b1 = Vec<T>::loadu(panel + (k + 1) * ldb + v * W);
        keep_in_register<T, R>(b0), keep_in_register<T, R>(b1);
        for (int64_t r = 0; r < R; ++r) {
          acc[r][v] = at::vec::fmadd(Vec<T>(a[r * lda + k * a_k]), b0, acc[r][v]);
          odd[r][v] = at::vec::fmadd(Vec<T>(a[r * lda + (k + 1) * a_k]), b1, odd[r][v]);
        }
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t v = 0; v < V; ++v) acc[r][v] = acc[r][v] + odd[r][v];
    }
  }
  for (; k < K; ++k) {
    Vec<T> b[V];
    for (int64_t v = 0; v < V; ++v) {
      b[v] = Vec<T>::loadu(panel + k * ldb + v * W);
      keep_in_register<T, R>(b[v]);
    }
    for (int64_t r = 0; r < R; ++r) {
      const Vec<T> a_rk(a[r * lda + k * a_k]);
      for (int64_t v = 0; v < V; ++v) acc[r][v] = at::vec::fmadd(a_rk, b[v], acc[r][v]);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t v = 0; v < V; ++v) store(acc[r][v], c + r * ldc + v * W, cols[v]);
  }
}

// Rows of a tall tile (AVX-512): 7 to kTallTileRows rows (a row split's share of a batch of 16
// to 24) run as one tile of all the rows times half the panel (2 vectors: up to 24 accumulators),
// twice, so a step reads every byte of the weight once instead of once per tile (8 rows: 4 + 4
// read the panel twice). Zen 5, B=16 H=256, 8 rows a thread: forward -5%, fwd+bwd 0 to -2%.
constexpr int64_t kTallTileRows = kAvx512Registers ? 12 : 0;

template <typename T, int64_t R, bool kStrided>
void tall_tile(const T* a, int64_t lda, int64_t a_k, const T* panel, int64_t ldb, int64_t K, T* c, int64_t ldc,
               int64_t valid_cols, bool accumulate) {
  constexpr int64_t kHalf = kPanelVecs / 2;
  panel_tile<T, R, kStrided, kHalf>(a, lda, a_k, panel, ldb, K, c, ldc, valid_cols, accumulate, 0);
  if (valid_cols > kHalf * Vec<T>::size()) {  // else the second half is all padding
    panel_tile<T, R, kStrided, kHalf>(a, lda, a_k, panel, ldb, K, c, ldc, valid_cols, accumulate, kHalf);
  }
}

// Panel rows per K block: a (256, 64) float block is 64 KB, kept in L1 / L2 while every row
// tile passes over it.
constexpr int64_t kBlockK = 256;

// Rows in one tall tile (7 to kTallTileRows rows), else in balanced tiles of up to kTileRows
// (for_each_row_tile); a packed panel's K in blocks of kBlockK, each after the first accumulating
// into C. Strides as for panel_tile.
template <typename T, bool kStrided>
void panel_rows(const T* a, int64_t lda, int64_t a_k, const T* panel, int64_t ldb, int64_t K, T* c, int64_t ldc,
                int64_t rows, int64_t valid_cols, bool accumulate) {
  const int64_t block_k = kStrided ? std::max<int64_t>(K, 1) : kBlockK;  // strided_gemm's caller blocks K
  for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += block_k) {
    const int64_t kc = std::min(block_k, K - k0);
    const T* a_k0 = a + k0 * (kStrided ? a_k : 1);
    const T* panel_k0 = panel + k0 * (kStrided ? ldb : panel_width<T>());
    const bool acc = accumulate || k0 > 0;
    if constexpr (kTallTileRows > 0) {
      if (rows > kTileRows && rows <= kTallTileRows) {
        switch (rows) {
          case 7: tall_tile<T, 7, kStrided>(a_k0, lda, a_k, panel_k0, ldb, kc, c, ldc, valid_cols, acc); continue;
          case 8: tall_tile<T, 8, kStrided>(a_k0, lda, a_k, panel_k0, ldb, kc, c, ldc, valid_cols, acc); continue;
          case 9: tall_tile<T, 9, kStrided>(a_k0, lda, a_k, panel_k0, ldb, kc, c, ldc, valid_cols, acc); continue;
          case 10: tall_tile<T, 10, kStrided>(a_k0, lda, a_k, panel_k0, ldb, kc, c, ldc, valid_cols, acc); continue;
          case 11: tall_tile<T, 11, kStrided>(a_k0, lda, a_k, panel_k0, ldb, kc, c, ldc, valid_cols, acc); continue;
          default: tall_tile<T, 12, kStrided>(a_k0, lda, a_k, panel_k0, ldb, kc, c, ldc, valid_cols, acc); continue;
        }
      }
    }
    for_each_row_tile(rows, kTileRows, [&](int64_t r, int64_t height) {
      const T* a_r = a_k0 + r * lda;
      T* c_r = c + r * ldc;
      switch (height) {
        case 1: return panel_tile<T, 1, kStrided>(a_r, lda, a_k, panel_k0, ldb, kc, c_r, ldc, valid_cols, acc);
        case 2: return panel_tile<T, 2, kStrided>(a_r, lda, a_k, panel_k0, ldb, kc, c_r, ldc, valid_cols, acc);
        case 3: return panel_tile<T, 3, kStrided>(a_r, lda, a_k, panel_k0, ldb, kc, c_r, ldc, valid_cols, acc);
        case 4: return panel_tile<T, 4, kStrided>(a_r, lda, a_k, panel_k0, ldb, kc, c_r, ldc, valid_cols, acc);
        case 5: return panel_tile<T, 5, kStrided>(a_r, lda, a_k, panel_k0, ldb, kc, c_r, ldc, valid_cols, acc);
        default: return panel_tile<T, kTileRows, kStrided>(a_r, lda, a_k, panel_k0, ldb, kc, c_r, ldc, valid_cols, acc);
      }
    });
  }
}

template <typename T>
void panel_gemm(const T* a, int64_t lda, const T* panel, int64_t K, T* c, int64_t ldc, int64_t rows,
                int64_t valid_cols, bool accumulate) {
  panel_rows<T, false>(a, lda, 1, panel, panel_width<T>(), K, c, ldc, rows, valid_cols, accumulate);
}

template <typename T>
void strided_gemm(const T* a, int64_t lda, int64_t a_k, const T* b, int64_t ldb, int64_t K, T* c, int64_t ldc,
                  int64_t rows, int64_t valid_cols, bool accumulate) {
  panel_rows<T, true>(a, lda, a_k, b, ldb, K, c, ldc, rows, valid_cols, accumulate);
}

// ---------------------------------------------------------------------------------------------
// The GEMM of a few rows against a weight as it lies, for a single cell step where packing the
// weight would cost more than the product: C[m, n] = init + sum_k A[m, k] W[n, k] for m < M,
// n < rows, W row-major (row stride ldw).
//
// Up to kFewRowsDotMax rows of A (small-batch decoding): dot products along the contiguous rows
// of W and A, a few rows of W at a time, so that every element of W is loaded once and used M
// times, with no padded lanes.
//
// More rows: W @ A^T with A^T packed as (K, width), width = few_rows_width<T>(M) (a_t; columns
// past M zero): a tile of rows of W holds accumulators over the rows of A, per k one load of a_t
// per vector feeds one broadcast FMA per row of W and vector. AVX-512: a square tile
// (Vec<T>::size() rows of W, one vector of A rows), transposed into C in registers. AVX2 has half
// the registers, too few for a square tile to hide its broadcast loads: its tile is 6 rows of W
// against one or two vectors of A rows (W is read once for up to 16 float rows of A), written to
// C element by element.
constexpr int64_t kFewRowsMaxVecs = kAvx512Registers ? 1 : 2;
constexpr int64_t kFewRowsTileRows = 6;  // rows of W per wide tile

template <typename T>
int64_t few_rows_width(int64_t M) {
  const int64_t vecs = std::min<int64_t>(kFewRowsMaxVecs, (M + Vec<T>::size() - 1) / Vec<T>::size());
  return std::max<int64_t>(1, vecs) * Vec<T>::size();
}

// R rows of W against M <= kFewRowsDotMax rows of A, both read along k.
template <typename T, int64_t R, int64_t M>
void few_rows_dot_tile(const T* w, int64_t ldw, const T* a, int64_t lda, int64_t K, T* c, int64_t ldc,
                       bool accumulate) {
  constexpr int64_t W = Vec<T>::size();
  Vec<T> acc[R][M];
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t m = 0; m < M; ++m) acc[r][m] = Vec<T>(T(0));
  }
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    Vec<T> a_k[M];
    for (int64_t m = 0; m < M; ++m) a_k[m] = Vec<T>::loadu(a + m * lda + k);
    for (int64_t r = 0; r < R; ++r) {
      const Vec<T> w_rk = Vec<T>::loadu(w + r * ldw + k);
      for (int64_t m = 0; m < M; ++m) acc[r][m] = at::vec::fmadd(w_rk, a_k[m], acc[r][m]);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t m = 0; m < M; ++m) {
      T lanes[W];
      acc[r][m].store(lanes);
      T sum = accumulate ? c[m * ldc + r] : T(0);
      for (int64_t i = 0; i < W; ++i) sum += lanes[i];
      for (int64_t j = k; j < K; ++j) sum += w[r * ldw + j] * a[m * lda + j];
      c[m * ldc + r] = sum;
    }
  }
}

// Rows of W per dot-product tile: R x M accumulators, M loads of A and one of W per k vector.
template <int64_t M>
constexpr int64_t kDotTileRows = M <= 2 ? 4 : 2;

template <typename T, int64_t M>
void few_rows_dot_rows(const T* w, int64_t ldw, const T* a, int64_t lda, int64_t K, T* c, int64_t ldc,
                       int64_t rows, bool accumulate) {
  constexpr int64_t R = kDotTileRows<M>;
  int64_t n = 0;
  for (; n + R <= rows; n += R) {
    few_rows_dot_tile<T, R, M>(w + n * ldw, ldw, a, lda, K, c + n, ldc, accumulate);
  }
  for (; n < rows; ++n) few_rows_dot_tile<T, 1, M>(w + n * ldw, ldw, a, lda, K, c + n, ldc, accumulate);
}

template <typename T>
void few_rows_dot(const T* w, int64_t ldw, const T* a, int64_t lda, int64_t K, int64_t M, T* c, int64_t ldc,
                  int64_t rows, bool accumulate) {
  static_assert(kFewRowsDotMax == 4);
  switch (M) {
    case 1: return few_rows_dot_rows<T, 1>(w, ldw, a, lda, K, c, ldc, rows, accumulate);
    case 2: return few_rows_dot_rows<T, 2>(w, ldw, a, lda, K, c, ldc, rows, accumulate);
    case 3: return few_rows_dot_rows<T, 3>(w, ldw, a, lda, K, c, ldc, rows, accumulate);
    default: return few_rows_dot_rows<T, 4>(w, ldw, a, lda, K, c, ldc, rows, accumulate);
  }
}

// Eight rows of W (w, row stride ldw) against the Vec<T>::size() rows of A in a_t: by_n[r]
// (a vector over A's rows) = sum_k W[r, k] a_t[k]. Eight accumulators cover the FMA latency,
// and eight row pointers stay in registers (sixteen spilled, at 60% of the FMA peak).
template <typename T>
void few_rows_eight(const T* w, int64_t ldw, const T* a_t, int64_t K, T* by_n) {
  constexpr int64_t W = Vec<T>::size();
  const T* w0 = w;
  const T* w1 = w0 + ldw;
  const T* w2 = w1 + ldw;
  const T* w3 = w2 + ldw;
  const T* w4 = w3 + ldw;
  const T* w5 = w4 + ldw;
  const T* w6 = w5 + ldw;
  const T* w7 = w6 + ldw;
  Vec<T> c0(T(0)), c1(T(0)), c2(T(0)), c3(T(0)), c4(T(0)), c5(T(0)), c6(T(0)), c7(T(0));
  for (int64_t k = 0; k < K; ++k) {
    const Vec<T> a_k = Vec<T>::loadu(a_t + k * W);
    c0 = at::vec::fmadd(Vec<T>(w0[k]), a_k, c0);
    c1 = at::vec::fmadd(Vec<T>(w1[k]), a_k, c1);
    c2 = at::vec::fmadd(Vec<T>(w2[k]), a_k, c2);
    c3 = at::vec::fmadd(Vec<T>(w3[k]), a_k, c3);
    c4 = at::vec::fmadd(Vec<T>(w4[k]), a_k, c4);
    c5 = at::vec::fmadd(Vec<T>(w5[k]), a_k, c5);
    c6 = at::vec::fmadd(Vec<T>(w6[k]), a_k, c6);
    c7 = at::vec::fmadd(Vec<T>(w7[k]), a_k, c7);
  }
  c0.store(by_n), c1.store(by_n + W), c2.store(by_n + 2 * W), c3.store(by_n + 3 * W);
  c4.store(by_n + 4 * W), c5.store(by_n + 5 * W), c6.store(by_n + 6 * W), c7.store(by_n + 7 * W);
}

// Vec<T>::size() rows of W against as many rows of A (M of them real), eight W rows at a time,
// the products transposed into C's rows.
template <typename T>
void few_rows_square_tile(const T* w, int64_t ldw, const T* a_t, int64_t K, int64_t M, T* c, int64_t ldc,
                          bool accumulate) {
  constexpr int64_t W = Vec<T>::size();
  static_assert(W % 8 == 0);
  T by_n[W * W], by_m[W * W];
  for (int64_t r = 0; r < W; r += 8) few_rows_eight(w + r * ldw, ldw, a_t, K, by_n + r * W);
  at::vec::transpose_mxn<T, W, W>(by_n, W, by_m, W);
  for (int64_t m = 0; m < M; ++m) {
    const Vec<T> sum = Vec<T>::loadu(by_m + m * W);
    (accumulate ? Vec<T>::loadu(c + m * ldc) + sum : sum).store(c + m * ldc);
  }
}

// R rows of W against V vectors of A rows (a_t has V * Vec<T>::size() columns).
template <typename T, int64_t R, int64_t V>
void few_rows_wide_tile(const T* w, int64_t ldw, const T* a_t, int64_t K, int64_t M, T* c, int64_t ldc,
                        bool accumulate) {
  constexpr int64_t W = Vec<T>::size();
  Vec<T> acc[R][V];
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t v = 0; v < V; ++v) acc[r][v] = Vec<T>(T(0));
  }
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> a_k[V];
    for (int64_t v = 0; v < V; ++v) a_k[v] = Vec<T>::loadu(a_t + (k * V + v) * W);
    for (int64_t r = 0; r < R; ++r) {
      const Vec<T> w_rk(w[r * ldw + k]);
      for (int64_t v = 0; v < V; ++v) acc[r][v] = at::vec::fmadd(w_rk, a_k[v], acc[r][v]);
    }
  }
  T by_n[R][V * W];
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t v = 0; v < V; ++v) acc[r][v].store(by_n[r] + v * W);
  }
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t r = 0; r < R; ++r) {
      c[m * ldc + r] = accumulate ? c[m * ldc + r] + by_n[r][m] : by_n[r][m];
    }
  }
}

template <typename T, int64_t V>
void few_rows_wide_rows(const T* w, int64_t ldw, const T* a_t, int64_t K, int64_t M, T* c, int64_t ldc,
                        int64_t rows, bool accumulate) {
  constexpr int64_t R = kFewRowsTileRows;
  int64_t n = 0;
  for (; n + R <= rows; n += R) {
    few_rows_wide_tile<T, R, V>(w + n * ldw, ldw, a_t, K, M, c + n, ldc, accumulate);
  }
  const T* w_n = w + n * ldw;
  switch (rows - n) {
    case 0: break;
    case 1: few_rows_wide_tile<T, 1, V>(w_n, ldw, a_t, K, M, c + n, ldc, accumulate); break;
    case 2: few_rows_wide_tile<T, 2, V>(w_n, ldw, a_t, K, M, c + n, ldc, accumulate); break;
    case 3: few_rows_wide_tile<T, 3, V>(w_n, ldw, a_t, K, M, c + n, ldc, accumulate); break;
    case 4: few_rows_wide_tile<T, 4, V>(w_n, ldw, a_t, K, M, c + n, ldc, accumulate); break;
    default: few_rows_wide_tile<T, 5, V>(w_n, ldw, a_t, K, M, c + n, ldc, accumulate); break;
  }
}

template <typename T>
void few_rows_gemm(const T* w, int64_t ldw, const T* a_t, int64_t K, int64_t M, T* c, int64_t ldc,
                   int64_t rows, bool accumulate) {
  if constexpr (kAvx512Registers) {
    constexpr int64_t W = Vec<T>::size();
    int64_t n = 0;
    for (; n + W <= rows; n += W) {
      few_rows_square_tile<T>(w + n * ldw, ldw, a_t, K, M, c + n, ldc, accumulate);
    }
    for (; n < rows; ++n) {  // the last rows % W rows of W, one dot product per element
      for (int64_t m = 0; m < M; ++m) {
        T sum = accumulate ? c[m * ldc + n] : T(0);
        for (int64_t k = 0; k < K; ++k) sum += w[n * ldw + k] * a_t[k * W + m];
        c[m * ldc + n] = sum;
      }
    }
  } else if (few_rows_width<T>(M) == Vec<T>::size()) {  // a_t's width, as the caller packed it
    few_rows_wide_rows<T, 1>(w, ldw, a_t, K, M, c, ldc, rows, accumulate);
  } else {
    few_rows_wide_rows<T, 2>(w, ldw, a_t, K, M, c, ldc, rows, accumulate);
  }
}

// ---------------------------------------------------------------------------------------------
// Packing a transposed weight into panels (panels.h): panels [panel_begin, panel_end) of every
// group of W^T for W (N, K) row-major (row stride ldw), i.e. panel p of group g holds rows
// g*group_width + p*width ... of W as columns, (K, width) each, zero past the group's end.
// Square blocks of one vector width are transposed in registers; the edges element by element.

template <typename T>
void pack_transposed(const T* w, int64_t ldw, int64_t K, int64_t groups, int64_t group_width,
                     int64_t panels_per_group, int64_t panel_begin, int64_t panel_end, T* dst) {
  constexpr int64_t V = Vec<T>::size();
  const int64_t width = panel_width<T>();
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      const T* src = w + (g * group_width + p * width) * ldw;
      T* panel = dst + (g * panels_per_group + p) * K * width;
      const int64_t valid = std::min(width, group_width - p * width);
      int64_t k0 = 0;
      for (; k0 + V <= K; k0 += V) {
        int64_t j0 = 0;
        for (; j0 + V <= valid; j0 += V) {
          at::vec::transpose_mxn<T, V, V>(src + j0 * ldw + k0, ldw, panel + k0 * width + j0, width);
        }
        for (int64_t k = k0; k < k0 + V; ++k) {
          for (int64_t j = j0; j < width; ++j) panel[k * width + j] = j < valid ? src[j * ldw + k] : T(0);
        }
      }
      for (int64_t k = k0; k < K; ++k) {
        for (int64_t j = 0; j < width; ++j) panel[k * width + j] = j < valid ? src[j * ldw + k] : T(0);
      }
    }
  }
}

#define RNNF_INSTANTIATE(S, A)                                                                           \
  template void lstm_forward_rows<true, S, A>(const LstmForwardStep<S, A>&, int64_t, int64_t, int64_t, int64_t);  \
  template void lstm_forward_rows<false, S, A>(const LstmForwardStep<S, A>&, int64_t, int64_t, int64_t, int64_t); \
  template void lstm_backward_rows<S, A>(const LstmBackwardStep<S, A>&, int64_t, int64_t, int64_t, int64_t);      \
  template void rnn_forward_rows<Activation::Tanh, S, A>(const RnnForwardStep<S>&, int64_t, int64_t, int64_t, int64_t);   \
  template void rnn_forward_rows<Activation::Relu, S, A>(const RnnForwardStep<S>&, int64_t, int64_t, int64_t, int64_t);   \
  template void rnn_backward_rows<Activation::Tanh, S, A>(const RnnBackwardStep<S>&, int64_t, int64_t, int64_t, int64_t); \
  template void rnn_backward_rows<Activation::Relu, S, A>(const RnnBackwardStep<S>&, int64_t, int64_t, int64_t, int64_t);
RNNF_INSTANTIATE(float, float)
RNNF_INSTANTIATE(double, double)
RNNF_INSTANTIATE(at::BFloat16, float)
RNNF_INSTANTIATE(at::Half, float)
#undef RNNF_INSTANTIATE

template int64_t panel_width<float>();
template int64_t panel_width<double>();
template void panel_gemm<float>(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, int64_t, bool);
template void panel_gemm<double>(const double*, int64_t, const double*, int64_t, double*, int64_t, int64_t, int64_t, bool);
template void strided_gemm<float>(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                                  int64_t, int64_t, bool);
template void strided_gemm<double>(const double*, int64_t, int64_t, const double*, int64_t, int64_t, double*,
                                   int64_t, int64_t, int64_t, bool);
template void pack_transposed<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                     float*);
template void pack_transposed<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                      double*);
template int64_t few_rows_width<float>(int64_t);
template int64_t few_rows_width<double>(int64_t);
template void few_rows_dot<float>(const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*, int64_t, int64_t, bool);
template void few_rows_dot<double>(const double*, int64_t, const double*, int64_t, int64_t, int64_t, double*, int64_t, int64_t, bool);
template void few_rows_gemm<float>(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, int64_t, bool);
template void few_rows_gemm<double>(const double*, int64_t, const double*, int64_t, int64_t, double*, int64_t, int64_t, bool);

}  // namespace RNNF_VEC_NAMESPACE
}  // namespace rnnfused
