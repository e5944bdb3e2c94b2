// Scratch buffers that live only inside one op call (packed weights, the gates of an inference
// run, dL/dgates, ...) come from a small pool of CPU buffers kept across calls. A fresh
// multi-megabyte allocation is handed out by the OS page by page, each page faulted in and zeroed
// on first touch: in a training step that cost ~15% of the time. oneDNN keeps its scratchpad
// the same way. The pool holds at most kMaxFreeBuffers buffers and kMaxFreeBytes bytes (the
// smallest go first); take one with scratch_empty, and it goes back when the returned tensor
// dies (from any thread).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace rnnfused {

class ScratchPool {
 public:
  static ScratchPool& instance() {
    static ScratchPool* pool = new ScratchPool();  // never destroyed: tensors may outlive statics
    return *pool;
  }

  // An uninitialized tensor of `sizes` whose memory returns to the pool when it dies.
  at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype) {
    int64_t numel = 1;
    for (const int64_t s : sizes) numel *= s;
    const int64_t bytes = std::max<int64_t>(1, numel * int64_t(c10::elementSize(dtype)));
    at::Tensor buffer = take(bytes);
    void* data = buffer.data_ptr();
    return at::from_blob(data, sizes, [buffer](void*) mutable { instance().give_back(std::move(buffer)); },
                         at::TensorOptions().dtype(dtype));
  }

 private:
  static constexpr size_t kMaxFreeBuffers = 8;
  static constexpr int64_t kMaxFreeBytes = int64_t(256) << 20;

  // The smallest free buffer of at least `bytes`, or a new one.
  at::Tensor take(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->numel() >= bytes && (best == free_.end() || it->numel() < best->numel())) best = it;
      }
      if (best != free_.end()) {
        at::Tensor buffer = std::move(*best);
        free_bytes_ -= buffer.numel();
        free_.erase(best);
        return buffer;
      }
    }
    return at::empty({bytes}, at::kByte);
  }

  void give_back(at::Tensor buffer) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_bytes_ += buffer.numel();
    free_.push_back(std::move(buffer));
    while (!free_.empty() && (free_.size() > kMaxFreeBuffers || free_bytes_ > kMaxFreeBytes)) {
      const auto smallest = std::min_element(free_.begin(), free_.end(),
                                             [](const at::Tensor& a, const at::Tensor& b) { return a.numel() < b.numel(); });
      free_bytes_ -= smallest->numel();
      free_.erase(smallest);
    }
  }

  std::mutex mutex_;
  std::vector<at::Tensor> free_;  // 1-D uint8 buffers
  int64_t free_bytes_ = 0;
};

inline at::Tensor scratch_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  return ScratchPool::instance().empty(sizes, dtype);
}

}  // namespace rnnfused
