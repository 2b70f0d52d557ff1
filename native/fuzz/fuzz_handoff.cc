// libFuzzer target: the handoff ring between two data-plane threads of a switch
// (switch_handoff.h), its producer and consumer sides interleaved in any order on one thread.
//
// Input: u8 ring size (4 KiB << (u8 % 4)), then operations until the input ends, each a u8
// op and its arguments: put (u16 max length, u16 written length, i32 port, u8 header fill),
// a put given up (Begin without End), publish, take up to u8 records, release.
// Oracles: what the consumer sees is exactly what the producer ended and published, in
// order (port, length, VLAN operation, header, every frame byte); nothing unpublished is seen, and a
// record taken is never seen again; Publish reports the consumer idle exactly when it had
// released everything published before; Pending says whether published records are left;
// an empty ring always takes a record of up to half its size; every write inside the ring
// (ASan: its bytes are a heap vector of exactly its size).
#include <deque>
#include <vector>

#include "fuzz_common.h"
#include "switch/switch_handoff.h"

namespace {

using namespace fuzz;

struct Rec {
  int32_t port;
  uint32_t len;
  uint8_t hdr;
  uint32_t seq;
  int32_t vlan;
};

uint8_t ByteOf(uint32_t seq, uint32_t i) { return static_cast<uint8_t>(seq * 131u + i * 7u + (i >> 8)); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const size_t bytes = size_t{4096} << (in.U8() % 4);
  HandoffRing ring(bytes);
  std::deque<Rec> ended, published, taken;  // producer side not yet published; visible; taken, not released
  bool all_released = true;                 // the consumer had released everything published (its head == tail)
  uint32_t seq = 0;
  for (int ops = 0; ops < 2048 && in.left() > 0; ops++) {
    const uint8_t op = in.U8() % 6;
    switch (op) {
      case 0:
      case 1: {
        const uint32_t max_len = in.U16();
        const uint32_t len = max_len == 0 ? 0 : in.U16() % (max_len + 1);
        const int32_t port = static_cast<int32_t>(in.U32());
        const uint8_t fill = in.U8();
        const bool empty = ended.empty() && published.empty() && taken.empty() && all_released;
        uint8_t* p = ring.Begin(max_len);
        FUZZ_TRACE("put max %u len %u -> %s\n", max_len, len, p ? "room" : "full");
        if (p == nullptr) {
          FUZZ_CHECK(!(empty && HandoffRing::kHeader + max_len + 8 <= bytes / 2), "an empty ring of %zu refused a record of %u", bytes, max_len);
          break;
        }
        for (uint32_t i = 0; i < max_len; i++) p[i] = 0xee;  // all it promised is writable
        for (uint32_t i = 0; i < len; i++) p[i] = ByteOf(seq, i);
        uint8_t hdr[10];
        memset(hdr, fill, sizeof hdr);
        if (op == 1 && len > 0) {
          FUZZ_TRACE("  given up\n");
          break;  // Begin without End: nothing is added
        }
        const int32_t vlan = static_cast<int32_t>(port ^ 0x5a5a) % 4097 - 2;  // kVlanStrip .. a TCI
        ring.End(port, len, hdr, vlan);
        ended.push_back(Rec{port, len, fill, seq++, vlan});
        break;
      }
      case 2: {
        const bool idle = ring.Publish();
        FUZZ_TRACE("publish %zu -> idle %d\n", ended.size(), idle);
        FUZZ_CHECK(idle == (!ended.empty() && all_released), "Publish said idle %d; %zu new records, consumer released all: %d", idle, ended.size(),
                   all_released);
        if (!ended.empty()) all_released = false;
        for (const Rec& r : ended) published.push_back(r);
        ended.clear();
        break;
      }
      case 3:
      case 4: {
        const uint32_t k = in.U8() % 16;
        for (uint32_t j = 0; j < k; j++) {
          HandoffRing::Record r;
          const bool got = ring.Front(&r);
          FUZZ_CHECK(got == !published.empty(), "Front found %d with %zu records published", got, published.size());
          if (!got) break;
          const Rec& want = published.front();
          FUZZ_CHECK(r.port == want.port && r.len == want.len && r.vlan == want.vlan, "record %u: port %d len %u vlan %d, want %d %u %d", want.seq, r.port,
                     r.len, r.vlan, want.port, want.len, want.vlan);
          for (int i = 0; i < 10; i++) FUZZ_CHECK(r.hdr10[i] == want.hdr, "record %u: header byte %d", want.seq, i);
          for (uint32_t i = 0; i < r.len; i++) FUZZ_CHECK(r.frame[i] == ByteOf(want.seq, i), "record %u: frame byte %u", want.seq, i);
          ring.Take();
          taken.push_back(want);
          published.pop_front();
        }
        break;
      }
      case 5: {
        ring.Release();
        taken.clear();
        all_released = published.empty();
        FUZZ_CHECK(ring.Pending() == !published.empty(), "Pending %d with %zu published records left", ring.Pending(), published.size());
        FUZZ_TRACE("release -> %zu left\n", published.size());
        break;
      }
    }
  }
  return 0;
}
