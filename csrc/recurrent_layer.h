// The device-independent host side of the layer and cell ops: input checks, the time-step
// schedule of dense and packed sequences, buffers, the one-off GEMMs outside the time loop and
// the gradients that follow it. A device `Policy` supplies the GEMM and runs the time loops:
//
//   struct Policy {
//     // C (M, N) = A (M, K) @ B (K, N): the input projection, input and weight gradients. C has
//     // unit column stride; A and B may be any (transposed) views.
//     static void gemm(const Tensor& C, const Tensor& A, const Tensor& B);
//     // An uninitialized buffer that never leaves the op call (the CPU reuses them across calls).
//     static Tensor scratch(at::IntArrayRef sizes, const at::TensorOptions& options);
//     // Whether the forward loop of schedule s, sizes sz and dtype computes the input projection
//     // itself (the loop gets `input` and `w_ih_kn`); otherwise project_input runs before the
//     // loop. gates_private: the caller does not keep the projected gates (LSTM inference), so
//     // the loop may hold them in buffers of its own.
//     static bool loop_projects_input(const StepSchedule& s, const LayerSizes& sz, at::ScalarType dtype,
//                                     bool gates_private);
//     template <bool kTraining, class S, class A> static void lstm_forward_loop(const LstmForwardLoop<S, A>&);
//     template <class S, class A> static void lstm_backward_loop(const LstmBackwardLoop<S, A>&);
//     template <Activation act, class S, class A> static void rnn_forward_loop(const RnnForwardLoop<S>&);
//     template <Activation act, class S, class A> static void rnn_backward_loop(const RnnBackwardLoop<S>&);
//   };
//
// StepByStep<Policy> implements the four loops as one recurrent GEMM per step accumulated in
// place into the precomputed input projection, one fused pointwise pass that adds the biases
// (gate_math.h) and, for proj_size, one projection GEMM; the policy then supplies the step GEMM
// and the passes:
//
//     // C (rows, N) (+)= A (rows, K) @ B (K, N), A and C row-major pointers with row strides, so
//     // the time loop builds no tensor views; B is step_operand(W viewed as (K, N)).
//     static Tensor step_operand(const Tensor& w_kn);
//     template <class S> static void step_gemm(const Tensor& b, const S* a, int64_t lda, S* c,
//                                              int64_t ldc, int64_t rows, bool accumulate);
//     template <bool kTraining, class S, class A> static void lstm_forward(const LstmForwardStep<S, A>&, int64_t rows);
//     template <class S, class A> static void lstm_backward(const LstmBackwardStep<S, A>&, int64_t rows);
//     template <Activation act, class S, class A> static void rnn_forward(const RnnForwardStep<S>&, int64_t rows);
//     template <Activation act, class S, class A> static void rnn_backward(const RnnBackwardStep<S>&, int64_t rows);
//
// AtenGemm is the GEMM through ATen (cuBLAS / the CPU BLAS) that policies can inherit. The GPU
// runs StepByStep; the CPU runs its own thread-team loops where its kernels serve the dtype
// (recurrent_cpu.cpp) and StepByStep elsewhere. Every buffer is allocated before the time loop;
// weight gradients are GEMMs over all steps after the reverse loop.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>

#include <string>
#include <tuple>
#include <vector>

#include "op_scope.h"
#include "rnnfused/gate_math.h"

namespace rnnfused {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// ---------------------------------------------------------------------------------------------
// Which rows of the (N, ·) row matrices belong to which time step.
struct StepSchedule {
  std::vector<int64_t> batch_sizes;  // rows active at time step t, non-increasing
  std::vector<int64_t> offsets;      // first row of time step t
  int64_t total_rows = 0;            // N
  int64_t max_batch = 0;             // B = batch_sizes[0]
  bool reverse = false;

