// Gate math of the LSTM and the vanilla RNN, shared by the CPU kernels (g++) and the CUDA
// kernels (nvcc). Framework-free: plain pointers, plain structs, no ATen.
//
// Each fused pointwise pass of one time step is described by a params struct (pointers to the
// rows of that step plus row strides) and a per-element body
//     *_element(params, row, j)     row in [0, rows), j in [0, hidden_size)
// that does ALL the work for hidden unit j of batch row `row`. The CPU kernel calls the body
// for every (row, j); the CUDA kernel maps one thread to one (row, j). So the CPU tests run
// exactly the arithmetic the GPU runs; only the thread-to-element mapping differs.
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
#define RNNF_HOST_DEVICE inline
#endif

namespace rnnfused {

// ---------------------------------------------------------------------------------------------
// Activations and their derivatives (derivatives expressed through the activation's output).

RNNF_HOST_DEVICE float exp_(float x) { return expf(x); }
RNNF_HOST_DEVICE double exp_(double x) { return exp(x); }
RNNF_HOST_DEVICE float tanh_(float x) { return tanhf(x); }
RNNF_HOST_DEVICE double tanh_(double x) { return tanh(x); }

// 1 / (1 + e^-x): e^-x overflows to +inf for x < -88 (float), giving exactly 0, never NaN.
template <typename acc_t>
RNNF_HOST_DEVICE acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + exp_(-x));
}

enum class Activation : int { Tanh = 0, Relu = 1 };

template <Activation act, typename acc_t>
RNNF_HOST_DEVICE acc_t activate(acc_t x) {
  if (act == Activation::Tanh) return tanh_(x);
  return x > acc_t(0) ? x : acc_t(0);
}

// d activation / d x, given y = activation(x). Relu: 1 where y > 0 (torch's threshold_backward).
template <Activation act, typename acc_t>
RNNF_HOST_DEVICE acc_t activate_grad_from_output(acc_t y) {
  if (act == Activation::Tanh) return acc_t(1) - y * y;
  return y > acc_t(0) ? acc_t(1) : acc_t(0);
}

// ---------------------------------------------------------------------------------------------
// LSTM, forward, one time step over `rows` batch rows.
//
//   gates[row, k*H + j]  in : pre-activation of gate k (input projection + bias + recurrent GEMM)
//                        out: activation of gate k (only when kTraining: backward reads them)
//   c_state[row, j]      in : c_{t-1};  out: c_t            (acc_t, contiguous rows of H)
//   c_saved[row, j]      out: c_t for backward              (only when kTraining)
//   h_out[row, j]        out: h_t = o * tanh(c_t)
//   h_state[row, j]      out: h_t again (the recurrent state buffer), or nullptr
template <typename scalar_t, typename acc_t>
struct LstmForwardStep {
  scalar_t* gates;
  int64_t gates_ld;
  acc_t* c_state;
  scalar_t* c_saved;
  int64_t c_saved_ld;
  scalar_t* h_out;
  int64_t h_out_ld;
  scalar_t* h_state;  // may be nullptr; row stride hidden_size
  int64_t hidden_size;
};

template <bool kTraining, typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void lstm_forward_element(
    const LstmForwardStep<scalar_t, acc_t>& p, int64_t row, int64_t j) {
  const int64_t H = p.hidden_size;
  scalar_t* g = p.gates + row * p.gates_ld;
  const acc_t i = sigmoid(static_cast<acc_t>(g[j]));
  const acc_t f = sigmoid(static_cast<acc_t>(g[H + j]));
  const acc_t z = tanh_(static_cast<acc_t>(g[2 * H + j]));
  const acc_t o = sigmoid(static_cast<acc_t>(g[3 * H + j]));
  acc_t& c = p.c_state[row * H + j];
  c = f * c + i * z;
  const acc_t h = o * tanh_(c);
  if (kTraining) {
    g[j] = static_cast<scalar_t>(i);
    g[H + j] = static_cast<scalar_t>(f);
    g[2 * H + j] = static_cast<scalar_t>(z);
    g[3 * H + j] = static_cast<scalar_t>(o);
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
  const scalar_t* g = p.gates + row * p.gates_ld;
  const acc_t i = static_cast<acc_t>(g[j]);
  const acc_t f = static_cast<acc_t>(g[H + j]);
  const acc_t z = static_cast<acc_t>(g[2 * H + j]);
  const acc_t o = static_cast<acc_t>(g[3 * H + j]);
  const acc_t c = static_cast<acc_t>(p.c_saved[row * p.c_saved_ld + j]);
  const acc_t c_prev = row < p.prev_rows
      ? static_cast<acc_t>(p.c_prev[row * p.c_prev_ld + j])
      : static_cast<acc_t>(p.c_init[row * H + j]);
  acc_t dh = p.grad_h != nullptr ? static_cast<acc_t>(p.grad_h[row * p.grad_h_ld + j]) : acc_t(0);
  if (p.grad_h_extra != nullptr) dh += static_cast<acc_t>(p.grad_h_extra[row * H + j]);

  const acc_t tc = tanh_(c);
  acc_t& dc_ref = p.grad_c[row * H + j];
  const acc_t dc = dc_ref + dh * o * (acc_t(1) - tc * tc);
  dc_ref = dc * f;  // dL/dc_{t-1}

  scalar_t* dg = p.grad_gates + row * p.grad_gates_ld;
  dg[j] = static_cast<scalar_t>(dc * z * i * (acc_t(1) - i));
  dg[H + j] = static_cast<scalar_t>(dc * c_prev * f * (acc_t(1) - f));
  dg[2 * H + j] = static_cast<scalar_t>(dc * i * (acc_t(1) - z * z));
  dg[3 * H + j] = static_cast<scalar_t>(dh * tc * o * (acc_t(1) - o));
}

// ---------------------------------------------------------------------------------------------
// Vanilla RNN, forward, one time step:  h_t = act(pre), pre = input projection + bias + W_hh h.
//
//   pre[row, j]       pre-activation (read only)
//   h_out[row, j]     out: h_t
//   h_state[row, j]   out: h_t again (the recurrent state buffer), or nullptr
template <typename scalar_t>
struct RnnForwardStep {
  const scalar_t* pre;
  int64_t pre_ld;
  scalar_t* h_out;
  int64_t h_out_ld;
  scalar_t* h_state;  // may be nullptr; row stride hidden_size
  int64_t hidden_size;
};

template <Activation act, typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void rnn_forward_element(const RnnForwardStep<scalar_t>& p, int64_t row, int64_t j) {
  const scalar_t h = static_cast<scalar_t>(
      activate<act>(static_cast<acc_t>(p.pre[row * p.pre_ld + j])));
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
