// CPU kernels of the layer and cell ops: the host driver of recurrent_layer.h with the CPU
// policy.
//
// float32 / float64 on AVX2 or AVX-512 (ATen's capability; ATEN_CPU_CAPABILITY lowers it), and
// bfloat16 on AVX-512 CPUs with AVX512-BF16: the recurrent weights are packed into panels
// (panels.h) once per op call, every per-step GEMM runs a panel micro-kernel
// (pointwise_vec_impl.h; panel_gemm_bf16.cpp: AMX tiles where the CPU has them), and each time
// loop runs on one thread team for the whole sequence (thread_team.h). The GEMMs run once per
// call over all steps (input projection, input and weight gradients) go to ATen's BLAS, or to
// the panel micro-kernel where the BLAS runs below the CPU's vector width (panel_kernel_gemm).
// A team shares a loop in one of two ways. Where every thread gets a few batch rows and the
// recurrent weights fit in half of a core's L2 (AMD with AVX-512: in the L2; split_rows), each
// thread runs its own sequences through every step with all of the weights and never waits for
// another. Otherwise each thread owns a share of the hidden units: per step it computes the
// recurrent GEMM for all gates of its units and then their pointwise pass while they are still
// in cache; a thread waits for the others only before it reads the part of a step's state they
// wrote (TeamProgress).
//
// Sequences too short to pay for packing (a cell step: under kPackMinRows rows in all) run the
// same forward loops on the weights as they lie (float / double: the few-rows kernels), and
// their one-off GEMMs through unpacked_gemm (the same kernels). The backward of such sequences,
// CPUs without AVX2 and bfloat16 without packing run the driver's StepByStep loops: the GEMMs
// through unpacked_gemm or ATen's BLAS, and the vectorized pointwise rows (16-bit types computed
// in float) or gate_math.h's element bodies over every (row, unit).
// float16, and bfloat16 without AVX512-BF16, run all of this in float32 (float_compute.h).
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../recurrent_layer.h"
#include "elementwise.h"
#include "float_compute.h"
#include "panel_gemm_bf16.h"
#include "panels.h"
#include "pointwise_vec.h"
#include "scratch.h"
#include "thread_team.h"

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

// The kernels of one instruction set, by name (pointwise_vec.h declares them per namespace).
template <CpuKernel kIsa>
struct Isa {
#define RNNF_ISA_FORWARD(...) \
  if constexpr (kIsa == CpuKernel::Avx512) return avx512::__VA_ARGS__; else return avx2::__VA_ARGS__;
  // bfloat16 GEMMs take the AMX kernel where the CPU has one, else the AVX512-BF16 kernel (only
  // used where with_panel_kernels says so).
  template <typename T>
  static int64_t panel_width() {
    if constexpr (std::is_same_v<T, at::BFloat16>) return kBf16PanelWidth;
    else { RNNF_ISA_FORWARD(template panel_width<T>()) }
  }
  template <typename T>
  static PanelGemmFn<T> panel_gemm() {
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      static const bool amx = amx_bf16::supported();
      return amx ? &amx_bf16::panel_gemm : &avx512_bf16::panel_gemm;
    }
    else { RNNF_ISA_FORWARD(template panel_gemm<T>) }
  }
  template <typename T>
  static void strided_gemm(const T* a, int64_t lda, int64_t a_k, const T* b, int64_t ldb, int64_t K, T* c,
                           int64_t ldc, int64_t rows, int64_t valid_cols, bool accumulate) {
    RNNF_ISA_FORWARD(template strided_gemm<T>(a, lda, a_k, b, ldb, K, c, ldc, rows, valid_cols, accumulate))
  }
  template <typename T>
  static int64_t few_rows_width(int64_t M) {
    RNNF_ISA_FORWARD(template few_rows_width<T>(M))
  }
  template <typename T>
  static void few_rows_dot(const T* w, int64_t ldw, const T* a, int64_t lda, int64_t K, int64_t M, T* c,
                           int64_t ldc, int64_t rows, bool accumulate) {
    RNNF_ISA_FORWARD(template few_rows_dot<T>(w, ldw, a, lda, K, M, c, ldc, rows, accumulate))
  }
  template <typename T>
  static void few_rows_gemm(const T* w, int64_t ldw, const T* a_t, int64_t K, int64_t M, T* c, int64_t ldc,
                            int64_t rows, bool accumulate) {
    RNNF_ISA_FORWARD(template few_rows_gemm<T>(w, ldw, a_t, K, M, c, ldc, rows, accumulate))
  }
  // W viewed as (K, groups * width) packed for panel_gemm<T>.
  template <typename T>
  static PackedWeight<T> pack(const at::Tensor& w_kn, int64_t groups) {
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      // A pair (W[n, k], W[n, k+1]) of a row-major W is one 32-bit word: pair layout is the
      // transpose of W's words, so the float packing moves them (bits only, no arithmetic).
      static_assert(kBf16PanelWidth == 64);
      const PackTransposedFn<T> pack_pairs = [](const T* w, int64_t ldw, int64_t K, int64_t g, int64_t gw,
                                                int64_t ppg, int64_t p0, int64_t p1, T* dst) {
        avx512::pack_transposed<float>(reinterpret_cast<const float*>(w), ldw / 2, K / 2, g, gw, ppg, p0, p1,
                                       reinterpret_cast<float*>(dst));
      };
      const bool words = kIsa == CpuKernel::Avx512 && w_kn.size(0) % 2 == 0 &&
                         avx512::panel_width<float>() == kBf16PanelWidth;
      return PackedWeight<T>(w_kn, groups, panel_width<T>(), /*pairs=*/true, words ? pack_pairs : nullptr);
    } else {
      PackTransposedFn<T> pack_transposed;
      if constexpr (kIsa == CpuKernel::Avx512) pack_transposed = &avx512::pack_transposed<T>;
      else pack_transposed = &avx2::pack_transposed<T>;
      return PackedWeight<T>(w_kn, groups, panel_width<T>(), /*pairs=*/false, pack_transposed);
    }
  }
  template <bool kTraining, typename S, typename A>
  static void lstm_forward(const LstmForwardStep<S, A>& p, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
    RNNF_ISA_FORWARD(template lstm_forward_rows<kTraining, S, A>(p, r0, r1, u0, u1))
  }
  template <typename S, typename A>
  static void lstm_backward(const LstmBackwardStep<S, A>& p, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
    RNNF_ISA_FORWARD(template lstm_backward_rows<S, A>(p, r0, r1, u0, u1))
  }
  template <Activation act, typename S, typename A>
  static void rnn_forward(const RnnForwardStep<S>& p, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
    RNNF_ISA_FORWARD(template rnn_forward_rows<act, S, A>(p, r0, r1, u0, u1))
  }
  template <Activation act, typename S, typename A>
  static void rnn_backward(const RnnBackwardStep<S>& p, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
    RNNF_ISA_FORWARD(template rnn_backward_rows<act, S, A>(p, r0, r1, u0, u1))
  }
#undef RNNF_ISA_FORWARD
};

// Runs f(Isa<...>{}) for the running CPU's vector instruction set; false when it has none.
template <typename F>
bool with_vector_isa(F&& f) {
  switch (cpu_kernel()) {
    case CpuKernel::Avx512: f(Isa<CpuKernel::Avx512>{}); return true;
    case CpuKernel::Avx2: f(Isa<CpuKernel::Avx2>{}); return true;
    default: return false;
  }
}

// Packing a weight costs about as much as multiplying it with this many rows: GEMMs with fewer
// rows in all (a cell step) read the weight as it lies (unpacked_gemm, or ATen's BLAS).
constexpr int64_t kPackMinRows = 64;

