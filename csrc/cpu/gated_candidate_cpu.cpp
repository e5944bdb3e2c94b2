// CPU kernels of the gated-candidate LSTM layer op: the host driver of gated_candidate_layer.h
// with a pointwise policy that runs the gated_candidate_math.h element bodies over every
// (row, stream * hidden unit) of a step.
#include <torch/library.h>

#include "../gated_candidate_layer.h"
#include "elementwise.h"
#include "float_compute.h"

namespace rnnfused {
namespace {

struct CpuGatedPointwise {
  template <bool kTraining, typename scalar_t, typename acc_t>
  static void gated_lstm_forward(const GatedLstmForwardStep<scalar_t, acc_t>& p, int64_t rows) {
    for_each_element(rows, p.streams * p.hidden_size,
                     [&](int64_t r, int64_t k) { gated_lstm_forward_element<kTraining>(p, r, k); });
  }
  template <typename scalar_t, typename acc_t>
  static void gated_lstm_backward(const GatedLstmBackwardStep<scalar_t, acc_t>& p, int64_t rows) {
    for_each_element(rows, p.streams * p.hidden_size,
                     [&](int64_t r, int64_t k) { gated_lstm_backward_element(p, r, k); });
  }
};

// No 16-bit kernels: float16 / bfloat16 run in float32 (float_compute.h).
bool has_16bit_kernels(at::ScalarType) { return false; }

template <auto kOp>
constexpr auto kCpuImpl = &ComputeInFloat<kOp, &has_16bit_kernels>::call;

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CPU, m) {
  m.impl("gated_candidate_lstm_layer_forward", kCpuImpl<&gated_candidate_lstm_layer_forward_impl<CpuGatedPointwise>>);
  m.impl("gated_candidate_lstm_layer_backward", kCpuImpl<&gated_candidate_lstm_layer_backward_impl<CpuGatedPointwise>>);
}

}  // namespace rnnfused
