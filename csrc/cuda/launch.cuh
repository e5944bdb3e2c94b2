// Launch geometry shared by the CUDA pointwise kernels: one thread per element of a step in a
// grid-stride loop, blocks of kThreadsPerBlock, enough blocks to cover the step once, capped at
// a few waves of the device.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>

namespace rnnfused {

constexpr int kThreadsPerBlock = 256;

inline dim3 grid_for(int64_t elements) {
  const int64_t max_blocks = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  const int64_t blocks = (elements + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, max_blocks))));
}

}  // namespace rnnfused
