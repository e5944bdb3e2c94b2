// The one TORCH_LIBRARY(rnnfused, m): every op schema of the project, in one place.
// Kernels register under TORCH_LIBRARY_IMPL(rnnfused, CPU|CUDA, m) in csrc/cpu and csrc/cuda;
// fake (meta) kernels and autograd formulas register from Python, in rnnfused/ops.py.
//
// Layouts shared by every layer op (one call = one layer, one direction, all time steps):
// - input is time-major and dense, (T, B, I), when batch_sizes is None; otherwise it is the
//   data of a PackedSequence, (N, I) with N = sum(batch_sizes), and batch_sizes is the int64 CPU
//   tensor of rows active at each step (non-increasing, as torch.nn.utils.rnn packs them).
// - output has input's leading dims and P features: P = proj_size if w_hr is given, else H.
// - h0 / h_n are (B, P) and c0 / c_n are (B, H) with B = batch_sizes[0] (or input.size(1)).
// - reverse=True runs the sequence from its last step to its first (the backward direction of
//   a bidirectional layer); for packed input each sequence starts at its own last step.
// - workspace is what backward needs, (N, 5H) or (N, 6H) with proj_size: per row the gate
//   activations i|f|g|o, c_t, and (proj) h_t before projection. training=False returns it empty.
// - grad_bias is the gradient of b_ih and of b_hh alike (the two biases are summed);
//   grad_w_hr is empty when w_hr is None.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(rnnfused, m) {
  m.def(
      "lstm_layer_forward(Tensor input, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor h0, Tensor c0, Tensor? batch_sizes, bool reverse, bool training) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor workspace)");
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor h0, Tensor c0, Tensor output, "
      "Tensor workspace, Tensor? batch_sizes, bool reverse) "
      "-> (Tensor grad_input, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias, "
      "Tensor grad_w_hr, Tensor grad_h0, Tensor grad_c0)");
  // nonlinearity is "tanh" or "relu", as in torch.nn.RNN.
  m.def(
      "rnn_layer_forward(Tensor input, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor h0, Tensor? batch_sizes, bool reverse, str nonlinearity) "
      "-> (Tensor output, Tensor h_n)");
  m.def(
      "rnn_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor w_ih, "
      "Tensor w_hh, Tensor h0, Tensor output, Tensor? batch_sizes, bool reverse, "
      "str nonlinearity) "
      "-> (Tensor grad_input, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias, "
      "Tensor grad_h0)");
  // Single steps for LSTMCell / RNNCell: input (B, I), hx (B, H), cx (B, H).
  // The cell workspace is the layer workspace of a one-step sequence, (B, 5H).
  m.def(
      "lstm_cell_forward(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool training) -> (Tensor hy, Tensor cy, Tensor workspace)");
  m.def(
      "lstm_cell_backward(Tensor grad_hy, Tensor grad_cy, Tensor input, Tensor hx, Tensor cx, "
      "Tensor w_ih, Tensor w_hh, Tensor workspace) "
      "-> (Tensor grad_input, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias, "
      "Tensor grad_hx, Tensor grad_cx)");
  m.def(
      "rnn_cell_forward(Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, str nonlinearity) -> Tensor hy");
  m.def(
      "rnn_cell_backward(Tensor grad_hy, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "Tensor hy, str nonlinearity) "
      "-> (Tensor grad_input, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias, "
      "Tensor grad_hx)");
  // Gated-candidate LSTM layer (Liu, Qiu & Huang 2016: Coupled-Layer and Shared-Layer
  // models), one call = one layer, one direction, all M coupled streams, all time steps.
  // Math and row layouts: csrc/include/rnnfused/gated_candidate_math.h.
  // - x_proj: the x-side pre-activations i|f|o|z|q of every stream and step (input projection
  //   plus bias, and anything else that does not depend on the recurrence), (T, B, M, 5H)
  //   dense or (N, M, 5H) packed with batch_sizes as for the layer ops above.
  // - w_hh: (M, (3 + 2M)H, H); w_hh[s] maps h_{t-1} of stream s to its own i|f|o, then to its
  //   gate pre-activation into every stream, then to its candidate contribution to every stream.
  // - h0 / c0 / h_n / c_n: (B, M, H); output (T, B, M, H) or (N, M, H).
  // - workspace: (N, M, (5 + 2M)H) when training, else empty.
  // - backward returns the gradients of x_proj, w_hh, h0 and c0.
  m.def(
      "gated_candidate_lstm_layer_forward(Tensor x_proj, Tensor w_hh, Tensor h0, Tensor c0, "
      "Tensor? batch_sizes, bool reverse, bool training) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor workspace)");
  m.def(
      "gated_candidate_lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, "
      "Tensor x_proj, Tensor w_hh, Tensor h0, Tensor c0, Tensor output, Tensor workspace, "
      "Tensor? batch_sizes, bool reverse) "
      "-> (Tensor grad_x_proj, Tensor grad_w_hh, Tensor grad_h0, Tensor grad_c0)");

  // ---------------------------------------------------------------------------------------------
  // Attention (Bahdanau additive; Luong dot / general / concat): scores, masked softmax and
  // context of a whole (B, Tq) block of queries in one call. Batch-first:
  //   query (B, Tq, F), keys (B, Tk, F), values (B, Tk, Dv)
  //   -> context (B, Tq, Dv) = weights @ values, weights (B, Tq, Tk) = softmax over keys.
  // mask: (B, Tk) bool, True = attend to the key (a real token), False = padding; None = attend
  // to every key. (The opposite polarity of nn.MultiheadAttention's key_padding_mask.)
  // A row whose keys are all masked gets all-zero weights and a zero context, never NaN, and
  // zero gradients. All computation runs in float for float16 / bfloat16 inputs.
  // Backward ops: grad_context / grad_weights None = zero; weights = the forward's output (masked
  // keys have weight 0, so the mask itself is not needed).
  //
  // Additive: score[b,q,k] = v . tanh(query_proj[b,q] + key_proj[b,k]), F = attn_size A. The
  // projections (W_q query + bias, W_k keys) are the caller's GEMMs; the (B, Tq, Tk, A) tanh
  // tensor is never stored: backward recomputes it.
  m.def(
      "additive_attention_forward(Tensor query_proj, Tensor key_proj, Tensor v, Tensor values, "
      "Tensor? mask) -> (Tensor context, Tensor weights)");
  m.def(
      "additive_attention_backward(Tensor? grad_context, Tensor? grad_weights, Tensor query_proj, "
      "Tensor key_proj, Tensor v, Tensor values, Tensor weights) "
      "-> (Tensor grad_query_proj, Tensor grad_key_proj, Tensor grad_v, Tensor grad_values)");
  // Dot: score[b,q,k] = scale * query[b,q] . keys[b,k] (Luong dot: scale 1; Luong general: the
  // caller projects the query first; scaled dot product: scale 1/sqrt(F)).
  m.def(
      "dot_attention_forward(Tensor query, Tensor keys, Tensor values, Tensor? mask, float scale) "
      "-> (Tensor context, Tensor weights)");
  m.def(
      "dot_attention_backward(Tensor? grad_context, Tensor? grad_weights, Tensor query, "
      "Tensor keys, Tensor values, Tensor weights, float scale) "
      "-> (Tensor grad_query, Tensor grad_keys, Tensor grad_values)");
}

// `import rnnfused._C` runs the static registrations above and in the kernel files; the module
// itself carries no Python functions.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
