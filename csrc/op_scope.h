// What every op implementation sets up before its first tensor operation.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

namespace rnnfused {

// The device of the op's main input is current, and the views the op takes of its own tensors
// (transposes, narrows, reshapes) skip autograd's view tracking: the op's autograd kernel wraps
// its results, and the op returns no view of an input. Tracking costs ~1-3 us per view, which
// adds up in a cell step or a short sequence.
struct OpScope {
  explicit OpScope(const at::Tensor& input) : device_guard(input.device()) {}

  c10::OptionalDeviceGuard device_guard;
  at::AutoDispatchBelowADInplaceOrView below_view_tracking;
};

}  // namespace rnnfused
