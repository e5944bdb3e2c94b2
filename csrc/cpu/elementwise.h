// The CPU side of a fused pointwise pass: run body(row, k) for every row in [0, rows) and
// every column k in [0, columns) of one time step (or a function over row ranges), splitting
// rows across threads only when the step has enough elements to pay for the fork. Shared by
// every CPU kernel file.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace rnnfused {

constexpr int64_t kParallelGrainElements = 32768;

// Runs rows_fn(begin, end) over [0, rows) of a step of `columns` elements per row, in parallel
// when the step is big enough.
template <typename RowsFn>
void for_rows(int64_t rows, int64_t columns, const RowsFn& rows_fn) {
  const int64_t grain_rows = std::max<int64_t>(1, kParallelGrainElements / std::max<int64_t>(1, columns));
  at::parallel_for(0, rows, grain_rows, rows_fn);
}

template <typename Body>
void for_each_element(int64_t rows, int64_t columns, const Body& body) {
  for_rows(rows, columns, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t k = 0; k < columns; ++k) body(row, k);
    }
  });
}

}  // namespace rnnfused
