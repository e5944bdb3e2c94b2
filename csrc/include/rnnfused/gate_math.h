// Gate math of the LSTM and the vanilla RNN, shared by the CPU kernels (g++) and the CUDA
// kernels (nvcc). Framework-free: plain pointers, plain structs, no ATen.
//
// Two levels:
// - the cell math on values, lstm_cell_forward_math / lstm_cell_backward_math / activate,
//   templated on the value type V: a float or double, or a SIMD vector of them (the CPU's
//   vectorized pass runs the same templates on at::vec::Vectorized);
// - per-element bodies  *_element(params, row, j)  (row in [0, rows), j in [0, hidden_size))
//   that read one element through a params struct (pointers to the rows of one time step plus
//   row strides), run the math in acc_t and write the results. The CUDA kernels map one thread
//   to one (row, j); the CPU runs the same bodies where it has no AVX2, and in
//   tests/test_gate_math over every element of every step.
//
// Conventions
// - Matrices are row-major: element (r, c) of a matrix with row stride ld is ptr[r * ld + c].
// - LSTM gate blocks are ordered i | f | g | o along a row of 4*H values, as in torch.nn.LSTM.
// - scalar_t is the storage type (double, float, at::Half, at::BFloat16); acc_t is the type
//   the arithmetic runs in (float for the 16-bit types).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define RNNF_HOST_DEVICE __host__ __device__ __forceinline__
#else
// Internal linkage on the host: the CPU's AVX2 / AVX-512 kernel files compile these bodies with
// wider instruction sets, and their copies must never stand in for the baseline ones.
#define RNNF_HOST_DEVICE static inline
#endif