  int64_t steps() const { return static_cast<int64_t>(batch_sizes.size()); }
  // The time step processed k-th by the forward recurrence.
  int64_t time_at(int64_t k) const { return reverse ? steps() - 1 - k : k; }
  // The time step the recurrence processed just before t, or -1 when t is the first.
  int64_t previous_time(int64_t t) const {
    const int64_t p = reverse ? t + 1 : t - 1;
    return (p < 0 || p >= steps()) ? -1 : p;
  }
  // Rows of step t whose state comes from previous_time(t); rows past them start from h0 / c0.
  int64_t carried_rows(int64_t t) const {
    const int64_t p = previous_time(t);
    return p < 0 ? 0 : std::min(batch_sizes[t], batch_sizes[p]);
  }
};

inline StepSchedule make_schedule(const Tensor& input, const OptTensor& batch_sizes, bool reverse) {
  StepSchedule s;
  s.reverse = reverse;
  if (batch_sizes.has_value()) {
    const Tensor& bs = *batch_sizes;
    TORCH_CHECK(bs.dim() == 1 && bs.device().is_cpu() && bs.scalar_type() == at::kLong,
        "rnnfused: batch_sizes must be a 1-D int64 CPU tensor, got ", bs.dim(), "-D ",
        bs.scalar_type(), " on ", bs.device());
    TORCH_CHECK(input.dim() == 2, "rnnfused: packed input must be 2-D (N, input_size), got ",
        input.dim(), "-D");
    const Tensor bs_c = bs.contiguous();
    const int64_t* p = bs_c.const_data_ptr<int64_t>();
    s.batch_sizes.assign(p, p + bs_c.numel());
  } else {
    TORCH_CHECK(input.dim() == 3, "rnnfused: dense input must be 3-D (T, B, input_size), got ",
        input.dim(), "-D");
    s.batch_sizes.assign(input.size(0), input.size(1));
  }
  // torch.nn's own message for an empty sequence.
  TORCH_CHECK(!s.batch_sizes.empty(), "Expected sequence length to be larger than 0 in RNN");
  s.offsets.resize(s.batch_sizes.size());
  for (size_t t = 0; t < s.batch_sizes.size(); ++t) {
    // Zero rows are legal (a dense batch of 0 sequences gives empty outputs, as in torch.nn).
    TORCH_CHECK(s.batch_sizes[t] >= 0, "rnnfused: batch size at step ", t, " is negative");
    TORCH_CHECK(t == 0 || s.batch_sizes[t] <= s.batch_sizes[t - 1],
        "rnnfused: batch_sizes must be non-increasing");
    s.offsets[t] = s.total_rows;
    s.total_rows += s.batch_sizes[t];
  }
  s.max_batch = s.batch_sizes[0];
  const int64_t rows = input.dim() == 2 ? input.size(0) : input.size(0) * input.size(1);
  TORCH_CHECK(rows == s.total_rows, "rnnfused: input has ", rows,
      " rows but batch_sizes sums to ", s.total_rows);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Input checks, named so that every op states its contract in one line each.

inline void check_same_device_and_dtype(const Tensor& ref, const Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "rnnfused: ", name, " is on ", t.device(),
      " but input is on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "rnnfused: ", name, " has dtype ",
      t.scalar_type(), " but input has dtype ", ref.scalar_type());
}

inline void check_shape(const Tensor& t, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK(t.sizes() == expected, "rnnfused: ", name, " must have shape ", expected,
      ", got ", t.sizes());
}

inline void check_optional(const Tensor& ref, const OptTensor& t, at::IntArrayRef shape,
                           const char* name) {
  if (!t.has_value()) return;
  check_same_device_and_dtype(ref, *t, name);
  check_shape(*t, shape, name);
}

inline void check_floating(const Tensor& input) {
  const auto st = input.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
      "rnnfused: expected a float32, float64, float16 or bfloat16 input, got ", st);
}

// Sizes of one layer-direction, read off its weights (and checked against the other tensors).
struct LayerSizes {
  int64_t input_size;   // I
  int64_t hidden_size;  // H
  int64_t state_size;   // P: proj_size, or H without projection
  int64_t gate_count;   // 4 for the LSTM, 1 for the vanilla RNN
};

inline LayerSizes check_layer(const Tensor& input, const Tensor& w_ih, const Tensor& w_hh,
                              const OptTensor& b_ih, const OptTensor& b_hh,
                              const OptTensor& w_hr, int64_t gate_count) {
  check_floating(input);
  check_same_device_and_dtype(input, w_ih, "w_ih");
  check_same_device_and_dtype(input, w_hh, "w_hh");
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % gate_count == 0 && w_ih.size(0) > 0,
      "rnnfused: w_ih must be 2-D with a positive multiple of ", gate_count, " rows, got ",
      w_ih.sizes());
  LayerSizes s;
  s.gate_count = gate_count;
  s.hidden_size = w_ih.size(0) / gate_count;
  s.input_size = w_ih.size(1);
  s.state_size = s.hidden_size;
  if (w_hr.has_value()) {
    check_same_device_and_dtype(input, *w_hr, "w_hr");
    TORCH_CHECK(w_hr->dim() == 2 && w_hr->size(1) == s.hidden_size,
        "rnnfused: w_hr must have shape (proj_size, ", s.hidden_size, "), got ", w_hr->sizes());
    s.state_size = w_hr->size(0);
  }
  TORCH_CHECK(input.size(-1) == s.input_size, "rnnfused: input has ", input.size(-1),
      " features but w_ih expects ", s.input_size);
  check_shape(w_hh, {gate_count * s.hidden_size, s.state_size}, "w_hh");
  check_optional(input, b_ih, {gate_count * s.hidden_size}, "b_ih");
  check_optional(input, b_hh, {gate_count * s.hidden_size}, "b_hh");
  return s;
}

inline void check_state(const Tensor& input, const Tensor& state, int64_t batch, int64_t size,
                        const char* name) {
  check_same_device_and_dtype(input, state, name);
  check_shape(state, {batch, size}, name);
}

inline Activation parse_nonlinearity(const std::string& name) {
  TORCH_CHECK(name == "tanh" || name == "relu",
      "rnnfused: nonlinearity must be 'tanh' or 'relu', got '", name, "'");
  return name == "tanh" ? Activation::Tanh : Activation::Relu;
}

// Runs f<act>() with the activation as a compile-time constant.
template <typename F>
void dispatch_activation(Activation act, F&& f) {
  if (act == Activation::Tanh) {
    f(std::integral_constant<Activation, Activation::Tanh>{});
  } else {
    f(std::integral_constant<Activation, Activation::Relu>{});
  }
}

// ---------------------------------------------------------------------------------------------
// GEMMs through ATen (cuBLAS on the GPU, the CPU BLAS on the host).

struct AtenGemm {
  static Tensor scratch(at::IntArrayRef sizes, const at::TensorOptions& options) { return at::empty(sizes, options); }

  static void gemm(const Tensor& C, const Tensor& A, const Tensor& B) {
    Tensor out = C;
    at::mm_out(out, A, B);
  }

