// A team of threads that stays together for a whole time loop: each thread owns a fixed share
// of the hidden units (or output columns) for every step, and the team meets at a barrier
// where a step's result must be complete before anyone reads it. One fork per op call instead
// of one per GEMM and pointwise pass.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnfused {

// Runs body(thread_id, team_size) on up to max_threads threads (fewer when OpenMP gives fewer,
// one inside another parallel region). body must not throw and may call team_barrier().
template <typename Body>
void run_team(int64_t max_threads, const Body& body) {
  const int64_t wanted = std::max<int64_t>(1, std::min<int64_t>(max_threads, at::get_num_threads()));
#ifdef _OPENMP
  if (wanted > 1 && !at::in_parallel_region()) {
#pragma omp parallel num_threads(static_cast<int>(wanted))
    body(int64_t(omp_get_thread_num()), int64_t(omp_get_num_threads()));
    return;
  }
#endif
  body(int64_t(0), int64_t(1));
}

// Every thread of the team waits here until all have arrived (a no-op for a team of one).
inline void team_barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

// Thread `id` of `team`'s share [begin, end) of `count` items, in contiguous near-equal parts.
inline std::pair<int64_t, int64_t> share_of(int64_t count, int64_t id, int64_t team) {
  return {count * id / team, count * (id + 1) / team};
}

}  // namespace rnnfused
