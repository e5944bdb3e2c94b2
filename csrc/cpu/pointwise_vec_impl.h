// The body of the vectorized pointwise passes; included by pointwise_avx2.cpp and
// pointwise_avx512.cpp with CPU_CAPABILITY and RNNF_VEC_NAMESPACE defined (see pointwise_vec.h).
// Each function handles rows [begin, end) of one time step: full SIMD vectors along the hidden
// units, then the scalar element bodies for the remaining H % Vec::size() units.
#include <ATen/cpu/vec/vec.h>

#include <type_traits>

#include "pointwise_vec.h"

namespace rnnfused {
namespace RNNF_VEC_NAMESPACE {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// Vec<A>::size() values stored as S, loaded into / stored from a vector of A (the 16-bit types
// widen to float, and round back to nearest even on store).
template <typename A, typename S>
Vec<A> load(const S* p) {
  if constexpr (std::is_same_v<S, A>) {
    return Vec<A>::loadu(p);
  } else {
    static_assert(std::is_same_v<A, float>, "16-bit storage computes in float");
    Vec<float> v;
    if constexpr (std::is_same_v<S, at::BFloat16>) {
      at::vec::load_fp32_from_bf16(p, v);
    } else {
      at::vec::load_fp32_from_fp16(p, v);
    }
    return v;
  }
}

template <typename S, typename A>
void store(const Vec<A>& v, S* p) {
  if constexpr (std::is_same_v<S, A>) {
    v.store(p);
  } else {
    if constexpr (std::is_same_v<S, at::BFloat16>) {
      at::vec::convert_float_bfloat16(v, v).store(p, Vec<float>::size());
    } else {
      at::vec::convert_float_half(v, v).store(p, Vec<float>::size());
    }
  }
}

template <bool kTraining, typename S, typename A>
void lstm_forward_rows(const LstmForwardStep<S, A>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<A>::size();
  for (int64_t row = begin; row < end; ++row) {
    S* gates = p.gates + row * p.gates_ld;
    A* c_state = p.c_state + row * H;
    S* h_out = p.h_out + row * p.h_out_ld;
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      Vec<A> i = load<A>(gates + j), f = load<A>(gates + H + j);
      Vec<A> g = load<A>(gates + 2 * H + j), o = load<A>(gates + 3 * H + j);
      Vec<A> c = Vec<A>::loadu(c_state + j), h;
      lstm_cell_forward_math(i, f, g, o, c, h);
      c.store(c_state + j);
      if constexpr (kTraining) {
        store(i, gates + j), store(f, gates + H + j), store(g, gates + 2 * H + j), store(o, gates + 3 * H + j);
        store(c, p.c_saved + row * p.c_saved_ld + j);
      }
      store(h, h_out + j);
      if (p.h_state != nullptr) store(h, p.h_state + row * H + j);
    }
    for (; j < H; ++j) lstm_forward_element<kTraining>(p, row, j);
  }
}

template <typename S, typename A>
void lstm_backward_rows(const LstmBackwardStep<S, A>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<A>::size();
  for (int64_t row = begin; row < end; ++row) {
    const S* gates = p.gates + row * p.gates_ld;
    const S* c_prev = row < p.prev_rows ? p.c_prev + row * p.c_prev_ld : p.c_init + row * H;
    A* grad_c = p.grad_c + row * H;
    S* grad_gates = p.grad_gates + row * p.grad_gates_ld;
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      Vec<A> dh = p.grad_h != nullptr ? load<A>(p.grad_h + row * p.grad_h_ld + j) : Vec<A>(0);
      if (p.grad_h_extra != nullptr) dh = dh + load<A>(p.grad_h_extra + row * H + j);
      Vec<A> dc = Vec<A>::loadu(grad_c + j), di, df, dg, do_;
      lstm_cell_backward_math(load<A>(gates + j), load<A>(gates + H + j), load<A>(gates + 2 * H + j),
                              load<A>(gates + 3 * H + j), load<A>(p.c_saved + row * p.c_saved_ld + j),
                              load<A>(c_prev + j), dh, dc, di, df, dg, do_);
      dc.store(grad_c + j);
      store(di, grad_gates + j), store(df, grad_gates + H + j);
      store(dg, grad_gates + 2 * H + j), store(do_, grad_gates + 3 * H + j);
    }
    for (; j < H; ++j) lstm_backward_element(p, row, j);
  }
}

