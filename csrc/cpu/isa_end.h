// Closes the instruction-set region opened by isa_avx2_begin.h / isa_avx512_begin.h.
#ifdef RNNF_ISA_PUSHED
#pragma GCC pop_options
#undef RNNF_ISA_PUSHED
#endif