// Runs f(Isa<...>{}) when the panel kernels serve dtype S on this CPU (float / double: AVX2 or
// AVX-512; bfloat16: AVX-512 with AVX512-BF16) and `rows` pay for packing; false otherwise.
template <typename S, typename F>
bool with_panel_kernels(int64_t rows, F&& f) {
  if (rows < kPackMinRows) return false;
  if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
    return with_vector_isa(f);
  } else if constexpr (std::is_same_v<S, at::BFloat16>) {
    static const bool bf16_dot = avx512_bf16::supported();
    if (cpu_kernel() != CpuKernel::Avx512 || !bf16_dot) return false;
    f(Isa<CpuKernel::Avx512>{});
    return true;
  } else {
    return false;
  }
}

// Runs f(Isa<...>{}) when the few-rows kernels on unpacked weights serve dtype S on this CPU
// (float / double on AVX2 or AVX-512) and `rows` in all are too few to pay for packing.
template <typename S, typename F>
bool with_row_major_kernels(int64_t rows, F&& f) {
  if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
    return rows < kPackMinRows && with_vector_isa(f);
  }
  return false;
}

// A team member is worth its fork and per-step synchronisation from this many multiply-adds per
// step. Measured (LSTM forward, T=100, 2 threads against 1, with OpenMP barriers then): 64K per
// step (B=1, H=128) ties on a Zen 1 EPYC and wins 1.14x on a Xeon with AVX-512 (its barrier
// costs ~0.25 us); 128K wins 1.25x on Zen 1.
constexpr int64_t kMacsPerThread = int64_t(1) << 15;

int64_t team_size_for(int64_t step_macs) { return std::max<int64_t>(1, step_macs / kMacsPerThread); }

// A (M, K) row-major (row stride lda), M < kPackMinRows, laid out for the few-rows kernels: read
// as it lies by dot products for up to kFewRowsDotMax rows; otherwise A^T is packed (cheap:
// M x K) into a buffer in chunks of at most few_rows_width rows, each chunk (K, width) as wide as
// its rows need.
template <typename IsaT, typename T>
class FewRows {
 public:
  // Elements of the buffer that M rows of K need (0: A is read as it lies).
  static int64_t buffer_size(int64_t M, int64_t K) {
    int64_t size = 0;
    if (M > kFewRowsDotMax) for_each_chunk(M, [&](int64_t, int64_t, int64_t width) { size += K * width; });
    return size;
  }

  FewRows(const T* a, int64_t lda, int64_t M, int64_t K, T* buffer) : a_(a), lda_(lda), M_(M), K_(K), a_t_(buffer) {
    if (M <= kFewRowsDotMax) return;
    for_each_chunk(M, [&](int64_t first_row, int64_t rows, int64_t width) {
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t i = 0; i < width; ++i) buffer[k * width + i] = i < rows ? a[(first_row + i) * lda + k] : T(0);
      }
      buffer += K * width;
    });
  }

  // C (M, n) = init + A @ W^T for W (n, K) row-major (row stride ldw); init as for PanelGemmFn.
  void multiply(const T* w, int64_t ldw, int64_t n, T* c, int64_t ldc, bool accumulate) const {
    if (M_ <= kFewRowsDotMax) {
      IsaT::few_rows_dot(w, ldw, a_, lda_, K_, M_, c, ldc, n, accumulate);
      return;
    }
    const T* a_t = a_t_;
    for_each_chunk(M_, [&](int64_t first_row, int64_t rows, int64_t width) {
      IsaT::few_rows_gemm(w, ldw, a_t, K_, rows, c + first_row * ldc, ldc, n, accumulate);
      a_t += K_ * width;
    });
  }

 private:
  // f(first_row, rows, width) for the chunks of M rows, in order.
  template <typename F>
  static void for_each_chunk(int64_t M, F&& f) {
    for (int64_t m0 = 0; m0 < M;) {
      const int64_t width = IsaT::template few_rows_width<T>(M - m0), rows = std::min(width, M - m0);
      f(m0, rows, width);
      m0 += rows;
    }
  }

  const T* a_;
  int64_t lda_, M_, K_;
  const T* a_t_;
};

// C (M, N) = init + A (M, K) @ W^T for 0 < M < kPackMinRows rows, W (N, K) row-major (row stride
// ldw) read as it lies, threads splitting W's rows. init as for PanelGemmFn.
template <typename IsaT, typename T>
void unpacked_gemm(const T* w, int64_t ldw, int64_t N, int64_t K, const T* a, int64_t lda, int64_t M, T* c,
                   int64_t ldc, bool accumulate) {
  const int64_t buffer_size = FewRows<IsaT, T>::buffer_size(M, K);
  const Tensor buffer = buffer_size > 0 ? scratch_empty({buffer_size}, c10::CppTypeToScalarType<T>::value) : Tensor();
  const FewRows<IsaT, T> a_rows(a, lda, M, K, buffer_size > 0 ? buffer.mutable_data_ptr<T>() : nullptr);
  const int64_t rows_per_task = std::max<int64_t>(128, kMacsPerThread / std::max<int64_t>(1, K * M));
  at::parallel_for(0, N, rows_per_task, [&](int64_t n0, int64_t n1) {
    a_rows.multiply(w + n0 * ldw, ldw, n1 - n0, c + n0, ldc, accumulate);
  });
}

// Runs unpacked_gemm for C (+)= A @ B when it applies: with_row_major_kernels for M rows,
// B a transposed row-major weight, A with unit column stride. False otherwise.
template <typename T>
bool try_unpacked_gemm(const Tensor& B, const T* a, int64_t lda, int64_t M, T* c, int64_t ldc, bool accumulate) {
  if (M == 0 || !B.t().is_contiguous()) return false;
  return with_row_major_kernels<T>(M, [&](auto isa) {
    unpacked_gemm<decltype(isa), T>(B.const_data_ptr<T>(), B.size(0), B.size(1), B.size(0), a, lda, M, c, ldc,
                                    accumulate);
  });
}

// The CPU's vendor string from cpuid ("GenuineIntel", "AuthenticAMD", ...; empty off x86).
const std::string& cpu_vendor() {
  static const std::string vendor = [] {
#if defined(__x86_64__) || defined(_M_X64)
    unsigned int max_leaf = 0, words[3] = {0, 0, 0};  // ebx, edx, ecx: the name's order
    if (__get_cpuid(0, &max_leaf, &words[0], &words[2], &words[1])) {
      return std::string(reinterpret_cast<const char*>(words), sizeof(words));
    }
#endif
    return std::string();
  }();
  return vendor;
}

// Whether the one-off float / double GEMMs over many rows run on the panel kernels
// (panel_kernel_gemm) instead of ATen's BLAS: where the BLAS multiplies at less than the CPU's
// vector width. MKL keeps to its AVX2 code on CPUs not made by Intel; measured on a 2-core AMD
// EPYC with AVX-512 (Zen 5), 1600 x 256 x 1024: MKL's sgemm 229 GFLOP/s, the panel kernels 505
// (oneDNN's matmul 461); dgemm 124. On a Xeon with AVX-512, where MKL runs its AVX-512 code, it
// beat an earlier panel driver (LSTM B=64 H=512 fwd+bwd 243 against 308 ms). RNNFUSED_CPU_GEMM=
// panels|blas overrides the choice (the tests run both).
bool one_off_gemm_on_panels() {
  static const bool panels = [] {
    const char* env = std::getenv("RNNFUSED_CPU_GEMM");
    if (env != nullptr && std::strcmp(env, "panels") == 0) return cpu_kernel() != CpuKernel::Scalar;
    if (env != nullptr && std::strcmp(env, "blas") == 0) return false;
    return AT_MKL_ENABLED() && cpu_kernel() == CpuKernel::Avx512 && cpu_vendor() != "GenuineIntel";
  }();
  return panels;
}

