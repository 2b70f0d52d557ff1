// libFuzzer target: virtio-net delivery (net.cc) between two hostile guests' queues in one
// guest memory: a TX queue whose popped chains are the frames, an RX queue whose buffers
// receive them, and flat host frames (TAP / VXLAN side).
//
// Input: the GuestMem layout, u8 layouts (bit 0 TX packed, bit 1 RX packed), TX Ring::Setup,
// RX Ring::Setup, then operations:
//   0 a TX ring operation (Ring::Step)      3 NetToFlat
//   1 an RX ring operation (Ring::Step)     4 NetDeliverFlat
//   2 NetDeliver                            5 NetPeek
// Calls are made with what the N-API binding (bind_net.cc) lets through: chain indices below
// the TX burst size, header lengths 10 or 12, vlan -2..65535.
// Oracles: NetDeliver and NetDeliverFlat write guest memory only inside buffers the RX
// driver's descriptors mark device-writable and the RX ring's device areas; NetToFlat and
// NetPeek write none; output arrays and flat buffers are exact-size heap buffers; after a
// call that returns >= 0 the RX queue holds in flight exactly what it held before.
#include <algorithm>

#include "net/net.h"
#include "fuzz_ring.h"

namespace {

using namespace fuzz;

struct Opts {
  uint32_t rx_hdr, tx_hdr;
  bool mergeable, tx_offloads;
  RxOffloads rx;
  int32_t vlan;
  uint32_t max_frame;
};

Opts ReadOpts(Input& in) {
  Opts o;
  const uint8_t f = in.U8();
  o.rx_hdr = (f & 1) ? 12 : 10;
  o.tx_hdr = (f & 2) ? 12 : 10;
  o.mergeable = f & 4;
  o.tx_offloads = f & 8;
  const uint8_t rx = in.U8();
  o.rx.csum = rx & 1;
  o.rx.tso4 = rx & 2;
  o.rx.tso6 = rx & 4;
  o.rx.ecn = rx & 8;
  o.rx.ufo = rx & 16;
  const uint8_t v = in.U8();
  o.vlan = (v & 3) == 0 ? -1 : (v & 3) == 1 ? -2 : static_cast<int32_t>(in.U16());
  o.max_frame = (f & 16) ? in.U16() : 0;
  return o;
}

RxTarget Target(Ring& rx, const Opts& o) {
  RxTarget t{&rx.q(), &rx.burst().a, o.rx_hdr, o.mergeable, o.rx};
  t.max_frame = o.max_frame;
  return t;
}

std::vector<uint16_t> Chains(Input& in, Ring& tx) {
  const uint32_t n = in.U8() % (tx.chains() + 1);
  std::vector<uint16_t> c(n);
  for (auto& x : c) x = static_cast<uint16_t>(in.U8() % tx.chains());
  return c;
}

// After a delivery into rx: the result, and the queue's in-flight count.
void AfterDeliver(Ring& rx, int32_t r, const char* what) {
  rx.UsedElsewhere();
  if (r >= 0) {
    FUZZ_CHECK(r <= 1, "%s returned %d", what, r);
    rx.CheckCount(what);
    return;
  }
  FUZZ_CHECK(KnownVqError(-r), "%s returned %d, not an engine error", what, r);
  const VqError e = rx.q().error();
  FUZZ_CHECK(static_cast<int32_t>(e) == -r || (-r == static_cast<int32_t>(VqError::kNotReady) && !rx.q().ready()),
             "%s returned %d but the RX queue is %s (ready %d)", what, r, VqErrorName(e), rx.q().ready());
  rx.Reset();  // a broken queue: the device is reset
}

void Deliver(Input& in, GuestMem& g, Ring& tx, Ring& rx) {
  const std::vector<uint16_t> chains = Chains(in, tx);
  const Opts o = ReadOpts(in);
  if (!tx.q().memory() || !rx.q().memory()) return;
  Ranges allowed = rx.Owned();
  rx.AddWritableBuffers(&allowed);
  TxSource src{&tx.burst().a, tx.q().memory().get(), o.tx_hdr, o.tx_offloads, o.vlan};
  DeliverStats st;
  Snapshot s;
  s.Take(g);
  const int32_t r = NetDeliver(Target(rx, o), src, chains.data(), static_cast<uint32_t>(chains.size()), &st);
  FUZZ_TRACE("NetDeliver(%zu chains) -> %d: delivered %u no_buffers %u too_big %u bad %u segmented %u csum %u\n", chains.size(), r,
             st.delivered, st.no_buffers, st.too_big, st.bad, st.segmented, st.csum_done);
  s.Compare(g, allowed, "NetDeliver");
  AfterDeliver(rx, r, "NetDeliver");
}

void ToFlat(Input& in, GuestMem& g, Ring& tx) {
  const std::vector<uint16_t> chains = Chains(in, tx);
  const Opts o = ReadOpts(in);
  const uint32_t out_len = in.U32() % (3 * kMaxFrame);
  const uint32_t max = in.U8();
  if (!tx.q().memory()) return;
  HeapBuf out(out_len);
  std::vector<uint32_t> offsets(max), lens(max);
  TxSource src{&tx.burst().a, tx.q().memory().get(), o.tx_hdr, o.tx_offloads, o.vlan};
  DeliverStats st;
  Snapshot s;
  s.Take(g);
  const uint32_t k = NetToFlat(src, chains.data(), static_cast<uint32_t>(chains.size()), out.p, out_len, offsets.data(),
                               lens.data(), max, &st);
  FUZZ_TRACE("NetToFlat(%zu chains) -> %u frames, bad %u segmented %u\n", chains.size(), k, st.bad, st.segmented);
  s.Compare(g, Ranges{}, "NetToFlat");
  FUZZ_CHECK(k <= max, "NetToFlat wrote %u frames, max %u", k, max);
  uint64_t end = 0;
  for (uint32_t i = 0; i < k; i++) {
    FUZZ_CHECK(offsets[i] >= end && uint64_t{offsets[i]} + lens[i] <= out_len && lens[i] <= kMaxFrame,
               "NetToFlat frame %u at [%u, +%u) of %u", i, offsets[i], lens[i], out_len);
    end = uint64_t{offsets[i]} + lens[i];
  }
}

void DeliverFlat(Input& in, GuestMem& g, Ring& rx) {
  const uint32_t n = in.U8() % 33;
  const bool with_hdr = in.U8() & 1;
  std::vector<uint32_t> offsets(n), lens(n);
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    const uint16_t l = in.U16();
    lens[i] = (l & 0x8000) ? kMaxFrame - 64 + (l & 127) : l & 0x7fff;  // around the largest frame, or small
    offsets[i] = static_cast<uint32_t>(total);
    total += lens[i];
  }
  HeapBuf data(total);
  in.Bytes(data.p, total);
  std::vector<uint8_t> hdr10(10 * size_t{n});
  if (with_hdr) in.Bytes(hdr10.data(), hdr10.size());
  const Opts o = ReadOpts(in);
  if (!rx.q().memory()) return;
  Ranges allowed = rx.Owned();
  rx.AddWritableBuffers(&allowed);
  DeliverStats st;
  Snapshot s;
  s.Take(g);
  const int32_t r = NetDeliverFlat(Target(rx, o), data.p, offsets.data(), lens.data(), n, with_hdr ? hdr10.data() : nullptr,
                                   o.vlan, &st);
  FUZZ_TRACE("NetDeliverFlat(%u frames) -> %d: delivered %u no_buffers %u too_big %u bad %u segmented %u csum %u\n", n, r,
             st.delivered, st.no_buffers, st.too_big, st.bad, st.segmented, st.csum_done);
  s.Compare(g, allowed, "NetDeliverFlat");
  AfterDeliver(rx, r, "NetDeliverFlat");
}

