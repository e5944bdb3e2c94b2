// Vectorized CPU pointwise passes (float, double, bfloat16, float16) and the few-rows GEMM of a time step,
// compiled once per instruction set.
//
// A kernel file turns its instruction set on (isa_avx2_begin.h / isa_avx512_begin.h, which also
// define CPU_CAPABILITY) and includes pointwise_vec_impl.h, which defines these functions in
// rnnfused::<capability namespace> on ATen's Vectorized (SLEEF exp / tanh): the gate math is
// gate_math.h's templates run on SIMD vectors; the row tails run gate_math.h's scalar bodies.
// recurrent_cpu.cpp picks the best capability the running CPU has.
#pragma once

#include <cstdint>

#include "rnnfused/gate_math.h"

namespace rnnfused {

// S is the storage type (float, double, at::BFloat16, at::Half), A the arithmetic type (S, or
// float for the 16-bit types).
#define RNNF_DECLARE_VECTORIZED_POINTWISE(ns)                                                   \
  namespace ns {                                                                               \
  template <bool kTraining, typename S, typename A>                                            \
  void lstm_forward_rows(const LstmForwardStep<S, A>& p, int64_t begin, int64_t end);          \
  template <typename S, typename A>                                                            \
  void lstm_backward_rows(const LstmBackwardStep<S, A>& p, int64_t begin, int64_t end);        \
  template <Activation act, typename S, typename A>                                            \
  void rnn_forward_rows(const RnnForwardStep<S>& p, int64_t begin, int64_t end);               \
  template <Activation act, typename S, typename A>                                            \
  void rnn_backward_rows(const RnnBackwardStep<S>& p, int64_t begin, int64_t end);             \
  /* C (rows, N) (+)= A (rows, K) @ B (K, N), B contiguous: for the 1-2 rows of a streaming   \
     step, where a GEMV in registers beats a general GEMM kernel. */                          \
  void few_rows_gemm(const float* a, int64_t lda, const float* b, int64_t K, int64_t N,        \
                     float* c, int64_t ldc, int64_t rows, bool accumulate);                    \
  }

RNNF_DECLARE_VECTORIZED_POINTWISE(avx2)
RNNF_DECLARE_VECTORIZED_POINTWISE(avx512)

#undef RNNF_DECLARE_VECTORIZED_POINTWISE

}  // namespace rnnfused