// Cache blocks of panel_kernel_gemm: K in blocks of kGemmBlockK, rows in blocks whose part of A
// (rows x kGemmBlockK) takes kGemmBlockBytes (192 float rows, 96 double: 384 KB, kept in L2 while
// each of the thread's panels passes over it). Against blocks of 256 and 96 rows, Zen 5: LSTM
// B=64 H=512 forward -5%, B=16 H=256 -3%, fwd+bwd -1%. A thread is worth its fork from
// kMacsPerGemmThread multiply-adds.
constexpr int64_t kGemmBlockK = 512;
constexpr int64_t kGemmBlockBytes = 192 * kGemmBlockK * 4;
constexpr int64_t kMacsPerGemmThread = int64_t(1) << 20;

// C (M, N) = A (M, K) @ B (K, N) on the strided panel kernel, for the one-off GEMMs over many
// rows: A at any strides (a weight gradient reads grad_pre^T as it lies); B with unit column
// stride read as it lies (a tail panel narrower than panel_width copied into a zero-padded
// buffer), or packed first when it is a transposed row-major weight (the input projection).
// The team splits B's panels where every thread gets two, else A's rows; each thread runs K in
// blocks of kGemmBlockK, its rows in blocks of kGemmBlockBytes, and its panels over each row
// block.
template <typename IsaT, typename T>
void panel_kernel_gemm(const Tensor& C, const Tensor& A, const Tensor& B_in) {
  const int64_t M = C.size(0), N = C.size(1), K = A.size(1);
  const int64_t width = IsaT::template panel_width<T>(), panels = (N + width - 1) / width;
  const int64_t team = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(1, M * N * K / kMacsPerGemmThread));
  const bool split_panels = panels >= 2 * team;
  const Tensor B = B_in.stride(1) == 1 || B_in.t().is_contiguous() ? B_in : B_in.contiguous();
  // B's panels: packed (K, width) blocks, or B itself with a packed copy of a narrow tail panel.
  PackedWeight<T> packed;
  Tensor tail;
  const bool as_it_lies = B.stride(1) == 1;
  if (as_it_lies) {
    if (N % width != 0) {
      tail = at::constant_pad_nd(B.narrow(1, (panels - 1) * width, N % width), {0, width - N % width}).contiguous();
    }
  } else {
    packed = IsaT::template pack<T>(B, 1);
    if (!split_panels) {  // every thread multiplies by every panel: all packed first
      at::parallel_for(0, team, 1, [&](int64_t begin, int64_t end) {
        for (int64_t id = begin; id < end; ++id) packed.pack_share(id, team);
      });
    }
  }
  const auto panel = [&](int64_t p) -> std::pair<const T*, int64_t> {
    if (!as_it_lies) return {packed.panel(0, p), width};
    if (tail.defined() && p == panels - 1) return {tail.const_data_ptr<T>(), width};
    return {B.const_data_ptr<T>() + p * width, B.stride(0)};
  };
  const T* a = A.const_data_ptr<T>();
  T* c = C.mutable_data_ptr<T>();
  const int64_t lda = A.stride(0), a_k = A.stride(1), ldc = C.stride(0);
  const int64_t row_block = kGemmBlockBytes / (kGemmBlockK * int64_t(sizeof(T)));
  at::parallel_for(0, team, 1, [&](int64_t begin, int64_t end) {
    for (int64_t id = begin; id < end; ++id) {
      auto [p0, p1] = split_panels ? share_of(panels, id, team) : std::pair<int64_t, int64_t>{0, panels};
      auto [r0, r1] = split_panels ? std::pair<int64_t, int64_t>{0, M} : share_of(M, id, team);
      if (split_panels && !as_it_lies) packed.pack_share(id, team);  // the panels it multiplies by
      for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kGemmBlockK) {
        const int64_t kc = std::min(kGemmBlockK, K - k0);
        for (int64_t rb = r0; rb < r1; rb += row_block) {
          const int64_t rows = std::min(row_block, r1 - rb);
          for (int64_t p = p0; p < p1; ++p) {
            const auto [b, ldb] = panel(p);
            IsaT::template strided_gemm<T>(a + rb * lda + k0 * a_k, lda, a_k, b + k0 * ldb, ldb, kc,
                                           c + rb * ldc + p * width, ldc, rows, std::min(width, N - p * width),
                                           /*accumulate=*/k0 > 0);
          }
        }
      }
    }
  });
}

// The weights of a time loop's per-step GEMMs, as the thread team uses them:
//   share(id, team) -> [begin, end): thread id's columns within each group (its hidden units);
//   prepare(id, team): called by every thread of the team before its first gemm;
//   gemm(id, a, lda, c, ldc, rows, begin, end, k0, k1, accumulate): C (rows, groups x
//     group_width) columns g * group_width + [begin, end) of every group g = init +
//     A[:, [k0, k1)] @ W[:, [k0, k1)]^T, for W (N, K), C row stride ldc, init C (accumulate) or 0
//     (k0 < k1 unless accumulate). Called by thread id only.
// PanelWeight packs W once per op call (sequences of kPackMinRows rows or more pay for it);
// RowMajorWeight reads W as it lies and lays out each step's few rows of A in the calling
// thread's own buffer (FewRows).
template <typename T>
struct PanelWeight {
  PackedWeight<T> packed;
  PanelGemmFn<T> kernel = nullptr;

  template <typename IsaT>
  static PanelWeight make(const Tensor& w_kn, int64_t groups) {
    return {IsaT::template pack<T>(w_kn, groups), IsaT::template panel_gemm<T>()};
  }
  std::pair<int64_t, int64_t> share(int64_t id, int64_t team) const { return packed.share(id, team); }
  void prepare(int64_t id, int64_t team) const { packed.pack_share(id, team); }
  void gemm(int64_t /*id*/, const T* a, int64_t lda, T* c, int64_t ldc, int64_t rows, int64_t begin, int64_t end,
            int64_t k0, int64_t k1, bool accumulate) const {
    packed.gemm_columns(kernel, a, lda, c, ldc, rows, begin, end, k0, k1, accumulate);
  }
};

template <typename IsaT, typename T>
struct RowMajorWeight {
  // Threads split the units of a group in blocks of this many (whole vectors of the pointwise pass).
  static constexpr int64_t kUnitBlock = 16;
  const T* w = nullptr;  // (N, K) row-major
  int64_t K = 0, group_width = 0, groups = 0, buffer_size = 0;
  Tensor buffers;        // (team, buffer_size): each thread's FewRows layout of A

  RowMajorWeight() = default;
  // w_kn: the (K, N) view of a row-major W (N, K); steps of up to max_rows rows, threads id < team.
  RowMajorWeight(const Tensor& w_kn, int64_t groups_, int64_t max_rows, int64_t team)
      : w(w_kn.const_data_ptr<T>()), K(w_kn.size(0)), group_width(w_kn.size(1) / groups_), groups(groups_),
        buffer_size(FewRows<IsaT, T>::buffer_size(max_rows, K)) {
    TORCH_INTERNAL_ASSERT(w_kn.t().is_contiguous());
    if (buffer_size > 0) buffers = scratch_empty({team, buffer_size}, c10::CppTypeToScalarType<T>::value);
  }
  std::pair<int64_t, int64_t> share(int64_t id, int64_t team) const {
    const auto [first, last] = share_of((group_width + kUnitBlock - 1) / kUnitBlock, id, team);
    return {first * kUnitBlock, std::min(last * kUnitBlock, group_width)};
  }
  void prepare(int64_t /*id*/, int64_t /*team*/) const {}
  void gemm(int64_t id, const T* a, int64_t lda, T* c, int64_t ldc, int64_t rows, int64_t begin, int64_t end,
            int64_t k0, int64_t k1, bool accumulate) const {
    if (rows == 0 || begin >= end || (k0 >= k1 && accumulate)) return;
    T* buffer = buffer_size > 0 ? buffers.mutable_data_ptr<T>() + id * buffer_size : nullptr;
    const FewRows<IsaT, T> a_rows(a + k0, lda, rows, k1 - k0, buffer);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t first = g * group_width + begin;
      a_rows.multiply(w + first * K + k0, K, end - begin, c + first, ldc, accumulate);
    }
  }
};

