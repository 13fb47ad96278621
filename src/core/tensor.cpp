#include "core/tensor.h"

namespace bl {

std::string shape_string(const Tensor& t) {
  // Appended piece by piece: GCC 12 at -O3 warns falsely (-Wrestrict) on "[" + to_string(..).
  std::string s = "[";
  s += std::to_string(t.ne[0]);
  int last = 3;
  while (last > 1 && t.ne[last] == 1) --last;
  for (int i = 1; i <= last; ++i) {
    s += ", ";
    s += std::to_string(t.ne[i]);
  }
  s += "] ";
  s += dtype_name(t.dtype);
  return s;
}

}  // namespace bl
