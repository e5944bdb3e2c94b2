// Attention math shared by the CPU kernels (g++) and the CUDA kernels (nvcc): the additive score
// (Bahdanau; Luong concat), the masked softmax and their backward. Framework-free, like
// gate_math.h: plain pointers, plain structs, no ATen.
//
// Layouts (row-major, contiguous, batch-first):
//   query    (B, Tq, A)    the projected query of additive attention (bias folded in)
//   key      (B, Tk, A)    the projected keys
//   v        (A)           the score vector
//   scores / weights / their gradients   (B, Tq, Tk): row r = b * Tq + q holds the Tk keys of
//                          query q of batch element b
//   mask     (B, Tk) bool, true = attend to the key, false = padding; nullptr = attend to all.
// acc_t is float or double: the host converts float16 / bfloat16 tensors to float before any
// kernel runs, so every kernel computes and stores in acc_t.
//
// Masked softmax contract (both devices): with x[k] = scale * score[k] for a valid key and
// x[k] = -inf for a masked one,
//     w[k] = exp(x[k] - max_k x) / sum_k exp(x[k] - max_k x),
// and a row whose keys are ALL masked gets w = 0 everywhere (so a zero context and zero
// gradients), never NaN. softmax_shift / softmax_normalizer below implement that rule without
// a branch: the all-masked row has max = -inf, is shifted by 0, has sum 0 and normaliser 0.
//
// The element functions are templates over the arithmetic type V: acc_t itself (GPU, scalar CPU
// loops) or a CPU SIMD vector of acc_t (at::vec::Vectorized), which brings its own +, -, * and
// the member functions .tanh() / .exp() that gate_math.h's generic tanh_ / exp_ call.
#pragma once

#include <cmath>
#include <cstdint>

#include "rnnfused/gate_math.h"

// Device: RNNF_HOST_DEVICE (forced inline). Host: always inlined, because the CPU kernels
// instantiate these templates in translation units built for AVX2 / AVX-512
// (csrc/cpu/attention_kernels_*.cpp) as well as in baseline ones, and an out-of-line AVX copy
// must never be the one that baseline code links to.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define RNNF_ATTENTION_FN RNNF_HOST_DEVICE
#elif defined(__GNUC__)
#define RNNF_ATTENTION_FN inline __attribute__((always_inline))
#else
#define RNNF_ATTENTION_FN inline
#endif

