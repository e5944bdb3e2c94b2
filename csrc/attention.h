// The device-independent host side of the attention ops: input checks, the conversion of 16-bit
// tensors to float, the GEMMs (through ATen: cuBLAS on the GPU, the CPU BLAS on the host) and the
// order of work. One template serves both devices; the device-specific part is the `Kernels`
// policy that runs the fused row kernels of attention_math.h:
//
//   struct Kernels {
//     template <class T> static void additive_scores_softmax(const AdditiveScoresParams<T>&);
//     template <class T> static void additive_scores_backward(const AdditiveBackwardParams<T>&);
//     static constexpr bool kFusedProducts;  // true: the policy runs the small matrix products
//     template <class T> static void dot_attention(const DotAttentionParams<T>&);
//     template <class T> static void score_grads(const ScoreGradParams<T>&);
//     template <class T> static void dot_attention_backward(const DotAttentionBackwardParams<T>&);
//     // false: ATen GEMMs run them, around
//     template <class T> static void masked_softmax(const MaskedSoftmaxParams<T>&);
//     template <class T> static void softmax_backward(const SoftmaxBackwardParams<T>&);
//   };
//
// The CPU fuses the products (per batch element, in cache, masked keys skipped: small batched
// GEMMs are slow there); the GPU runs cuBLAS. Work per op (B = batch, Tq / Tk = query / key
// lengths, A = attention size, Dv = value size):
//   additive forward    kernel: scores (never the (B, Tq, Tk, A) tanh tensor) + masked softmax
//                       (+ context = weights @ values when fused, else a GEMM)
//   backward, both      score gradients (ScoreGradParams: dL/dscore, grad_values), fused or as
//                       GEMMs + softmax_backward
//   additive backward   then kernel: recomputes tanh(query + key) for grad_query, grad_key, grad_v
//   dot forward         fused, or GEMM scores + masked_softmax kernel + GEMM context
//   dot backward        fused, or the score gradients + GEMMs grad_query = dS @ keys,
//                       grad_keys = dS^T @ query
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <optional>
#include <tuple>

#include "op_scope.h"
#include "rnnfused/attention_math.h"

namespace rnnfused {
namespace attention {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// ---------------------------------------------------------------------------------------------
// Input checks. Every message names the argument.

inline void check_tensor(const Tensor& t, const char* name, int64_t dim, const char* shape) {
  TORCH_CHECK(t.dim() == dim, "rnnfused: ", name, " must be ", dim, "-D ", shape, ", got shape ",
      t.sizes());
}

inline void check_like(const Tensor& ref, const char* ref_name, const Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "rnnfused: ", name, " is on ", t.device(), " but ",
      ref_name, " is on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "rnnfused: ", name, " has dtype ",
      t.scalar_type(), " but ", ref_name, " has dtype ", ref.scalar_type());
}

inline void check_size(const Tensor& t, const char* name, int64_t d, int64_t expected,
                       const char* what) {
  TORCH_CHECK(t.size(d) == expected, "rnnfused: ", name, " has ", what, " ", t.size(d),
      " at dim ", d, ", expected ", expected, " (shape ", t.sizes(), ")");
}

// Sizes of one attention call, read off query / keys / values and checked against each other.
struct AttentionSizes {
  int64_t batch, query_len, key_len, feature, value_size;
};

// query (B, Tq, F), keys (B, Tk, F), values (B, Tk, Dv), mask (B, Tk) bool or None.
inline AttentionSizes check_attention(const Tensor& query, const char* query_name,
                                      const Tensor& keys, const char* keys_name,
                                      const Tensor& values, const OptTensor& mask) {
  check_tensor(query, query_name, 3, "(B, Tq, features)");
  const auto st = query.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
      "rnnfused: ", query_name, " must be float32, float64, float16 or bfloat16, got ", st);
  check_tensor(keys, keys_name, 3, "(B, Tk, features)");
  check_tensor(values, "values", 3, "(B, Tk, value_size)");
  check_like(query, query_name, keys, keys_name);
  check_like(query, query_name, values, "values");
  AttentionSizes s{query.size(0), query.size(1), keys.size(1), query.size(2), values.size(2)};
  check_size(keys, keys_name, 0, s.batch, "batch size");
  check_size(keys, keys_name, 2, s.feature, "feature size");
  check_size(values, "values", 0, s.batch, "batch size");
  check_size(values, "values", 1, s.key_len, "length");
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool, "rnnfused: mask must be a bool tensor "
        "(True = attend), got dtype ", mask->scalar_type());
    TORCH_CHECK(mask->device() == query.device(), "rnnfused: mask is on ", mask->device(),
        " but ", query_name, " is on ", query.device());
    TORCH_CHECK(mask->dim() == 2 && mask->size(0) == s.batch && mask->size(1) == s.key_len,
        "rnnfused: mask must have shape (B, Tk) = (", s.batch, ", ", s.key_len, "), got ",
        mask->sizes());
  }
  return s;
}

