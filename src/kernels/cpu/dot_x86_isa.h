// The x86 kernel headers (dot_x86_256.h, dot_x86_512.h, dot_act_quant_x86.h) are compiled
// into translation units with different ISA flags (dot_avx2.cpp, dot_avx512.cpp). Their
// inline functions and template instances would get the same mangled names in each, and the
// linker keeps one copy: the AVX-512 level then ran the AVX2 builds of the shared 256-bit
// kernels (16 registers, spills; seen in perf), and with the other link order the AVX2 level
// would run AVX-512 code (illegal instruction on AVX2-only CPUs). Each ISA gets its own inline
// namespace, so each translation unit keeps its own copies.
#pragma once

#if defined(__AVX512F__)
#define BL_X86_ISA avx512
#else
#define BL_X86_ISA avx2
#endif
