// Warp-level tensor-core building blocks (sm_80+): mma.sync m16n8k16 with fp16 operands and
// fp32 accumulation, ldmatrix from shared memory, cp.async global -> shared copies.
//
// Fragment layouts of mma.m16n8k16.row.col (PTX ISA, "Matrix fragments for mma.m16n8k16"),
// with g = lane / 4 and t = lane % 4:
//   A 16x16 (row-major), 4 regs of 2 halves: a0 (row g, cols 2t, 2t+1), a1 (row g+8, same
//     cols), a2 (row g, cols 2t+8, 2t+9), a3 (row g+8, cols 2t+8, 2t+9);
//   B 16x8 ("col": k x n), 2 regs: b0 (k 2t, 2t+1; col g), b1 (k 2t+8, 2t+9; col g);
//   C 16x8 fp32, 4 regs: c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8, cols 2t, 2t+1).
// So C of two neighbouring n-tiles, rounded to fp16 pairs, is exactly an A fragment: the
// FlashAttention-2 trick of feeding P = softmax(S) to the next mma without shared memory.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace bl::cuda {

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// c += a (16x16) * b (16x8).
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 fp16 matrices from shared memory: lanes 8i..8i+7 give the addresses of the 8 rows
// (16 bytes each) of matrix i; r[i] gets (row lane / 4, cols 2 (lane % 4), +1) of matrix i,
// or with kTrans of its transpose (rows 2 (lane % 4), +1 of column lane / 4).
template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const __half* row_address) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// 16 bytes global -> shared, asynchronous (L2 only); src_bytes 0 writes zeros and reads nothing.
__device__ __forceinline__ void cp_async_16(void* dst_shared, const void* src_global, int src_bytes) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst_shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src_global), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// 2^x (ex2.approx: ~2 ulp; 2^-inf = +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace bl::cuda
