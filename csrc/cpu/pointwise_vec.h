// Vectorized CPU pointwise passes (float and double), compiled once per instruction set.
//
// A kernel file defines CPU_CAPABILITY (AVX2 or AVX512), turns the instruction set on for
// itself, and includes pointwise_vec_impl.h, which defines these functions in
// rnnfused::<capability namespace> on ATen's Vectorized (SLEEF exp / tanh): the gate math is
// gate_math.h's templates run on SIMD vectors; the row tails run gate_math.h's scalar bodies.
// recurrent_cpu.cpp picks the best capability the running CPU has.
#pragma once

#include <cstdint>

#include "rnnfused/gate_math.h"

namespace rnnfused {

#define RNNF_DECLARE_VECTORIZED_POINTWISE(ns)                                                   \
  namespace ns {                                                                               \
  template <bool kTraining, typename T>                                                        \
  void lstm_forward_rows(const LstmForwardStep<T, T>& p, int64_t begin, int64_t end);          \
  template <typename T>                                                                        \
  void lstm_backward_rows(const LstmBackwardStep<T, T>& p, int64_t begin, int64_t end);        \
  template <Activation act, typename T>                                                        \
  void rnn_forward_rows(const RnnForwardStep<T>& p, int64_t begin, int64_t end);               \
  template <Activation act, typename T>                                                        \
  void rnn_backward_rows(const RnnBackwardStep<T>& p, int64_t begin, int64_t end);             \
  }

RNNF_DECLARE_VECTORIZED_POINTWISE(avx2)
RNNF_DECLARE_VECTORIZED_POINTWISE(avx512)

#undef RNNF_DECLARE_VECTORIZED_POINTWISE

}  // namespace rnnfused
