// The CPU kernels of the attention ops (declared in attention_kernels.h). Included by exactly one
// translation unit per CPU capability, after that unit has defined CPU_CAPABILITY (and, for
// AVX2 / AVX-512, enabled the instruction set) and named its table RNNF_ATTENTION_TABLE:
// at::vec::Vectorized<T> then has that capability's width (8 / 16 floats). No include guard on
// purpose.
//
// Every kernel reads and writes acc_t (float or double) only, from raw pointers, and allocates
// nothing: scratch lives in the rows it writes (scores become weights in place).
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
// GCC's AVX-512 intrinsics trip -W(maybe-)uninitialized on their deliberately undefined vectors.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>
#include <type_traits>

#include "attention_kernels.h"
#include "vec_math.h"

#if !defined(CPU_CAPABILITY) || !defined(RNNF_ATTENTION_TABLE)
#error "define CPU_CAPABILITY and RNNF_ATTENTION_TABLE before including attention_kernels_impl.h"
#endif

namespace rnnfused {

// ---------------------------------------------------------------------------------------------
// The float vector math of the CPU kernels. attention_math.h calls tanh_ / exp_ of a SIMD vector
// type, which by default are the vector's own .tanh() / .exp() (SLEEF); for float vectors these
// explicit specialisations take over (double keeps SLEEF's 1-ULP functions):
//
// tanh: an odd rational approximation (the minimax 13/6 one Eigen uses for float), clamped to
// |x| <= 7.905 where float tanh rounds to +-1. Measured here over [-10, 10]: at most 4.3 ULP and
// 2.6e-7 absolute from tanh, against SLEEF's 1 ULP, and 5x faster than SLEEF's tanhf on
// AVX-512: the tanh of the (B, Tq, Tk, A) additive scores is nearly all the work of the additive
// ops, forward and backward.
// exp: ATen's exp_u20, the one torch's own CPU softmax uses (at most 20 ULP).
template <>
RNNF_ATTENTION_FN at::vec::Vectorized<float> tanh_(const at::vec::Vectorized<float>& x_in) {
  using V = at::vec::Vectorized<float>;
  const V x = at::vec::clamp(x_in, V(-7.90531110763549805f), V(7.90531110763549805f));
  const V x2 = x * x;
  V p = at::vec::fmadd(x2, V(-2.76076847742355e-16f), V(2.00018790482477e-13f));
  p = at::vec::fmadd(x2, p, V(-8.60467152213735e-11f));
  p = at::vec::fmadd(x2, p, V(5.12229709037114e-08f));
  p = at::vec::fmadd(x2, p, V(1.48572235717979e-05f));
  p = at::vec::fmadd(x2, p, V(6.37261928875436e-04f));
  p = at::vec::fmadd(x2, p, V(4.89352455891786e-03f));
  V q = at::vec::fmadd(x2, V(1.19825839466702e-06f), V(1.18534705686654e-04f));
  q = at::vec::fmadd(x2, q, V(2.26843463243900e-03f));
  q = at::vec::fmadd(x2, q, V(4.89352518554385e-03f));
  return x * p / q;
}

template <>
RNNF_ATTENTION_FN at::vec::Vectorized<float> exp_(const at::vec::Vectorized<float>& x) {
  return x.exp_u20();
}

namespace cpu {
namespace {  // this capability's copies stay private to their translation unit

template <typename T>
using Vec = at::vec::Vectorized<T>;

template <typename T>
Vec<T> vec_sum(const Vec<T>& x, const Vec<T>& y) { return x + y; }

// ---------------------------------------------------------------------------------------------
// Building blocks. The kernels work on blocks of R <= kRowBlock rows (queries, or keys) of one
// batch element: its keys and values stay in cache, the rows of a block share every load of a
// key or value row, and keys of weight 0 (masked) are neither scored nor summed.

// x[0, n): masked scores (scaled; -inf where masked) in, softmax weights out (attention_math.h:
// an all-masked row becomes all zeros).
template <typename T>
void softmax_row_inplace(T* x, int64_t n) {
  using V = Vec<T>;
  if (n == 0) return;
  const T row_max = at::vec::reduce_all<T>(
      [](const V& a, const V& b) { return at::vec::maximum(a, b); }, x, n);
  const V shift(softmax_shift(row_max));
  V sum(T(0));
  int64_t k = 0;
  for (; k + V::size() <= n; k += V::size()) {
    const V e = softmax_numerator(V::loadu(x + k), shift);
    e.store(x + k);
    sum = sum + e;
  }
  if (k < n) {
    const int64_t rest = n - k;
    const V e = softmax_numerator(V::loadu(x + k, rest), shift);
    e.store(x + k, rest);
    sum = V::set(sum, sum + e, rest);  // only the lanes that hold keys
  }
  const V inv(softmax_normalizer(at::vec::vec_reduce_all<T>(vec_sum<T>, sum)));
  at::vec::map([&](const V& e) { return e * inv; }, x, x, n);
}

// g[0, n): dL/dweights in, dL/dscore out, given the weights w of the row (attention_math.h).
template <typename T>
void softmax_backward_row(const T* w, T* g, int64_t n, T scale_value) {
  using V = Vec<T>;
  if (n == 0) return;
  const V scale(scale_value);
  const V row_dot(at::vec::map2_reduce_all<T>(
      [](const V& a, const V& b) { return a * b; }, vec_sum<T>, w, g, n));
  at::vec::map2([&](const V& wv, const V& gv) { return softmax_backward_term(wv, gv, row_dot, scale); },
                g, w, g, n);
}

// Runs f(std::integral_constant<int, R>) with R = rows (1 .. kRowBlock) as a constant.
template <typename F>
void with_rows(int64_t rows, F&& f) {
  static_assert(kRowBlock == 4, "with_rows covers 1 .. 4 rows");
  switch (rows) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

// Work items [begin, end) of the B * ceil(n / kRowBlock) blocks of n rows per batch element:
// f(b, first row within b, R as a constant).
template <typename F>
void for_each_block(int64_t n, int64_t begin, int64_t end, const F& f) {
  const int64_t blocks = (n + kRowBlock - 1) / kRowBlock;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / blocks, first = (item % blocks) * kRowBlock;
    with_rows(std::min(kRowBlock, n - first), [&](auto rows) { f(b, first, rows); });
  }
}

// out[r][c] = sum_{d < D} x[r * x_stride + d] * y[c * y_stride + d]: R rows dotted with C rows.
template <int R, int C, typename T>
void row_dots(const T* x, int64_t x_stride, const T* y, int64_t y_stride, int64_t D, T (&out)[R][C]) {
  using V = Vec<T>;
  V acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = V(T(0));
  }
  const auto step = [&](int64_t d, int64_t n) {  // n < V::size(): the other lanes load as 0
    V yv[C];
    for (int c = 0; c < C; ++c) yv[c] = V::loadu(y + c * y_stride + d, n);
    for (int r = 0; r < R; ++r) {
      const V xv = V::loadu(x + r * x_stride + d, n);
      for (int c = 0; c < C; ++c) acc[r][c] = at::vec::fmadd(xv, yv[c], acc[r][c]);
    }
  };
  int64_t d = 0;
  for (; d + V::size() <= D; d += V::size()) step(d, V::size());
  if (d < D) step(d, D - d);
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) out[r][c] = at::vec::vec_reduce_all<T>(vec_sum<T>, acc[r][c]);
  }
}

