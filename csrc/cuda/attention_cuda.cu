// CUDA kernels of the attention ops: the same host driver as the CPU (attention.h: checks, GEMMs
// through ATen / cuBLAS) with a policy that launches straightforward kernels running the math of
// attention_math.h. Everything runs on at::cuda::getCurrentCUDAStream(), without host
// synchronisation (nothing is read back), so the ops can be captured in CUDA graphs.
//
//   additive_scores_softmax_kernel  one block per (b, q) row: a warp per key reduces the A terms
//                                   of its score (shuffles), then the block's masked softmax of
//                                   the row; the scores live in the row of the weights output
//   masked_softmax_kernel           one block per row (dot attention: scale, mask, softmax)
//   softmax_backward_kernel         one block per row
//   additive_grad_query_kernel      one block per (b, q) row, a thread per unit a looping over the
//                                   keys: grad_query and grad_v_rows (no reduction across threads)
//   additive_grad_key_kernel        one block per (b, k), a thread per unit a looping over the
//                                   queries: grad_key (tanh recomputed once more, no atomics)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include <limits>

#include "../attention.h"

namespace rnnfused {
namespace {

constexpr int kWarpSize = 32;
constexpr int kRowThreads = 256;  // rows of Tk keys: 8 warps

template <typename T>
struct MaxOp {
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};
template <typename T>
struct SumOp {
  __device__ T operator()(T a, T b) const { return a + b; }
};

template <typename T, typename Op>
__device__ T warp_reduce(T x, Op op) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x = op(x, __shfl_xor_sync(0xffffffffu, x, offset));
  }
  return x;
}

// Reduces x over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. May be called repeatedly: it synchronises before reusing its shared slots.
template <typename T, typename Op>
__device__ T block_reduce(T x, T identity, Op op) {
  __shared__ T partial[kWarpSize];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  x = warp_reduce(x, op);
  __syncthreads();
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  x = lane < static_cast<int>(blockDim.x / kWarpSize) ? partial[lane] : identity;
  return warp_reduce(x, op);
}

// x[0, n): masked scores (scaled; -inf where masked) in, softmax weights out, by the whole block.
// Each thread revisits the same indices in every pass.
template <typename T>
__device__ void block_softmax_row(T* x, int64_t n) {
  T row_max = -std::numeric_limits<T>::infinity();
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) row_max = MaxOp<T>()(row_max, x[k]);
  const T shift = softmax_shift(block_reduce(row_max, -std::numeric_limits<T>::infinity(), MaxOp<T>()));
  T sum = 0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const T e = softmax_numerator(x[k], shift);
    x[k] = e;
    sum += e;
  }
  const T inv = softmax_normalizer(block_reduce(sum, T(0), SumOp<T>()));
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) x[k] *= inv;
}

template <typename T>
__global__ void additive_scores_softmax_kernel(const AdditiveScoresParams<T> p) {
  const int64_t r = blockIdx.x, b = r / p.query_len;
  const int64_t Tk = p.key_len, A = p.attn_size;
  const T* q = p.query + r * A;
  const T* keys = p.key + b * Tk * A;
  T* w = p.weights + r * Tk;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  for (int64_t k = warp; k < Tk; k += blockDim.x / kWarpSize) {
    const bool valid = p.mask == nullptr || p.mask[b * Tk + k];  // the same for the whole warp
    T score = 0;
    if (valid) {
      for (int64_t a = lane; a < A; a += kWarpSize) score += additive_score_term(q[a], keys[k * A + a], p.v[a]);
      score = warp_reduce(score, SumOp<T>());
    }
    if (lane == 0) w[k] = masked_score(score, valid, T(1));
  }
  __syncthreads();  // the row's scores, written by every warp, are complete
  block_softmax_row(w, Tk);
}

template <typename T>
__global__ void masked_softmax_kernel(const MaskedSoftmaxParams<T> p) {
  const int64_t r = blockIdx.x, Tk = p.key_len;
  const bool* mask = p.mask != nullptr ? p.mask + (r / p.query_len) * Tk : nullptr;
  T* x = p.scores + r * Tk;
  for (int64_t k = threadIdx.x; k < Tk; k += blockDim.x) {
    x[k] = masked_score(x[k], mask == nullptr || mask[k], p.scale);
  }
  block_softmax_row(x, Tk);
}

template <typename T>
__global__ void softmax_backward_kernel(const SoftmaxBackwardParams<T> p) {
  const int64_t r = blockIdx.x, Tk = p.key_len;
  const T* w = p.weights + r * Tk;
  T* g = p.grad + r * Tk;
  T dot = 0;
  for (int64_t k = threadIdx.x; k < Tk; k += blockDim.x) dot += w[k] * g[k];
  dot = block_reduce(dot, T(0), SumOp<T>());
  for (int64_t k = threadIdx.x; k < Tk; k += blockDim.x) g[k] = softmax_backward_term(w[k], g[k], dot, p.scale);
}

