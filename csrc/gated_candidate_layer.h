// The device-independent host side of the gated-candidate LSTM layer op (math and layouts:
// rnnfused/gated_candidate_math.h; schema: registration.cpp). It reuses the step schedule, the
// checks and previous_states() of recurrent_layer.h; the device-specific piece is the
// `Pointwise` policy:
//
//   struct Pointwise {
//     template <bool kTraining, class S, class A> static void gated_lstm_forward(const GatedLstmForwardStep<S, A>&, int64_t rows);
//     template <class S, class A> static void gated_lstm_backward(const GatedLstmBackwardStep<S, A>&, int64_t rows);
//   };
//
// Per step: M recurrent GEMMs (one per source stream, h^(s) @ w_hh[s]^T into a preallocated
// (M, B, (3 + 2M)H) buffer) and one pointwise pass. The x-side projection of every step is the
// caller's (one GEMM for the whole sequence, outside the op). Weight gradients are one batched
// GEMM after the reverse loop.
#pragma once

#include "recurrent_layer.h"
#include "rnnfused/gated_candidate_math.h"

namespace rnnfused {

// Sizes of a gated-candidate layer, read off w_hh (M, (3 + 2M)H, H) and checked against x_proj.
struct GatedSizes {
  int64_t streams;  // M
  int64_t hidden;   // H
};

// x_proj is (T, B, M, 5H) dense or (N, M, 5H) packed; returns it as (T, B, M*5H) or (N, M*5H),
// the 3-D / 2-D shapes make_schedule() expects.
inline Tensor check_gated_input(const Tensor& x_proj, const Tensor& w_hh, const OptTensor& batch_sizes,
                                GatedSizes& sz) {
  check_floating(x_proj);
  check_same_device_and_dtype(x_proj, w_hh, "w_hh");
  TORCH_CHECK(w_hh.dim() == 3 && w_hh.size(0) > 0 && w_hh.size(2) > 0,
      "rnnfused: w_hh must be 3-D (streams, (3 + 2*streams) * hidden_size, hidden_size), got ",
      w_hh.sizes());
  sz.streams = w_hh.size(0);
  sz.hidden = w_hh.size(2);
  const int64_t M = sz.streams, H = sz.hidden;
  check_shape(w_hh, {M, gated_rec_cols(M, H), H}, "w_hh");
  const int64_t expected_dim = batch_sizes.has_value() ? 3 : 4;
  TORCH_CHECK(x_proj.dim() == expected_dim, "rnnfused: x_proj must be ",
      batch_sizes.has_value() ? "3-D (N, streams, 5 * hidden_size) with batch_sizes"
                              : "4-D (T, B, streams, 5 * hidden_size)",
      ", got ", x_proj.dim(), "-D");
  TORCH_CHECK(x_proj.size(-2) == M && x_proj.size(-1) == gated_x_cols(H),
      "rnnfused: x_proj must end in (", M, ", ", gated_x_cols(H), ") for w_hh of ", M,
      " streams of hidden size ", H, ", got ", x_proj.sizes());
  return x_proj.flatten(-2);
}

inline void check_gated_state(const Tensor& x_proj, const Tensor& state, int64_t B, const GatedSizes& sz,
                              const char* name) {
  check_same_device_and_dtype(x_proj, state, name);
  check_shape(state, {B, sz.streams, sz.hidden}, name);
}

template <typename Pointwise>
std::tuple<Tensor, Tensor, Tensor, Tensor> gated_candidate_lstm_layer_forward_impl(
    const Tensor& x_proj, const Tensor& w_hh_, const Tensor& h0, const Tensor& c0,
    const OptTensor& batch_sizes, bool reverse, bool training) {
  const OpScope scope(x_proj);
  GatedSizes sz;
  const Tensor x_flat = check_gated_input(x_proj, w_hh_, batch_sizes, sz);
  const StepSchedule sched = make_schedule(x_flat, batch_sizes, reverse);
  const int64_t N = sched.total_rows, B = sched.max_batch, M = sz.streams, H = sz.hidden;
  check_gated_state(x_proj, h0, B, sz, "h0");
  check_gated_state(x_proj, c0, B, sz, "c0");
  const Tensor w_hh = w_hh_.contiguous();
  const auto acc_dtype = at::toOpMathType(x_proj.scalar_type());

  // Workspace per stream row: the x-side row (5H), widened in training to the full
  // (5 + 2M)H row that backward reads.
  const int64_t ws_stream_ld = training ? gated_ws_cols(M, H) : gated_x_cols(H);
  Tensor ws = at::empty({N, M, ws_stream_ld}, x_proj.options());
  ws.narrow(2, 0, gated_x_cols(H)).copy_(x_flat.reshape({N, M, gated_x_cols(H)}));
  const int64_t rec_cols = gated_rec_cols(M, H);
  Tensor rec = at::empty({M, B, rec_cols}, x_proj.options());
  Tensor output = at::empty({N, M, H}, x_proj.options());
  Tensor h_state = h0.contiguous().clone();               // (B, M, H)
  Tensor c_state = c0.to(acc_dtype).contiguous().clone();  // (B, M, H) in acc_t

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_proj.scalar_type(),
                                  "gated_candidate_lstm_layer_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t k = 0; k < sched.steps(); ++k) {
      const int64_t t = sched.time_at(k), rows = sched.batch_sizes[t], off = sched.offsets[t];
      for (int64_t s = 0; s < M; ++s) {
        Tensor rec_s = rec.select(0, s).narrow(0, 0, rows);
        at::mm_out(rec_s, h_state.narrow(0, 0, rows).select(1, s), w_hh.select(0, s).t());
      }
      GatedLstmForwardStep<scalar_t, acc_t> p;
      p.ws = ws.mutable_data_ptr<scalar_t>() + off * M * ws_stream_ld;
      p.ws_stream_ld = ws_stream_ld;
      p.rec = rec.const_data_ptr<scalar_t>();
      p.rec_source_stride = B * rec_cols;
      p.c_state = c_state.mutable_data_ptr<acc_t>();
      p.h_out = output.mutable_data_ptr<scalar_t>() + off * M * H;
      p.h_state = h_state.mutable_data_ptr<scalar_t>();
      p.streams = M;
      p.hidden_size = H;
      if (training) {
        Pointwise::template gated_lstm_forward<true>(p, rows);
      } else {
        Pointwise::template gated_lstm_forward<false>(p, rows);
      }
    }
  });

  const Tensor out = batch_sizes.has_value() ? output : output.view({x_proj.size(0), x_proj.size(1), M, H});
  const Tensor workspace = training ? ws : at::empty({0}, x_proj.options());
  return {out, h_state, c_state.to(x_proj.scalar_type()), workspace};
}