// Asks for the cache lines of a (rows, cols) block (row stride ld) at once. The state a step
// multiplies was written by every thread of the team: read in the GEMM's order (row by row,
// along k) each line that another core wrote is a miss of its own, one after another; asked for
// together they overlap.
template <typename T>
void prefetch_rows(const T* data, int64_t rows, int64_t ld, int64_t cols) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; i += kLine) __builtin_prefetch(data + r * ld + i, 0, 3);
  }
}

// The largest batch whose bfloat16 inference loop projects the input itself (loop_projects_input):
// measured wins at 1 and 16, a loss at 64.
constexpr int64_t kOwnGatesMaxBatch = 16;

// The L2 cache of CPU 0 in bytes (Linux sysfs); 1 MiB where it cannot be read.
int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    for (int index = 0; index < 8; ++index) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
      std::ifstream level_file(dir + "level"), type_file(dir + "type"), size_file(dir + "size");
      int level = 0;
      std::string type;
      if (!(level_file >> level >> std::ws) || !(type_file >> type)) break;
      int64_t size = 0;
      char unit = 0;
      if (level == 2 && type != "Instruction" && (size_file >> size >> unit)) {
        return size << (unit == 'M' ? 20 : unit == 'K' ? 10 : 0);
      }
    }
    return int64_t(1) << 20;
  }();
  return bytes;
}

// Whether the team of a time loop (`team` threads, recurrent weights of weight_bytes) splits the
// batch rows (fused_*_by_rows) instead of the hidden units. No thread then waits for another,
// but each reads all of the weights at every step. Where they fit in half of a core's L2, the
// more of it they take, the more rows each thread needs to keep its GEMM busy: 2, up to 4 at
// half the L2. Measured on a 2-core Xeon (2 MB L2), LSTM T=100 forward, units -> rows: float32
// H=256 (1 MiB of weights) B=64 26.8 -> 23.1 ms, B=32 13.9 -> 12.3, B=16 6.1 -> 5.4, B=8 3.4 ->
// 3.0, B=6 equal, B=4 1.98 -> 2.09; H=181 B=4 1.74 -> 1.55; H=128 B=128 18.6 -> 13.4, B=4 0.77
// -> 0.65, B=2 0.47 -> 0.45; H=64 B=16 0.87 -> 0.70.
// Larger weights stream from L3 at every step. The Xeon's L3 did not keep up (float64 H=256,
// 2 MiB, B=16 11.9 -> 14.2; B=64 H=512, 4 MiB, 81 -> 82-90). On an AMD EPYC with AVX-512 (Zen 5,
// 1 MB L2) weights up to the whole L2 do, from kRowsPerThreadFromL3 rows a thread, and the row
// split never waits on the other core, which the VM made slow in some minutes (two threads ran
// 30% slower, one thread did not). float32 H=256 B=16, 1 MiB, medians of alternating runs in
// the usual / the slow minutes: forward 3.67 / 4.87 -> 3.80 / 4.07 ms, fwd+bwd 11.9 / 15.7 ->
// 11.9 / 13.7; B=8 (4 rows a thread) 4% slower, B=4 34% slower. Beyond the L2 the rows lost in
// the usual minutes: float64 B=16 (2 MiB) 7.45 -> 7.86, B=64 H=512 (4 MiB) 55.7 -> 56.9.
constexpr int64_t kRowsPerThreadFromL3 = 8;

bool split_rows(const StepSchedule& s, int64_t team, int64_t weight_bytes) {
  if (team < 2) return false;
  const int64_t l2 = l2_cache_bytes();
  if (2 * weight_bytes <= l2) {
    const int64_t min_rows = std::max<int64_t>(2, (8 * weight_bytes + l2 - 1) / l2);
    return s.max_batch >= team * min_rows;
  }
  static const bool rows_from_l3 = cpu_vendor() == "AuthenticAMD" && cpu_kernel() == CpuKernel::Avx512;
  return rows_from_l3 && weight_bytes <= l2 && s.max_batch >= team * kRowsPerThreadFromL3;
}

// Bytes of the weights a time loop multiplies by at every step: W_hh (gates * H, P), and W_hr
// (P, H) where P != H (a projection).
int64_t recurrent_weight_bytes(int64_t gates, int64_t H, int64_t P, size_t element_size) {
  return (gates * H * P + (P != H ? P * H : 0)) * int64_t(element_size);
}

// Threads of a time loop whose steps take step_macs multiply-adds each: at most the team
// run_team can give.
int64_t loop_team(int64_t step_macs) {
  return std::min<int64_t>(team_size_for(step_macs), std::max(1, at::get_num_threads()));
}

// h_n (B, width) from the output rows where each sequence ended: the last step the recurrence
// processed it. In the forward order rows drop out as batch sizes shrink; in the reverse order
// all rows end at time 0.
template <typename T>
void gather_final_states(const StepSchedule& s, const T* output, int64_t width, T* h_n) {
  for (int64_t k = 0; k < s.steps(); ++k) {
    const int64_t t = s.time_at(k);
    const int64_t still_running = k + 1 < s.steps() ? s.batch_sizes[s.time_at(k + 1)] : 0;
    for (int64_t row = still_running; row < s.batch_sizes[t]; ++row) {
      std::copy_n(output + (s.offsets[t] + row) * width, width, h_n + row * width);
    }
  }
}

// dst[rows, [c0, c1)] = src[rows, [c0, c1)], both with row stride `width`.
template <typename T>
void copy_columns(const T* src, T* dst, int64_t rows, int64_t width, int64_t c0, int64_t c1) {
  for (int64_t r = 0; r < rows; ++r) std::copy(src + r * width + c0, src + r * width + c1, dst + r * width + c0);
}

// ---------------------------------------------------------------------------------------------
// The fused time loops (float, double, bfloat16; see the top of the file).

// C (rows, this thread's units of each group) = x (rows, K) @ W_ih^T, x row-major: the input
// projection of every step for the units only this thread reads, computed inside its loop (one
// fork per op call instead of two for a cell step). Prepares w_ih for thread id first.
template <typename Weight, typename T>
void project_own_units(const Weight& w_ih, int64_t id, int64_t team, const T* x, int64_t K, T* c, int64_t ldc,
                       int64_t rows, std::pair<int64_t, int64_t> units) {
  w_ih.prepare(id, team);
  w_ih.gemm(id, x, K, c, ldc, rows, units.first, units.second, 0, K, /*accumulate=*/false);
}