// store(r, k, dot(x row r, y row k)) for the R rows of x and the Tk rows of y, two at a time;
// the dot of a key for which skip(k) holds is not computed (0 is stored).
template <int R, typename T, typename Skip, typename Store>
void dots_with_keys(const T* x, int64_t x_stride, const T* y, int64_t y_stride, int64_t D,
                    int64_t Tk, const Skip& skip, const Store& store) {
  int64_t k = 0;
  for (; k + 2 <= Tk; k += 2) {
    T out[R][2] = {};
    if (!skip(k) || !skip(k + 1)) row_dots<R, 2>(x, x_stride, y + k * y_stride, y_stride, D, out);
    for (int r = 0; r < R; ++r) {
      store(r, k, out[r][0]);
      store(r, k + 1, out[r][1]);
    }
  }
  if (k < Tk) {
    T out[R][1] = {};
    if (!skip(k)) row_dots<R, 1>(x, x_stride, y + k * y_stride, y_stride, D, out);
    for (int r = 0; r < R; ++r) store(r, k, out[r][0]);
  }
}

// out[r, n] = sum_{k < K} a(r, k) * b[k, n] for r < R, n < N, where a(r, k) = a[r * a_rs + k * a_ks]
// (broadcast, so any layout) and b, out are row-major. Every k whose a(., k) is 0 in all R rows
// is skipped: keys of weight 0 cost nothing.
template <int R, typename T>
void broadcast_products(int64_t N, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
                        int64_t ldb, T* out, int64_t ldo) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  // Columns [n0, n0 + n_first) and [n0 + W, n0 + W + n_second): two vectors per row.
  const auto tile = [&](int64_t n0, int64_t n_first, int64_t n_second) {
    V acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = V(T(0));
    for (int64_t k = 0; k < K; ++k) {
      T ak[R];
      bool any = false;
      for (int r = 0; r < R; ++r) {
        ak[r] = a[r * a_rs + k * a_ks];
        any = any || ak[r] != T(0);
      }
      if (!any) continue;
      const T* bk = b + k * ldb + n0;
      const V b0 = V::loadu(bk, n_first), b1 = V::loadu(bk + W, n_second);
      for (int r = 0; r < R; ++r) {
        const V av(ak[r]);
        acc[r][0] = at::vec::fmadd(av, b0, acc[r][0]);
        acc[r][1] = at::vec::fmadd(av, b1, acc[r][1]);
      }
    }
    for (int r = 0; r < R; ++r) {
      acc[r][0].store(out + r * ldo + n0, n_first);
      acc[r][1].store(out + r * ldo + n0 + W, n_second);
    }
  };
  int64_t n0 = 0;
  for (; n0 + 2 * W <= N; n0 += 2 * W) tile(n0, W, W);
  if (n0 < N) tile(n0, std::min(W, N - n0), std::max<int64_t>(0, N - n0 - W));
}