void Peek(Input& in, GuestMem& g, Ring& tx) {
  const uint32_t n = in.U8() % (tx.chains() + 1);
  const uint32_t hdr = in.U8() % 16;
  const uint32_t stride = in.U8();
  if (!tx.q().memory()) return;
  HeapBuf out(size_t{n} * stride);
  std::vector<uint32_t> lens(n);
  Snapshot s;
  s.Take(g);
  NetPeek(tx.burst().a, *tx.q().memory(), n, hdr, out.p, stride, lens.data());
  s.Compare(g, Ranges{}, "NetPeek");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  GuestMem g;
  if (!g.Read(in)) return 0;
  const uint8_t layouts = in.U8();
  Ring tx(g, layouts & 1);
  Ring rx(g, layouts & 2);
  if (!tx.Setup(in) || !rx.Setup(in)) return 0;
  for (int ops = 0; ops < 256 && !in.done(); ops++) {
    switch (in.U8() % 6) {
      case 0: tx.Step(in); break;
      case 1: rx.Step(in); break;
      case 2: Deliver(in, g, tx, rx); break;
      case 3: ToFlat(in, g, tx); break;
      case 4: DeliverFlat(in, g, rx); break;
      default: Peek(in, g, tx); break;
    }
  }
  g.CheckCanaries("the run");
  return 0;
}
