// The CPU kernels of the attention ops: the loops over one range of work items (blocks of rows)
// that the CPU policy (attention_cpu.cpp) runs inside at::parallel_for.
//
// They are written once, with at::vec::Vectorized, in attention_kernels_impl.h, and compiled once
// per CPU capability, as ATen compiles its own CPU kernels: attention_kernels.cpp (DEFAULT: any x86-64 / other CPU), attention_kernels_avx2.cpp
// and attention_kernels_avx512.cpp. Each defines the table of its capability; the policy picks
// the table that matches at::get_cpu_capability() (which honours ATEN_CPU_CAPABILITY).
#pragma once

#include <cstdint>

#include "rnnfused/attention_math.h"

namespace rnnfused {
namespace cpu {

// The CPU reduction scheme of grad_key in the additive backward. grad_key[b] sums over the Tq
// queries of b; rather than locking, work item i = b * splits + s handles queries
// [s * chunk, min((s + 1) * chunk, Tq)) of batch element b, writes the grad_query and grad_v_rows
// rows of those queries, and its share of grad_key[b] into
//   grad_key_partial + (s * B + b) * Tk * A   (Tk, A), which it zeroes first.
// No two items write the same memory; the policy sums the shares afterwards (with splits == 1,
// grad_key_partial is grad_key itself).
template <typename acc_t>
struct AdditiveBackwardSplit {
  acc_t* grad_key_partial;  // (splits, B, Tk, A)
  int64_t splits;
  int64_t chunk;            // queries per split: ceil(Tq / splits)
};

// The kernels work on blocks of this many query (or key) rows of one batch element: work item =
// (b, block), B * ceil(n / kRowBlock) items for n rows per batch element.
constexpr int64_t kRowBlock = 4;

template <typename acc_t>
struct AttentionRowKernels {
  // Work items [begin, end) of query blocks: additive scores, softmax, context.
  void (*additive_attention)(const AdditiveScoresParams<acc_t>&, int64_t begin, int64_t end);
  // Work items [begin, end) of the B * splits items of AdditiveBackwardSplit.
  void (*additive_scores_backward)(const AdditiveBackwardParams<acc_t>&,
                                   const AdditiveBackwardSplit<acc_t>&, int64_t begin, int64_t end);
  // Work items [begin, end) of query blocks: dot scores, softmax, context.
  void (*dot_attention)(const DotAttentionParams<acc_t>&, int64_t begin, int64_t end);
  // Backward: every query block (score gradients [, grad_query]), then every key block
  // (grad_values [, grad_keys]), which reads the score gradients of all queries.
  void (*score_grad_queries)(const ScoreGradParams<acc_t>&, int64_t begin, int64_t end);
  void (*score_grad_keys)(const ScoreGradParams<acc_t>&, int64_t begin, int64_t end);
  void (*dot_backward_queries)(const DotAttentionBackwardParams<acc_t>&, int64_t begin, int64_t end);
  void (*dot_backward_keys)(const DotAttentionBackwardParams<acc_t>&, int64_t begin, int64_t end);
};

struct AttentionRowKernelTable {
  AttentionRowKernels<float> f32;
  AttentionRowKernels<double> f64;
};

// One per capability (the suffix is ATen's CPU_CAPABILITY name).
const AttentionRowKernelTable& attention_row_kernels_DEFAULT();
const AttentionRowKernelTable& attention_row_kernels_AVX2();
const AttentionRowKernelTable& attention_row_kernels_AVX512();

}  // namespace cpu
}  // namespace rnnfused