template <Activation act, typename S, typename A>
void rnn_forward_rows(const RnnForwardStep<S>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<A>::size();
  for (int64_t row = begin; row < end; ++row) {
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      const Vec<A> h = activate<act>(load<A>(p.pre + row * p.pre_ld + j));
      store(h, p.h_out + row * p.h_out_ld + j);
      if (p.h_state != nullptr) store(h, p.h_state + row * H + j);
    }
    for (; j < H; ++j) rnn_forward_element<act, S, A>(p, row, j);
  }
}

template <Activation act, typename S, typename A>
void rnn_backward_rows(const RnnBackwardStep<S>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<A>::size();
  for (int64_t row = begin; row < end; ++row) {
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      Vec<A> dh = p.grad_h != nullptr ? load<A>(p.grad_h + row * p.grad_h_ld + j) : Vec<A>(0);
      if (p.grad_h_extra != nullptr) dh = dh + load<A>(p.grad_h_extra + row * H + j);
      const Vec<A> h = load<A>(p.h + row * p.h_ld + j);
      store(Vec<A>(dh * activate_grad_from_output<act>(h)), p.grad_pre + row * p.grad_pre_ld + j);
    }
    for (; j < H; ++j) rnn_backward_element<act, S, A>(p, row, j);
  }
}

void few_rows_gemm(const float* a, int64_t lda, const float* b, int64_t K, int64_t N, float* c,
                   int64_t ldc, int64_t rows, bool accumulate) {
  using V = Vec<float>;
  constexpr int64_t kBlockVecs = 8;  // accumulators held in registers per column block
  const int64_t block = kBlockVecs * V::size();
  for (int64_t r = 0; r < rows; ++r) {
    const float* a_row = a + r * lda;
    float* c_row = c + r * ldc;
    int64_t n0 = 0;
    for (; n0 + block <= N; n0 += block) {
      V acc[kBlockVecs];
      for (int64_t v = 0; v < kBlockVecs; ++v) {
        acc[v] = accumulate ? V::loadu(c_row + n0 + v * V::size()) : V(0.f);
      }
      for (int64_t k = 0; k < K; ++k) {
        const V a_k(a_row[k]);
        const float* b_row = b + k * N + n0;
        for (int64_t v = 0; v < kBlockVecs; ++v) {
          acc[v] = at::vec::fmadd(a_k, V::loadu(b_row + v * V::size()), acc[v]);
        }
      }
      for (int64_t v = 0; v < kBlockVecs; ++v) acc[v].store(c_row + n0 + v * V::size());
    }
    for (int64_t n = n0; n < N; ++n) {  // columns past the last full block
      float sum = accumulate ? c_row[n] : 0.f;
      for (int64_t k = 0; k < K; ++k) sum += a_row[k] * b[k * N + n];
      c_row[n] = sum;
    }
  }
}

#define RNNF_INSTANTIATE(S, A)                                                                  \
  template void lstm_forward_rows<true, S, A>(const LstmForwardStep<S, A>&, int64_t, int64_t);   \
  template void lstm_forward_rows<false, S, A>(const LstmForwardStep<S, A>&, int64_t, int64_t);  \
  template void lstm_backward_rows<S, A>(const LstmBackwardStep<S, A>&, int64_t, int64_t);       \
  template void rnn_forward_rows<Activation::Tanh, S, A>(const RnnForwardStep<S>&, int64_t, int64_t);   \
  template void rnn_forward_rows<Activation::Relu, S, A>(const RnnForwardStep<S>&, int64_t, int64_t);   \
  template void rnn_backward_rows<Activation::Tanh, S, A>(const RnnBackwardStep<S>&, int64_t, int64_t); \
  template void rnn_backward_rows<Activation::Relu, S, A>(const RnnBackwardStep<S>&, int64_t, int64_t);
RNNF_INSTANTIATE(float, float)
RNNF_INSTANTIATE(double, double)
RNNF_INSTANTIATE(at::BFloat16, float)
RNNF_INSTANTIATE(at::Half, float)
#undef RNNF_INSTANTIATE

}  // namespace RNNF_VEC_NAMESPACE
}  // namespace rnnfused
