// libFuzzer target: the split (FUZZ_PACKED=0) or packed (FUZZ_PACKED=1) ring engine driven
// by a hostile driver. Input: the guest memory layout (GuestMem::Read), the queue
// (Ring::Setup), then up to 512 operations (Ring::Step). Invariants: see fuzz_ring.h and
// fuzz_common.h (segments inside guest memory, writes only where the device may write,
// canaries, only engine error codes, the in-flight model).
#include "fuzz_ring.h"

#ifndef FUZZ_PACKED
#error "build with -DFUZZ_PACKED=0 (split) or -DFUZZ_PACKED=1 (packed)"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  fuzz::GuestMem g;
  if (!g.Read(in)) return 0;
  fuzz::Ring ring(g, FUZZ_PACKED != 0);
  if (!ring.Setup(in)) return 0;
  for (int ops = 0; ops < 512 && ring.Step(in); ops++) {
  }
  g.CheckCanaries("the run");
  return 0;
}