  static Tensor step_operand(const Tensor& w_kn) { return w_kn; }

  // The row blocks wrapped as tensors without copying.
  template <typename scalar_t>
  static void step_gemm(const Tensor& b, const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc,
                        int64_t rows, bool accumulate) {
    const Tensor A = at::from_blob(const_cast<scalar_t*>(a), {rows, b.size(0)}, {lda, 1}, b.options());
    Tensor C = at::from_blob(c, {rows, b.size(1)}, {ldc, 1}, b.options());
    if (accumulate) {
      C.addmm_(A, b);
    } else {
      at::mm_out(C, A, b);
    }
  }
};

// out (N, G*H) = x (N, I) @ w_ih^T: the input projection of every step at once. The biases are
// not in it: the loops' pointwise passes add b_ih and b_hh, saving a pass over the rows.
template <typename Policy>
void project_input(const Tensor& out, const Tensor& x, const Tensor& w_ih) {
  Policy::gemm(out, x, w_ih.t());
}

// A bias (G*H) as the pointwise passes read it: contiguous, undefined when absent.
inline Tensor contiguous_bias(const OptTensor& b) { return b.has_value() ? b->contiguous() : Tensor(); }

template <typename T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// (N, P): for each row of step t, the recurrent state the step read, h_{t-1}: the output row
// of the previous step for carried rows, h0 for rows that start at t.
template <typename Policy>
Tensor previous_states(const Tensor& output, const Tensor& h0, const StepSchedule& s) {
  Tensor prev = Policy::scratch(output.sizes(), output.options());
  const int64_t B = s.max_batch, N = s.total_rows;
  if (N == s.steps() * B && N > B) {  // dense: two block copies, the output shifted by one step
    const int64_t first = s.reverse ? N - B : 0;    // rows of the first step processed: h0
    prev.narrow(0, first, B).copy_(h0);
    prev.narrow(0, s.reverse ? 0 : B, N - B).copy_(output.narrow(0, s.reverse ? B : 0, N - B));
    return prev;
  }
  for (int64_t t = 0; t < s.steps(); ++t) {
    const int64_t rows = s.batch_sizes[t], carried = s.carried_rows(t);
    Tensor dst = prev.narrow(0, s.offsets[t], rows);
    if (carried > 0) {
      dst.narrow(0, 0, carried).copy_(output.narrow(0, s.offsets[s.previous_time(t)], carried));
    }
    if (carried < rows) dst.narrow(0, carried, rows - carried).copy_(h0.narrow(0, carried, rows - carried));
  }
  return prev;
}

// dW (G*H, K) = grad_pre (N, G*H)^T @ inputs (N, K): one GEMM over all steps (the BLAS reads
// the transposed operand as it lies).
template <typename Policy>
Tensor weight_grad(const Tensor& grad_pre, const Tensor& inputs) {
  const Tensor grad = at::empty({grad_pre.size(1), inputs.size(1)}, grad_pre.options());
  Policy::gemm(grad, grad_pre.t(), inputs);
  return grad;
}

// Gradients of the layer's inputs and weights from dL/d(pre-activations) of every row:
// returns (grad_input (N, I), grad_w_ih, grad_w_hh, grad_bias).
template <typename Policy>
std::tuple<Tensor, Tensor, Tensor, Tensor> input_and_weight_grads(
    const Tensor& grad_pre, const Tensor& x, const Tensor& w_ih, const Tensor& prev_states) {
  Tensor grad_x = at::empty({x.size(0), x.size(1)}, x.options());
  Policy::gemm(grad_x, grad_pre, w_ih);
  return {grad_x, weight_grad<Policy>(grad_pre, x), weight_grad<Policy>(grad_pre, prev_states), grad_pre.sum(0)};
}

inline Tensor as_rows(const Tensor& t, int64_t rows) {
  return t.reshape({rows, t.size(-1)}).contiguous();
}

// ---------------------------------------------------------------------------------------------
// What a time loop reads and writes: raw pointers into buffers the op allocated (N rows of
// the schedule, B = its first batch size), the weights as tensors for the policy to lay out.

// LSTM forward. ws rows: gates 4H (in: the input projection, without biases; out, when
// training: the activations i | f | g | o) | c_t H | h_t H (proj only; training only).
template <typename S, typename A>
struct LstmForwardLoop {
  const StepSchedule* sched;
  int64_t hidden_size;  // H
  int64_t state_size;   // P
  Tensor w_hh_kn;       // (P, 4H) view of W_hh^T
  Tensor w_hr_kn;       // (H, P) view of W_hr^T; undefined without projection
  S* ws;
  int64_t ws_cols;
  const S* bias_ih;     // (4H), or nullptr
  const S* bias_hh;     // (4H), or nullptr
  // Defined when the loop computes the gates' input projection itself (Policy::loop_projects_input):
  Tensor w_ih_kn;            // (I, 4H) view of W_ih^T
  const S* input = nullptr;  // (N, I)
  S* output;            // (N, P)
  S* h_state;           // (B, P) in: h0, out: h_n
  A* c_state;           // (B, H) in: c0, out: c_n
  bool has_proj() const { return w_hr_kn.defined(); }
};

