// The body of the vectorized pointwise passes; included by pointwise_avx2.cpp and
// pointwise_avx512.cpp with CPU_CAPABILITY and RNNF_VEC_NAMESPACE defined (see pointwise_vec.h).
// Each function handles rows [begin, end) of one time step: full SIMD vectors along the hidden
// units, then the scalar element bodies for the remaining H % Vec::size() units.
#include <ATen/cpu/vec/vec.h>

#include "pointwise_vec.h"

namespace rnnfused {
namespace RNNF_VEC_NAMESPACE {

template <typename T>
using Vec = at::vec::Vectorized<T>;

template <bool kTraining, typename T>
void lstm_forward_rows(const LstmForwardStep<T, T>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<T>::size();
  for (int64_t row = begin; row < end; ++row) {
    T* gates = p.gates + row * p.gates_ld;
    T* c_state = p.c_state + row * H;
    T* h_out = p.h_out + row * p.h_out_ld;
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      Vec<T> i = Vec<T>::loadu(gates + j), f = Vec<T>::loadu(gates + H + j);
      Vec<T> g = Vec<T>::loadu(gates + 2 * H + j), o = Vec<T>::loadu(gates + 3 * H + j);
      Vec<T> c = Vec<T>::loadu(c_state + j), h;
      lstm_cell_forward_math(i, f, g, o, c, h);
      c.store(c_state + j);
      if constexpr (kTraining) {
        i.store(gates + j), f.store(gates + H + j), g.store(gates + 2 * H + j), o.store(gates + 3 * H + j);
        c.store(p.c_saved + row * p.c_saved_ld + j);
      }
      h.store(h_out + j);
      if (p.h_state != nullptr) h.store(p.h_state + row * H + j);
    }
    for (; j < H; ++j) lstm_forward_element<kTraining>(p, row, j);
  }
}

template <typename T>
void lstm_backward_rows(const LstmBackwardStep<T, T>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<T>::size();
  for (int64_t row = begin; row < end; ++row) {
    const T* gates = p.gates + row * p.gates_ld;
    const T* c_prev = row < p.prev_rows ? p.c_prev + row * p.c_prev_ld : p.c_init + row * H;
    T* grad_c = p.grad_c + row * H;
    T* grad_gates = p.grad_gates + row * p.grad_gates_ld;
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      Vec<T> dh = p.grad_h != nullptr ? Vec<T>::loadu(p.grad_h + row * p.grad_h_ld + j) : Vec<T>(0);
      if (p.grad_h_extra != nullptr) dh = dh + Vec<T>::loadu(p.grad_h_extra + row * H + j);
      Vec<T> dc = Vec<T>::loadu(grad_c + j), di, df, dg, do_;
      lstm_cell_backward_math(Vec<T>::loadu(gates + j), Vec<T>::loadu(gates + H + j),
                              Vec<T>::loadu(gates + 2 * H + j), Vec<T>::loadu(gates + 3 * H + j),
                              Vec<T>::loadu(p.c_saved + row * p.c_saved_ld + j),
                              Vec<T>::loadu(c_prev + j), dh, dc, di, df, dg, do_);
      dc.store(grad_c + j);
      di.store(grad_gates + j), df.store(grad_gates + H + j);
      dg.store(grad_gates + 2 * H + j), do_.store(grad_gates + 3 * H + j);
    }
    for (; j < H; ++j) lstm_backward_element(p, row, j);
  }
}

template <Activation act, typename T>
void rnn_forward_rows(const RnnForwardStep<T>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<T>::size();
  for (int64_t row = begin; row < end; ++row) {
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      const Vec<T> h = activate<act>(Vec<T>::loadu(p.pre + row * p.pre_ld + j));
      h.store(p.h_out + row * p.h_out_ld + j);
      if (p.h_state != nullptr) h.store(p.h_state + row * H + j);
    }
    for (; j < H; ++j) rnn_forward_element<act, T, T>(p, row, j);
  }
}

template <Activation act, typename T>
void rnn_backward_rows(const RnnBackwardStep<T>& p, int64_t begin, int64_t end) {
  const int64_t H = p.hidden_size, width = Vec<T>::size();
  for (int64_t row = begin; row < end; ++row) {
    int64_t j = 0;
    for (; j + width <= H; j += width) {
      Vec<T> dh = p.grad_h != nullptr ? Vec<T>::loadu(p.grad_h + row * p.grad_h_ld + j) : Vec<T>(0);
      if (p.grad_h_extra != nullptr) dh = dh + Vec<T>::loadu(p.grad_h_extra + row * H + j);
      const Vec<T> h = Vec<T>::loadu(p.h + row * p.h_ld + j);
      (dh * activate_grad_from_output<act>(h)).store(p.grad_pre + row * p.grad_pre_ld + j);
    }
    for (; j < H; ++j) rnn_backward_element<act, T, T>(p, row, j);
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

#define RNNF_INSTANTIATE(T)                                                                    \
  template void lstm_forward_rows<true, T>(const LstmForwardStep<T, T>&, int64_t, int64_t);    \
  template void lstm_forward_rows<false, T>(const LstmForwardStep<T, T>&, int64_t, int64_t);   \
  template void lstm_backward_rows<T>(const LstmBackwardStep<T, T>&, int64_t, int64_t);        \
  template void rnn_forward_rows<Activation::Tanh, T>(const RnnForwardStep<T>&, int64_t, int64_t); \
  template void rnn_forward_rows<Activation::Relu, T>(const RnnForwardStep<T>&, int64_t, int64_t); \
  template void rnn_backward_rows<Activation::Tanh, T>(const RnnBackwardStep<T>&, int64_t, int64_t); \
  template void rnn_backward_rows<Activation::Relu, T>(const RnnBackwardStep<T>&, int64_t, int64_t);
RNNF_INSTANTIATE(float)
RNNF_INSTANTIATE(double)
#undef RNNF_INSTANTIATE

}  // namespace RNNF_VEC_NAMESPACE
}  // namespace rnnfused
