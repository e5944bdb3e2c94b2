// The CPU row kernels of the attention ops: the loops over one range of rows (or work items)
// that the CPU policy (attention_cpu.cpp) runs inside at::parallel_for.
//
// They are written once, with at::vec::Vectorized (SLEEF tanh / exp), in
// attention_kernels_impl.h, and compiled once per CPU capability, as ATen compiles its own CPU
// kernels: attention_kernels.cpp (DEFAULT: any x86-64 / other CPU), attention_kernels_avx2.cpp
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
// rows of those queries, and adds its share of grad_key[b] into
//   grad_key_partial + (s * B + b) * Tk * A   (Tk, A), zeroed.
// No two items write the same memory; the policy sums the shares afterwards (with splits == 1,
// grad_key_partial is grad_key itself).
template <typename acc_t>
struct AdditiveBackwardSplit {
  acc_t* grad_key_partial;  // (splits, B, Tk, A)
  int64_t splits;
  int64_t chunk;            // queries per split: ceil(Tq / splits)
};

// The fused dot-attention kernels work on blocks of this many query (or key) rows of one batch
// element: work item = (b, block).
constexpr int64_t kDotRowBlock = 4;

template <typename acc_t>
struct AttentionRowKernels {
  // Rows [begin, end) of the B * Tq rows.
  void (*additive_scores_softmax)(const AdditiveScoresParams<acc_t>&, int64_t begin, int64_t end);
  void (*softmax_backward)(const SoftmaxBackwardParams<acc_t>&, int64_t begin, int64_t end);
  // Work items [begin, end) of the B * splits items of AdditiveBackwardSplit.
  void (*additive_scores_backward)(const AdditiveBackwardParams<acc_t>&,
                                   const AdditiveBackwardSplit<acc_t>&, int64_t begin, int64_t end);
  // Work items [begin, end) of the B * ceil(Tq / kDotRowBlock) query blocks ...
  void (*dot_attention)(const DotAttentionParams<acc_t>&, int64_t begin, int64_t end);
  void (*dot_backward_queries)(const DotAttentionBackwardParams<acc_t>&, int64_t begin, int64_t end);
  // ... and, once every query block is done, of the B * ceil(Tk / kDotRowBlock) key blocks.
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
