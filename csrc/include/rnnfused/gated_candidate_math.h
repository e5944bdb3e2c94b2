// Gate math of the gated-candidate LSTM: M LSTM "streams" that run side by side over one
// sequence, whose candidate cell reads the previous hidden state of every stream through a
// gate (Liu, Qiu & Huang, IJCAI 2016, Coupled-Layer model; with M = 1 the task LSTM of their
// Shared-Layer model). Shared by the CPU kernels (g++) and the CUDA kernels (nvcc), like
// gate_math.h, whose activations and conventions it uses.
//
// For stream m in [0, M), hidden unit j in [0, H), with x-side pre-activations (input projection
// plus bias, computed for all steps before the recurrence) and h^(s) = h_{t-1} of stream s:
//
//   i = sigmoid(x_i + U_i^(m) h^(m))      f = sigmoid(x_f + U_f^(m) h^(m))
//   o = sigmoid(x_o + U_o^(m) h^(m))
//   g^(s->m) = sigmoid(x_q + U_g^(s->m) h^(s))            for every source stream s
//   u^(s->m) = U_c^(s->m) h^(s)
//   z = tanh(x_z + sum_s g^(s->m) * u^(s->m))             (the candidate cell c~)
//   c_t = f * c_{t-1} + i * z            h_t = o * tanh(c_t)
//
// Layouts, per batch row, in blocks of H values (all row-major, contiguous):
//   x-side row of stream m, 5H:               i | f | o | z | q
//   recurrent row of source s, (3 + 2M)H:     i | f | o | g^(s->0) .. g^(s->M-1) | u^(s->0) .. u^(s->M-1)
//     (the GEMM h^(s) @ w_hh[s]^T: source s's own i|f|o rows, then what s sends to every stream)
//   workspace row of stream m, (5 + 2M)H:     i | f | o | z | g^(0->m) .. g^(M-1->m) | u^(0->m) .. u^(M-1->m) | c_t
//     (training only; it starts as the x-side row in its first 5H and is overwritten in place
//      with activations: each element reads its x-side values before it writes)
// Note the order i | f | o | z, not torch.nn.LSTM's i | f | g | o: the candidate is not a plain
// gate here, and keeping i | f | o first makes the x-side and recurrent rows line up.
#pragma once

#include <cstdint>

#include "rnnfused/gate_math.h"