// LSTM backward, over the forward's training workspace.
template <typename S, typename A>
struct LstmBackwardLoop {
  const StepSchedule* sched;
  int64_t hidden_size, state_size;
  Tensor w_hh;           // (4H, P): dL/dh_{t-1} = dL/dgates_t @ W_hh
  Tensor w_hr;           // (P, H): dL/dh_t = dL/dr_t @ W_hr; undefined without projection
  const S* ws;
  int64_t ws_cols;
  const S* grad_output;  // (N, P), or nullptr (zero)
  const S* c0;           // (B, H)
  S* grad_gates;         // (N, 4H) out
  S* grad_r;             // (N, P) out: dL/dr_t (proj only)
  S* grad_h_state;       // (B, P) in: dL/dh_n, out: dL/dh0
  A* grad_c_state;       // (B, H) in: dL/dc_n, out: dL/dc0
  bool has_proj() const { return w_hr.defined(); }
};

// Vanilla RNN forward: pre (N, H) holds the input projection and receives the pre-activations.
template <typename S>
struct RnnForwardLoop {
  const StepSchedule* sched;
  int64_t hidden_size;
  Tensor w_hh_kn;  // (H, H) view of W_hh^T
  S* pre;          // (N, H) the input projection, without bias (written by the loop with w_ih_kn)
  const S* bias_ih;  // (H), or nullptr
  const S* bias_hh;  // (H), or nullptr
  // Defined when the loop computes the input projection itself (Policy::loop_projects_input):
  Tensor w_ih_kn;            // (I, H) view of W_ih^T
  const S* input = nullptr;  // (N, I)
  S* output;       // (N, H)
  S* h_state;      // (B, H) in: h0, out: h_n
};

template <typename S>
struct RnnBackwardLoop {
  const StepSchedule* sched;
  int64_t hidden_size;
  Tensor w_hh;            // (H, H)
  const S* output;        // (N, H): h_t
  const S* grad_output;   // (N, H), or nullptr (zero)
  S* grad_pre;            // (N, H) out
  S* grad_h_state;        // (B, H) in: dL/dh_n, out: dL/dh0
};

// The pointwise parameters of time step t, filled the same way by every loop; where the RNN's
// h_t goes is each loop's own.
//
// LSTM h_t: without projection into the output rows and into h_state (B, P) (the loop's buffer
// for the next step); with projection, before the projection GEMM reads it, into the
// workspace when training, else into h_scratch (B, H). The gates are in the rows of ws, L.ws or a
// buffer of the same layout (N, L.ws_cols).
template <bool kTraining, typename S, typename A>
LstmForwardStep<S, A> lstm_forward_step(const LstmForwardLoop<S, A>& L, int64_t t, S* h_state, S* h_scratch,
                                        S* ws) {
  const int64_t H = L.hidden_size, off = L.sched->offsets[t];
  S* ws_rows = ws + off * L.ws_cols;
  LstmForwardStep<S, A> p;
  p.gates = ws_rows;
  p.gates_ld = L.ws_cols;
  p.bias_ih = L.bias_ih;
  p.bias_hh = L.bias_hh;
  p.c_state = L.c_state;
  p.c_saved = kTraining ? ws_rows + 4 * H : nullptr;
  p.c_saved_ld = L.ws_cols;
  p.hidden_size = H;
  if (L.has_proj()) {
    p.h_out = kTraining ? ws_rows + 5 * H : h_scratch;
    p.h_out_ld = kTraining ? L.ws_cols : H;
    p.h_state = nullptr;
  } else {
    p.h_out = L.output + off * L.state_size;
    p.h_out_ld = L.state_size;
    p.h_state = h_state;
  }
  return p;
}

// dL/dh_t comes from projected_grad_h (B, H) = dL/dr_t @ W_hr with projection (the caller
// computes it first), otherwise from grad_output's rows plus the carried dL/dh_t.
template <typename S, typename A>
LstmBackwardStep<S, A> lstm_backward_step(const LstmBackwardLoop<S, A>& L, int64_t t, const S* projected_grad_h) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size, P = L.state_size, off = s.offsets[t], prev = s.previous_time(t);
  LstmBackwardStep<S, A> p;
  p.gates = L.ws + off * L.ws_cols;
  p.gates_ld = L.ws_cols;
  p.c_saved = L.ws + off * L.ws_cols + 4 * H;
  p.c_saved_ld = L.ws_cols;
  p.c_prev = prev >= 0 ? L.ws + s.offsets[prev] * L.ws_cols + 4 * H : nullptr;
  p.c_prev_ld = L.ws_cols;
  p.prev_rows = s.carried_rows(t);
  p.c_init = L.c0;
  p.grad_c = L.grad_c_state;
  p.grad_gates = L.grad_gates + off * 4 * H;
  p.grad_gates_ld = 4 * H;
  p.hidden_size = H;
  if (L.has_proj()) {
    p.grad_h = projected_grad_h;
    p.grad_h_ld = H;
    p.grad_h_extra = nullptr;
  } else {
    p.grad_h = L.grad_output != nullptr ? L.grad_output + off * P : nullptr;
    p.grad_h_ld = P;
    p.grad_h_extra = L.grad_h_state;
  }
  return p;
}

template <typename S>
RnnForwardStep<S> rnn_forward_step(const RnnForwardLoop<S>& L, int64_t t) {
  const int64_t H = L.hidden_size, off = L.sched->offsets[t];
  RnnForwardStep<S> p;
  p.pre = L.pre + off * H;
  p.pre_ld = H;
  p.bias_ih = L.bias_ih;
  p.bias_hh = L.bias_hh;
  p.h_out = L.output + off * H;
  p.h_out_ld = H;
  p.hidden_size = H;
  return p;
}

