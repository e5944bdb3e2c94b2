// A weight laid out for the panel GEMM micro-kernels (pointwise_vec_impl.h, panel_gemm_bf16.cpp),
// packed once per op call. The (K, N) operand of C = A @ W is cut into `groups` column groups of
// group_width columns each (the 4 gates of an LSTM, or 1), and every group into panels of
// panel_width columns; each panel is stored as its own contiguous (K, panel_width) block, the
// last panel of a group zero-padded. In pair layout (bfloat16 dot products) a panel is
// (K/2, panel_width, 2) instead: rows k and k+1 interleaved, K padded to even with zeros. A
// panel of 64 float columns and K = 256 is 64 KB: it stays in L1/L2 across all the rows of a
// step, and, for the recurrent weights, across steps.
//
// Hidden units (or output columns) are shared among threads in whole panels, the same split
// for every group, so a thread computes all gates of its own units. A transposed row-major
// weight (the recurrent weights as torch.nn stores them) is packed by the threads themselves,
// each its own panels (pack_share): in parallel, and into the cache of the core that reads them.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "scratch.h"
#include "thread_team.h"

namespace rnnfused {

// C (rows, valid_cols) = init + A (rows, K) @ panel (K, width), A row-major (row stride lda);
// init: C (accumulate) or 0.
template <typename T>
using PanelGemmFn = void (*)(const T* a, int64_t lda, const T* panel, int64_t K, T* c, int64_t ldc, int64_t rows,
                             int64_t valid_cols, bool accumulate);

// Packs panels [panel_begin, panel_end) of every group of W^T for W (N, K) row-major (row stride
// ldw) into dst (pointwise_vec.h).
template <typename T>
using PackTransposedFn = void (*)(const T* w, int64_t ldw, int64_t K, int64_t groups, int64_t group_width,
                                  int64_t panels_per_group, int64_t panel_begin, int64_t panel_end, T* dst);

template <typename T>
struct PackedWeight {
  at::Tensor storage;  // (groups, panels_per_group, K, panel_width), from the scratch pool
  int64_t K = 0;
  int64_t groups = 0;
  int64_t group_width = 0;
  int64_t panel_width = 0;
  int64_t panels_per_group = 0;
  int64_t padded_K = 0;  // K, or K rounded up to even in pair layout

  // w_kn: any (K, groups * group_width) view (typically a transposed weight). pack_transposed,
  // when given, packs a transposed row-major weight directly, in this object's layout: then the
  // panels are left to pack_share. Any other weight is packed here.
  PackedWeight(const at::Tensor& w_kn, int64_t groups_, int64_t panel_width_, bool pairs = false,
               PackTransposedFn<T> pack_transposed = nullptr)
      : K(w_kn.size(0)), groups(groups_), group_width(w_kn.size(1) / groups_), panel_width(panel_width_) {
    panels_per_group = (group_width + panel_width - 1) / panel_width;
    padded_K = pairs ? (K + 1) / 2 * 2 : K;
    if (pack_transposed != nullptr && w_kn.t().is_contiguous()) {
      storage = pairs ? scratch_empty({groups, panels_per_group, padded_K / 2, panel_width, 2}, w_kn.scalar_type())
                      : scratch_empty({groups, panels_per_group, K, panel_width}, w_kn.scalar_type());
      unpacked_ = w_kn;
      pack_transposed_ = pack_transposed;
      return;
    }
    const int64_t padded = panels_per_group * panel_width;
    at::Tensor w = w_kn.reshape({K, groups, group_width});
    if (padded != group_width) w = at::constant_pad_nd(w, {0, padded - group_width});
    if (padded_K != K) w = at::constant_pad_nd(w, {0, 0, 0, 0, 0, padded_K - K});
    w = w.view({padded_K, groups, panels_per_group, panel_width});
    if (pairs) {
      storage = scratch_empty({groups, panels_per_group, padded_K / 2, panel_width, 2}, w_kn.scalar_type());
      storage.copy_(w.view({padded_K / 2, 2, groups, panels_per_group, panel_width}).permute({2, 3, 0, 4, 1}));
    } else {
      storage = scratch_empty({groups, panels_per_group, K, panel_width}, w_kn.scalar_type());
      storage.copy_(w.permute({1, 2, 0, 3}));
    }
  }
  PackedWeight() = default;

  const T* panel(int64_t group, int64_t index) const {
    return storage.const_data_ptr<T>() + (group * panels_per_group + index) * padded_K * panel_width;
  }

  // Thread `id` of `team`'s columns [begin, end) within each group: whole panels.
  std::pair<int64_t, int64_t> share(int64_t id, int64_t team) const {
    const auto [first, last] = share_of(panels_per_group, id, team);
    return {first * panel_width, std::min(last * panel_width, group_width)};
  }

  // Packs the panels of share(id, team) where the constructor left them unpacked. Every thread
  // of the team calls it before it multiplies; a thread multiplies only its own share.
  void pack_share(int64_t id, int64_t team) const {
    if (pack_transposed_ == nullptr) return;
    const auto [first, last] = share_of(panels_per_group, id, team);
    pack_transposed_(unpacked_.const_data_ptr<T>(), K, K, groups, group_width, panels_per_group, first, last,
                     storage.mutable_data_ptr<T>());
  }

  // C[:, g*group_width + [begin, end)] = init + A[:, [k0, k1)] @ W[[k0, k1), same columns] for
  // every group g; A row-major (row stride lda), C row stride ldc, begin a multiple of
  // panel_width, k0 even in pair layout; init as for PanelGemmFn.
  void gemm_columns(PanelGemmFn<T> kernel, const T* a, int64_t lda, T* c, int64_t ldc, int64_t rows, int64_t begin,
                    int64_t end, int64_t k0, int64_t k1, bool accumulate) const {
    if (rows == 0 || (k0 >= k1 && accumulate)) return;
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t col = begin; col < end; col += panel_width) {
        kernel(a + k0, lda, panel(g, col / panel_width) + k0 * panel_width, k1 - k0, c + g * group_width + col, ldc,
               rows, std::min(panel_width, group_width - col), accumulate);
      }
    }
  }

 private:
  at::Tensor unpacked_;  // w_kn, which pack_share packs from
  PackTransposedFn<T> pack_transposed_ = nullptr;
};

}  // namespace rnnfused
