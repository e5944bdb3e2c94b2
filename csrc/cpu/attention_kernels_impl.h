// The CPU row kernels of the attention ops (declared in attention_kernels.h). Included by exactly
// one translation unit per CPU capability, after that unit has defined CPU_CAPABILITY (and, for
// AVX2 / AVX-512, enabled the instruction set) and named its table RNNF_ATTENTION_TABLE:
// at::vec::Vectorized<T> then has that capability's width (8 / 16 floats) and SLEEF tanh / exp.
// No include guard on purpose.
//
// Every kernel reads and writes acc_t (float or double) only, from raw pointers, and allocates
// nothing: scratch lives in the rows it writes (scores become weights in place).
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
// GCC's AVX-512 intrinsics trip -W(maybe-)uninitialized on their deliberately undefined vectors.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>

#include "attention_kernels.h"

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

// x[0, n): masked scores (scaled; -inf where masked) in, softmax weights out (attention_math.h:
// an all-masked row becomes all zeros). n > 0.
template <typename T>
void softmax_row_inplace(T* x, int64_t n) {
  using V = Vec<T>;
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

// ---------------------------------------------------------------------------------------------

template <typename T>
void additive_scores_softmax_rows(const AdditiveScoresParams<T>& p, int64_t begin, int64_t end) {
  const int64_t Tk = p.key_len, A = p.attn_size;
  if (Tk == 0) return;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / p.query_len;
    const T* q = p.query + r * A;
    const T* keys = p.key + b * Tk * A;
    const bool* mask = p.mask != nullptr ? p.mask + b * Tk : nullptr;
    T* w = p.weights + r * Tk;
    for (int64_t k = 0; k < Tk; ++k) {
      const bool valid = mask == nullptr || mask[k];
      // Masked keys are not scored at all.
      w[k] = masked_score(valid ? additive_score(q, keys + k * A, p.v, A) : T(0), valid, T(1));
    }
    softmax_row_inplace(w, Tk);
  }
}

template <typename T>
void masked_softmax_rows(const MaskedSoftmaxParams<T>& p, int64_t begin, int64_t end) {
  const int64_t Tk = p.key_len;
  if (Tk == 0) return;
  for (int64_t r = begin; r < end; ++r) {
    T* x = p.scores + r * Tk;
    if (p.mask == nullptr) {
      const Vec<T> scale(p.scale);
      at::vec::map([&](const Vec<T>& s) { return s * scale; }, x, x, Tk);
    } else {
      const bool* mask = p.mask + (r / p.query_len) * Tk;
      for (int64_t k = 0; k < Tk; ++k) x[k] = masked_score(x[k], mask[k], p.scale);
    }
    softmax_row_inplace(x, Tk);
  }
}

template <typename T>
void softmax_backward_rows(const SoftmaxBackwardParams<T>& p, int64_t begin, int64_t end) {
  using V = Vec<T>;
  const int64_t Tk = p.key_len;
  if (Tk == 0) return;
  const V scale(p.scale);
  for (int64_t r = begin; r < end; ++r) {
    const T* w = p.weights + r * Tk;
    T* g = p.grad + r * Tk;
    const V row_dot(at::vec::map2_reduce_all<T>(
        [](const V& a, const V& b) { return a * b; }, vec_sum<T>, w, g, Tk));
    at::vec::map2([&](const V& wv, const V& gv) { return softmax_backward_term(wv, gv, row_dot, scale); },
                  g, w, g, Tk);
  }
}

// The hot loop of the backward: for every (q, k) with dL/dscore != 0 (masked keys have
// weight 0 and so dL/dscore = 0: they are skipped), recompute t = tanh(q + k) over the A units
// and accumulate grad_query[q], grad_v_rows[q] and this item's share of grad_key[k].
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

template <typename T>
AttentionRowKernels<T> row_kernels() {
  return {&additive_scores_softmax_rows<T>, &masked_softmax_rows<T>, &softmax_backward_rows<T>,
          &additive_scores_backward_items<T>};
}

}  // namespace

const AttentionRowKernelTable& RNNF_ATTENTION_TABLE() {
  static const AttentionRowKernelTable table{row_kernels<float>(), row_kernels<double>()};
  return table;
}

}  // namespace cpu
}  // namespace rnnfused