template <typename S>
RnnBackwardStep<S> rnn_backward_step(const RnnBackwardLoop<S>& L, int64_t t) {
  const int64_t H = L.hidden_size, off = L.sched->offsets[t];
  RnnBackwardStep<S> p;
  p.h = L.output + off * H;
  p.h_ld = H;
  p.grad_h = L.grad_output != nullptr ? L.grad_output + off * H : nullptr;
  p.grad_h_ld = H;
  p.grad_h_extra = L.grad_h_state;
  p.grad_pre = L.grad_pre + off * H;
  p.grad_pre_ld = H;
  p.hidden_size = H;
  return p;
}

// ---------------------------------------------------------------------------------------------
// The time loops as a sequence of per-step GEMM and pointwise calls (see the top of the file).

template <typename Policy>
struct StepByStep {
  static bool loop_projects_input(const StepSchedule& /*s*/, const LayerSizes& /*sz*/, at::ScalarType /*dtype*/,
                                  bool /*gates_private*/) {
    return false;
  }

  template <bool kTraining, typename scalar_t, typename acc_t>
  static void lstm_forward_loop(const LstmForwardLoop<scalar_t, acc_t>& L) {
    const StepSchedule& sched = *L.sched;
    const int64_t H = L.hidden_size, P = L.state_size, ws_cols = L.ws_cols;
    const Tensor w_hh_kn = Policy::step_operand(L.w_hh_kn);
    const Tensor w_hr_kn = L.has_proj() ? Policy::step_operand(L.w_hr_kn) : Tensor();
    // Without training, h_t before the projection needs a buffer of its own.
    const Tensor h_scratch = (L.has_proj() && !kTraining)
        ? at::empty({sched.max_batch, H}, L.w_hh_kn.options()) : Tensor();
    scalar_t* const h_scratch_ptr = h_scratch.defined() ? h_scratch.mutable_data_ptr<scalar_t>() : nullptr;
    for (int64_t k = 0; k < sched.steps(); ++k) {
      const int64_t t = sched.time_at(k), rows = sched.batch_sizes[t], off = sched.offsets[t];
      scalar_t* ws_rows = L.ws + off * ws_cols;
      Policy::step_gemm(w_hh_kn, L.h_state, P, ws_rows, ws_cols, rows, /*accumulate=*/true);

      const LstmForwardStep<scalar_t, acc_t> p = lstm_forward_step<kTraining>(L, t, L.h_state, h_scratch_ptr, L.ws);
      Policy::template lstm_forward<kTraining>(p, rows);
      if (L.has_proj()) {
        Policy::step_gemm(w_hr_kn, p.h_out, p.h_out_ld, L.output + off * P, P, rows, /*accumulate=*/false);
        copy_elements(L.output + off * P, L.h_state, rows * P, L.w_hh_kn.options());
      }
    }
  }

  template <typename scalar_t, typename acc_t>
  static void lstm_backward_loop(const LstmBackwardLoop<scalar_t, acc_t>& L) {
    const StepSchedule& sched = *L.sched;
    const int64_t H = L.hidden_size, P = L.state_size;
    const Tensor w_hh = Policy::step_operand(L.w_hh);
    const Tensor w_hr = L.has_proj() ? Policy::step_operand(L.w_hr) : Tensor();
    const Tensor grad_h_scratch = L.has_proj() ? at::empty({sched.max_batch, H}, L.w_hh.options()) : Tensor();
    const scalar_t* const grad_h_scratch_ptr = L.has_proj() ? grad_h_scratch.const_data_ptr<scalar_t>() : nullptr;
    for (int64_t k = sched.steps() - 1; k >= 0; --k) {
      const int64_t t = sched.time_at(k), rows = sched.batch_sizes[t], off = sched.offsets[t];
      if (L.has_proj()) {
        // dL/dr_t = grad_output_t + carried; dL/dh_t = dL/dr_t @ w_hr.
        const Tensor grad_r_t = at::from_blob(L.grad_r + off * P, {rows, P}, w_hh.options());
        const Tensor carried = at::from_blob(L.grad_h_state, {rows, P}, w_hh.options());
        if (L.grad_output != nullptr) {
          at::add_out(const_cast<Tensor&>(grad_r_t),
                      at::from_blob(const_cast<scalar_t*>(L.grad_output) + off * P, {rows, P}, w_hh.options()), carried);
        } else {
          grad_r_t.copy_(carried);
        }
        Policy::step_gemm(w_hr, L.grad_r + off * P, P, grad_h_scratch.mutable_data_ptr<scalar_t>(), H, rows,
                          /*accumulate=*/false);
      }
      const LstmBackwardStep<scalar_t, acc_t> p = lstm_backward_step(L, t, grad_h_scratch_ptr);
      Policy::lstm_backward(p, rows);
      Policy::step_gemm(w_hh, L.grad_gates + off * 4 * H, 4 * H, L.grad_h_state, P, rows, /*accumulate=*/false);
    }
  }

  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_forward_loop(const RnnForwardLoop<scalar_t>& L) {
    const StepSchedule& sched = *L.sched;
    const int64_t H = L.hidden_size;
    const Tensor w_hh_kn = Policy::step_operand(L.w_hh_kn);
    for (int64_t k = 0; k < sched.steps(); ++k) {
      const int64_t t = sched.time_at(k), rows = sched.batch_sizes[t], off = sched.offsets[t];
      Policy::step_gemm(w_hh_kn, L.h_state, H, L.pre + off * H, H, rows, /*accumulate=*/true);
      RnnForwardStep<scalar_t> p = rnn_forward_step(L, t);
      p.h_state = L.h_state;
      Policy::template rnn_forward<act, scalar_t, acc_t>(p, rows);
    }
  }

  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_backward_loop(const RnnBackwardLoop<scalar_t>& L) {
    const StepSchedule& sched = *L.sched;
    const int64_t H = L.hidden_size;
    const Tensor w_hh = Policy::step_operand(L.w_hh);
    for (int64_t k = sched.steps() - 1; k >= 0; --k) {
      const int64_t t = sched.time_at(k), rows = sched.batch_sizes[t], off = sched.offsets[t];
      const RnnBackwardStep<scalar_t> p = rnn_backward_step(L, t);
      Policy::template rnn_backward<act, scalar_t, acc_t>(p, rows);
      Policy::step_gemm(w_hh, L.grad_pre + off * H, H, L.grad_h_state, H, rows, /*accumulate=*/false);
    }
  }