template <typename Pointwise>
std::tuple<Tensor, Tensor, Tensor, Tensor> gated_candidate_lstm_layer_backward_impl(
    const Tensor& grad_output_, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& x_proj,
    const Tensor& w_hh_, const Tensor& h0_, const Tensor& c0_, const Tensor& output_,
    const Tensor& workspace, const OptTensor& batch_sizes, bool reverse) {
  const OpScope scope(x_proj);
  GatedSizes sz;
  const Tensor x_flat = check_gated_input(x_proj, w_hh_, batch_sizes, sz);
  const StepSchedule sched = make_schedule(x_flat, batch_sizes, reverse);
  const int64_t N = sched.total_rows, B = sched.max_batch, M = sz.streams, H = sz.hidden;
  check_gated_state(x_proj, h0_, B, sz, "h0");
  check_gated_state(x_proj, c0_, B, sz, "c0");
  check_gated_state(x_proj, grad_h_n, B, sz, "grad_h_n");
  check_gated_state(x_proj, grad_c_n, B, sz, "grad_c_n");
  TORCH_CHECK(workspace.numel() == N * M * gated_ws_cols(M, H),
      "rnnfused: gated_candidate_lstm_layer_backward needs the workspace of a forward run with training=True");
  check_same_device_and_dtype(x_proj, workspace, "workspace");
  TORCH_CHECK(output_.numel() == N * M * H, "rnnfused: output must have ", N * M * H,
      " elements (", N, " rows of ", M, " x ", H, "), got ", output_.numel());
  TORCH_CHECK(grad_output_.numel() == N * M * H, "rnnfused: grad_output must have ", N * M * H,
      " elements, got ", grad_output_.numel());
  check_same_device_and_dtype(x_proj, output_, "output");
  check_same_device_and_dtype(x_proj, grad_output_, "grad_output");

  const Tensor w_hh = w_hh_.contiguous();
  const Tensor ws = workspace.contiguous();
  const Tensor output = output_.reshape({N, M * H}).contiguous();
  const Tensor grad_output = grad_output_.reshape({N, M * H}).contiguous();
  const Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const auto acc_dtype = at::toOpMathType(x_proj.scalar_type());
  const int64_t ws_cols = gated_ws_cols(M, H), rec_cols = gated_rec_cols(M, H);

  Tensor grad_x = at::empty({N, M, gated_x_cols(H)}, x_proj.options());
  Tensor grad_rec = at::empty({M, N, rec_cols}, x_proj.options());
  Tensor grad_h_state = grad_h_n.contiguous().clone();                // (B, M, H) dL/dh carried back
  Tensor grad_c_state = grad_c_n.to(acc_dtype).contiguous().clone();  // (B, M, H) in acc_t

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_proj.scalar_type(),
                                  "gated_candidate_lstm_layer_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* ws_ptr = ws.const_data_ptr<scalar_t>();
    for (int64_t k = sched.steps() - 1; k >= 0; --k) {
      const int64_t t = sched.time_at(k), rows = sched.batch_sizes[t], off = sched.offsets[t];
      const int64_t prev = sched.previous_time(t);
      GatedLstmBackwardStep<scalar_t, acc_t> p;
      p.ws = ws_ptr + off * M * ws_cols;
      p.ws_prev = prev >= 0 ? ws_ptr + sched.offsets[prev] * M * ws_cols : nullptr;
      p.prev_rows = sched.carried_rows(t);
      p.c_init = c0.const_data_ptr<scalar_t>();
      p.grad_h = grad_output.const_data_ptr<scalar_t>() + off * M * H;
      p.grad_h_extra = grad_h_state.const_data_ptr<scalar_t>();
      p.grad_c = grad_c_state.mutable_data_ptr<acc_t>();
      p.grad_x = grad_x.mutable_data_ptr<scalar_t>() + off * M * gated_x_cols(H);
      p.grad_rec = grad_rec.mutable_data_ptr<scalar_t>() + off * rec_cols;
      p.grad_rec_source_stride = N * rec_cols;
      p.streams = M;
      p.hidden_size = H;
      Pointwise::gated_lstm_backward(p, rows);
      // dL/dh^(s)_{t-1} = dL/d(recurrent row of s) @ w_hh[s], for the rows active at t.
      for (int64_t s = 0; s < M; ++s) {
        Tensor grad_h_prev = grad_h_state.narrow(0, 0, rows).select(1, s);
        at::mm_out(grad_h_prev, grad_rec.select(0, s).narrow(0, off, rows), w_hh.select(0, s));
      }
    }
  });

  // grad_w_hh[s] = sum over rows of dL/d(recurrent row of s)^T h^(s)_{t-1}: one batched GEMM.
  const Tensor prev_states = previous_states<AtenGemm>(output, h0.view({B, M * H}), sched);  // (N, M*H)
  const Tensor grad_w_hh = at::bmm(grad_rec.transpose(1, 2), prev_states.view({N, M, H}).transpose(0, 1));
  return {grad_x.view(x_proj.sizes()), grad_w_hh, grad_h_state, grad_c_state.to(x_proj.scalar_type())};
}

}  // namespace rnnfused
