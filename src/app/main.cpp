// bitlight CLI entry point: dispatches to one command per file (cmd_*.cpp).
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "bitlight: not yet wired\n");
  return 1;
}