// A tensor of the output's shape (a gradient, None when autograd passes none, or the saved
// weights), on ref's device and of its dtype.
inline void check_output_like(const OptTensor& t, const char* name, const Tensor& ref,
                              const char* ref_name, at::IntArrayRef shape) {
  if (!t.has_value()) return;
  check_like(ref, ref_name, *t, name);
  TORCH_CHECK(t->sizes() == shape, "rnnfused: ", name, " must have shape ", shape, ", got ",
      t->sizes());
}

// ---------------------------------------------------------------------------------------------
// Helpers.

// t in the kernels' arithmetic type (float for 16-bit inputs), contiguous; no copy when it is so.
inline Tensor as_acc(const Tensor& t) {
  return t.to(at::toOpMathType(t.scalar_type())).contiguous();
}

inline const bool* mask_ptr(const std::optional<Tensor>& mask_contig) {
  return mask_contig.has_value() ? mask_contig->const_data_ptr<bool>() : nullptr;
}

inline std::optional<Tensor> contiguous_mask(const OptTensor& mask) {
  return mask.has_value() ? std::optional<Tensor>(mask->contiguous()) : std::nullopt;
}

// Runs f(acc_t{}) with acc_t = float or double, the arithmetic type of `dtype`.
template <typename F>
void dispatch_acc(at::ScalarType dtype, F&& f) {
  if (at::toOpMathType(dtype) == at::kDouble) {
    f(double{});
  } else {
    f(float{});
  }
}