 private:
  // dst[0, n) = src[0, n) on the device (and with the dtype) of `options`.
  template <typename scalar_t>
  static void copy_elements(const scalar_t* src, scalar_t* dst, int64_t n, const at::TensorOptions& options) {
    at::from_blob(dst, {n}, options).copy_(at::from_blob(const_cast<scalar_t*>(src), {n}, options));
  }
};

// ---------------------------------------------------------------------------------------------
// LSTM layer.

inline int64_t lstm_workspace_cols(int64_t H, bool has_proj) { return (has_proj ? 6 : 5) * H; }

template <typename Policy>
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_impl(
    const Tensor& input, const Tensor& w_ih_, const Tensor& w_hh_, const OptTensor& b_ih,
    const OptTensor& b_hh, const OptTensor& w_hr_, const Tensor& h0_, const Tensor& c0_,
    const OptTensor& batch_sizes, bool reverse, bool training) {
  const OpScope scope(input);
  const LayerSizes sz = check_layer(input, w_ih_, w_hh_, b_ih, b_hh, w_hr_, 4);
  const StepSchedule sched = make_schedule(input, batch_sizes, reverse);
  const int64_t N = sched.total_rows, B = sched.max_batch;
  const int64_t H = sz.hidden_size, P = sz.state_size;
  check_state(input, h0_, B, P, "h0");
  check_state(input, c0_, B, H, "c0");
  const bool has_proj = w_hr_.has_value();

  const Tensor x = as_rows(input, N);
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const Tensor w_hr = has_proj ? w_hr_->contiguous() : Tensor();
  const auto acc_dtype = at::toOpMathType(input.scalar_type());

  // Without training only the gates are kept.
  const int64_t ws_cols = training ? lstm_workspace_cols(H, has_proj) : 4 * H;
  Tensor ws = training ? at::empty({N, ws_cols}, input.options()) : Policy::scratch({N, ws_cols}, input.options());
  const bool loop_projects = Policy::loop_projects_input(sched, sz, input.scalar_type(), /*gates_private=*/!training);
  if (!loop_projects) project_input<Policy>(ws.narrow(1, 0, 4 * H), x, w_ih);
  const Tensor bias_ih = contiguous_bias(b_ih), bias_hh = contiguous_bias(b_hh);

  Tensor output = at::empty({N, P}, input.options());
  Tensor h_state = h0_.contiguous().clone();
  Tensor c_state = c0_.to(acc_dtype).contiguous().clone();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "lstm_layer_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    LstmForwardLoop<scalar_t, acc_t> loop;
    loop.sched = &sched;
    loop.hidden_size = H;
    loop.state_size = P;
    loop.w_hh_kn = w_hh.t();
    loop.w_hr_kn = has_proj ? w_hr.t() : Tensor();
    loop.ws = ws.mutable_data_ptr<scalar_t>();
    loop.ws_cols = ws_cols;
    loop.bias_ih = data_or_null<scalar_t>(bias_ih);
    loop.bias_hh = data_or_null<scalar_t>(bias_hh);
    if (loop_projects) {
      loop.w_ih_kn = w_ih.t();
      loop.input = x.const_data_ptr<scalar_t>();
    }
    loop.output = output.mutable_data_ptr<scalar_t>();
    loop.h_state = h_state.mutable_data_ptr<scalar_t>();
    loop.c_state = c_state.mutable_data_ptr<acc_t>();
    if (training) {
      Policy::template lstm_forward_loop<true>(loop);
    } else {
      Policy::template lstm_forward_loop<false>(loop);
    }
  });

  const Tensor out = batch_sizes.has_value() ? output : output.view({input.size(0), input.size(1), P});
  const Tensor workspace = training ? ws : at::empty({0}, input.options());
  return {out, h_state, c_state.to(input.scalar_type()), workspace};
}

