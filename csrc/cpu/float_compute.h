// 16-bit ops on CPUs without 16-bit kernels for them run the float32 kernels: every float16 /
// bfloat16 tensor argument is widened to float32 on the way in, every floating result rounded
// back once on the way out. Without bfloat16 dot products (AVX512-BF16) or half arithmetic a
// 16-bit GEMM is a float32 GEMM plus conversions anyway (ATen's own runs ~10x slower than its
// float32 one on such CPUs), so the op computes in float32 throughout: gates, states and
// activations are rounded to 16 bits only where they leave the op (outputs, the workspace), not
// at every step. The results keep the argument dtype, as the fake kernels state.
//
//   m.impl("op", &ComputeInFloat<&op_impl<Policy>, &has_16bit_kernels>::call);
//
// has_16bit_kernels(dtype) says whether the CPU runs `dtype` natively (then the op is called as
// it is). So is a call whose floating tensors are not all CPU tensors of one 16-bit dtype: the
// op itself reports a mismatch, with its own message.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace rnnfused {
namespace float_compute {

using at::Tensor;

// The 16-bit dtype of a call: starts unknown, `uniform` turns false on anything else.
struct CallDtype {
  std::optional<at::ScalarType> dtype;
  bool uniform = true;

  void see(const Tensor& t) {
    if (!t.defined() || !at::isFloatingType(t.scalar_type())) return;
    const at::ScalarType st = t.scalar_type();
    uniform = uniform && t.device().is_cpu() && (st == at::kHalf || st == at::kBFloat16) &&
              (!dtype.has_value() || *dtype == st);
    dtype = st;
  }
  void see(const std::optional<Tensor>& t) {
    if (t.has_value()) see(*t);
  }
  template <typename T>
  void see(const T&) {}  // flags, names
};

inline Tensor widen(const Tensor& t, at::ScalarType dtype) {
  return t.defined() && t.scalar_type() == dtype ? t.to(at::kFloat) : t;
}
inline std::optional<Tensor> widen(const std::optional<Tensor>& t, at::ScalarType dtype) {
  return t.has_value() ? std::optional<Tensor>(widen(*t, dtype)) : std::nullopt;
}
template <typename T>
const T& widen(const T& value, at::ScalarType) {
  return value;
}

inline Tensor round_back(const Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == at::kFloat ? t.to(dtype) : t;
}
template <typename... Ts>
std::tuple<Ts...> round_back(const std::tuple<Ts...>& results, at::ScalarType dtype) {
  return std::apply([&](const auto&... r) { return std::tuple<Ts...>(round_back(r, dtype)...); }, results);
}

}  // namespace float_compute

template <auto kOp, bool (*kHas16BitKernels)(at::ScalarType)>
struct ComputeInFloat;

template <typename R, typename... Args, R (*kOp)(Args...), bool (*kHas16BitKernels)(at::ScalarType)>
struct ComputeInFloat<kOp, kHas16BitKernels> {
  static R call(Args... args) {
    float_compute::CallDtype call_dtype;
    (call_dtype.see(args), ...);
    if (!call_dtype.uniform || !call_dtype.dtype.has_value() || kHas16BitKernels(*call_dtype.dtype)) {
      return kOp(std::forward<Args>(args)...);
    }
    const at::ScalarType dtype = *call_dtype.dtype;
    return float_compute::round_back(kOp(float_compute::widen(args, dtype)...), dtype);
  }
};

}  // namespace rnnfused