// score = sum_a v[a] * tanh(q[a] + k[a]), over the A units of one (query, key) pair.
template <typename T>
T additive_score(const T* q, const T* k, const T* v, int64_t A) {
  using V = Vec<T>;
  V acc(T(0));
  int64_t a = 0;
  for (; a + V::size() <= A; a += V::size()) {
    acc = acc + additive_score_term(V::loadu(q + a), V::loadu(k + a), V::loadu(v + a));
  }
  if (a < A) {  // partial loads fill the other lanes with 0, and v = 0 zeroes their terms
    const int64_t n = A - a;
    acc = acc + additive_score_term(V::loadu(q + a, n), V::loadu(k + a, n), V::loadu(v + a, n));
  }
  return at::vec::vec_reduce_all<T>(vec_sum<T>, acc);
}

// The score gradients of the R queries [q0, q0 + R) of batch element b (ScoreGradParams):
// g = grad_weights + grad_context . values, then dL/dscore through the softmax, in grad_scores.
template <int R, typename T>
void score_grad_block(const ScoreGradParams<T>& p, int64_t b, int64_t q0) {
  const int64_t Tk = p.key_len, Dv = p.value_size, r0 = b * p.query_len + q0;
  const T* w = p.weights + r0 * Tk;
  T* g = p.grad_scores + r0 * Tk;
  // Keys of weight 0 in every row need no gradient: dL/dscore = w * (...) = 0 there.
  const auto zero_weight = [&](int64_t k) {
    for (int r = 0; r < R; ++r) {
      if (w[r * Tk + k] != T(0)) return false;
    }
    return true;
  };
  const auto store = [&](int r, int64_t k, T dot) {
    g[r * Tk + k] = dot + (p.grad_weights != nullptr ? p.grad_weights[(r0 + r) * Tk + k] : T(0));
  };
  if (p.grad_context != nullptr) {
    dots_with_keys<R>(p.grad_context + r0 * Dv, Dv, p.values + b * Tk * Dv, Dv, Dv, Tk, zero_weight, store);
  } else {
    for (int r = 0; r < R; ++r) {
      for (int64_t k = 0; k < Tk; ++k) store(r, k, T(0));
    }
  }
  for (int r = 0; r < R; ++r) softmax_backward_row(w + r * Tk, g + r * Tk, Tk, p.scale);
}