namespace rnnfused {

// Row widths of the layouts above.
RNNF_HOST_DEVICE int64_t gated_x_cols(int64_t H) { return 5 * H; }
RNNF_HOST_DEVICE int64_t gated_rec_cols(int64_t M, int64_t H) { return (3 + 2 * M) * H; }
RNNF_HOST_DEVICE int64_t gated_ws_cols(int64_t M, int64_t H) { return (5 + 2 * M) * H; }

// Forward, one time step over `rows` batch rows; element (row, k) with k = m * H + j.
//
//   ws[row, m, :]       in : x-side pre-activations i|f|o|z|q in the first 5H of each stream row
//                       out: the workspace row of stream m (only when kTraining)
//   ws_stream_ld        values per stream row of ws: 5H (inference) or (5 + 2M)H (training)
//   rec[s, row, :]      recurrent rows of source s, row stride (3 + 2M)H, source stride rec_source_stride
//   c_state[row, m, j]  in: c_{t-1}; out: c_t   (acc_t, row stride M*H)
//   h_out[row, m, j]    out: h_t (the layer output rows of this step, row stride M*H)
//   h_state[row, m, j]  out: h_t again (the recurrent state buffer, row stride M*H)
template <typename scalar_t, typename acc_t>
struct GatedLstmForwardStep {
  scalar_t* ws;
  int64_t ws_stream_ld;
  const scalar_t* rec;
  int64_t rec_source_stride;
  acc_t* c_state;
  scalar_t* h_out;
  scalar_t* h_state;
  int64_t streams;      // M
  int64_t hidden_size;  // H
};

template <bool kTraining, typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void gated_lstm_forward_element(
    const GatedLstmForwardStep<scalar_t, acc_t>& p, int64_t row, int64_t k) {
  const int64_t H = p.hidden_size, M = p.streams;
  const int64_t m = k / H, j = k - m * H;
  const int64_t rec_cols = gated_rec_cols(M, H);
  scalar_t* w = p.ws + (row * M + m) * p.ws_stream_ld;
  const scalar_t* own = p.rec + m * p.rec_source_stride + row * rec_cols;

  const acc_t i = sigmoid(static_cast<acc_t>(w[j]) + static_cast<acc_t>(own[j]));
  const acc_t f = sigmoid(static_cast<acc_t>(w[H + j]) + static_cast<acc_t>(own[H + j]));
  const acc_t o = sigmoid(static_cast<acc_t>(w[2 * H + j]) + static_cast<acc_t>(own[2 * H + j]));
  acc_t a = static_cast<acc_t>(w[3 * H + j]);
  const acc_t q = static_cast<acc_t>(w[4 * H + j]);  // read before slot 4H is overwritten by g^(0->m)
  for (int64_t s = 0; s < M; ++s) {
    const scalar_t* src = p.rec + s * p.rec_source_stride + row * rec_cols;
    const acc_t g = sigmoid(q + static_cast<acc_t>(src[(3 + m) * H + j]));
    const acc_t u = static_cast<acc_t>(src[(3 + M + m) * H + j]);
    a += g * u;
    if (kTraining) {
      w[(4 + s) * H + j] = static_cast<scalar_t>(g);
      w[(4 + M + s) * H + j] = static_cast<scalar_t>(u);
    }
  }
  const acc_t z = tanh_(a);
  acc_t& c = p.c_state[row * M * H + k];
  c = f * c + i * z;
  const acc_t h = o * tanh_(c);
  if (kTraining) {
    w[j] = static_cast<scalar_t>(i);
    w[H + j] = static_cast<scalar_t>(f);
    w[2 * H + j] = static_cast<scalar_t>(o);
    w[3 * H + j] = static_cast<scalar_t>(z);
    w[(4 + 2 * M) * H + j] = static_cast<scalar_t>(c);
  }
  p.h_out[row * M * H + k] = static_cast<scalar_t>(h);
  p.h_state[row * M * H + k] = static_cast<scalar_t>(h);
}

// Backward, one time step (the reverse of GatedLstmForwardStep); element (row, k = m * H + j).
//
//   ws[row, m, :]            this step's workspace rows, (5 + 2M)H per stream
//   ws_prev[row, m, :]       the previous step's workspace rows (c_{t-1}) for rows < prev_rows ...
//   c_init[row, m, j]        ... and c0 for rows >= prev_rows (rows that start at this step)
//   grad_h[row, m, j]        dL/dh_t from this step's output, or nullptr (zero)
//   grad_h_extra[row, m, j]  dL/dh_t carried from later steps
//   grad_c[row, m, j]        in: dL/dc_t from later steps; out: dL/dc_{t-1}   (acc_t)
//   grad_x[row, m, :]        out: dL/d(x-side pre-activations) i|f|o|z|q, 5H per stream
//   grad_rec[s, row, :]      out: dL/d(recurrent row of source s): stream m writes its own
//                            i|f|o block in source m's row and its g / u entries in every
//                            source's row, so no two elements write one location.
// All per-stream rows have row stride M * (width); grad_rec rows have stride (3 + 2M)H.
template <typename scalar_t, typename acc_t>
struct GatedLstmBackwardStep {
  const scalar_t* ws;
  const scalar_t* ws_prev;  // may be nullptr when prev_rows == 0
  int64_t prev_rows;
  const scalar_t* c_init;
  const scalar_t* grad_h;   // may be nullptr
  const scalar_t* grad_h_extra;
  acc_t* grad_c;
  scalar_t* grad_x;
  scalar_t* grad_rec;
  int64_t grad_rec_source_stride;
  int64_t streams;      // M
  int64_t hidden_size;  // H
};

template <typename scalar_t, typename acc_t>
RNNF_HOST_DEVICE void gated_lstm_backward_element(
    const GatedLstmBackwardStep<scalar_t, acc_t>& p, int64_t row, int64_t k) {
  const int64_t H = p.hidden_size, M = p.streams;
  const int64_t m = k / H, j = k - m * H;
  const int64_t ws_cols = gated_ws_cols(M, H), rec_cols = gated_rec_cols(M, H);
  const int64_t c_slot = (4 + 2 * M) * H + j;
  const scalar_t* w = p.ws + (row * M + m) * ws_cols;
  const acc_t i = static_cast<acc_t>(w[j]);
  const acc_t f = static_cast<acc_t>(w[H + j]);
  const acc_t o = static_cast<acc_t>(w[2 * H + j]);
  const acc_t z = static_cast<acc_t>(w[3 * H + j]);
  const acc_t c = static_cast<acc_t>(w[c_slot]);
  const acc_t c_prev = row < p.prev_rows
      ? static_cast<acc_t>(p.ws_prev[(row * M + m) * ws_cols + c_slot])
      : static_cast<acc_t>(p.c_init[row * M * H + k]);
  acc_t dh = static_cast<acc_t>(p.grad_h_extra[row * M * H + k]);
  if (p.grad_h != nullptr) dh += static_cast<acc_t>(p.grad_h[row * M * H + k]);

  const acc_t tc = tanh_(c);
  acc_t& dc_ref = p.grad_c[row * M * H + k];
  const acc_t dc = dc_ref + dh * o * (acc_t(1) - tc * tc);
  dc_ref = dc * f;  // dL/dc_{t-1}

  const acc_t di = dc * z * i * (acc_t(1) - i);
  const acc_t df = dc * c_prev * f * (acc_t(1) - f);
  const acc_t d_o = dh * tc * o * (acc_t(1) - o);
  const acc_t da = dc * i * (acc_t(1) - z * z);  // dL/d(candidate pre-activation)
  acc_t dq = acc_t(0);
  for (int64_t s = 0; s < M; ++s) {
    const acc_t g = static_cast<acc_t>(w[(4 + s) * H + j]);
    const acc_t u = static_cast<acc_t>(w[(4 + M + s) * H + j]);
    const acc_t dg = da * u * g * (acc_t(1) - g);  // dL/d(gate pre-activation of s->m)
    dq += dg;
    scalar_t* gr = p.grad_rec + s * p.grad_rec_source_stride + row * rec_cols;
    gr[(3 + m) * H + j] = static_cast<scalar_t>(dg);
    gr[(3 + M + m) * H + j] = static_cast<scalar_t>(da * g);
  }
  scalar_t* gx = p.grad_x + (row * M + m) * gated_x_cols(H);
  gx[j] = static_cast<scalar_t>(di);
  gx[H + j] = static_cast<scalar_t>(df);
  gx[2 * H + j] = static_cast<scalar_t>(d_o);
  gx[3 * H + j] = static_cast<scalar_t>(da);
  gx[4 * H + j] = static_cast<scalar_t>(dq);
  scalar_t* own = p.grad_rec + m * p.grad_rec_source_stride + row * rec_cols;
  own[j] = static_cast<scalar_t>(di);
  own[H + j] = static_cast<scalar_t>(df);
  own[2 * H + j] = static_cast<scalar_t>(d_o);
}

}  // namespace rnnfused