// The part of both backward passes before the scores (ScoreGradParams): returns dL/dscore
// ((B, Tq, Tk), acc_t) and the gradient of values ((B, Tk, Dv), acc_t).
template <typename Kernels>
std::tuple<Tensor, Tensor> score_and_value_grads(
    const OptTensor& grad_context, const OptTensor& grad_weights, const Tensor& values_acc,
    const Tensor& weights_acc, double scale) {
  const Tensor gc = grad_context.has_value() ? as_acc(*grad_context) : Tensor();
  const Tensor gw = grad_weights.has_value() ? as_acc(*grad_weights) : Tensor();
  Tensor grad;  // g, then dL/dscore: a fresh buffer (never an input: the kernels write it)
  Tensor grad_values;
  if constexpr (Kernels::kFusedProducts) {
    grad = at::empty_like(weights_acc);
    grad_values = at::empty_like(values_acc);
  } else if (gc.defined()) {
    grad = gw.defined() ? at::baddbmm(gw, gc, values_acc.transpose(1, 2))
                        : at::bmm(gc, values_acc.transpose(1, 2));
    grad_values = at::bmm(weights_acc.transpose(1, 2), gc);
  } else {
    grad = gw.defined() ? gw.clone() : at::zeros_like(weights_acc);
    grad_values = at::zeros_like(values_acc);
  }
  dispatch_acc(weights_acc.scalar_type(), [&](auto zero) {
    using acc_t = decltype(zero);
    if constexpr (Kernels::kFusedProducts) {
      ScoreGradParams<acc_t> p;
      p.grad_context = gc.defined() ? gc.const_data_ptr<acc_t>() : nullptr;
      p.grad_weights = gw.defined() ? gw.const_data_ptr<acc_t>() : nullptr;
      p.values = values_acc.const_data_ptr<acc_t>();
      p.weights = weights_acc.const_data_ptr<acc_t>();
      p.grad_scores = grad.mutable_data_ptr<acc_t>();
      p.grad_values = grad_values.mutable_data_ptr<acc_t>();
      p.scale = static_cast<acc_t>(scale);
      p.batch = weights_acc.size(0);
      p.query_len = weights_acc.size(1);
      p.key_len = weights_acc.size(2);
      p.value_size = values_acc.size(2);
      Kernels::score_grads(p);
    } else {
      SoftmaxBackwardParams<acc_t> p;
      p.weights = weights_acc.const_data_ptr<acc_t>();
      p.grad = grad.mutable_data_ptr<acc_t>();
      p.scale = static_cast<acc_t>(scale);
      p.rows = weights_acc.size(0) * weights_acc.size(1);
      p.key_len = weights_acc.size(2);
      Kernels::softmax_backward(p);
    }
  });
  return {grad, grad_values};
}

// ---------------------------------------------------------------------------------------------
// Additive attention (Bahdanau; Luong concat).

// v: (A,), like query_proj.
inline void check_score_vector(const Tensor& v, const Tensor& query_proj, const AttentionSizes& s) {
  check_tensor(v, "v", 1, "(attn_size,)");
  check_like(query_proj, "query_proj", v, "v");
  check_size(v, "v", 0, s.feature, "attn_size");
}

template <typename Kernels>
std::tuple<Tensor, Tensor> additive_attention_forward_impl(
    const Tensor& query_proj, const Tensor& key_proj, const Tensor& v, const Tensor& values,
    const OptTensor& mask) {
  const OpScope scope(query_proj);
  const AttentionSizes s = check_attention(query_proj, "query_proj", key_proj, "key_proj", values, mask);
  check_score_vector(v, query_proj, s);

  const Tensor q = as_acc(query_proj), k = as_acc(key_proj), va = as_acc(v), val = as_acc(values);
  const auto mask_c = contiguous_mask(mask);
  Tensor weights = at::empty({s.batch, s.query_len, s.key_len}, q.options());
  Tensor context = Kernels::kFusedProducts ? at::empty({s.batch, s.query_len, s.value_size}, q.options())
                                           : Tensor();
  dispatch_acc(q.scalar_type(), [&](auto zero) {
    using acc_t = decltype(zero);
    AdditiveScoresParams<acc_t> p;
    p.query = q.const_data_ptr<acc_t>();
    p.key = k.const_data_ptr<acc_t>();
    p.v = va.const_data_ptr<acc_t>();
    p.mask = mask_ptr(mask_c);
    p.values = val.const_data_ptr<acc_t>();
    p.weights = weights.mutable_data_ptr<acc_t>();
    p.context = context.defined() ? context.mutable_data_ptr<acc_t>() : nullptr;
    p.batch = s.batch;
    p.query_len = s.query_len;
    p.key_len = s.key_len;
    p.attn_size = s.feature;
    p.value_size = s.value_size;
    Kernels::additive_scores_softmax(p);
  });
  if (!context.defined()) context = at::bmm(weights, val);
  return {context.to(query_proj.scalar_type()), weights.to(query_proj.scalar_type())};
}

