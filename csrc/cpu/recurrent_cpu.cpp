// CPU kernels of the layer and cell ops: the host driver of recurrent_layer.h with the CPU
// policy. The per-step float32 GEMMs call oneDNN's batch-reduce GEMM micro-kernel directly
// (ATen's cpublas::brgemm: no dispatch, JIT code for the exact shape); other dtypes go through
// ATen. The pointwise passes run pointwise_vec_impl.h's vectorized rows for the widest
// instruction set ATen runs with (AVX-512 or AVX2; 16-bit types computed in float); other CPUs
// and ATEN_CPU_CAPABILITY=default run gate_math.h's element bodies over every (row, unit).
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#include <string>
#include <type_traits>

#include "../recurrent_layer.h"
#include "elementwise.h"
#include "pointwise_vec.h"

namespace rnnfused {
namespace {

enum class CpuKernel { Scalar, Avx2, Avx512 };

// The capability ATen itself runs with (ATEN_CPU_CAPABILITY=default|avx2|avx512 lowers it; the
// attention kernels follow the same switch). Decided once per process.
CpuKernel cpu_kernel() {
  static const CpuKernel kernel = [] {
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") return CpuKernel::Avx512;
    if (capability == "AVX2") return CpuKernel::Avx2;
    return CpuKernel::Scalar;
  }();
  return kernel;
}

// Runs the vectorized rows function (a pointer into namespace avx2 or avx512) when the CPU has
// one; otherwise the element body over every (row, j).
template <typename Params, typename VecRows, typename Element>
void run_pointwise(const Params& p, int64_t rows, VecRows avx2_rows, VecRows avx512_rows,
                   const Element& element) {
  const CpuKernel kernel = cpu_kernel();
  for_rows(rows, p.hidden_size, [&](int64_t begin, int64_t end) {
    if (kernel == CpuKernel::Avx512) return avx512_rows(p, begin, end);
    if (kernel == CpuKernel::Avx2) return avx2_rows(p, begin, end);
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t j = 0; j < p.hidden_size; ++j) element(p, row, j);
    }
  });
}

// Steps smaller than this many multiply-adds run on one thread.
constexpr int64_t kParallelGemmMacs = int64_t(1) << 20;
// Copying a (K, N) weight costs about as much as a GEMM of this many rows with it.
constexpr int64_t kPackMinRows = 64;
// Steps of at most this many rows (streaming inference) use the register GEMV.
constexpr int64_t kFewRows = 2;

struct CpuPointwise {
  // float32 weights are made contiguous (K, N) once per op call, the layout the GEMMs read, when
  // the GEMMs they serve have rows enough to pay for the copy (a single cell step has not:
  // ATen's GEMM then reads the transposed view as it is).
  static Tensor step_operand(const Tensor& w_kn, int64_t total_rows) {
    const bool worth_packing = w_kn.scalar_type() == at::kFloat && total_rows >= kPackMinRows;
    return worth_packing ? w_kn.contiguous() : w_kn;
  }

  // C (M, N) = A (M, K) @ B (K, N) (+ C). float32 with a packed operand: 1-2 rows, the register
  // GEMV of pointwise_vec_impl.h; more, brgemm, big GEMMs split across threads by rows (the input projection: many rows) or by columns (a time
  // step: a few rows); anything else: ATen.
  template <typename scalar_t>
  static void step_gemm(const Tensor& b, const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc,
                        int64_t M, bool accumulate) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (b.is_contiguous()) {
        const CpuKernel kernel = cpu_kernel();
        if (M <= kFewRows && kernel != CpuKernel::Scalar) {
          const auto few_rows_gemm = kernel == CpuKernel::Avx512 ? avx512::few_rows_gemm : avx2::few_rows_gemm;
          return few_rows_gemm(a, lda, b.const_data_ptr<float>(), b.size(0), b.size(1), c, ldc, M, accumulate);
        }
        return brgemm_rows(b, a, lda, c, ldc, M, accumulate);
      }
    }
    AtenStepGemm::step_gemm(b, a, lda, c, ldc, M, accumulate);
  }

  static void brgemm_rows(const Tensor& b, const float* a, int64_t lda, float* c, int64_t ldc,
                          int64_t M, bool accumulate) {
    if (M == 0) return;
    const int64_t K = b.size(0), N = b.size(1);
    const float* b_ptr = b.const_data_ptr<float>();
    auto block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      at::native::cpublas::brgemm(m1 - m0, n1 - n0, K, lda, N, ldc, accumulate, a + m0 * lda,
                                  b_ptr + n0, c + m0 * ldc + n0, /*is_vnni=*/false);
    };
    const int64_t threads = at::get_num_threads();
    if (threads == 1 || M * N * K < kParallelGemmMacs) {
      block(0, M, 0, N);
    } else if (M >= 8 * threads) {
      at::parallel_for(0, M, (M + threads - 1) / threads, [&](int64_t m0, int64_t m1) { block(m0, m1, 0, N); });
    } else {
      const int64_t grain = std::max<int64_t>(64, (N / threads + 15) / 16 * 16);
      at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) { block(0, M, n0, n1); });
    }
  }

  template <bool kTraining, typename scalar_t, typename acc_t>
  static void lstm_forward(const LstmForwardStep<scalar_t, acc_t>& p, int64_t rows) {
    run_pointwise(p, rows, &avx2::lstm_forward_rows<kTraining, scalar_t, acc_t>,
                  &avx512::lstm_forward_rows<kTraining, scalar_t, acc_t>,
                  [](const auto& q, int64_t r, int64_t j) { lstm_forward_element<kTraining>(q, r, j); });
  }
  template <typename scalar_t, typename acc_t>
  static void lstm_backward(const LstmBackwardStep<scalar_t, acc_t>& p, int64_t rows) {
    run_pointwise(p, rows, &avx2::lstm_backward_rows<scalar_t, acc_t>, &avx512::lstm_backward_rows<scalar_t, acc_t>,
                  [](const auto& q, int64_t r, int64_t j) { lstm_backward_element(q, r, j); });
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_forward(const RnnForwardStep<scalar_t>& p, int64_t rows) {
    run_pointwise(p, rows, &avx2::rnn_forward_rows<act, scalar_t, acc_t>, &avx512::rnn_forward_rows<act, scalar_t, acc_t>,
                  [](const auto& q, int64_t r, int64_t j) { rnn_forward_element<act, scalar_t, acc_t>(q, r, j); });
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_backward(const RnnBackwardStep<scalar_t>& p, int64_t rows) {
    run_pointwise(p, rows, &avx2::rnn_backward_rows<act, scalar_t, acc_t>, &avx512::rnn_backward_rows<act, scalar_t, acc_t>,
                  [](const auto& q, int64_t r, int64_t j) { rnn_backward_element<act, scalar_t, acc_t>(q, r, j); });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_impl<CpuPointwise>);
  m.impl("lstm_layer_backward", &lstm_layer_backward_impl<CpuPointwise>);
  m.impl("rnn_layer_forward", &rnn_layer_forward_impl<CpuPointwise>);
  m.impl("rnn_layer_backward", &rnn_layer_backward_impl<CpuPointwise>);
  m.impl("lstm_cell_forward", &lstm_cell_forward_impl<CpuPointwise>);
  m.impl("lstm_cell_backward", &lstm_cell_backward_impl<CpuPointwise>);
  m.impl("rnn_cell_forward", &rnn_cell_forward_impl<CpuPointwise>);
  m.impl("rnn_cell_backward", &rnn_cell_backward_impl<CpuPointwise>);
}

}  // namespace rnnfused
