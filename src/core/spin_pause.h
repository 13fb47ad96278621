// One step of a spin wait, shared by ThreadPool's waits and SpinBarrier: a pause (a yield where
// there is no pause instruction), and every 64th step a yield, so that with more threads than
// cores a spinning thread does not starve the one that has the work.
#pragma once

#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bl {

// spins: how many steps this wait has taken, counting this one (1, 2, ...).
inline void spin_pause(int spins) {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
  if (spins % 64 == 0) std::this_thread::yield();
}

}  // namespace bl