template <typename Kernels>
std::tuple<Tensor, Tensor, Tensor, Tensor> additive_attention_backward_impl(
    const OptTensor& grad_context, const OptTensor& grad_weights, const Tensor& query_proj,
    const Tensor& key_proj, const Tensor& v, const Tensor& values, const Tensor& weights) {
  const OpScope scope(query_proj);
  const AttentionSizes s = check_attention(query_proj, "query_proj", key_proj, "key_proj", values, std::nullopt);
  check_score_vector(v, query_proj, s);
  check_output_like(weights, "weights", query_proj, "query_proj", {s.batch, s.query_len, s.key_len});
  check_output_like(grad_weights, "grad_weights", query_proj, "query_proj", {s.batch, s.query_len, s.key_len});
  check_output_like(grad_context, "grad_context", query_proj, "query_proj", {s.batch, s.query_len, s.value_size});

  const Tensor q = as_acc(query_proj), k = as_acc(key_proj), va = as_acc(v), val = as_acc(values);
  const Tensor w = as_acc(weights);
  Tensor grad_scores, grad_values;
  std::tie(grad_scores, grad_values) = score_and_value_grads<Kernels>(grad_context, grad_weights, val, w, 1.0);

  Tensor grad_query = at::empty_like(q);
  Tensor grad_key = at::empty_like(k);
  Tensor grad_v_rows = at::empty_like(q);
  dispatch_acc(q.scalar_type(), [&](auto zero) {
    using acc_t = decltype(zero);
    AdditiveBackwardParams<acc_t> p;
    p.grad_scores = grad_scores.const_data_ptr<acc_t>();
    p.query = q.const_data_ptr<acc_t>();
    p.key = k.const_data_ptr<acc_t>();
    p.v = va.const_data_ptr<acc_t>();
    p.grad_query = grad_query.mutable_data_ptr<acc_t>();
    p.grad_key = grad_key.mutable_data_ptr<acc_t>();
    p.grad_v_rows = grad_v_rows.mutable_data_ptr<acc_t>();
    p.batch = s.batch;
    p.query_len = s.query_len;
    p.key_len = s.key_len;
    p.attn_size = s.feature;
    Kernels::additive_scores_backward(p);
  });
  const auto dtype = query_proj.scalar_type();
  const Tensor grad_v = grad_v_rows.sum({0, 1});
  return {grad_query.to(dtype), grad_key.to(dtype), grad_v.to(dtype), grad_values.to(dtype)};
}

// ---------------------------------------------------------------------------------------------
// Dot attention (Luong dot / general; scaled dot product with scale = 1/sqrt(D)): fused, or GEMMs
// around the masked_softmax kernel (see the top of the file).

template <typename Kernels>
std::tuple<Tensor, Tensor> dot_attention_forward_impl(
    const Tensor& query, const Tensor& keys, const Tensor& values, const OptTensor& mask,
    double scale) {
  const OpScope scope(query);
  const AttentionSizes s = check_attention(query, "query", keys, "keys", values, mask);

  const Tensor q = as_acc(query), k = as_acc(keys), val = as_acc(values);
  const auto mask_c = contiguous_mask(mask);
  Tensor weights, context;
  if constexpr (Kernels::kFusedProducts) {
    weights = at::empty({s.batch, s.query_len, s.key_len}, q.options());
    context = at::empty({s.batch, s.query_len, s.value_size}, q.options());
    dispatch_acc(q.scalar_type(), [&](auto zero) {
      using acc_t = decltype(zero);
      DotAttentionParams<acc_t> p;
      p.query = q.const_data_ptr<acc_t>();
      p.keys = k.const_data_ptr<acc_t>();
      p.values = val.const_data_ptr<acc_t>();
      p.mask = mask_ptr(mask_c);
      p.weights = weights.mutable_data_ptr<acc_t>();
      p.context = context.mutable_data_ptr<acc_t>();
      p.scale = static_cast<acc_t>(scale);
      p.batch = s.batch;
      p.query_len = s.query_len;
      p.key_len = s.key_len;
      p.feature = s.feature;
      p.value_size = s.value_size;
      Kernels::dot_attention(p);
    });
  } else {
    weights = at::bmm(q, k.transpose(1, 2));  // raw scores, then weights in place
    dispatch_acc(q.scalar_type(), [&](auto zero) {
      using acc_t = decltype(zero);
      MaskedSoftmaxParams<acc_t> p;
      p.scores = weights.mutable_data_ptr<acc_t>();
      p.mask = mask_ptr(mask_c);
      p.scale = static_cast<acc_t>(scale);
      p.batch = s.batch;
      p.query_len = s.query_len;
      p.key_len = s.key_len;
      Kernels::masked_softmax(p);
    });
    context = at::bmm(weights, val);
  }
  return {context.to(query.scalar_type()), weights.to(query.scalar_type())};
}

