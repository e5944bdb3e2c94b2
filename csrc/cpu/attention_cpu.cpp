// CPU kernels of the attention ops: the host driver of attention.h with a policy that splits the
// work items (blocks of rows) across threads with at::parallel_for and runs the kernels of the
// CPU capability this machine has (attention_kernels.h: DEFAULT, AVX2 or AVX-512, as ATen
// chooses).
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>

#include "../attention.h"
#include "attention_kernels.h"

namespace rnnfused {
namespace {

// Work items are split across threads only when a chunk has enough work (multiply-adds or tanh
// evaluations) to pay for the fork.
constexpr int64_t kParallelGrainWork = 32768;
// The additive backward splits each batch element's queries until there are this many work
// items (see AdditiveBackwardSplit). A constant, not the thread count, so that the summation
// order, and so the result, does not depend on the number of threads.
constexpr int64_t kMinBackwardItems = 16;

int64_t grain(int64_t work_per_item) {
  return std::max<int64_t>(1, kParallelGrainWork / std::max<int64_t>(1, work_per_item));
}

// The table of the capability ATen itself runs with (ATEN_CPU_CAPABILITY can lower it).
const cpu::AttentionRowKernelTable& kernel_table() {
  static const cpu::AttentionRowKernelTable& table = [] () -> const cpu::AttentionRowKernelTable& {
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") return cpu::attention_row_kernels_AVX512();
    if (capability == "AVX2") return cpu::attention_row_kernels_AVX2();
    return cpu::attention_row_kernels_DEFAULT();
  }();
  return table;
}

template <typename acc_t>
const cpu::AttentionRowKernels<acc_t>& row_kernels() {
  if constexpr (std::is_same_v<acc_t, double>) {
    return kernel_table().f64;
  } else {
    return kernel_table().f32;
  }
}

// Work items of the block kernels: B * ceil(n / kRowBlock) for n rows per batch element.
int64_t block_items(int64_t batch, int64_t n) { return batch * ((n + cpu::kRowBlock - 1) / cpu::kRowBlock); }

struct CpuAttentionKernels {
  // The matrix products of attention run in the fused block kernels (attention_kernels_impl.h):
  // small batched GEMMs are slow on the CPU, and the blocks skip masked keys.
  static constexpr bool kFusedProducts = true;

  template <typename acc_t>
  static void additive_scores_softmax(const AdditiveScoresParams<acc_t>& p) {
    const int64_t work = cpu::kRowBlock * p.key_len * (p.attn_size + p.value_size);
    at::parallel_for(0, block_items(p.batch, p.query_len), grain(work), [&](int64_t begin, int64_t end) {
      row_kernels<acc_t>().additive_attention(p, begin, end);
    });
  }

  template <typename acc_t>
  static void dot_attention(const DotAttentionParams<acc_t>& p) {
    const int64_t work = cpu::kRowBlock * p.key_len * (p.feature + p.value_size);
    at::parallel_for(0, block_items(p.batch, p.query_len), grain(work), [&](int64_t begin, int64_t end) {
      row_kernels<acc_t>().dot_attention(p, begin, end);
    });
  }

  // Backward passes: every query block, then every key block (which reads the score gradients
  // of all queries).
  template <typename acc_t>
  static void score_grads(const ScoreGradParams<acc_t>& p) {
    at::parallel_for(0, block_items(p.batch, p.query_len), grain(cpu::kRowBlock * p.key_len * p.value_size),
                     [&](int64_t begin, int64_t end) { row_kernels<acc_t>().score_grad_queries(p, begin, end); });
    at::parallel_for(0, block_items(p.batch, p.key_len), grain(cpu::kRowBlock * p.query_len * p.value_size),
                     [&](int64_t begin, int64_t end) { row_kernels<acc_t>().score_grad_keys(p, begin, end); });
  }

  template <typename acc_t>
  static void dot_attention_backward(const DotAttentionBackwardParams<acc_t>& p) {
    const ScoreGradParams<acc_t>& s = p.scores;
    const int64_t per_row = p.feature + s.value_size;
    at::parallel_for(0, block_items(s.batch, s.query_len), grain(cpu::kRowBlock * s.key_len * per_row),
                     [&](int64_t begin, int64_t end) { row_kernels<acc_t>().dot_backward_queries(p, begin, end); });
    at::parallel_for(0, block_items(s.batch, s.key_len), grain(cpu::kRowBlock * s.query_len * per_row),
                     [&](int64_t begin, int64_t end) { row_kernels<acc_t>().dot_backward_keys(p, begin, end); });
  }

  // grad_key[b] sums over the queries of b: each work item accumulates its own share
  // (AdditiveBackwardSplit), summed here afterwards.
  template <typename acc_t>
  static void additive_scores_backward(const AdditiveBackwardParams<acc_t>& p) {
    const int64_t B = p.batch, Tq = p.query_len, Tk = p.key_len, A = p.attn_size;
    if (B == 0 || Tq == 0) {  // no work item, and a zero grad_key
      std::fill(p.grad_key, p.grad_key + B * Tk * A, acc_t(0));
      return;
    }
    const int64_t splits = std::min(Tq, std::max<int64_t>(1, (kMinBackwardItems + B - 1) / B));
    const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value);
    const at::Tensor grad_key_partial = splits > 1 ? at::empty({splits, B, Tk, A}, options) : at::Tensor();

    cpu::AdditiveBackwardSplit<acc_t> split;
    split.grad_key_partial = splits > 1 ? grad_key_partial.mutable_data_ptr<acc_t>() : p.grad_key;
    split.splits = splits;
    split.chunk = (Tq + splits - 1) / splits;
    at::parallel_for(0, B * splits, grain(split.chunk * Tk * A), [&](int64_t begin, int64_t end) {
      row_kernels<acc_t>().additive_scores_backward(p, split, begin, end);
    });
    if (splits > 1) {
      at::Tensor grad_key = at::from_blob(p.grad_key, {B, Tk, A}, options);
      at::sum_out(grad_key, grad_key_partial, {0});
    }
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CPU, m) {
  m.impl("additive_attention_forward", &attention::additive_attention_forward_impl<CpuAttentionKernels>);
  m.impl("additive_attention_backward", &attention::additive_attention_backward_impl<CpuAttentionKernels>);
  m.impl("dot_attention_forward", &attention::dot_attention_forward_impl<CpuAttentionKernels>);
  m.impl("dot_attention_backward", &attention::dot_attention_backward_impl<CpuAttentionKernels>);
}

}  // namespace rnnfused
