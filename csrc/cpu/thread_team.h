// A team of threads that stays together for a whole time loop: each thread owns a fixed share
// of the hidden units (or output columns) for every step, and waits for the others only where
// it reads their results (TeamProgress). One fork per op call instead of one per GEMM and
// pointwise pass.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnfused {

// Runs body(thread_id, team_size) on up to max_threads threads (fewer when OpenMP gives fewer,
// one inside another parallel region). body must not throw.
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

// Where the threads of a team are in a time loop, for waits narrower than a barrier. Every
// thread runs the same sequence of stages (parts of a step whose results another thread reads):
// publish(id) after writing a stage's results, wait_for_team(id, team) before reading those of the
// others. A thread may go on with work that reads only its own results in between, so the wait
// overlaps it. Publishing releases, waiting acquires.
class TeamProgress {
 public:
  explicit TeamProgress(int64_t max_team) : slots_(new Slot[std::max<int64_t>(1, max_team)]) {}

  // Thread id has written its results of one more stage.
  void publish(int64_t id) {
    std::atomic<int64_t>& stages = slots_[id].stages;
    stages.store(stages.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  // Returns once threads 0 .. team-1 have all published as many stages as thread id. Spins (a
  // team has a core per thread while its loop runs: waits last microseconds), and yields the
  // core after kSpinsBeforeYield pauses (1-10 us, by CPU) in case it has not.
  void wait_for_team(int64_t id, int64_t team) const {
    const int64_t stages = slots_[id].stages.load(std::memory_order_relaxed);
    for (int64_t j = 0; j < team; ++j) {
      for (int64_t spins = 0; slots_[j].stages.load(std::memory_order_acquire) < stages; ++spins) {
        if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(_M_X64)
          _mm_pause();
#endif
        } else {
          std::this_thread::yield();
        }
      }
    }
  }

 private:
  static constexpr int64_t kSpinsBeforeYield = 256;
  struct alignas(64) Slot {
    std::atomic<int64_t> stages{0};
  };
  std::unique_ptr<Slot[]> slots_;
};

// Thread `id` of `team`'s share [begin, end) of `count` items, in contiguous near-equal parts.
inline std::pair<int64_t, int64_t> share_of(int64_t count, int64_t id, int64_t team) {
  return {count * id / team, count * (id + 1) / team};
}

}  // namespace rnnfused