// dL/dscore is the same for every thread of the block at each step of the inner loops (one
// key, resp. one query): the `continue` on zero (masked keys) never diverges.
template <typename T>
__global__ void additive_grad_query_kernel(const AdditiveBackwardParams<T> p) {
  const int64_t r = blockIdx.x, b = r / p.query_len;
  const int64_t Tk = p.key_len, A = p.attn_size;
  const T* ds = p.grad_scores + r * Tk;
  const T* keys = p.key + b * Tk * A;
  for (int64_t a = threadIdx.x; a < A; a += blockDim.x) {
    const T q = p.query[r * A + a], v = p.v[a];
    T grad_q = 0, grad_v = 0;
    for (int64_t k = 0; k < Tk; ++k) {
      const T d = ds[k];
      if (d == T(0)) continue;
      T grad_pre, grad_v_term;
      additive_score_term_backward(q, keys[k * A + a], v, d, grad_pre, grad_v_term);
      grad_q += grad_pre;
      grad_v += grad_v_term;
    }
    p.grad_query[r * A + a] = grad_q;
    p.grad_v_rows[r * A + a] = grad_v;
  }
}

template <typename T>
__global__ void additive_grad_key_kernel(const AdditiveBackwardParams<T> p) {
  const int64_t bk = blockIdx.x, Tq = p.query_len, Tk = p.key_len, A = p.attn_size;
  const int64_t b = bk / Tk, k = bk % Tk;
  for (int64_t a = threadIdx.x; a < A; a += blockDim.x) {
    const T key = p.key[bk * A + a], v = p.v[a];
    T grad_k = 0;
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t r = b * Tq + i;
      const T d = p.grad_scores[r * Tk + k];
      if (d == T(0)) continue;
      T grad_pre, grad_v_term;
      additive_score_term_backward(p.query[r * A + a], key, v, d, grad_pre, grad_v_term);
      grad_k += grad_pre;
    }
    p.grad_key[bk * A + a] = grad_k;
  }
}

// One block per row: checked to fit the grid.
dim3 row_grid(int64_t rows) {
  TORCH_CHECK(rows <= std::numeric_limits<int32_t>::max(),
      "rnnfused: attention on the GPU supports at most 2^31 - 1 (batch x query) rows, got ", rows);
  return dim3(static_cast<unsigned>(rows));
}

// A thread per attention unit, in whole warps, at most 256.
int unit_threads(int64_t attn_size) {
  const int64_t warps = (attn_size + kWarpSize - 1) / kWarpSize;
  return static_cast<int>(std::min<int64_t>(8, std::max<int64_t>(1, warps)) * kWarpSize);
}

struct CudaAttentionKernels {
  // The matrix products of attention run as cuBLAS GEMMs around masked_softmax / softmax_backward.
  static constexpr bool kFusedProducts = false;

  template <typename T>
  static void additive_scores_softmax(const AdditiveScoresParams<T>& p) {
    const int64_t rows = p.batch * p.query_len;
    if (rows == 0 || p.key_len == 0) return;
    additive_scores_softmax_kernel<T><<<row_grid(rows), kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename T>
  static void masked_softmax(const MaskedSoftmaxParams<T>& p) {
    const int64_t rows = p.batch * p.query_len;
    if (rows == 0 || p.key_len == 0) return;
    masked_softmax_kernel<T><<<row_grid(rows), kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename T>
  static void softmax_backward(const SoftmaxBackwardParams<T>& p) {
    if (p.rows == 0 || p.key_len == 0) return;
    softmax_backward_kernel<T><<<row_grid(p.rows), kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename T>
  static void additive_scores_backward(const AdditiveBackwardParams<T>& p) {
    const int64_t rows = p.batch * p.query_len, key_rows = p.batch * p.key_len;
    if (p.attn_size == 0) return;
    const int threads = unit_threads(p.attn_size);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    if (rows > 0) {
      additive_grad_query_kernel<T><<<row_grid(rows), threads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (key_rows > 0) {
      additive_grad_key_kernel<T><<<row_grid(key_rows), threads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CUDA, m) {
  m.impl("additive_attention_forward", &attention::additive_attention_forward_impl<CudaAttentionKernels>);
  m.impl("additive_attention_backward", &attention::additive_attention_backward_impl<CudaAttentionKernels>);
  m.impl("dot_attention_forward", &attention::dot_attention_forward_impl<CudaAttentionKernels>);
  m.impl("dot_attention_backward", &attention::dot_attention_backward_impl<CudaAttentionKernels>);
}

}  // namespace rnnfused
