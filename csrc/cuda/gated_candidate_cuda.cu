// CUDA kernels of the gated-candidate LSTM layer op: the host driver of gated_candidate_layer.h
// (GEMMs through ATen / cuBLAS on the current stream, no host synchronisation, buffers allocated
// before the time loop) with one pointwise kernel launch per step, one thread per
// (row, stream * hidden unit), running the very element bodies the CPU tests.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../gated_candidate_layer.h"
#include "launch.cuh"

namespace rnnfused {
namespace {

template <bool kTraining, typename scalar_t, typename acc_t>
__global__ void gated_lstm_pointwise_kernel(const GatedLstmForwardStep<scalar_t, acc_t> p, int64_t rows) {
  const int64_t cols = p.streams * p.hidden_size, n = rows * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    gated_lstm_forward_element<kTraining>(p, e / cols, e % cols);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void gated_lstm_pointwise_backward_kernel(const GatedLstmBackwardStep<scalar_t, acc_t> p, int64_t rows) {
  const int64_t cols = p.streams * p.hidden_size, n = rows * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    gated_lstm_backward_element(p, e / cols, e % cols);
  }
}

struct CudaGatedPointwise {
  template <bool kTraining, typename scalar_t, typename acc_t>
  static void gated_lstm_forward(const GatedLstmForwardStep<scalar_t, acc_t>& p, int64_t rows) {
    if (rows == 0) return;
    gated_lstm_pointwise_kernel<kTraining><<<grid_for(rows * p.streams * p.hidden_size), kThreadsPerBlock, 0,
                                             at::cuda::getCurrentCUDAStream()>>>(p, rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename scalar_t, typename acc_t>
  static void gated_lstm_backward(const GatedLstmBackwardStep<scalar_t, acc_t>& p, int64_t rows) {
    if (rows == 0) return;
    gated_lstm_pointwise_backward_kernel<<<grid_for(rows * p.streams * p.hidden_size), kThreadsPerBlock, 0,
                                           at::cuda::getCurrentCUDAStream()>>>(p, rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CUDA, m) {
  m.impl("gated_candidate_lstm_layer_forward", &gated_candidate_lstm_layer_forward_impl<CudaGatedPointwise>);
  m.impl("gated_candidate_lstm_layer_backward", &gated_candidate_lstm_layer_backward_impl<CudaGatedPointwise>);
}

}  // namespace rnnfused
