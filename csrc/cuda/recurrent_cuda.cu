// CUDA kernels of the layer and cell ops: the same host driver as the CPU (recurrent_layer.h:
// GEMMs through ATen / cuBLAS, everything on the current stream, no host synchronisation, all
// buffers allocated before the time loop) with a pointwise policy that launches one kernel per
// step, one thread per (row, hidden unit), running the very element bodies the CPU tests.
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include "../recurrent_layer.h"
#include "launch.cuh"

namespace rnnfused {
namespace {

// Grid-stride loop over the rows * hidden_size elements of a step. Params travel by value in
// kernel parameter space.
template <bool kTraining, typename scalar_t, typename acc_t>
__global__ void lstm_pointwise_kernel(const LstmForwardStep<scalar_t, acc_t> p, int64_t rows) {
  const int64_t n = rows * p.hidden_size;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    lstm_forward_element<kTraining>(p, e / p.hidden_size, e % p.hidden_size);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void lstm_pointwise_backward_kernel(const LstmBackwardStep<scalar_t, acc_t> p, int64_t rows) {
  const int64_t n = rows * p.hidden_size;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    lstm_backward_element(p, e / p.hidden_size, e % p.hidden_size);
  }
}

template <Activation act, typename scalar_t, typename acc_t>
__global__ void rnn_pointwise_kernel(const RnnForwardStep<scalar_t> p, int64_t rows) {
  const int64_t n = rows * p.hidden_size;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    rnn_forward_element<act, scalar_t, acc_t>(p, e / p.hidden_size, e % p.hidden_size);
  }
}

template <Activation act, typename scalar_t, typename acc_t>
__global__ void rnn_pointwise_backward_kernel(const RnnBackwardStep<scalar_t> p, int64_t rows) {
  const int64_t n = rows * p.hidden_size;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    rnn_backward_element<act, scalar_t, acc_t>(p, e / p.hidden_size, e % p.hidden_size);
  }
}

// The driver's StepByStep time loops: GEMMs by cuBLAS through ATen (AtenGemm) and one pointwise
// kernel per step, all on the current stream.
struct CudaPolicy : AtenGemm, StepByStep<CudaPolicy> {
  template <bool kTraining, typename scalar_t, typename acc_t>
  static void lstm_forward(const LstmForwardStep<scalar_t, acc_t>& p, int64_t rows) {
    lstm_pointwise_kernel<kTraining><<<grid_for(rows * p.hidden_size), kThreadsPerBlock, 0,
                                       at::cuda::getCurrentCUDAStream()>>>(p, rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename scalar_t, typename acc_t>
  static void lstm_backward(const LstmBackwardStep<scalar_t, acc_t>& p, int64_t rows) {
    lstm_pointwise_backward_kernel<<<grid_for(rows * p.hidden_size), kThreadsPerBlock, 0,
                                     at::cuda::getCurrentCUDAStream()>>>(p, rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_forward(const RnnForwardStep<scalar_t>& p, int64_t rows) {
    rnn_pointwise_kernel<act, scalar_t, acc_t><<<grid_for(rows * p.hidden_size), kThreadsPerBlock, 0,
                                                 at::cuda::getCurrentCUDAStream()>>>(p, rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_backward(const RnnBackwardStep<scalar_t>& p, int64_t rows) {
    rnn_pointwise_backward_kernel<act, scalar_t, acc_t><<<grid_for(rows * p.hidden_size), kThreadsPerBlock, 0,
                                                          at::cuda::getCurrentCUDAStream()>>>(p, rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CUDA, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_impl<CudaPolicy>);
  m.impl("lstm_layer_backward", &lstm_layer_backward_impl<CudaPolicy>);
  m.impl("rnn_layer_forward", &rnn_layer_forward_impl<CudaPolicy>);
  m.impl("rnn_layer_backward", &rnn_layer_backward_impl<CudaPolicy>);
  m.impl("lstm_cell_forward", &lstm_cell_forward_impl<CudaPolicy>);
  m.impl("lstm_cell_backward", &lstm_cell_backward_impl<CudaPolicy>);
  m.impl("rnn_cell_forward", &rnn_cell_forward_impl<CudaPolicy>);
  m.impl("rnn_cell_backward", &rnn_cell_backward_impl<CudaPolicy>);
}

}  // namespace rnnfused