// grad_output may be undefined (treated as zero): the cell ops have no per-step output.
template <typename Policy>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward_impl(
    const Tensor& grad_output_, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& input, const Tensor& w_ih_, const Tensor& w_hh_, const OptTensor& w_hr_,
    const Tensor& h0_, const Tensor& c0_, const Tensor& output_, const Tensor& workspace,
    const OptTensor& batch_sizes, bool reverse) {
  const OpScope scope(input);
  const LayerSizes sz = check_layer(input, w_ih_, w_hh_, std::nullopt, std::nullopt, w_hr_, 4);
  const StepSchedule sched = make_schedule(input, batch_sizes, reverse);
  const int64_t N = sched.total_rows, B = sched.max_batch;
  const int64_t H = sz.hidden_size, P = sz.state_size;
  const bool has_proj = w_hr_.has_value();
  const int64_t ws_cols = lstm_workspace_cols(H, has_proj);
  check_state(input, h0_, B, P, "h0");
  check_state(input, c0_, B, H, "c0");
  check_state(input, grad_h_n, B, P, "grad_h_n");
  check_state(input, grad_c_n, B, H, "grad_c_n");
  TORCH_CHECK(workspace.numel() == N * ws_cols,
      "rnnfused: lstm_layer_backward needs the workspace of a forward run with training=True");
  check_same_device_and_dtype(input, workspace, "workspace");

  const Tensor x = as_rows(input, N);
  const Tensor output = as_rows(output_, N);
  const Tensor ws = workspace.reshape({N, ws_cols}).contiguous();
  const Tensor grad_output = grad_output_.defined() ? as_rows(grad_output_, N) : Tensor();
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const Tensor w_hr = has_proj ? w_hr_->contiguous() : Tensor();
  const Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const auto acc_dtype = at::toOpMathType(input.scalar_type());

  Tensor grad_gates = Policy::scratch({N, 4 * H}, input.options());
  Tensor grad_h_state = grad_h_n.contiguous().clone();
  Tensor grad_c_state = grad_c_n.to(acc_dtype).contiguous().clone();
  Tensor grad_r = has_proj ? Policy::scratch({N, P}, input.options()) : Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "lstm_layer_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    LstmBackwardLoop<scalar_t, acc_t> loop;
    loop.sched = &sched;
    loop.hidden_size = H;
    loop.state_size = P;
    loop.w_hh = w_hh;
    loop.w_hr = w_hr;
    loop.ws = ws.const_data_ptr<scalar_t>();
    loop.ws_cols = ws_cols;
    loop.grad_output = grad_output.defined() ? grad_output.const_data_ptr<scalar_t>() : nullptr;
    loop.c0 = c0.const_data_ptr<scalar_t>();
    loop.grad_gates = grad_gates.mutable_data_ptr<scalar_t>();
    loop.grad_r = has_proj ? grad_r.mutable_data_ptr<scalar_t>() : nullptr;
    loop.grad_h_state = grad_h_state.mutable_data_ptr<scalar_t>();
    loop.grad_c_state = grad_c_state.mutable_data_ptr<acc_t>();
    Policy::lstm_backward_loop(loop);
  });

  auto [grad_x, grad_w_ih, grad_w_hh, grad_bias] =
      input_and_weight_grads<Policy>(grad_gates, x, w_ih, previous_states<Policy>(output, h0, sched));
  const Tensor grad_w_hr = has_proj ? weight_grad<Policy>(grad_r, ws.narrow(1, 5 * H, H))
                                    : at::empty({0}, input.options());
  return {grad_x.view(input.sizes()), grad_w_ih, grad_w_hh, grad_bias, grad_w_hr, grad_h_state,
          grad_c_state.to(input.scalar_type())};
}

// ---------------------------------------------------------------------------------------------
// Vanilla RNN layer. Backward needs nothing beyond the output (h_t) itself.

template <typename Policy>
std::tuple<Tensor, Tensor> rnn_layer_forward_impl(
    const Tensor& input, const Tensor& w_ih_, const Tensor& w_hh_, const OptTensor& b_ih,
    const OptTensor& b_hh, const Tensor& h0_, const OptTensor& batch_sizes, bool reverse,
    const std::string& nonlinearity) {
  const OpScope scope(input);
  const Activation act = parse_nonlinearity(nonlinearity);
  const LayerSizes sz = check_layer(input, w_ih_, w_hh_, b_ih, b_hh, std::nullopt, 1);
  const StepSchedule sched = make_schedule(input, batch_sizes, reverse);
  const int64_t N = sched.total_rows, B = sched.max_batch, H = sz.hidden_size;
  check_state(input, h0_, B, H, "h0");

  const Tensor x = as_rows(input, N);
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  Tensor pre = Policy::scratch({N, H}, input.options());
  const bool loop_projects = Policy::loop_projects_input(sched, sz, input.scalar_type(), /*gates_private=*/false);
  if (!loop_projects) project_input<Policy>(pre, x, w_ih);
  const Tensor bias_ih = contiguous_bias(b_ih), bias_hh = contiguous_bias(b_hh);
  Tensor output = at::empty({N, H}, input.options());
  Tensor h_state = h0_.contiguous().clone();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "rnn_layer_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RnnForwardLoop<scalar_t> loop;
    loop.sched = &sched;
    loop.hidden_size = H;
    loop.w_hh_kn = w_hh.t();
    loop.pre = pre.mutable_data_ptr<scalar_t>();
    loop.bias_ih = data_or_null<scalar_t>(bias_ih);
    loop.bias_hh = data_or_null<scalar_t>(bias_hh);
    if (loop_projects) {
      loop.w_ih_kn = w_ih.t();
      loop.input = x.const_data_ptr<scalar_t>();
    }
    loop.output = output.mutable_data_ptr<scalar_t>();
    loop.h_state = h_state.mutable_data_ptr<scalar_t>();
    dispatch_activation(act, [&](auto act_c) {
      Policy::template rnn_forward_loop<decltype(act_c)::value, scalar_t, acc_t>(loop);
    });
  });
  const Tensor out = batch_sizes.has_value() ? output : output.view({input.size(0), input.size(1), H});
  return {out, h_state};
}

