// Vectorized CPU kernels, compiled once per instruction set: the pointwise passes of a time step
// (float, double, bfloat16, float16) and the panel GEMM micro-kernel (float, double).
//
// A kernel file turns its instruction set on (isa_avx2_begin.h / isa_avx512_begin.h, which also
// define CPU_CAPABILITY) and includes pointwise_vec_impl.h, which defines these functions in
// rnnfused::<capability namespace> on ATen's Vectorized (SLEEF exp / tanh): the gate math is
// gate_math.h's templates run on SIMD vectors, the units past the last whole vector of a row
// in one masked vector.
// recurrent_cpu.cpp picks the best capability the running CPU has.
#pragma once

#include <cstdint>

#include "rnnfused/gate_math.h"

namespace rnnfused {

// Rows of A up to which a few-rows GEMM runs as dot products (few_rows_dot).
constexpr int64_t kFewRowsDotMax = 4;

// The row tiles of a panel GEMM over `rows` rows, tiles of at most max_height rows: f(first_row,
// height) for each of ceil(rows / max_height) tiles, their heights as even as can be (8 rows: 4 +
// 4, not 6 + 2; a thin tile pays a whole pass over the panel for few multiply-adds, with too few
// accumulators to hide their latency). Measured on a Zen 5 EPYC, B=16 H=256 forward, 8 rows a
// thread: bfloat16 -3% (AVX512-BF16 dot products), float32 within +-1%.
template <typename F>
inline void for_each_row_tile(int64_t rows, int64_t max_height, F&& f) {
  const int64_t tiles = (rows + max_height - 1) / max_height;
  for (int64_t tile = 0, first = 0; tile < tiles; ++tile) {
    const int64_t height = (rows - first + tiles - tile - 1) / (tiles - tile);
    f(first, height);
    first += height;
  }
}

// S is the storage type (float, double, at::BFloat16, at::Half), A the arithmetic type (S, or
// float for the 16-bit types).
#define RNNF_DECLARE_VECTORIZED_KERNELS(ns)                                                   \
  namespace ns {                                                                               \
  template <bool kTraining, typename S, typename A>                                            \
  void lstm_forward_rows(const LstmForwardStep<S, A>& p, int64_t begin, int64_t end,           \
                         int64_t unit_begin, int64_t unit_end);                                \
  template <typename S, typename A>                                                            \
  void lstm_backward_rows(const LstmBackwardStep<S, A>& p, int64_t begin, int64_t end,         \
                          int64_t unit_begin, int64_t unit_end);                               \
  template <Activation act, typename S, typename A>                                            \
  void rnn_forward_rows(const RnnForwardStep<S>& p, int64_t begin, int64_t end,                \
                        int64_t unit_begin, int64_t unit_end);                                 \
  template <Activation act, typename S, typename A>                                            \
  void rnn_backward_rows(const RnnBackwardStep<S>& p, int64_t begin, int64_t end,              \
                         int64_t unit_begin, int64_t unit_end);                                \
  /* Columns per packed weight panel (panels.h). */                                           \
  template <typename T>                                                                        \
  int64_t panel_width();                                                                       \
  /* C (rows, valid_cols) = init + A (rows, K) @ panel (K, panel_width), A row-major (row      \
     stride lda), valid_cols <= panel_width (the rest of the panel is padding); init: C        \
     (accumulate) or 0. */                                                                     \
  template <typename T>                                                                        \
  void panel_gemm(const T* a, int64_t lda, const T* panel, int64_t K, T* c, int64_t ldc,       \
                  int64_t rows, int64_t valid_cols, bool accumulate);                          \
  /* As panel_gemm, on operands as they lie: A's element (r, k) at a[r * lda + k * a_k], B's   \
     row k at b + k * ldb with panel_width readable elements; K in one pass (the caller blocks  \
     it). */                                                                                   \
  template <typename T>                                                                        \
  void strided_gemm(const T* a, int64_t lda, int64_t a_k, const T* b, int64_t ldb, int64_t K,  \
                    T* c, int64_t ldc, int64_t rows, int64_t valid_cols, bool accumulate);     \
  /* Panels [panel_begin, panel_end) of every group (panels.h) of W^T for W (N, K) row-major:  \
     PackedWeight's fast path. */                                                              \
  template <typename T>                                                                        \
  void pack_transposed(const T* w, int64_t ldw, int64_t K, int64_t groups, int64_t group_width, \
                       int64_t panels_per_group, int64_t panel_begin, int64_t panel_end, T* dst); \
  /* C[m, n] = init + sum_k A[m, k] W[n, k], m < M <= kFewRowsDotMax, n < rows, W and A       \
     row-major (row strides ldw, lda); init: C (accumulate) or 0. For a single step of a small  \
     batch on unpacked weights. */                                                             \
  template <typename T>                                                                        \
  void few_rows_dot(const T* w, int64_t ldw, const T* a, int64_t lda, int64_t K, int64_t M, T* c, \
                    int64_t ldc, int64_t rows, bool accumulate);                               \
  /* Columns of the packed A^T that few_rows_gemm takes for M rows of A (M or more). */        \
  template <typename T>                                                                        \
  int64_t few_rows_width(int64_t M);                                                           \
  /* As few_rows_dot, for M <= few_rows_width(M) rows of A given as a_t, A^T packed as        \
     (K, few_rows_width(M)) with zero columns past M. */                                       \
  template <typename T>                                                                        \
  void few_rows_gemm(const T* w, int64_t ldw, const T* a_t, int64_t K, int64_t M, T* c,        \
                     int64_t ldc, int64_t rows, bool accumulate);                              \
  }

RNNF_DECLARE_VECTORIZED_KERNELS(avx2)
RNNF_DECLARE_VECTORIZED_KERNELS(avx512)

#undef RNNF_DECLARE_VECTORIZED_KERNELS

}  // namespace rnnfused
