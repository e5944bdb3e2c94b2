// The bfloat16 panel GEMM micro-kernels (panel_gemm_bf16.cpp): AVX512-BF16 dot products, or AMX
// tiles, on weights packed in bf16 pairs. Same contract as PanelGemmFn (panels.h). Callers check
// supported() first.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace rnnfused {

// Columns per bf16 panel: 4 vectors of 16 float32 accumulators.
constexpr int64_t kBf16PanelWidth = 64;

namespace avx512_bf16 {

// Whether the running CPU has AVX-512 F/BW/VL and AVX512-BF16.
bool supported();

void panel_gemm(const c10::BFloat16* a, int64_t lda, const c10::BFloat16* panel, int64_t K, c10::BFloat16* c,
                int64_t ldc, int64_t rows, int64_t valid_cols, bool accumulate);

}  // namespace avx512_bf16

namespace amx_bf16 {

// Whether the running CPU has AMX-BF16 (and AVX512-BF16, which serves an odd K) and Linux lets
// this process use the tiles. RNNFUSED_CPU_AMX=0 in the environment says no (tests, comparisons).
bool supported();

void panel_gemm(const c10::BFloat16* a, int64_t lda, const c10::BFloat16* panel, int64_t K, c10::BFloat16* c,
                int64_t ldc, int64_t rows, int64_t valid_cols, bool accumulate);

}  // namespace amx_bf16
}  // namespace rnnfused
