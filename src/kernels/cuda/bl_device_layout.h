// The device layout of bl<b>g<g> weights (bl_tiles.cuh says what it is and why): the file's
// bytes with every dword of the code lines bit-transposed (bltile::transpose_nibbles); the
// headers (s, z) unchanged. The permutation is its own inverse, so one function serves both
// directions. It applies to whole tile groups (16 rows x g columns: 64 + 2 b g bytes), the unit
// in which the bytes of a bl matrix follow each other.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"

namespace bl::cuda {

// Bytes of one tile group of bl dtype t (0 for any other dtype): ranges given to the functions
// below start and end on multiples of it.
size_t bl_tile_group_bytes(DType t);

// In place on `bytes` bytes of device memory at data (whole tile groups of dtype t): file layout
// <-> device layout. False (and nothing launched) when t is not a bl dtype or the range is not
// whole tile groups.
bool launch_swap_bl_layout(DType t, void* data, size_t bytes, cudaStream_t stream);
// The same on host memory (read() of a bl weight).
bool swap_bl_layout_on_host(DType t, void* data, size_t bytes);

}  // namespace bl::cuda