template <typename Kernels>
std::tuple<Tensor, Tensor, Tensor> dot_attention_backward_impl(
    const OptTensor& grad_context, const OptTensor& grad_weights, const Tensor& query,
    const Tensor& keys, const Tensor& values, const Tensor& weights, double scale) {
  const OpScope scope(query);
  const AttentionSizes s = check_attention(query, "query", keys, "keys", values, std::nullopt);
  check_output_like(weights, "weights", query, "query", {s.batch, s.query_len, s.key_len});
  check_output_like(grad_weights, "grad_weights", query, "query", {s.batch, s.query_len, s.key_len});
  check_output_like(grad_context, "grad_context", query, "query", {s.batch, s.query_len, s.value_size});

  const Tensor q = as_acc(query), k = as_acc(keys), val = as_acc(values), w = as_acc(weights);
  const auto dtype = query.scalar_type();
  if constexpr (Kernels::kFusedProducts) {
    const Tensor gc = grad_context.has_value() ? as_acc(*grad_context) : Tensor();
    const Tensor gw = grad_weights.has_value() ? as_acc(*grad_weights) : Tensor();
    Tensor grad_scores = at::empty_like(w);
    Tensor grad_query = at::empty_like(q), grad_keys = at::empty_like(k), grad_values = at::empty_like(val);
    dispatch_acc(q.scalar_type(), [&](auto zero) {
      using acc_t = decltype(zero);
      DotAttentionBackwardParams<acc_t> p;
      p.scores.grad_context = gc.defined() ? gc.const_data_ptr<acc_t>() : nullptr;
      p.scores.grad_weights = gw.defined() ? gw.const_data_ptr<acc_t>() : nullptr;
      p.scores.values = val.const_data_ptr<acc_t>();
      p.scores.weights = w.const_data_ptr<acc_t>();
      p.scores.grad_scores = grad_scores.mutable_data_ptr<acc_t>();
      p.scores.grad_values = grad_values.mutable_data_ptr<acc_t>();
      p.scores.scale = static_cast<acc_t>(scale);
      p.scores.batch = s.batch;
      p.scores.query_len = s.query_len;
      p.scores.key_len = s.key_len;
      p.scores.value_size = s.value_size;
      p.query = q.const_data_ptr<acc_t>();
      p.keys = k.const_data_ptr<acc_t>();
      p.grad_query = grad_query.mutable_data_ptr<acc_t>();
      p.grad_keys = grad_keys.mutable_data_ptr<acc_t>();
      p.feature = s.feature;
      Kernels::dot_attention_backward(p);
    });
    return {grad_query.to(dtype), grad_keys.to(dtype), grad_values.to(dtype)};
  } else {
    auto [grad_scores, grad_values] = score_and_value_grads<Kernels>(grad_context, grad_weights, val, w, scale);
    return {at::bmm(grad_scores, k).to(dtype), at::bmm(grad_scores.transpose(1, 2), q).to(dtype),
            grad_values.to(dtype)};
  }
}

}  // namespace attention
}  // namespace rnnfused