// A step GEMM whose A is written by the whole team: C (rows, columns [begin, end) of each group)
// = init + A (rows, K) @ W^T, where A's columns are cut into `blocks` blocks of K / blocks and
// thread id wrote the columns [own.first, own.second) of each block. The product over its own
// columns runs first, then, once every thread has published the stage that wrote A, the rest:
// the wait overlaps the first part (float and double; bfloat16 waits, then multiplies all of
// K). init as for Weight::gemm.
template <typename Weight, typename T>
void gemm_own_columns_first(const Weight& w, const TeamProgress& progress, int64_t id, int64_t team, const T* a,
                            int64_t lda, T* c, int64_t ldc, int64_t rows, std::pair<int64_t, int64_t> columns,
                            int64_t K, int64_t blocks, std::pair<int64_t, int64_t> own, bool accumulate) {
  bool init = accumulate;
  const auto multiply = [&](int64_t k0, int64_t k1) {
    w.gemm(id, a, lda, c, ldc, rows, columns.first, columns.second, k0, k1, init);
    init = true;
  };
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    // The bfloat16 kernels round C to bfloat16 at the end of every call: a split product would
    // round the gates twice (and run the AMX kernel's epilogue twice, +13% on a B=16 H=256
    // forward). One call after the wait.
    progress.wait_for_team(id, team);
    prefetch_rows(a, rows, lda, K);
    multiply(0, K);
    return;
  }
  const int64_t block = K / blocks;
  // f(k0, k1) for the ranges of A's columns the other threads wrote.
  const auto for_others = [&](auto&& f) {
    int64_t k0 = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      if (k0 < b * block + own.first) f(k0, b * block + own.first);
      k0 = b * block + own.second;
    }
    if (k0 < K) f(k0, K);
  };
  for (int64_t b = 0; b < blocks; ++b) {
    if (own.first < own.second) multiply(b * block + own.first, b * block + own.second);
  }
  progress.wait_for_team(id, team);
  for_others([&](int64_t k0, int64_t k1) { prefetch_rows(a + k0, rows, lda, k1 - k0); });
  for_others(multiply);
}

// Thread id of team's sequences [first, last) (batch rows) when a team splits a loop by rows:
// contiguous, with near-equal numbers of (sequence, step) pairs. Packed sequences come sorted by
// decreasing length, so the first threads get fewer, longer ones.
std::pair<int64_t, int64_t> sequence_share(const StepSchedule& s, int64_t id, int64_t team) {
  std::vector<int64_t> length(s.max_batch, 0);
  for (const int64_t rows : s.batch_sizes) {
    for (int64_t b = 0; b < rows; ++b) ++length[b];
  }
  // The first sequence b whose preceding pairs reach share * N / team.
  const auto boundary = [&](int64_t share) {
    int64_t b = 0;
    for (int64_t pairs = 0; b < s.max_batch && pairs * team < share * s.total_rows; ++b) pairs += length[b];
    return b;
  };
  return {boundary(id), boundary(id + 1)};
}

// Runs a loop split by batch rows (split_rows) on a team of up to max_team threads: each packs
// its share of every weight's panels and waits for the others' (all panels), then calls
// step(id, t, r0, r1) for the time steps in processing order (backward: from the last one
// processed forward) with its rows [r0, r1) of each step that has any.
template <typename Step, typename... Weights>
void run_team_by_rows(const StepSchedule& s, int64_t max_team, bool backward, const Step& step,
                      const Weights&... weights) {
  TeamProgress progress(max_team);
  run_team(max_team, [&](int64_t id, int64_t team) {
    (weights.prepare(id, team), ...);
    progress.publish(id);
    progress.wait_for_team(id, team);  // every panel packed
    const auto [first, last] = sequence_share(s, id, team);
    for (int64_t i = 0; i < s.steps(); ++i) {
      const int64_t t = s.time_at(backward ? s.steps() - 1 - i : i);
      const int64_t r0 = std::min(first, s.batch_sizes[t]), r1 = std::min(last, s.batch_sizes[t]);
      if (r0 < r1) step(id, t, r0, r1);
    }
  });
}

// fused_lstm_forward with the team split by batch rows (split_rows): each thread runs
// its own sequences (sequence_share) through every step with all of the weights, so after
// packing no thread waits for another. Its rows of the state are its own: one buffer, h0 at the
// start (rows that join late in reverse order read it there), read by the step GEMM before the
// pointwise pass (or, with projection, the copy of r_t) overwrites them. The input projection
// is in L.ws already.
template <typename IsaT, bool kTraining, typename T, typename A, typename Weight>
void fused_lstm_forward_by_rows(const LstmForwardLoop<T, A>& L, int64_t max_team, const Weight& w_hh,
                                const Weight& w_hr) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size, P = L.state_size, B = s.max_batch, ws_cols = L.ws_cols;
  const bool proj = L.has_proj();
  const at::Tensor h_scratch = (proj && !kTraining) ? at::empty({B, H}, L.w_hh_kn.options()) : at::Tensor();
  T* const h_scratch_ptr = h_scratch.defined() ? h_scratch.mutable_data_ptr<T>() : nullptr;
  const auto all_units = w_hh.share(0, 1), all_columns = proj ? w_hr.share(0, 1) : all_units;

  const auto step = [&](int64_t id, int64_t t, int64_t r0, int64_t r1) {
    const int64_t off = s.offsets[t];
    w_hh.gemm(id, L.h_state + r0 * P, P, L.ws + (off + r0) * ws_cols, ws_cols, r1 - r0, all_units.first,
              all_units.second, 0, P, /*accumulate=*/true);
    const LstmForwardStep<T, A> p = lstm_forward_step<kTraining>(L, t, L.h_state, h_scratch_ptr, L.ws);
    IsaT::template lstm_forward<kTraining>(p, r0, r1, 0, H);
    if (proj) {
      T* r_rows = L.output + (off + r0) * P;
      w_hr.gemm(id, p.h_out + r0 * p.h_out_ld, p.h_out_ld, r_rows, P, r1 - r0, all_columns.first, all_columns.second,
                0, H, /*accumulate=*/false);
      std::copy_n(r_rows, (r1 - r0) * P, L.h_state + r0 * P);
    }
  };
  run_team_by_rows(s, max_team, /*backward=*/false, step, w_hh, w_hr);
  gather_final_states(s, L.output, P, L.h_state);
}

// w_hh: L.w_hh_kn in 4 groups (the gates); w_hr: L.w_hr_kn in 1 (empty without projection);
// w_ih: L.w_ih_kn in 4 groups when the loop computes the input projection (L.input), else null.
//
// Thread shares: u = hidden units (H), q = columns of the state (P; u when P == H). Per step a
// thread multiplies h_{t-1} by the gate weights of its units, runs their pointwise pass and, with
// projection, multiplies h_t by W_hr's columns q: each product starts on the part of its A the
// thread wrote itself (gemm_own_columns_first) and waits for the rest. The state the GEMMs read
// alternates between two buffers (both start as h0: rows that join late read h0), so a thread
// writing step k's state never meets one still reading step k - 2's.
template <typename IsaT, bool kTraining, typename T, typename A, typename Weight>
void fused_lstm_forward(const LstmForwardLoop<T, A>& L, int64_t max_team, const Weight& w_hh, const Weight& w_hr,
                        const Weight* w_ih) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size, P = L.state_size, B = s.max_batch, ws_cols = L.ws_cols;
  const bool proj = L.has_proj();
  const auto options = L.w_hh_kn.options();
  const at::Tensor state_other = s.steps() > 1 ? at::from_blob(L.h_state, {B, P}, options).clone() : at::Tensor();
  T* state_buffers[2] = {L.h_state, state_other.defined() ? state_other.mutable_data_ptr<T>() : nullptr};
  // With projection h_t (B, H) goes to the workspace when training, else to this scratch.
  const at::Tensor h_scratch = (proj && !kTraining) ? at::empty({B, H}, options) : at::Tensor();
  T* const h_scratch_ptr = h_scratch.defined() ? h_scratch.mutable_data_ptr<T>() : nullptr;
  // Without training the loop that projects the input keeps each thread's gates in a workspace
  // of its own (same layout, only the thread's columns used; thread 0 keeps L.ws): threads whose
  // columns share the pages of one workspace slow each other's step GEMMs and pointwise passes
  // (measured on a 2-core Xeon: bfloat16 B=16 H=256 GEMM 20 -> 14 kcycles a step, pointwise
  // 18 -> 15), although no cache line is written by both.
  const bool own_gates = !kTraining && w_ih != nullptr && max_team > 1;
  const at::Tensor gate_buffers =
      own_gates ? scratch_empty({max_team - 1, s.total_rows, ws_cols}, options.dtype().toScalarType()) : at::Tensor();
  TeamProgress progress(max_team);

  run_team(max_team, [&](int64_t id, int64_t team) {
    const auto units = w_hh.share(id, team);
    const auto state_columns = proj ? w_hr.share(id, team) : units;
    T* const ws = own_gates && id > 0 ? gate_buffers.mutable_data_ptr<T>() + (id - 1) * s.total_rows * ws_cols : L.ws;
    w_hh.prepare(id, team);
    if (proj) w_hr.prepare(id, team);
    if (w_ih != nullptr) {
      project_own_units(*w_ih, id, team, L.input, L.w_ih_kn.size(0), ws, ws_cols, s.total_rows, units);
    }
    for (int64_t k = 0; k < s.steps(); ++k) {
      const int64_t t = s.time_at(k), rows = s.batch_sizes[t], off = s.offsets[t];
      const T* state = state_buffers[k % 2];
      T* next_state = k + 1 < s.steps() ? state_buffers[(k + 1) % 2] : nullptr;  // the last state: h_n, below
      if (k == 0) {  // h0: no thread of the team writes it
        w_hh.gemm(id, state, P, ws + off * ws_cols, ws_cols, rows, units.first, units.second, 0, P,
                  /*accumulate=*/true);
      } else {
        gemm_own_columns_first(w_hh, progress, id, team, state, P, ws + off * ws_cols, ws_cols, rows, units, P, 1,
                               state_columns, /*accumulate=*/true);
      }
      const LstmForwardStep<T, A> p = lstm_forward_step<kTraining>(L, t, next_state, h_scratch_ptr, ws);
      IsaT::template lstm_forward<kTraining>(p, 0, rows, units.first, units.second);
      progress.publish(id);  // h_t's units
      if (proj) {
        T* r_rows = L.output + off * P;
        gemm_own_columns_first(w_hr, progress, id, team, p.h_out, p.h_out_ld, r_rows, P, rows, state_columns, H, 1,
                               units, /*accumulate=*/false);
        if (next_state != nullptr) copy_columns(r_rows, next_state, rows, P, state_columns.first, state_columns.second);
        progress.publish(id);  // r_t's columns
      }
    }
  });
  gather_final_states(s, L.output, P, L.h_state);
}