// grad_values of the R keys [k0, k0 + R) of batch element b: weights^T @ grad_context.
template <int R, typename T>
void value_grad_block(const ScoreGradParams<T>& p, int64_t b, int64_t k0) {
  const int64_t Tq = p.query_len, Tk = p.key_len, Dv = p.value_size;
  T* grad_values = p.grad_values + (b * Tk + k0) * Dv;
  if (p.grad_context == nullptr) {
    std::fill(grad_values, grad_values + R * Dv, T(0));
    return;
  }
  // a(r, q) = weights[b, q, k0 + r]
  broadcast_products<R>(Dv, Tq, p.weights + b * Tq * Tk + k0, 1, Tk, p.grad_context + b * Tq * Dv, Dv,
                        grad_values, Dv);
}

// ---------------------------------------------------------------------------------------------
// The kernels of the table.

// Work item = (b, block of queries): the additive scores of every row (tanh of the A units of
// each valid key), the masked softmax, and the context of the block.
template <typename T>
void additive_attention_blocks(const AdditiveScoresParams<T>& p, int64_t begin, int64_t end) {
  const int64_t Tq = p.query_len, Tk = p.key_len, A = p.attn_size, Dv = p.value_size;
  for_each_block(Tq, begin, end, [&](int64_t b, int64_t q0, auto rows) {
    constexpr int R = decltype(rows)::value;
    const int64_t r0 = b * Tq + q0;
    const T* keys = p.key + b * Tk * A;
    const bool* mask = p.mask != nullptr ? p.mask + b * Tk : nullptr;
    T* w = p.weights + r0 * Tk;
    for (int r = 0; r < R; ++r) {
      const T* q = p.query + (r0 + r) * A;
      for (int64_t k = 0; k < Tk; ++k) {
        const bool valid = mask == nullptr || mask[k];  // masked keys are not scored at all
        w[r * Tk + k] = masked_score(valid ? additive_score(q, keys + k * A, p.v, A) : T(0), valid, T(1));
      }
      softmax_row_inplace(w + r * Tk, Tk);
    }
    broadcast_products<R>(Dv, Tk, w, Tk, 1, p.values + b * Tk * Dv, Dv, p.context + r0 * Dv, Dv);
  });
}

// The hot loop of the additive backward: for every (q, k) with dL/dscore != 0 (keys of weight 0
// are skipped), recompute t = tanh(q + k) over the A units and accumulate grad_query[q],
// grad_v_rows[q] and this item's share of grad_key[k] (AdditiveBackwardSplit).
template <typename T>
void additive_scores_backward_items(const AdditiveBackwardParams<T>& p,
                                    const AdditiveBackwardSplit<T>& split, int64_t begin,
                                    int64_t end) {
  using V = Vec<T>;
  const int64_t B = p.batch, Tq = p.query_len, Tk = p.key_len, A = p.attn_size;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / split.splits, s = item % split.splits;
    const int64_t q_begin = s * split.chunk, q_end = std::min(Tq, q_begin + split.chunk);
    T* grad_key = split.grad_key_partial + (s * B + b) * Tk * A;
    std::fill(grad_key, grad_key + Tk * A, T(0));
    const T* keys = p.key + b * Tk * A;
    for (int64_t qi = q_begin; qi < q_end; ++qi) {
      const int64_t r = b * Tq + qi;
      const T* q = p.query + r * A;
      const T* ds = p.grad_scores + r * Tk;
      T* grad_q = p.grad_query + r * A;
      T* grad_v = p.grad_v_rows + r * A;
      std::fill(grad_q, grad_q + A, T(0));
      std::fill(grad_v, grad_v + A, T(0));
      for (int64_t k = 0; k < Tk; ++k) {
        if (ds[k] == T(0)) continue;
        const V d(ds[k]);
        const T* key = keys + k * A;
        T* grad_k = grad_key + k * A;
        // Full vectors, then one partial vector (its extra lanes load as 0 and are not stored).
        for (int64_t a = 0; a < A; a += V::size()) {
          const int64_t n = std::min<int64_t>(V::size(), A - a);
          V grad_pre, grad_v_term;
          additive_score_term_backward(V::loadu(q + a, n), V::loadu(key + a, n), V::loadu(p.v + a, n),
                                       d, grad_pre, grad_v_term);
          (V::loadu(grad_q + a, n) + grad_pre).store(grad_q + a, n);
          (V::loadu(grad_k + a, n) + grad_pre).store(grad_k + a, n);
          (V::loadu(grad_v + a, n) + grad_v_term).store(grad_v + a, n);
        }
      }
    }
  }
}

