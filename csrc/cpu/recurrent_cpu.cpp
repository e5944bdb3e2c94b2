// CPU kernels of the layer and cell ops: the host driver of recurrent_layer.h with a pointwise
// policy that runs the gate_math.h element bodies over every (row, hidden unit) of a step.
#include <torch/library.h>

#include "../recurrent_layer.h"
#include "elementwise.h"

namespace rnnfused {
namespace {

struct CpuPointwise {
  template <bool kTraining, typename scalar_t, typename acc_t>
  static void lstm_forward(const LstmForwardStep<scalar_t, acc_t>& p, int64_t rows) {
    for_each_element(rows, p.hidden_size, [&](int64_t r, int64_t j) { lstm_forward_element<kTraining>(p, r, j); });
  }
  template <typename scalar_t, typename acc_t>
  static void lstm_backward(const LstmBackwardStep<scalar_t, acc_t>& p, int64_t rows) {
    for_each_element(rows, p.hidden_size, [&](int64_t r, int64_t j) { lstm_backward_element(p, r, j); });
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_forward(const RnnForwardStep<scalar_t>& p, int64_t rows) {
    for_each_element(rows, p.hidden_size, [&](int64_t r, int64_t j) { rnn_forward_element<act, scalar_t, acc_t>(p, r, j); });
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_backward(const RnnBackwardStep<scalar_t>& p, int64_t rows) {
    for_each_element(rows, p.hidden_size, [&](int64_t r, int64_t j) { rnn_backward_element<act, scalar_t, acc_t>(p, r, j); });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_impl<CpuPointwise>);
  m.impl("lstm_layer_backward", &lstm_layer_backward_impl<CpuPointwise>);
  m.impl("rnn_layer_forward", &rnn_layer_forward_impl<CpuPointwise>);
  m.impl("rnn_layer_backward", &rnn_layer_backward_impl<CpuPointwise>);
  m.impl("lstm_cell_forward", &lstm_cell_forward_impl<CpuPointwise>);
  m.impl("lstm_cell_backward", &lstm_cell_backward_impl<CpuPointwise>);
  m.impl("rnn_cell_forward", &rnn_cell_forward_impl<CpuPointwise>);
  m.impl("rnn_cell_backward", &rnn_cell_backward_impl<CpuPointwise>);
}

}  // namespace rnnfused