namespace rnnfused {

// ---------------------------------------------------------------------------------------------
// Activations, written once for every value type V the math runs on: float and double (CPU
// scalar code and CUDA threads) use the overloads; a SIMD vector type such as ATen's
// at::vec::Vectorized<float> (the CPU's vectorized pointwise pass) supplies the members
// exp() / tanh() / gt() and a free maximum() that the generic templates call. Its exp and tanh
// go through VectorMath<V>, which a CPU kernel file may specialize (cpu/vec_math.h does for float).

template <typename V>
struct VectorMath {
  static V exp(const V& x) { return x.exp(); }
  static V tanh(const V& x) { return x.tanh(); }
};

template <typename V> RNNF_HOST_DEVICE V exp_(const V& x) { return VectorMath<V>::exp(x); }
template <typename V> RNNF_HOST_DEVICE V tanh_(const V& x) { return VectorMath<V>::tanh(x); }
template <typename V> RNNF_HOST_DEVICE V relu_(const V& x) { return maximum(x, V(0)); }
template <typename V> RNNF_HOST_DEVICE V positive_(const V& x) { return x.gt(V(0)); }

RNNF_HOST_DEVICE float exp_(float x) { return expf(x); }
RNNF_HOST_DEVICE double exp_(double x) { return exp(x); }
RNNF_HOST_DEVICE float tanh_(float x) { return tanhf(x); }
RNNF_HOST_DEVICE double tanh_(double x) { return tanh(x); }
RNNF_HOST_DEVICE float relu_(float x) { return x > 0.f ? x : 0.f; }
RNNF_HOST_DEVICE double relu_(double x) { return x > 0.0 ? x : 0.0; }
RNNF_HOST_DEVICE float positive_(float x) { return x > 0.f ? 1.f : 0.f; }
RNNF_HOST_DEVICE double positive_(double x) { return x > 0.0 ? 1.0 : 0.0; }

// 1 / (1 + e^-x): e^-x overflows to +inf for x < -88 (float), giving exactly 0, never NaN.
template <typename V>
RNNF_HOST_DEVICE V sigmoid(const V& x) {
  return V(1) / (V(1) + exp_(V(0) - x));
}

enum class Activation : int { Tanh = 0, Relu = 1 };

template <Activation act, typename V>
RNNF_HOST_DEVICE V activate(const V& x) {
  if constexpr (act == Activation::Tanh) return tanh_(x);
  else return relu_(x);
}

// d activation / d x, given y = activation(x). Relu: 1 where y > 0 (torch's threshold_backward).
template <Activation act, typename V>
RNNF_HOST_DEVICE V activate_grad_from_output(const V& y) {
  if constexpr (act == Activation::Tanh) return V(1) - y * y;
  else return positive_(y);
}

// ---------------------------------------------------------------------------------------------
// The LSTM cell on values (one hidden unit, or one SIMD vector of them).

// in: gate pre-activations i, f, g, o and c = c_{t-1};
// out: i, f, g, o as activations, c = c_t, h = h_t.
// In two parts, which the CPU's vectorized pass runs as two passes over a row's units:
// lstm_gates_and_cell_math (activations and c_t), then lstm_hidden_math (h_t = o tanh(c_t)).
template <typename V>
RNNF_HOST_DEVICE void lstm_gates_and_cell_math(V& i, V& f, V& g, V& o, V& c) {
  i = sigmoid(i);
  f = sigmoid(f);
  g = tanh_(g);
  o = sigmoid(o);
  c = f * c + i * g;
}

template <typename V>
RNNF_HOST_DEVICE V lstm_hidden_math(const V& o, const V& c) {
  return o * tanh_(c);
}

template <typename V>
RNNF_HOST_DEVICE void lstm_cell_forward_math(V& i, V& f, V& g, V& o, V& c, V& h) {
  lstm_gates_and_cell_math(i, f, g, o, c);
  h = lstm_hidden_math(o, c);
}

// in: activations i, f, g, o, the cell states c_t and c_{t-1}, dh = dL/dh_t, dc = dL/dc_t
// carried from later steps; out: dc = dL/dc_{t-1} and the pre-activation gradients d*.
template <typename V>
RNNF_HOST_DEVICE void lstm_cell_backward_math(const V& i, const V& f, const V& g, const V& o,
                                              const V& c, const V& c_prev, const V& dh, V& dc,
                                              V& di, V& df, V& dg, V& do_) {
  const V tc = tanh_(c);
  const V dc_t = dc + dh * o * (V(1) - tc * tc);
  dc = dc_t * f;
  di = dc_t * g * i * (V(1) - i);
  df = dc_t * c_prev * f * (V(1) - f);
  dg = dc_t * i * (V(1) - g * g);
  do_ = dh * tc * o * (V(1) - o);
}

// ---------------------------------------------------------------------------------------------
// LSTM, forward, one time step over `rows` batch rows.
//
//   gates[row, k*H + j]  in : pre-activation of gate k without bias (input projection +
//                              recurrent GEMM)
//                        out: activation of gate k (only when kTraining: backward reads them)
//   bias_ih[k*H + j],    in : b_ih and b_hh, both added to the pre-activations here; either
//   bias_hh[k*H + j]          may be nullptr
//   c_state[row, j]      in : c_{t-1};  out: c_t            (acc_t, contiguous rows of H)
//   c_saved[row, j]      out: c_t for backward              (only when kTraining)
//   h_out[row, j]        out: h_t = o * tanh(c_t)
//   h_state[row, j]      out: h_t again (the recurrent state buffer), or nullptr
template <typename scalar_t, typename acc_t>
struct LstmForwardStep {
  scalar_t* gates;
  int64_t gates_ld;
  const scalar_t* bias_ih;  // may be nullptr
  const scalar_t* bias_hh;  // may be nullptr
  acc_t* c_state;
  scalar_t* c_saved;
  int64_t c_saved_ld;
  scalar_t* h_out;
  int64_t h_out_ld;
  scalar_t* h_state;  // may be nullptr; row stride hidden_size
  int64_t hidden_size;
};

// i, f, g, o += bias[j], bias[H + j], bias[2H + j], bias[3H + j]; nothing for a null bias.
template <typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void add_lstm_bias(const scalar_t* bias, int64_t H, int64_t j, acc_t& i, acc_t& f, acc_t& g,
                                    acc_t& o) {
  if (bias == nullptr) return;
  i += static_cast<acc_t>(bias[j]);
  f += static_cast<acc_t>(bias[H + j]);
  g += static_cast<acc_t>(bias[2 * H + j]);
  o += static_cast<acc_t>(bias[3 * H + j]);
}

template <bool kTraining, typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void lstm_forward_element(
    const LstmForwardStep<scalar_t, acc_t>& p, int64_t row, int64_t j) {
  const int64_t H = p.hidden_size;
  scalar_t* gates = p.gates + row * p.gates_ld;
  acc_t i = static_cast<acc_t>(gates[j]);
  acc_t f = static_cast<acc_t>(gates[H + j]);
  acc_t g = static_cast<acc_t>(gates[2 * H + j]);
  acc_t o = static_cast<acc_t>(gates[3 * H + j]);
  add_lstm_bias(p.bias_ih, H, j, i, f, g, o);
  add_lstm_bias(p.bias_hh, H, j, i, f, g, o);
  acc_t& c = p.c_state[row * H + j];
  acc_t h;
  lstm_cell_forward_math(i, f, g, o, c, h);
  if (kTraining) {
    gates[j] = static_cast<scalar_t>(i);
    gates[H + j] = static_cast<scalar_t>(f);
    gates[2 * H + j] = static_cast<scalar_t>(g);
    gates[3 * H + j] = static_cast<scalar_t>(o);
    p.c_saved[row * p.c_saved_ld + j] = static_cast<scalar_t>(c);
  }
  p.h_out[row * p.h_out_ld + j] = static_cast<scalar_t>(h);
  if (p.h_state != nullptr) p.h_state[row * H + j] = static_cast<scalar_t>(h);
}

// LSTM, backward, one time step (the reverse of LstmForwardStep).
//
//   gates[row, k*H + j]        saved activations i | f | g | o of this step
//   c_saved[row, j]            saved c_t of this step
//   c_prev[row, j]             c_{t-1}, for rows < prev_rows (row stride c_prev_ld) ...
//   c_init[row, j]             ... and c0 for rows >= prev_rows (rows that start at this step)
//   grad_h[row, j]             dL/dh_t from this step's output, or nullptr (zero)
//   grad_h_extra[row, j]       dL/dh_t carried from later steps, or nullptr (row stride H)
//   grad_c[row, j]             in: dL/dc_t from later steps; out: dL/dc_{t-1}  (acc_t)
//   grad_gates[row, k*H + j]   out: dL/d(pre-activation of gate k)
template <typename scalar_t, typename acc_t>
struct LstmBackwardStep {
  const scalar_t* gates;
  int64_t gates_ld;
  const scalar_t* c_saved;
  int64_t c_saved_ld;
  const scalar_t* c_prev;
  int64_t c_prev_ld;
  int64_t prev_rows;
  const scalar_t* c_init;  // row stride hidden_size
  const scalar_t* grad_h;        // may be nullptr
  int64_t grad_h_ld;
  const scalar_t* grad_h_extra;  // may be nullptr; row stride hidden_size
  acc_t* grad_c;
  scalar_t* grad_gates;
  int64_t grad_gates_ld;
  int64_t hidden_size;
};

template <typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void lstm_backward_element(
    const LstmBackwardStep<scalar_t, acc_t>& p, int64_t row, int64_t j) {
  const int64_t H = p.hidden_size;
  const scalar_t* gates = p.gates + row * p.gates_ld;
  const acc_t c_prev = row < p.prev_rows
      ? static_cast<acc_t>(p.c_prev[row * p.c_prev_ld + j])
      : static_cast<acc_t>(p.c_init[row * H + j]);
  acc_t dh = p.grad_h != nullptr ? static_cast<acc_t>(p.grad_h[row * p.grad_h_ld + j]) : acc_t(0);
  if (p.grad_h_extra != nullptr) dh += static_cast<acc_t>(p.grad_h_extra[row * H + j]);
  acc_t di, df, dg, do_;
  lstm_cell_backward_math(static_cast<acc_t>(gates[j]), static_cast<acc_t>(gates[H + j]),
                          static_cast<acc_t>(gates[2 * H + j]), static_cast<acc_t>(gates[3 * H + j]),
                          static_cast<acc_t>(p.c_saved[row * p.c_saved_ld + j]), c_prev, dh,
                          p.grad_c[row * H + j], di, df, dg, do_);
  scalar_t* grad_gates = p.grad_gates + row * p.grad_gates_ld;
  grad_gates[j] = static_cast<scalar_t>(di);
  grad_gates[H + j] = static_cast<scalar_t>(df);
  grad_gates[2 * H + j] = static_cast<scalar_t>(dg);
  grad_gates[3 * H + j] = static_cast<scalar_t>(do_);
}

// ---------------------------------------------------------------------------------------------
// Vanilla RNN, forward, one time step:  h_t = act(pre + bias), pre = input projection + W_hh h.
//
//   pre[row, j]       pre-activation without bias (read only)
//   bias_ih[j],       b_ih and b_hh; either may be nullptr
//   bias_hh[j]
//   h_out[row, j]     out: h_t
//   h_state[row, j]   out: h_t again (the recurrent state buffer), or nullptr
template <typename scalar_t>
struct RnnForwardStep {
  const scalar_t* pre;
  int64_t pre_ld;
  const scalar_t* bias_ih;  // may be nullptr
  const scalar_t* bias_hh;  // may be nullptr
  scalar_t* h_out;
  int64_t h_out_ld;
  scalar_t* h_state;  // may be nullptr; row stride hidden_size
  int64_t hidden_size;
};

template <Activation act, typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void rnn_forward_element(const RnnForwardStep<scalar_t>& p, int64_t row, int64_t j) {
  acc_t pre = static_cast<acc_t>(p.pre[row * p.pre_ld + j]);
  if (p.bias_ih != nullptr) pre += static_cast<acc_t>(p.bias_ih[j]);
  if (p.bias_hh != nullptr) pre += static_cast<acc_t>(p.bias_hh[j]);
  const scalar_t h = static_cast<scalar_t>(activate<act>(pre));
  p.h_out[row * p.h_out_ld + j] = h;
  if (p.h_state != nullptr) p.h_state[row * p.hidden_size + j] = h;
}

// Vanilla RNN, backward, one time step:
//   grad_pre[row, j] = (grad_h[row, j] + grad_h_extra[row, j]) * act'(h[row, j])
template <typename scalar_t>
struct RnnBackwardStep {
  const scalar_t* h;  // h_t of this step (the layer output rows)
  int64_t h_ld;
  const scalar_t* grad_h;        // may be nullptr
  int64_t grad_h_ld;
  const scalar_t* grad_h_extra;  // may be nullptr; row stride hidden_size
  scalar_t* grad_pre;
  int64_t grad_pre_ld;
  int64_t hidden_size;
};

template <Activation act, typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void rnn_backward_element(const RnnBackwardStep<scalar_t>& p, int64_t row, int64_t j) {
  acc_t dh = p.grad_h != nullptr ? static_cast<acc_t>(p.grad_h[row * p.grad_h_ld + j]) : acc_t(0);
  if (p.grad_h_extra != nullptr) dh += static_cast<acc_t>(p.grad_h_extra[row * p.hidden_size + j]);
  const acc_t h = static_cast<acc_t>(p.h[row * p.h_ld + j]);
  p.grad_pre[row * p.grad_pre_ld + j] = static_cast<scalar_t>(dh * activate_grad_from_output<act>(h));
}

}  // namespace rnnfused