// Work item = (b, block of queries): dot scores, masked softmax, context.
template <typename T>
void dot_attention_blocks(const DotAttentionParams<T>& p, int64_t begin, int64_t end) {
  const int64_t Tq = p.query_len, Tk = p.key_len, D = p.feature, Dv = p.value_size;
  for_each_block(Tq, begin, end, [&](int64_t b, int64_t q0, auto rows) {
    constexpr int R = decltype(rows)::value;
    const int64_t r0 = b * Tq + q0;
    const bool* mask = p.mask != nullptr ? p.mask + b * Tk : nullptr;
    const auto masked = [&](int64_t k) { return mask != nullptr && !mask[k]; };
    T* w = p.weights + r0 * Tk;
    dots_with_keys<R>(p.query + r0 * D, D, p.keys + b * Tk * D, D, D, Tk, masked,
                      [&](int r, int64_t k, T dot) { w[r * Tk + k] = masked_score(dot, !masked(k), p.scale); });
    for (int r = 0; r < R; ++r) softmax_row_inplace(w + r * Tk, Tk);
    broadcast_products<R>(Dv, Tk, w, Tk, 1, p.values + b * Tk * Dv, Dv, p.context + r0 * Dv, Dv);
  });
}

// Score gradients: work item = (b, block of queries) ...
template <typename T>
void score_grad_query_blocks(const ScoreGradParams<T>& p, int64_t begin, int64_t end) {
  for_each_block(p.query_len, begin, end, [&](int64_t b, int64_t q0, auto rows) {
    score_grad_block<decltype(rows)::value>(p, b, q0);
  });
}

// ... then (b, block of keys), once every query block is done.
template <typename T>
void score_grad_key_blocks(const ScoreGradParams<T>& p, int64_t begin, int64_t end) {
  for_each_block(p.key_len, begin, end, [&](int64_t b, int64_t k0, auto rows) {
    value_grad_block<decltype(rows)::value>(p, b, k0);
  });
}

// Dot backward, work item = (b, block of queries): score gradients and grad_query = dS @ keys ...
template <typename T>
void dot_backward_query_blocks(const DotAttentionBackwardParams<T>& p, int64_t begin, int64_t end) {
  const ScoreGradParams<T>& s = p.scores;
  const int64_t Tq = s.query_len, Tk = s.key_len, D = p.feature;
  for_each_block(Tq, begin, end, [&](int64_t b, int64_t q0, auto rows) {
    constexpr int R = decltype(rows)::value;
    const int64_t r0 = b * Tq + q0;
    score_grad_block<R>(s, b, q0);
    broadcast_products<R>(D, Tk, s.grad_scores + r0 * Tk, Tk, 1, p.keys + b * Tk * D, D,
                          p.grad_query + r0 * D, D);
  });
}

// ... then (b, block of keys): grad_values and grad_keys = dS^T @ query.
template <typename T>
void dot_backward_key_blocks(const DotAttentionBackwardParams<T>& p, int64_t begin, int64_t end) {
  const ScoreGradParams<T>& s = p.scores;
  const int64_t Tq = s.query_len, Tk = s.key_len, D = p.feature;
  for_each_block(Tk, begin, end, [&](int64_t b, int64_t k0, auto rows) {
    constexpr int R = decltype(rows)::value;
    value_grad_block<R>(s, b, k0);
    // a(r, q) = dS[b, q, k0 + r]
    broadcast_products<R>(D, Tq, s.grad_scores + b * Tq * Tk + k0, 1, Tk, p.query + b * Tq * D, D,
                          p.grad_keys + (b * Tk + k0) * D, D);
  });
}

template <typename T>
AttentionRowKernels<T> row_kernels() {
  return {&additive_attention_blocks<T>, &additive_scores_backward_items<T>, &dot_attention_blocks<T>,
          &score_grad_query_blocks<T>, &score_grad_key_blocks<T>, &dot_backward_query_blocks<T>,
          &dot_backward_key_blocks<T>};
}

}  // namespace

const AttentionRowKernelTable& RNNF_ATTENTION_TABLE() {
  static const AttentionRowKernelTable table{row_kernels<float>(), row_kernels<double>()};
  return table;
}

}  // namespace cpu
}  // namespace rnnfused