// fused_lstm_backward with the team split by batch rows (split_rows): each thread runs the steps
// of its own sequences (sequence_share) with all of the weights; its rows of dL/dh and dL/dc are
// its own. grad_h: (B, H) scratch for dL/dh_t with projection, else null.
template <typename IsaT, typename T, typename A>
void fused_lstm_backward_by_rows(const LstmBackwardLoop<T, A>& L, int64_t max_team, const PanelWeight<T>& w_hh,
                                 const PanelWeight<T>& w_hr, T* grad_h) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size, P = L.state_size;
  const bool proj = L.has_proj();
  const auto all_columns = w_hh.share(0, 1), all_units = proj ? w_hr.share(0, 1) : all_columns;

  const auto step = [&](int64_t id, int64_t t, int64_t r0, int64_t r1) {
    const int64_t off = s.offsets[t];
    if (proj) {
      // dL/dr_t = grad_output_t + carried; dL/dh_t = dL/dr_t @ W_hr.
      T* grad_r = L.grad_r + off * P;
      for (int64_t i = r0 * P; i < r1 * P; ++i) {
        const A carried = static_cast<A>(L.grad_h_state[i]);
        grad_r[i] = static_cast<T>(L.grad_output ? carried + static_cast<A>(L.grad_output[off * P + i]) : carried);
      }
      w_hr.gemm(id, grad_r + r0 * P, P, grad_h + r0 * H, H, r1 - r0, all_units.first, all_units.second, 0, P,
                /*accumulate=*/false);
    }
    const LstmBackwardStep<T, A> p = lstm_backward_step(L, t, grad_h);
    IsaT::lstm_backward(p, r0, r1, 0, H);
    w_hh.gemm(id, p.grad_gates + r0 * 4 * H, 4 * H, L.grad_h_state + r0 * P, P, r1 - r0, all_columns.first,
              all_columns.second, 0, 4 * H, /*accumulate=*/false);
  };
  run_team_by_rows(s, max_team, /*backward=*/true, step, w_hh, w_hr);
}

// Thread shares as in fused_lstm_forward. Per step: (with projection) dL/dr_t's columns q, then
// dL/dh_t's units u = dL/dr_t @ W_hr; the pointwise pass of the units u; dL/dh_{t-1}'s columns q
// = dL/dgates_t @ W_hh. The products start on the part of their A the thread wrote itself.
template <typename IsaT, typename T, typename A>
void fused_lstm_backward(const LstmBackwardLoop<T, A>& L) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size, P = L.state_size, B = s.max_batch;
  const bool proj = L.has_proj();
  const PanelWeight<T> w_hh = PanelWeight<T>::template make<IsaT>(L.w_hh, 1);                       // (4H, P)
  const PanelWeight<T> w_hr = proj ? PanelWeight<T>::template make<IsaT>(L.w_hr, 1) : PanelWeight<T>();  // (P, H)
  const at::Tensor grad_h_scratch = proj ? at::empty({B, H}, L.w_hh.options()) : at::Tensor();
  T* const grad_h = proj ? grad_h_scratch.mutable_data_ptr<T>() : nullptr;  // (B, H) dL/dh_t
  const int64_t max_team = team_size_for(B * P * 4 * H);
  if (split_rows(s, loop_team(B * P * 4 * H), recurrent_weight_bytes(4, H, P, sizeof(T)))) {
    fused_lstm_backward_by_rows<IsaT>(L, max_team, w_hh, w_hr, grad_h);
    return;
  }
  TeamProgress progress(max_team);

  run_team(max_team, [&](int64_t id, int64_t team) {
    const auto state_columns = w_hh.share(id, team);
    const auto units = proj ? w_hr.share(id, team) : state_columns;
    w_hh.prepare(id, team);
    if (proj) w_hr.prepare(id, team);
    for (int64_t k = s.steps() - 1; k >= 0; --k) {
      const int64_t t = s.time_at(k), rows = s.batch_sizes[t], off = s.offsets[t];
      if (proj) {
        // dL/dr_t = grad_output_t + carried.
        T* grad_r = L.grad_r + off * P;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = state_columns.first; c < state_columns.second; ++c) {
            const A carried = static_cast<A>(L.grad_h_state[r * P + c]);
            grad_r[r * P + c] = static_cast<T>(L.grad_output ? carried + static_cast<A>(L.grad_output[(off + r) * P + c]) : carried);
          }
        }
        progress.publish(id);
        gemm_own_columns_first(w_hr, progress, id, team, grad_r, P, grad_h, H, rows, units, P, 1, state_columns,
                               /*accumulate=*/false);
      }
      const LstmBackwardStep<T, A> p = lstm_backward_step(L, t, grad_h);
      IsaT::lstm_backward(p, 0, rows, units.first, units.second);
      progress.publish(id);
      gemm_own_columns_first(w_hh, progress, id, team, p.grad_gates, 4 * H, L.grad_h_state, P, rows, state_columns,
                             4 * H, 4, units, /*accumulate=*/false);
    }
  });
}