namespace rnnfused {

// exp_ / tanh_ come from gate_math.h: overloads for float and double, and generic templates that
// call a SIMD vector's own .exp() / .tanh(); a kernel may explicitly specialise the templates for
// its vector type (the CPU kernels do, for float: csrc/cpu/attention_kernels_impl.h).

// ---------------------------------------------------------------------------------------------
// Additive score: score[b, q, k] = sum_a v[a] * tanh(query[b, q, a] + key[b, k, a]).

// The term of one attention unit a.
template <typename V>
RNNF_ATTENTION_FN V additive_score_term(V q, V k, V v) {
  return v * tanh_(q + k);
}

// Backward of one term, given ds = dL/dscore[b, q, k]. With t = tanh(q + k), recomputed here
// instead of stored:
//   grad_pre = ds * v * (1 - t^2)   = dL/dquery[b, q, a] contribution = dL/dkey[b, k, a] contribution
//   grad_v   = ds * t               = dL/dv[a] contribution
template <typename V>
RNNF_ATTENTION_FN void additive_score_term_backward(V q, V k, V v, V ds, V& grad_pre, V& grad_v) {
  const V t = tanh_(q + k);
  const V dsv = ds * v;
  grad_pre = dsv - dsv * t * t;
  grad_v = ds * t;
}

// ---------------------------------------------------------------------------------------------
// Masked softmax over the Tk keys of one row.

// x[k]: the scaled score of a valid key, -inf for a masked one.
template <typename acc_t>
RNNF_ATTENTION_FN acc_t masked_score(acc_t score, bool valid, acc_t scale) {
  return valid ? scale * score : -acc_t(INFINITY);
}

// What the row is shifted by before exp: its max, or 0 for an all-masked row (max = -inf), so
// that every exp(x - shift) is exp(-inf) = 0 rather than exp(NaN).
template <typename acc_t>
RNNF_ATTENTION_FN acc_t softmax_shift(acc_t row_max) {
  return row_max == -acc_t(INFINITY) ? acc_t(0) : row_max;
}

// exp(x - shift): the unnormalised weight (0 for a masked key).
template <typename V>
RNNF_ATTENTION_FN V softmax_numerator(V x, V shift) {
  return exp_(x - shift);
}

// 1 / sum of the numerators; 0 for an all-masked row (sum = 0), which zeroes its weights.
template <typename acc_t>
RNNF_ATTENTION_FN acc_t softmax_normalizer(acc_t sum) {
  return sum > acc_t(0) ? acc_t(1) / sum : acc_t(0);
}

// Backward: dL/dscore[k] = scale * w[k] * (g[k] - sum_j w[j] g[j]) where g = dL/dw (the gradient
// of the weights output plus what the context passes back: grad_context . values[k]).
// Zero wherever w = 0: masked keys and all-masked rows get no gradient, and never NaN.
template <typename V>
RNNF_ATTENTION_FN V softmax_backward_term(V w, V g, V row_dot, V scale) {
  return scale * w * (g - row_dot);
}

// ---------------------------------------------------------------------------------------------
// Params of the kernels (one struct per kernel; sizes B = batch, Tq = query_len, Tk = key_len,
// A = attn_size).

// Additive scores of every row followed by the masked softmax: weights = softmax(scores); and,
// for policies with kFusedProducts (csrc/attention.h), context = weights @ values.
template <typename acc_t>
struct AdditiveScoresParams {
  const acc_t* query;   // (B, Tq, A)
  const acc_t* key;     // (B, Tk, A)
  const acc_t* v;       // (A)
  const bool* mask;     // (B, Tk) or nullptr
  const acc_t* values;  // (B, Tk, Dv)
  acc_t* weights;       // out: (B, Tq, Tk)
  acc_t* context;       // out: (B, Tq, Dv), fused policies only
  int64_t batch;
  int64_t query_len;
  int64_t key_len;
  int64_t attn_size;
  int64_t value_size;
};

// In place: scores (raw, unscaled) in, weights out.
template <typename acc_t>
struct MaskedSoftmaxParams {
  acc_t* scores;      // (B, Tq, Tk)
  const bool* mask;   // (B, Tk) or nullptr
  acc_t scale;
  int64_t batch;
  int64_t query_len;
  int64_t key_len;
};

// In place: grad holds g = dL/dweights (total) in and dL/dscore (raw, unscaled score) out.
template <typename acc_t>
struct SoftmaxBackwardParams {
  const acc_t* weights;  // (B, Tq, Tk)
  acc_t* grad;           // (B, Tq, Tk)
  acc_t scale;
  int64_t rows;          // B * Tq
  int64_t key_len;
};

// Backward of the additive scores given dL/dscore. grad_key sums over the Tq queries of a batch
// element: each device chooses its own reduction scheme (see csrc/cpu/attention_cpu.cpp and
// csrc/cuda/attention_cuda.cu) and writes every element. grad_v sums over everything: the
// kernels write one row of it per (b, q) row, which the host sums.
template <typename acc_t>
struct AdditiveBackwardParams {
  const acc_t* grad_scores;  // (B, Tq, Tk) dL/dscore
  const acc_t* query;        // (B, Tq, A)
  const acc_t* key;          // (B, Tk, A)
  const acc_t* v;            // (A)
  acc_t* grad_query;         // out: (B, Tq, A)
  acc_t* grad_key;           // out: (B, Tk, A)
  acc_t* grad_v_rows;        // out: (B, Tq, A), row r = sum over keys of dL/dv of row r
  int64_t batch;
  int64_t query_len;
  int64_t key_len;
  int64_t attn_size;
};

// The small matrix products of attention, for devices whose policy fuses them (kFusedProducts:
// the CPU, where a batch element's operands stay in cache and masked keys are skipped); the
// others run them as GEMMs around the masked_softmax / softmax_backward kernels.
// D = feature size, Dv = value size.

// Dot attention forward: scores, masked softmax, context.
template <typename acc_t>
struct DotAttentionParams {
  const acc_t* query;   // (B, Tq, D)
  const acc_t* keys;    // (B, Tk, D)
  const acc_t* values;  // (B, Tk, Dv)
  const bool* mask;     // (B, Tk) or nullptr
  acc_t* weights;       // out: (B, Tq, Tk)
  acc_t* context;       // out: (B, Tq, Dv)
  acc_t scale;
  int64_t batch;
  int64_t query_len;
  int64_t key_len;
  int64_t feature;
  int64_t value_size;
};

// The backward of softmax + context, shared by both attention kinds:
//   g           = grad_weights + grad_context @ values^T      (dL/dweights, in total)
//   grad_scores = softmax backward of g                      (dL/dscore; scale folded in)
//   grad_values = weights^T @ grad_context
template <typename acc_t>
struct ScoreGradParams {
  const acc_t* grad_context;  // (B, Tq, Dv) or nullptr (zero)
  const acc_t* grad_weights;  // (B, Tq, Tk) or nullptr (zero)
  const acc_t* values;        // (B, Tk, Dv)
  const acc_t* weights;       // (B, Tq, Tk), the forward's output
  acc_t* grad_scores;         // out: (B, Tq, Tk)
  acc_t* grad_values;         // out: (B, Tk, Dv)
  acc_t scale;
  int64_t batch;
  int64_t query_len;
  int64_t key_len;
  int64_t value_size;
};

// Dot attention backward: the score gradients, then grad_query = grad_scores @ keys and
// grad_keys = grad_scores^T @ query.
template <typename acc_t>
struct DotAttentionBackwardParams {
  ScoreGradParams<acc_t> scores;
  const acc_t* query;  // (B, Tq, D)
  const acc_t* keys;   // (B, Tk, D)
  acc_t* grad_query;   // out: (B, Tq, D)
  acc_t* grad_keys;    // out: (B, Tk, D)
  int64_t feature;
};

}  // namespace rnnfused