template <typename Policy>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_layer_backward_impl(
    const Tensor& grad_output_, const Tensor& grad_h_n, const Tensor& input, const Tensor& w_ih_,
    const Tensor& w_hh_, const Tensor& h0_, const Tensor& output_, const OptTensor& batch_sizes,
    bool reverse, const std::string& nonlinearity) {
  const OpScope scope(input);
  const Activation act = parse_nonlinearity(nonlinearity);
  const LayerSizes sz = check_layer(input, w_ih_, w_hh_, std::nullopt, std::nullopt, std::nullopt, 1);
  const StepSchedule sched = make_schedule(input, batch_sizes, reverse);
  const int64_t N = sched.total_rows, B = sched.max_batch, H = sz.hidden_size;
  check_state(input, h0_, B, H, "h0");
  check_state(input, grad_h_n, B, H, "grad_h_n");

  const Tensor x = as_rows(input, N);
  const Tensor output = as_rows(output_, N);
  const Tensor grad_output = grad_output_.defined() ? as_rows(grad_output_, N) : Tensor();
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const Tensor h0 = h0_.contiguous();
  Tensor grad_pre = Policy::scratch({N, H}, input.options());
  Tensor grad_h_state = grad_h_n.contiguous().clone();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "rnn_layer_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RnnBackwardLoop<scalar_t> loop;
    loop.sched = &sched;
    loop.hidden_size = H;
    loop.w_hh = w_hh;
    loop.output = output.const_data_ptr<scalar_t>();
    loop.grad_output = grad_output.defined() ? grad_output.const_data_ptr<scalar_t>() : nullptr;
    loop.grad_pre = grad_pre.mutable_data_ptr<scalar_t>();
    loop.grad_h_state = grad_h_state.mutable_data_ptr<scalar_t>();
    dispatch_activation(act, [&](auto act_c) {
      Policy::template rnn_backward_loop<decltype(act_c)::value, scalar_t, acc_t>(loop);
    });
  });

  auto [grad_x, grad_w_ih, grad_w_hh, grad_bias] =
      input_and_weight_grads<Policy>(grad_pre, x, w_ih, previous_states<Policy>(output, h0, sched));
  return {grad_x.view(input.sizes()), grad_w_ih, grad_w_hh, grad_bias, grad_h_state};
}

// ---------------------------------------------------------------------------------------------
// Cells: a cell step is a layer run over a one-step sequence (the layer's OpScope nests in the
// cell's).

template <typename Policy>
std::tuple<Tensor, Tensor, Tensor> lstm_cell_forward_impl(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool training) {
  const OpScope scope(input);
  TORCH_CHECK(input.dim() == 2, "rnnfused: cell input must be 2-D (B, input_size), got ", input.dim(), "-D");
  auto [output, h_n, c_n, ws] = lstm_layer_forward_impl<Policy>(
      input.unsqueeze(0), w_ih, w_hh, b_ih, b_hh, std::nullopt, hx, cx, std::nullopt, false, training);
  return {h_n, c_n, ws};
}

template <typename Policy>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward_impl(
    const Tensor& grad_hy, const Tensor& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, const Tensor& workspace) {
  const OpScope scope(input);
  TORCH_CHECK(input.dim() == 2, "rnnfused: cell input must be 2-D (B, input_size), got ", input.dim(), "-D");
  // One step: the previous state of every row is hx, so the layer output is never read.
  auto [gx, gw_ih, gw_hh, gb, gw_hr, ghx, gcx] = lstm_layer_backward_impl<Policy>(
      Tensor(), grad_hy, grad_cy, input.unsqueeze(0), w_ih, w_hh, std::nullopt, hx, cx,
      hx.unsqueeze(0), workspace, std::nullopt, false);
  return {gx.squeeze(0), gw_ih, gw_hh, gb, ghx, gcx};
}

template <typename Policy>
Tensor rnn_cell_forward_impl(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                             const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                             const std::string& nonlinearity) {
  const OpScope scope(input);
  TORCH_CHECK(input.dim() == 2, "rnnfused: cell input must be 2-D (B, input_size), got ", input.dim(), "-D");
  return std::get<1>(rnn_layer_forward_impl<Policy>(
      input.unsqueeze(0), w_ih, w_hh, b_ih, b_hh, hx, std::nullopt, false, nonlinearity));
}

template <typename Policy>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_cell_backward_impl(
    const Tensor& grad_hy, const Tensor& input, const Tensor& hx, const Tensor& w_ih,
    const Tensor& w_hh, const Tensor& hy, const std::string& nonlinearity) {
  const OpScope scope(input);
  TORCH_CHECK(input.dim() == 2, "rnnfused: cell input must be 2-D (B, input_size), got ", input.dim(), "-D");
  auto [gx, gw_ih, gw_hh, gb, ghx] = rnn_layer_backward_impl<Policy>(
      Tensor(), grad_hy, input.unsqueeze(0), w_ih, w_hh, hx, hy.unsqueeze(0), std::nullopt,
      false, nonlinearity);
  return {gx.squeeze(0), gw_ih, gw_hh, gb, ghx};
}

}  // namespace rnnfused