// w_hh: L.w_hh_kn in 1 group; w_ih: L.w_ih_kn in 1 group, or null. As fused_lstm_forward
// without projection.
template <typename IsaT, Activation act, typename T, typename A, typename Weight>
void fused_rnn_forward(const RnnForwardLoop<T>& L, int64_t max_team, const Weight& w_hh, const Weight* w_ih) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size, B = s.max_batch;
  const at::Tensor h_other =
      s.steps() > 1 ? at::from_blob(L.h_state, {B, H}, L.w_hh_kn.options()).clone() : at::Tensor();
  T* h_buffers[2] = {L.h_state, h_other.defined() ? h_other.mutable_data_ptr<T>() : nullptr};
  TeamProgress progress(max_team);

  run_team(max_team, [&](int64_t id, int64_t team) {
    const auto units = w_hh.share(id, team);
    w_hh.prepare(id, team);
    if (w_ih != nullptr) project_own_units(*w_ih, id, team, L.input, L.w_ih_kn.size(0), L.pre, H, s.total_rows, units);
    for (int64_t k = 0; k < s.steps(); ++k) {
      const int64_t t = s.time_at(k), rows = s.batch_sizes[t], off = s.offsets[t];
      if (k == 0) {  // h0: no thread of the team writes it
        w_hh.gemm(id, h_buffers[0], H, L.pre + off * H, H, rows, units.first, units.second, 0, H, /*accumulate=*/true);
      } else {
        gemm_own_columns_first(w_hh, progress, id, team, h_buffers[k % 2], H, L.pre + off * H, H, rows, units, H, 1,
                               units, /*accumulate=*/true);
      }
      RnnForwardStep<T> p = rnn_forward_step(L, t);
      p.h_state = k + 1 < s.steps() ? h_buffers[(k + 1) % 2] : nullptr;  // the last state: h_n, below
      IsaT::template rnn_forward<act, T, A>(p, 0, rows, units.first, units.second);
      progress.publish(id);
    }
  });
  gather_final_states(s, L.output, H, L.h_state);
}

// fused_rnn_forward with the team split by batch rows, as fused_lstm_forward_by_rows.
template <typename IsaT, Activation act, typename T, typename A, typename Weight>
void fused_rnn_forward_by_rows(const RnnForwardLoop<T>& L, int64_t max_team, const Weight& w_hh) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size;
  const auto all_units = w_hh.share(0, 1);
  const auto step = [&](int64_t id, int64_t t, int64_t r0, int64_t r1) {
    w_hh.gemm(id, L.h_state + r0 * H, H, L.pre + (s.offsets[t] + r0) * H, H, r1 - r0, all_units.first,
              all_units.second, 0, H, /*accumulate=*/true);
    RnnForwardStep<T> p = rnn_forward_step(L, t);
    p.h_state = L.h_state;
    IsaT::template rnn_forward<act, T, A>(p, r0, r1, 0, H);
  };
  run_team_by_rows(s, max_team, /*backward=*/false, step, w_hh);
  gather_final_states(s, L.output, H, L.h_state);
}

// fused_rnn_backward with the team split by batch rows, as fused_lstm_backward_by_rows.
template <typename IsaT, Activation act, typename T, typename A>
void fused_rnn_backward_by_rows(const RnnBackwardLoop<T>& L, int64_t max_team, const PanelWeight<T>& w_hh) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size;
  const auto all_units = w_hh.share(0, 1);
  const auto step = [&](int64_t id, int64_t t, int64_t r0, int64_t r1) {
    const RnnBackwardStep<T> p = rnn_backward_step(L, t);
    IsaT::template rnn_backward<act, T, A>(p, r0, r1, 0, H);
    w_hh.gemm(id, p.grad_pre + r0 * H, H, L.grad_h_state + r0 * H, H, r1 - r0, all_units.first, all_units.second, 0,
              H, /*accumulate=*/false);
  };
  run_team_by_rows(s, max_team, /*backward=*/true, step, w_hh);
}

// As fused_lstm_backward without projection.
template <typename IsaT, Activation act, typename T, typename A>
void fused_rnn_backward(const RnnBackwardLoop<T>& L) {
  const StepSchedule& s = *L.sched;
  const int64_t H = L.hidden_size, B = s.max_batch;
  const PanelWeight<T> w_hh = PanelWeight<T>::template make<IsaT>(L.w_hh, 1);
  const int64_t max_team = team_size_for(B * H * H);
  if (split_rows(s, loop_team(B * H * H), recurrent_weight_bytes(1, H, H, sizeof(T)))) {
    fused_rnn_backward_by_rows<IsaT, act, T, A>(L, max_team, w_hh);
    return;
  }
  TeamProgress progress(max_team);

  run_team(max_team, [&](int64_t id, int64_t team) {
    const auto units = w_hh.share(id, team);
    w_hh.prepare(id, team);
    for (int64_t k = s.steps() - 1; k >= 0; --k) {
      const int64_t t = s.time_at(k), rows = s.batch_sizes[t];
      const RnnBackwardStep<T> p = rnn_backward_step(L, t);
      IsaT::template rnn_backward<act, T, A>(p, 0, rows, units.first, units.second);
      progress.publish(id);
      gemm_own_columns_first(w_hh, progress, id, team, p.grad_pre, H, L.grad_h_state, H, rows, units, H, 1, units,
                             /*accumulate=*/false);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The policy.

// Runs the vectorized rows function of the running CPU over a step's rows (all units), or the
// element body over every (row, j) without one. For StepByStep.
template <typename Params, typename VecRows, typename Element>
void run_pointwise(const Params& p, int64_t rows, VecRows avx2_rows, VecRows avx512_rows,
                   const Element& element) {
  const CpuKernel kernel = cpu_kernel();
  for_rows(rows, p.hidden_size, [&](int64_t begin, int64_t end) {
    if (kernel == CpuKernel::Avx512) return avx512_rows(p, begin, end, 0, p.hidden_size);
    if (kernel == CpuKernel::Avx2) return avx2_rows(p, begin, end, 0, p.hidden_size);
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t j = 0; j < p.hidden_size; ++j) element(p, row, j);
    }
  });
}

struct CpuPolicy : AtenGemm, StepByStep<CpuPolicy> {
  static Tensor scratch(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return scratch_empty(sizes, options.dtype().toScalarType());
  }

  // C (M, N) = A (M, K) @ B (K, N), a GEMM run once per op call (input projections, input and
  // weight gradients): few rows through the few-rows kernels on B as it lies; float / double over
  // many rows on the panel kernels where one_off_gemm_on_panels says so; the rest through ATen's
  // BLAS (bfloat16: oneDNN's GEMM, AMX where the CPU has it, beat packing B for the panel
  // kernels on a Xeon, B=16 H=256 fwd+bwd 6.6 -> 6.4 ms).
  static void gemm(const Tensor& C, const Tensor& A, const Tensor& B) {
    bool done = false;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, C.scalar_type(), "rnnfused_cpu_gemm", [&] {
      done = A.stride(1) == 1 && try_unpacked_gemm<scalar_t>(B, A.const_data_ptr<scalar_t>(), A.stride(0), C.size(0),
                                                             C.mutable_data_ptr<scalar_t>(), C.stride(0),
                                                             /*accumulate=*/false);
      if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
        if (!done && one_off_gemm_on_panels()) {
          done = with_panel_kernels<scalar_t>(C.size(0), [&](auto isa) {
            panel_kernel_gemm<decltype(isa), scalar_t>(C, A, B);
          });
        }
      }
    });
    if (!done) AtenGemm::gemm(C, A, B);
  }

  // The step GEMM of StepByStep (cell steps, float16).
  template <typename scalar_t>
  static void step_gemm(const Tensor& b, const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc, int64_t rows,
                        bool accumulate) {
    if (!try_unpacked_gemm<scalar_t>(b, a, lda, rows, c, ldc, accumulate)) {
      AtenGemm::step_gemm(b, a, lda, c, ldc, rows, accumulate);
    }
  }

  // The loops on weights as they lie (few rows) compute the input projection themselves. So does
  // the bfloat16 packed-weight loop on AMX without training whose team splits the hidden units,
  // where that lets each thread keep its gates in a workspace of its own (fused_lstm_forward):
  // small batches whose hidden units give every thread of the team a share (B=16 H=256 forward
  // 2.27 -> 1.79 ms, B=1 H=128 0.30 -> 0.23). Not elsewhere: our projection is slower than
  // oneDNN's over many rows (B=64 H=512 22.5 -> 28.7 ms), or runs on one thread where the team's
  // other threads have no units (H=37 0.83 -> 1.08); float32 and float64 keep the one-off
  // projection (gemm), which the loop's own is slower than by about what the workspaces gain
  // (float64 B=16 H=256 +5%, on the Xeon and on Zen 5); a team that
  // splits the rows writes rows of its own anyway (B=16 H=256 forward 2.15 -> 2.05 ms).
  static bool loop_projects_input(const StepSchedule& s, const LayerSizes& sz, at::ScalarType dtype,
                                  bool gates_private) {
    bool row_major = false, panels = false;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "rnnfused_loop_projects_input", [&] {
      row_major = with_row_major_kernels<scalar_t>(s.total_rows, [](auto) {});
      panels = with_panel_kernels<scalar_t>(s.total_rows, [](auto) {});
    });
    if (row_major) return true;
    const int64_t team = loop_team(s.max_batch * sz.state_size * sz.gate_count * sz.hidden_size);
    const int64_t unit_panels = (sz.hidden_size + kBf16PanelWidth - 1) / kBf16PanelWidth;
    return gates_private && panels && dtype == at::kBFloat16 && amx_bf16::supported() &&
           s.max_batch <= kOwnGatesMaxBatch && unit_panels >= team &&
           !split_rows(s, team, recurrent_weight_bytes(sz.gate_count, sz.hidden_size, sz.state_size,
                                                       c10::elementSize(dtype)));
  }

  template <bool kTraining, typename scalar_t, typename acc_t>
  static void lstm_forward_loop(const LstmForwardLoop<scalar_t, acc_t>& L) {
    const StepSchedule& s = *L.sched;
    const int64_t team = loop_team(s.max_batch * L.state_size * 4 * L.hidden_size);
    const bool proj = L.has_proj();
    const bool done = with_panel_kernels<scalar_t>(s.total_rows, [&](auto isa) {
      using IsaT = decltype(isa);
      using Weight = PanelWeight<scalar_t>;
      const Weight w_hh = Weight::template make<IsaT>(L.w_hh_kn, 4);
      const Weight w_hr = proj ? Weight::template make<IsaT>(L.w_hr_kn, 1) : Weight();
      const int64_t weight_bytes = recurrent_weight_bytes(4, L.hidden_size, L.state_size, sizeof(scalar_t));
      if (!L.w_ih_kn.defined() && split_rows(s, team, weight_bytes)) {
        fused_lstm_forward_by_rows<IsaT, kTraining>(L, team, w_hh, w_hr);
        return;
      }
      const Weight w_ih = L.w_ih_kn.defined() ? Weight::template make<IsaT>(L.w_ih_kn, 4) : Weight();
      fused_lstm_forward<IsaT, kTraining>(L, team, w_hh, w_hr, L.w_ih_kn.defined() ? &w_ih : nullptr);
    }) || with_row_major_kernels<scalar_t>(s.total_rows, [&](auto isa) {
      using Weight = RowMajorWeight<decltype(isa), scalar_t>;
      TORCH_INTERNAL_ASSERT(L.w_ih_kn.defined());
      const Weight w_ih(L.w_ih_kn, 4, s.total_rows, team);
      fused_lstm_forward<decltype(isa), kTraining>(L, team, Weight(L.w_hh_kn, 4, s.max_batch, team),
                                                   proj ? Weight(L.w_hr_kn, 1, s.max_batch, team) : Weight(), &w_ih);
    });
    if (!done) StepByStep<CpuPolicy>::lstm_forward_loop<kTraining>(L);
  }
  template <typename scalar_t, typename acc_t>
  static void lstm_backward_loop(const LstmBackwardLoop<scalar_t, acc_t>& L) {
    if (!with_panel_kernels<scalar_t>(L.sched->total_rows, [&](auto isa) { fused_lstm_backward<decltype(isa)>(L); })) {
      StepByStep<CpuPolicy>::lstm_backward_loop(L);
    }
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_forward_loop(const RnnForwardLoop<scalar_t>& L) {
    const StepSchedule& s = *L.sched;
    const int64_t team = loop_team(s.max_batch * L.hidden_size * L.hidden_size);
    const bool done = with_panel_kernels<scalar_t>(s.total_rows, [&](auto isa) {
      using IsaT = decltype(isa);
      using Weight = PanelWeight<scalar_t>;
      TORCH_INTERNAL_ASSERT(!L.w_ih_kn.defined());
      const Weight w_hh = Weight::template make<IsaT>(L.w_hh_kn, 1);
      if (split_rows(s, team, recurrent_weight_bytes(1, L.hidden_size, L.hidden_size, sizeof(scalar_t)))) {
        fused_rnn_forward_by_rows<IsaT, act, scalar_t, acc_t>(L, team, w_hh);
      } else {
        fused_rnn_forward<IsaT, act, scalar_t, acc_t>(L, team, w_hh, static_cast<const Weight*>(nullptr));
      }
    }) || with_row_major_kernels<scalar_t>(s.total_rows, [&](auto isa) {
      using IsaT = decltype(isa);
      using Weight = RowMajorWeight<IsaT, scalar_t>;
      TORCH_INTERNAL_ASSERT(L.w_ih_kn.defined());
      const Weight w_ih(L.w_ih_kn, 1, s.total_rows, team);
      fused_rnn_forward<IsaT, act, scalar_t, acc_t>(L, team, Weight(L.w_hh_kn, 1, s.max_batch, team), &w_ih);
    });
    if (!done) StepByStep<CpuPolicy>::rnn_forward_loop<act, scalar_t, acc_t>(L);
  }
  template <Activation act, typename scalar_t, typename acc_t>
  static void rnn_backward_loop(const RnnBackwardLoop<scalar_t>& L) {
    if (!with_panel_kernels<scalar_t>(L.sched->total_rows,
                                      [&](auto isa) { fused_rnn_backward<decltype(isa), act, scalar_t, acc_t>(L); })) {
      StepByStep<CpuPolicy>::rnn_backward_loop<act, scalar_t, acc_t>(L);
    }
  }

  // The pointwise passes of StepByStep (float16, cell steps, CPUs without AVX2 / AVX512-BF16).
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

// bfloat16 runs natively where the AVX512-BF16 panel kernel serves it; float16, and bfloat16
// elsewhere, run the float32 kernels (float_compute.h).
bool has_16bit_kernels(at::ScalarType dtype) {
  static const bool bf16_dot = cpu_kernel() == CpuKernel::Avx512 && avx512_bf16::supported();
  return dtype == at::kBFloat16 && bf16_dot;
}

template <auto kOp>
constexpr auto kCpuImpl = &ComputeInFloat<kOp, &has_16bit_kernels>::call;

}  // namespace

TORCH_LIBRARY_IMPL(rnnfused, CPU, m) {
  m.impl("lstm_layer_forward", kCpuImpl<&lstm_layer_forward_impl<CpuPolicy>>);
  m.impl("lstm_layer_backward", kCpuImpl<&lstm_layer_backward_impl<CpuPolicy>>);
  m.impl("rnn_layer_forward", kCpuImpl<&rnn_layer_forward_impl<CpuPolicy>>);
  m.impl("rnn_layer_backward", kCpuImpl<&rnn_layer_backward_impl<CpuPolicy>>);
  m.impl("lstm_cell_forward", kCpuImpl<&lstm_cell_forward_impl<CpuPolicy>>);
  m.impl("lstm_cell_backward", kCpuImpl<&lstm_cell_backward_impl<CpuPolicy>>);
  m.impl("rnn_cell_forward", kCpuImpl<&rnn_cell_forward_impl<CpuPolicy>>);
  m.impl("rnn_cell_backward", kCpuImpl<&rnn_cell_backward_impl<CpuPolicy>>);
}

}  // namespace rnnfused
