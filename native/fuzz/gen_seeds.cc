// Writes the committed seed corpus (native/fuzz/corpus/<target>/seed-*): small inputs in
// each target's format that reach deep on their own (valid rings, chains, indirect tables,
// wrap-around, inflight recovery, dirty logging, TSO frames, block requests), so the fuzzer
// mutates from there. Built and run by scripts/fuzz-native.sh --seeds (plain clang++, no
// sanitizers): the seeds are deterministic, regenerate them after a format change.
//
//   gen_seeds <corpus dir>
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "blk/blk.h"
#include "fuzz_common.h"
#include "fuzz_guest_fault.h"
#include "fuzz_ring.h"

namespace {

using fuzz::Output;
namespace blk = vhostkit::blk;

std::string g_root;

// seed-<name>, or for the input of a past finding regression-<name> (kept by --seeds).
void Save(const std::string& target, const std::string& name, const Output& o, const char* prefix = "seed-") {
  const std::string dir = g_root + "/" + target;
  mkdir(dir.c_str(), 0755);
  const std::string path = dir + "/" + prefix + name;
  FILE* f = fopen(path.c_str(), "wb");
  if (!f || fwrite(o.b.data(), 1, o.b.size(), f) != o.b.size()) {
    perror(path.c_str());
    exit(1);
  }
  fclose(f);
}

// GuestMem: region sizes, host gap; gpa1 mode 0 (right after region 0) unless told.
void Guest(Output& o, uint32_t size0, uint32_t size1 = 0, uint8_t gap = 16, uint8_t extra_mode = 0) {
  o.U8((size1 ? 1 : 0) | extra_mode);
  o.U16(size0 - 1);
  o.U16((size1 ? size1 : 1) - 1);
  o.U8(gap);
}

// Addr selector 0 (region 0 + off) / 1 (last region + off).
void A0(Output& o, uint32_t off) { o.U8(0); o.U16(off); }
void A1(Output& o, uint32_t off) { o.U8(1); o.U16(off); }
void Len(Output& o, uint32_t n) {
  if (n < 64) {
    o.U8((n << 2) | 3);
  } else if (n < 65536) {
    o.U8(1);
    o.U16(n);
  } else {
    o.U8(2);
    o.U32(n);
  }
}

enum Cfg : uint8_t { kEventIdx = 1, kIndirect = 2, kUva = 4, kInflight = 8, kLog = 16, kLogRings = 32, kRawBase = 64, kRecord = 128 };

struct RingSpec {
  bool packed = false;
  uint8_t cfg = kIndirect;
  uint32_t size = 8;
  uint32_t chains = 32;
  uint32_t segs = 64;
  uint32_t desc = 0x0, driver = 0x200, device = 0x400;  // offsets in region 0
  uint32_t base = 0;
};

void Ring(Output& o, const RingSpec& r) {
  o.U8(r.cfg);
  if (r.packed) {
    o.U8(r.size - 1);
  } else {
    uint32_t l = 0;
    while ((1u << l) < r.size) l++;
    o.U8(l);
  }
  o.U8(r.chains - 1);
  o.U16(r.segs - 1);
  A0(o, r.desc);
  A0(o, r.driver);
  A0(o, r.device);
  if (r.cfg & kRawBase) o.U32(r.base);
  if (r.cfg & kInflight) {
    o.U16(0);  // exactly the length needed
    o.U8(0);   // zero-filled: a fresh area
  }
  if (r.packed && (r.cfg & kRecord) && !(r.cfg & kInflight)) {
    o.U16(0);  // exactly the length needed
    o.U8(0);   // zero-filled: a fresh file
  }
  if (r.cfg & kLog) A0(o, r.device);
}

struct D {
  bool write;
  uint32_t off;  // in region 0 (or region 1 with r1)
  uint32_t len;
  bool r1 = false;
};

void Desc(Output& o, const D& d, uint8_t extra = 0) {
  o.U8((d.write ? 1 : 0) | extra);
  if (d.r1) {
    A1(o, d.off);
  } else {
    A0(o, d.off);
  }
  Len(o, d.len);
}

// Split: kOpAddChain at head with these descriptors.
void SplitChain(Output& o, uint32_t head, const std::vector<D>& ds) {
  o.U8(fuzz::kOpAddChain);
  o.U8(head);
  o.U8(ds.size() - 1);
  for (const D& d : ds) Desc(o, d);
}
// Packed: kOpAddChain with buffer id.
void PackedChain(Output& o, uint32_t id, const std::vector<D>& ds) {
  o.U8(fuzz::kOpAddChain);
  o.U8(ds.size() - 1);
  o.U16(id);
  for (const D& d : ds) Desc(o, d);
}
// A chain of one INDIRECT descriptor whose table (at table_off) holds `entries`.
void IndirectChain(Output& o, bool packed, uint32_t head_or_id, uint32_t table_off, const std::vector<D>& entries) {
  o.U8(fuzz::kOpAddChain);
  if (packed) {
    o.U8(0);
    o.U16(head_or_id);
  } else {
    o.U8(head_or_id);
    o.U8(0);
  }
  o.U8(2);        // INDIRECT
  A0(o, 0);       // (the table's address comes below)
  Len(o, 0);
  o.U8(entries.size() - 1);
  A0(o, table_off);
  for (const D& e : entries) Desc(o, e);
}
void Pop(Output& o, uint32_t max = 32) { o.U8(fuzz::kOpPop); o.U8(max); }
void PushAll(Output& o, uint32_t len) { o.U8(fuzz::kOpPushAll); o.U32(len); }
void Serve(Output& o, uint32_t rounds, uint32_t len) { o.U8(fuzz::kOpServe); o.U8(rounds - 1); o.U32(len); }
void Notify(Output& o, bool on) { o.U8(fuzz::kOpNotify); o.U8(on); }
void Query(Output& o) { o.U8(fuzz::kOpQuery); }

// The ring targets' seeds (split or packed).
void RingSeeds(bool packed) {
  const std::string t = packed ? "packed_ring" : "split_ring";
  auto chain = [&](Output& o, uint32_t h, const std::vector<D>& ds) {
    if (packed) {
      PackedChain(o, h, ds);
    } else {
      SplitChain(o, h, ds);
    }
  };
  {  // plain, mixed and indirect chains, served and notified
    Output o;
    Guest(o, 16384);
    RingSpec r;
    r.packed = packed;
    Ring(o, r);
    chain(o, 0, {{false, 0x1000, 64}});
    chain(o, 1, {{false, 0x1100, 16}, {true, 0x1200, 256}});
    IndirectChain(o, packed, 3, 0x3000, {{false, 0x1400, 16}, {true, 0x1500, 100}, {true, 0x1600, 1}});
    Pop(o);
    Query(o);
    PushAll(o, 10);
    Notify(o, false);
    Notify(o, true);
    chain(o, 4, {{true, 0x1800, 1500}});
    Pop(o);
    PushAll(o, 1500);
    Save(t, "basic", o);
  }
  {  // EVENT_IDX, a small queue going round many times, driver event suppression
    Output o;
    Guest(o, 16384);
    RingSpec r;
    r.packed = packed;
    r.cfg = kEventIdx | kIndirect;
    r.size = 4;
    r.chains = 4;
    Ring(o, r);
    o.U8(fuzz::kOpDriverEvent);
    o.U16(packed ? 0x8002 : 2);
    o.U16(packed ? 2 : 0);
    for (int k = 0; k < 12; k++) {
      // Two descriptors each: a split chain takes descriptors head and head + 1, a packed
      // one 2 of the 4 slots; served every 2 chains.
      chain(o, (2 * k) % 4, {{false, 0x1000u + 64 * k, 32}, {true, 0x2000u + 64 * k, 32}});
      if (k % 2 == 1) Serve(o, 1, 32);
    }
    Serve(o, 2, 1);
    Query(o);
    Save(t, "event-idx-wrap", o);
  }
  {  // two adjacent regions: a buffer across the boundary; rings in region 1
    Output o;
    Guest(o, 8192, 8192, 48);
    RingSpec r;
    r.packed = packed;
    Ring(o, r);
    chain(o, 0, {{false, 8192 - 32, 64}});
    chain(o, 1, {{true, 8192 - 8, 16}, {true, 0x100, 64, true}});
    Pop(o);
    PushAll(o, 80);
    Save(t, "two-regions", o);
  }
  {  // PopDirect of one-descriptor writable chains, unpop, pop again
    Output o;
    Guest(o, 16384);
    RingSpec r;
    r.packed = packed;
    Ring(o, r);
    for (int k = 0; k < 5; k++) chain(o, k, {{true, 0x1000u + 0x200 * k, 0x200}});
    chain(o, 5, {{false, 0x2000, 14}, {true, 0x2100, 100}});
    o.U8(fuzz::kOpPopDirect);
    o.U8(7);
    o.U8(fuzz::kOpUnpopLast);
    o.U8(2);
    Pop(o, 4);
    o.U8(fuzz::kOpPopDirect);
    o.U8(7);
    PushAll(o, 60);
    Save(t, "pop-direct", o);
  }
  {  // an inflight area: pop, complete some, a backend restart, resubmission
    Output o;
    Guest(o, 16384);
    RingSpec r;
    r.packed = packed;
    r.cfg = kIndirect | kInflight;
    Ring(o, r);
    chain(o, 0, {{false, 0x1000, 16}, {true, 0x1100, 64}});
    chain(o, 2, {{false, 0x1200, 16}});
    chain(o, 3, {{true, 0x1300, 32}});
    Pop(o);
    o.U8(fuzz::kOpPush);  // complete the second one
    o.U8(1);
    o.U8(1);
    o.U8(0);
    o.U8(fuzz::kOpRestart);
    o.U8(0);
    Pop(o);
    PushAll(o, 8);
    chain(o, 4, {{true, 0x1400, 32}});
    Pop(o);
    o.U8(fuzz::kOpRestart);
    o.U8(0);
    Serve(o, 2, 4);
    Save(t, "inflight-restart", o);
  }
  {  // dirty logging of buffers and rings, ring addresses as frontend-virtual
    Output o;
    Guest(o, 16384);
    RingSpec r;
    r.packed = packed;
    r.cfg = kIndirect | kUva | kLog | kLogRings | kEventIdx;
    Ring(o, r);
    chain(o, 0, {{false, 0x1000, 16}, {true, 0x1100, 0x1800}});
    IndirectChain(o, packed, 2, 0x3000, {{true, 0x3400, 100}});
    Serve(o, 1, 0x1000);
    Save(t, "dirty-log", o);
  }
  {  // a ring restored mid-way (SET_VRING_BASE), near the u16 wrap of the indices
    Output o;
    Guest(o, 16384);
    RingSpec r;
    r.packed = packed;
    r.cfg = kIndirect | kRawBase | kEventIdx;
    r.base = packed ? (5u | (1u << 15) | (5u << 16) | (1u << 31)) : 0xfffd;
    Ring(o, r);
    if (packed) {  // the driver continues at slot 5
      o.U8(fuzz::kOpDriver2);
      o.U8(5);
    }
    for (int k = 0; k < 6; k++) chain(o, (5 + k) % 8, {{true, 0x1000u + 0x100 * k, 0x80}});
    Serve(o, 3, 0x80);
    Save(t, "base-wrap", o);
  }
  {  // hostile: loops, bad next, an avail idx jump (split) / wrong wrap bits (packed)
    Output o;
    Guest(o, 16384);
    RingSpec r;
    r.packed = packed;
    Ring(o, r);
    chain(o, 0, {{false, 0x1000, 16}});
    o.U8(fuzz::kOpAddChain);  // a chain whose last descriptor chains on (NEXT) to itself
    if (packed) {
      o.U8(0x80 | 1);
      o.U16(3);
    } else {
      o.U8(2);
      o.U8(1);
    }
    Desc(o, {false, 0x1100, 16});
    Desc(o, {false, 0x1200, 16}, 8);
    Pop(o);
    o.U8(fuzz::kOpDriver2);
    o.U16(0x4000);
    Pop(o);
    o.U8(fuzz::kOpSetBase);
    o.U32(packed ? (1u << 15) | (1u << 31) : 0);
    Pop(o);
    Save(t, "hostile", o);
  }
}

// Finding 1 (packed_ring.cc, fixed): with an inflight area, two chains in flight when the
// backend restarts; their resubmission does not fit one burst (the second breaks it off as
// full) and the driver offers the second one's buffer id again, in a chain of as many
// descriptors. Pop took it from the ring, then resubmitted the same id: in flight twice.
void PackedResubmitSeed() {
  Output o;
  Guest(o, 16384);
  RingSpec r;
  r.packed = true;
  r.cfg = kIndirect | kInflight;
  r.segs = 3;
  r.chains = 4;
  Ring(o, r);
  PackedChain(o, 0, {{false, 0x1000, 16}, {true, 0x1100, 16}});
  PackedChain(o, 1, {{false, 0x1200, 16}, {true, 0x1300, 16}});
  Pop(o);  // 1 (the second does not fit 3 segments)
  Pop(o);  // 1
  o.U8(fuzz::kOpRestart);
  o.U8(0);
  PackedChain(o, 1, {{true, 0x1400, 16}, {true, 0x1500, 0}});  // 2 descriptors, 1 segment
  Pop(o);  // the resubmitted id 0, then the ring's id 1
  Pop(o);  // the resubmitted id 1
  PushAll(o, 1);
  Save("packed_ring", "resubmit-reused-id", o, "regression-");
}

// A ring position record across restarts (what QEMU does after its backend died: the
// SET_VRING_BASE of the first start again), once cleanly, once with the record saying a
// push batch was being written when the backend died (batch_valid set, the used position
// put back).
void PackedRecordSeed() {
  Output o;
  Guest(o, 16384);
  RingSpec r;
  r.packed = true;
  r.cfg = kIndirect | kRecord;
  Ring(o, r);
  for (uint32_t id = 0; id < 3; id++) PackedChain(o, id, {{false, 0x1000 + 0x100 * id, 16}, {true, 0x1800 + 0x100 * id, 16}});
  Pop(o);
  PushAll(o, 1);
  PackedChain(o, 3, {{true, 0x2000, 64}});
  Pop(o);
  o.U8(fuzz::kOpRestart);
  o.U8(1);
  o.U32((1u << 15) | (1u << 31));
  Pop(o);
  PushAll(o, 4);
  // The last burst (id 3 at slot 6) cut short: batch_valid = 1, used_commit back at slot 6
  // (wrap 1), and its head still showing the driver's available descriptor.
  o.U8(fuzz::kOpWriteInflight);
  o.U16(6);
  o.U8(1);
  o.U8(1);
  o.U8(fuzz::kOpWriteInflight);
  o.U16(36);
  o.U8(2);
  o.U8(6);
  o.U8(0x80);
  o.U8(fuzz::kOpDriver1);
  o.U16(6);
  o.U16(0x0082);
  o.U8(fuzz::kOpRestart);
  o.U8(1);
  o.U32((1u << 15) | (1u << 31));
  PackedChain(o, 0, {{true, 0x2100, 64}});
  Pop(o);
  PushAll(o, 8);
  Save("packed_ring", "ring-record", o);
}

void MemorySeeds() {
  {
    Output o;
    o.U8(3);  // regions
    const uint64_t gpas[3] = {0x0, 0x10000, 0x30000};
    for (int i = 0; i < 3; i++) {
      o.U64(gpas[i]);
      o.U8(3 | (16 << 2));  // 16 pages
      o.U64(0x7f0000000000ull + 0x100000ull * i);
    }
    // translate across the adjacent pair, contiguous, uva, hinted, add, remove, mark, map
    o.U8(0); o.U8(0); o.U64(0xfff0); o.U8(1); o.U16(64);
    o.U8(0); o.U8(0); o.U64(0x20000 - 8); o.U8(1); o.U16(0x11000);
    o.U8(1); o.U8(1 | (1 << 2)); o.U32(0x100); o.U8(1); o.U16(0x100);
    o.U8(2); o.U8(3 | (1 << 2)); o.U32(0x10); o.U16(0); o.U8(1); o.U16(0x20);
    o.U8(3); o.U8(1); o.U32(0x40); o.U32(16);
    o.U8(4); o.U64(0x20000); o.U8(3 | (16 << 2)); o.U64(0x7f0000400000ull);
    o.U8(0); o.U8(0); o.U64(0x1fff0); o.U8(1); o.U16(0x20);
    o.U8(5); o.U8(1);
    o.U8(6); o.U8(0); o.U64(0x3000); o.U8(1); o.U16(0x2001);
    o.U8(6); o.U8(0); o.U64(~0ull - 0x100); o.U8(3); o.U64(~0ull);
    o.U8(7); o.U8(1); o.U16(4096); o.U8(1); o.U16(4096);
    Save("memory", "three-regions", o);
  }
  {  // a region ending at the top of the address space; overlapping uva refused on add
    Output o;
    o.U8(2);
    o.U64(~0ull - 0xffff);
    o.U8(0); o.U16(0xffff);
    o.U64(0x1000);
    o.U64(0x0);
    o.U8(0); o.U16(0x1000);
    o.U64(0x100000);
    o.U8(0); o.U8(0); o.U64(~0ull - 0x10); o.U8(1); o.U16(0x20);
    o.U8(2); o.U8(0); o.U64(0x10ff0); o.U8(1); o.U16(0x10);
    o.U8(4); o.U64(0x5000); o.U8(0); o.U16(0x100); o.U64(0x1080);
    Save("memory", "top-of-space", o);
  }
}

// Ethernet + IPv4/IPv6 + TCP, payload bytes; vlan adds an 802.1Q tag.
std::vector<uint8_t> TcpFrame(bool v6, uint32_t payload, bool vlan) {
  std::vector<uint8_t> f;
  const uint8_t macs[12] = {0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1};
  f.insert(f.end(), macs, macs + 12);
  if (vlan) {
    f.push_back(0x81);
    f.push_back(0x00);
    f.push_back(0x00);
    f.push_back(0x07);
  }
  f.push_back(v6 ? 0x86 : 0x08);
  f.push_back(v6 ? 0xdd : 0x00);
  if (!v6) {
    const uint32_t tot = 20 + 20 + payload;
    const uint8_t ip[20] = {0x45, 0, static_cast<uint8_t>(tot >> 8), static_cast<uint8_t>(tot), 0x12, 0x34, 0x40, 0, 64, 6, 0, 0,
                            10, 0, 0, 1, 10, 0, 0, 2};
    f.insert(f.end(), ip, ip + 20);
  } else {
    const uint32_t pl = 20 + payload;
    uint8_t ip[40] = {0x60, 0, 0, 0, static_cast<uint8_t>(pl >> 8), static_cast<uint8_t>(pl), 6, 64};
    ip[8] = 0xfd;
    ip[23] = 1;
    ip[24] = 0xfd;
    ip[39] = 2;
    f.insert(f.end(), ip, ip + 40);
  }
  const uint8_t tcp[20] = {0x1f, 0x90, 0xc0, 0x00, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0};
  f.insert(f.end(), tcp, tcp + 20);
  for (uint32_t i = 0; i < payload; i++) f.push_back(static_cast<uint8_t>(i * 7 + 3));
  return f;
}

void Hdr(Output& o, uint8_t flags, uint8_t gso, uint16_t hdr_len, uint16_t gso_size, uint16_t cs, uint16_t co) {
  o.U8(flags);
  o.U8(gso);
  o.U16(hdr_len);
  o.U16(gso_size);
  o.U16(cs);
  o.U16(co);
}

void OffloadSeeds() {
  struct S {
    const char* name;
    bool v6, vlan;
    uint32_t payload;
    uint16_t mss;
  };
  const S ss[] = {{"tso4", false, false, 3000, 1000}, {"tso6", true, false, 2500, 1200}, {"tso4-vlan", false, true, 700, 100},
                  {"tso4-one", false, false, 50, 1400}};
  for (const S& s : ss) {
    Output o;
    o.U8(0);
    const uint32_t l3 = s.vlan ? 18 : 14;
    const uint32_t l4 = l3 + (s.v6 ? 40 : 20);
    Hdr(o, 1, s.v6 ? 4 : 1, static_cast<uint16_t>(l4 + 20), s.mss, static_cast<uint16_t>(l4), 16);
    o.U16(0x8000);
    const std::vector<uint8_t> f = TcpFrame(s.v6, s.payload, s.vlan);
    o.Bytes(f.data(), f.size());
    Save("offload", s.name, o);
  }
  {  // NEEDS_CSUM only (UDP-like offsets), stop the emitter early on a TSO frame
    Output o;
    o.U8(0);
    Hdr(o, 1, 0, 0, 0, 34, 6);
    o.U16(0);
    const std::vector<uint8_t> f = TcpFrame(false, 64, false);
    o.Bytes(f.data(), f.size());
    Save("offload", "csum", o);
    Output p;
    p.U8(1 | (1 << 6));
    Hdr(p, 1, 1, 54, 500, 34, 16);
    p.U16(0x8000);
    const std::vector<uint8_t> g = TcpFrame(false, 2000, false);
    p.Bytes(g.data(), g.size());
    Save("offload", "tso4-stop", p);
  }
}

// A TX frame in guest memory: a virtio_net_hdr (12 bytes) then the frame, written with
// kOpWriteRaw in pieces of 64.
// `prefix`: the byte that selects a ring operation in the net and blk targets (-1: none).
void WriteBytes(Output& o, uint32_t off, const std::vector<uint8_t>& bytes, int prefix) {
  for (size_t at = 0; at < bytes.size(); at += 64) {
    const size_t n = std::min<size_t>(64, bytes.size() - at);
    if (prefix >= 0) o.U8(prefix);
    o.U8(fuzz::kOpWriteRaw);
    o.U16(off + at);
    o.U8(n);
    o.Bytes(bytes.data() + at, n);
  }
}

std::vector<uint8_t> NetHdrBytes(uint8_t flags, uint8_t gso, uint16_t hdr_len, uint16_t gso_size, uint16_t cs, uint16_t co) {
  Output o;
  Hdr(o, flags, gso, hdr_len, gso_size, cs, co);
  o.U16(1);  // num_buffers
  return o.b;
}

void NetSeeds() {
  for (int variant = 0; variant < 4; variant++) {
    const bool rx_packed = variant & 1;
    const bool tso = variant & 2;
    Output o;
    Guest(o, 16384, 16384, 32);
    o.U8(rx_packed ? 2 : 0);
    RingSpec tx;
    tx.chains = 8;
    tx.desc = 0x0;
    tx.driver = 0x100;
    tx.device = 0x200;
    Ring(o, tx);
    RingSpec rx;
    rx.packed = rx_packed;
    rx.chains = 8;
    rx.desc = 0x400;
    rx.driver = 0x500;
    rx.device = 0x600;
    Ring(o, rx);
    // TX frames: a small plain one (header and frame in two descriptors) and a big one.
    const std::vector<uint8_t> small = TcpFrame(false, 40, false);
    const std::vector<uint8_t> big = TcpFrame(false, tso ? 3000 : 1400, false);
    std::vector<uint8_t> h1 = NetHdrBytes(0, 0, 0, 0, 0, 0);
    std::vector<uint8_t> h2 = tso ? NetHdrBytes(1, 1, 54, 1000, 34, 16) : NetHdrBytes(1, 0, 0, 0, 34, 16);
    WriteBytes(o, 0x1000, h1, 0);
    WriteBytes(o, 0x1010, small, 0);
    std::vector<uint8_t> b2 = h2;
    b2.insert(b2.end(), big.begin(), big.end());
    WriteBytes(o, 0x1100, b2, 0);
    o.U8(0);
    SplitChain(o, 0, {{false, 0x1000, 12}, {false, 0x1010, static_cast<uint32_t>(small.size())}});
    o.U8(0);
    SplitChain(o, 2, {{false, 0x1100, static_cast<uint32_t>(b2.size())}});
    o.U8(0);
    Pop(o, 8);
    // RX buffers: a few of 1536 (mergeable) and one chain of two descriptors.
    for (int k = 0; k < 6; k++) {
      o.U8(1);
      if (rx_packed) {
        PackedChain(o, k, {{true, 0x100u + 0x600 * k, 0x600, true}});
      } else {
        SplitChain(o, k, {{true, 0x100u + 0x600 * k, 0x600, true}});
      }
    }
    o.U8(1);
    if (rx_packed) {
      PackedChain(o, 6, {{true, 0x3000, 40}, {true, 0x3100, 0x400}});
    } else {
      SplitChain(o, 6, {{true, 0x3000, 40}, {true, 0x3100, 0x400}});
    }
    // NetDeliver both frames: rx hdr 12, tx hdr 12, mergeable, tx offloads, no rx offloads.
    o.U8(2);
    o.U8(2);
    o.U8(0);
    o.U8(1);
    o.U8(1 | 2 | 4 | 8);
    o.U8(0);
    o.U8(variant == 3 ? 2 : 0);
    if (variant == 3) o.U16(0x0005);  // a VLAN tag inserted
    // NetToFlat both, NetPeek, then NetDeliverFlat of two flat frames with headers.
    o.U8(3);
    o.U8(2);
    o.U8(0);
    o.U8(1);
    o.U8(2 | 8);
    o.U8(0);
    o.U8(0);
    o.U32(3 * 65536);
    o.U8(8);
    o.U8(5);
    o.U8(2);
    o.U8(12);
    o.U8(64);
    o.U8(4);
    o.U8(2);
    o.U8(1);
    o.U16(small.size());
    o.U16(big.size());
    o.Bytes(small.data(), small.size());
    o.Bytes(big.data(), big.size());
    std::vector<uint8_t> fh1 = NetHdrBytes(0, 0, 0, 0, 0, 0);
    std::vector<uint8_t> fh2 = tso ? NetHdrBytes(1, 1, 54, 1000, 34, 16) : NetHdrBytes(1, 0, 0, 0, 34, 16);
    o.Bytes(fh1.data(), 10);
    o.Bytes(fh2.data(), 10);
    o.U8(1 | 4);
    o.U8(tso ? 0 : 1);
    o.U8(1);  // strip a tag (there is none: frames shorter by 4)
    char name[32];
    snprintf(name, sizeof name, "deliver-%s%s", rx_packed ? "packed" : "split", tso ? "-tso" : variant == 3 ? "-vlan" : "");
    Save("net", name, o);
  }
}

// Finding 2 (net.cc, fixed): one guest sends to itself through two of its queues (two NICs
// of one VM share its memory) with its TX frame overlapping its RX buffer: the copy was a
// memcpy between overlapping ranges (undefined; ASan's memcpy-param-overlap).
void NetOverlapSeed() {
  Output o;
  Guest(o, 16384);
  o.U8(0);
  RingSpec tx;
  tx.chains = 8;
  tx.desc = 0x0;
  tx.driver = 0x100;
  tx.device = 0x200;
  Ring(o, tx);
  RingSpec rx = tx;
  rx.desc = 0x400;
  rx.driver = 0x500;
  rx.device = 0x600;
  Ring(o, rx);
  std::vector<uint8_t> f = NetHdrBytes(0, 0, 0, 0, 0, 0);
  const std::vector<uint8_t> frame = TcpFrame(false, 200, false);
  f.insert(f.end(), frame.begin(), frame.end());
  WriteBytes(o, 0x1000, f, 0);
  o.U8(0);
  SplitChain(o, 0, {{false, 0x1000, static_cast<uint32_t>(f.size())}});
  o.U8(0);
  Pop(o, 8);
  o.U8(1);
  SplitChain(o, 0, {{true, 0x1008, 0x400}});
  o.U8(2);  // NetDeliver chain 0: rx hdr 12, tx hdr 12, mergeable
  o.U8(1);
  o.U8(0);
  o.U8(1 | 2 | 4);
  o.U8(0);
  o.U8(0);
  Save("net", "overlap", o, "regression-");
}

// host_io: TX chains of a plain frame, a NEEDS_CSUM frame and a TSO frame (the last two
// tagged), written to the "TAP" with and without the guest's header, with each VLAN
// operation, sent as VXLAN; frames read from the "TAP"; VXLAN datagrams good and bad.
void HostIoSeeds() {
  Output o;
  Guest(o, 16384, 16384, 32);
  RingSpec tx;
  tx.chains = 8;
  Ring(o, tx);
  const std::vector<uint8_t> plain = TcpFrame(false, 100, false);
  const std::vector<uint8_t> tagged = TcpFrame(false, 300, true);
  const std::vector<uint8_t> big = TcpFrame(true, 3000, true);
  std::vector<uint8_t> c0 = NetHdrBytes(0, 0, 0, 0, 0, 0);
  c0.insert(c0.end(), plain.begin(), plain.end());
  std::vector<uint8_t> c1 = NetHdrBytes(1, 0, 0, 0, 38, 16);
  c1.insert(c1.end(), tagged.begin(), tagged.end());
  std::vector<uint8_t> c2 = NetHdrBytes(1, 4, 78, 1400, 58, 16);
  c2.insert(c2.end(), big.begin(), big.end());
  WriteBytes(o, 0x1000, c0, 0);
  WriteBytes(o, 0x1400, c1, 0);
  WriteBytes(o, 16384 + 0x100, c2, 0);  // the TSO frame in region 1 (raw writes address both regions in a row)
  o.U8(0);
  SplitChain(o, 0, {{false, 0x1000, 12}, {false, 0x100c, static_cast<uint32_t>(plain.size())}});
  o.U8(0);
  SplitChain(o, 2, {{false, 0x1400, static_cast<uint32_t>(c1.size())}, {true, 0x3000, 64}});
  o.U8(0);
  SplitChain(o, 4, {{false, 0x100, static_cast<uint32_t>(c2.size()), true}});
  o.U8(0);
  Pop(o, 8);
  const uint8_t opts[] = {1 | 2, 1, 1 | 2 | (1 << 2), 1 | (1 << 2), 1 | 2 | (2 << 2), 1 | (2 << 2)};
  for (uint8_t f : opts) {
    o.U8(1);  // TxToTap of the three chains
    o.U8(3);
    o.U8(0);
    o.U8(1);
    o.U8(2);
    o.U8(f);
    if ((f >> 2) == 2) o.U16(0x2005);
  }
  o.U8(2);  // TxToUdp
  o.U8(3);
  o.U8(0);
  o.U8(1);
  o.U8(2);
  o.U8(1 | (1 << 2));
  const uint8_t vx[8] = {0x08, 0, 0, 0, 0, 0x10, 0x01, 0};
  o.Bytes(vx, 8);
  o.U8(3);  // frames from the "TAP": a good one, a short one, a big one
  o.U8(3);
  std::vector<uint8_t> t0(12, 0);
  t0.insert(t0.end(), plain.begin(), plain.end());
  o.U16(t0.size() - 1);
  o.Bytes(t0.data(), t0.size());
  o.U16(9);
  o.Bytes(t0.data(), 10);
  o.U16(2999);
  std::vector<uint8_t> t2(3000, 0x33);
  o.Bytes(t2.data(), t2.size());
  o.U32(4096);
  o.U16(1600);
  o.U8(8);
  o.U8(4);  // VXLAN datagrams: good, bad flags, reserved bits, short
  o.U8(4);
  std::vector<uint8_t> d0(vx, vx + 8);
  d0.insert(d0.end(), plain.begin(), plain.end());
  std::vector<uint8_t> d1 = d0;
  d1[0] = 0;
  std::vector<uint8_t> d2 = d0;
  d2[7] = 1;
  for (const auto& d : {d0, d1, d2}) {
    o.U16(d.size());
    o.Bytes(d.data(), d.size());
  }
  o.U16(20);
  o.Bytes(d0.data(), 20);
  o.U16(2000 - 22);
  o.U8(8);
  Save("host_io", "tap-udp", o);

  // VXLAN datagrams whose inner checksums the harness makes partial (length bit 15):
  // IPv4 / IPv6 TCP, tagged, double-tagged UDP over IPv4 and IPv6, TCP over 1500 bytes
  // (given a TSO header), one left as it is.
  Output p;
  Guest(p, 16384);
  RingSpec r2;
  r2.chains = 8;
  Ring(p, r2);
  auto udpize = [](std::vector<uint8_t> f, bool v6, size_t l3) {
    // the TCP frame's 20-byte TCP header becomes an 8-byte UDP header + 12 payload bytes
    const size_t l4 = l3 + (v6 ? 40 : 20);
    const size_t ulen = f.size() - l4;
    f[v6 ? l3 + 6 : l3 + 9] = 17;
    f[l4 + 4] = static_cast<uint8_t>(ulen >> 8);
    f[l4 + 5] = static_cast<uint8_t>(ulen);
    f[l4 + 6] = 0x12;  // a non-zero checksum field (the harness overwrites it)
    f[l4 + 7] = 0x34;
    return f;
  };
  std::vector<uint8_t> qinq = udpize(TcpFrame(false, 77, true), false, 18);
  qinq.insert(qinq.begin() + 12, {0x88, 0xa8, 0x00, 0x64});
  const std::vector<std::vector<uint8_t>> frames = {
      TcpFrame(false, 1400, false), TcpFrame(true, 900, false), TcpFrame(false, 50, true),
      udpize(TcpFrame(true, 33, false), true, 14), qinq, TcpFrame(false, 1600, false), TcpFrame(true, 1600, true),
      TcpFrame(false, 10, false)};
  p.U8(4);
  p.U8(static_cast<uint8_t>(frames.size()));
  for (size_t i = 0; i < frames.size(); i++) {
    std::vector<uint8_t> d(vx, vx + 8);
    d.insert(d.end(), frames[i].begin(), frames[i].end());
    p.U16(static_cast<uint16_t>(d.size() | (i + 1 < frames.size() ? 0x8000 : 0)));
    p.Bytes(d.data(), d.size());
  }
  p.U16(2000 - 22);
  p.U8(16);
  // FinishFrame: a NEEDS_CSUM frame (tag removed: adj -4), a TSO frame, a bad offset.
  const std::vector<uint8_t> fin[3] = {TcpFrame(false, 200, false), TcpFrame(false, 5000, false), TcpFrame(true, 40, false)};
  const std::vector<uint8_t> fh[3] = {NetHdrBytes(1, 0, 0, 0, 38, 16), NetHdrBytes(1, 1, 54, 1448, 34, 16), NetHdrBytes(1, 0, 0, 0, 200, 16)};
  const uint8_t adjs[3] = {0, 1, 1};
  for (int i = 0; i < 3; i++) {
    p.U8(5);
    p.U16(static_cast<uint16_t>(fin[i].size()));
    p.Bytes(fin[i].data(), fin[i].size());
    p.Bytes(fh[i].data(), 10);
    p.U8(adjs[i]);
    p.U32(64 * 1024);
    p.U8(16);
  }
  Save("host_io", "udp-partial", p);
}

// A block request chain: header (type, sector) in one descriptor, data, status.
void BlkSeeds() {
  struct Req {
    uint32_t type;
    uint64_t sector;
    uint32_t data;  // bytes
    bool data_writable;
  };
  for (int variant = 0; variant < 3; variant++) {
    Output o;
    Guest(o, 16384);
    o.U8(variant == 1 ? (1 | (1 << 3)) : (2 << 3));  // read-only / max 4 segments
    o.U8(63);                                        // 64 sectors
    o.U8(variant == 2 ? 1 : 0);
    RingSpec r;
    r.packed = variant == 2;
    r.chains = 16;
    r.size = 32;  // a split chain takes descriptors head, head + 1, ...: heads 4 apart
    r.driver = 0x400;
    r.device = 0x600;
    Ring(o, r);
    const Req reqs[] = {{blk::kTypeOut, 2, 1024, false}, {blk::kTypeIn, 2, 1024, true}, {blk::kTypeFlush, 0, 0, false},
                        {blk::kTypeGetId, 0, 20, true},  {blk::kTypeIn, 63, 1024, true}, {blk::kTypeWriteZeroes, 0, 32, false},
                        {blk::kTypeDiscard, 0, 16, false}, {99, 0, 0, false}};
    uint32_t at = 0x1000;
    int head = 0;
    for (const Req& q : reqs) {
      Output h;
      h.U32(q.type);
      h.U32(0);
      h.U64(q.sector);
      WriteBytes(o, at, h.b, 0);
      if (q.type == blk::kTypeWriteZeroes || q.type == blk::kTypeDiscard) {
        Output p;
        p.U64(4);
        p.U32(8);
        p.U32(q.type == blk::kTypeWriteZeroes ? 1 : 0);
        p.U64(60);
        p.U32(8);  // past the end: IOERR when it is looked at
        p.U32(0);
        WriteBytes(o, at + 16, std::vector<uint8_t>(p.b.begin(), p.b.begin() + q.data), 0);
      }
      std::vector<D> ds = {{false, at, 16}};
      if (q.data) ds.push_back({q.data_writable, at + 16, q.data});
      ds.push_back({true, at + 16 + q.data, 1});
      o.U8(0);
      if (variant == 2) {
        PackedChain(o, head, ds);
      } else {
        SplitChain(o, head, ds);
      }
      head += variant == 2 ? 1 : 4;
      at += 0x600;
    }
    o.U8(0);
    o.U8(fuzz::kOpPop);
    o.U8(16);
    o.U8(1);
    o.U8(8);
    // A raw burst of two chains over region 0: the first request again as segments
    // (header, data, status), then an empty chain.
    o.U8(2);
    o.U8(1);  // 2 chains
    o.U8(3);  // 3 segments
    o.U16(0);
    o.U16(1);
    o.U8(0);  // first_seg: 0, 3, 3
    o.U8(3);
    o.U8(3);
    const uint32_t segs[3][3] = {{0x1000, 16, 0}, {0x1010, 1024, 0}, {0x1410, 1, 1}};
    for (const auto& sg : segs) {
      o.U8(0);  // region 0
      o.U8(0);  // offset: u16
      o.U16(sg[0]);
      o.U8(0);  // len: u16
      o.U16(sg[1]);
      o.U8(sg[2]);
    }
    const char* names[3] = {"requests", "read-only", "requests-packed"};
    Save("blk", names[variant], o);
  }
}


// guest_fault (fuzz_guest_fault.h): guest memory in memfds, a ring, and a frontend that
// truncates a file before a pop, between pop and push, in the middle of a copy, or the
// dirty log's.
namespace gf = fuzz::gf;

struct GfSpec {
  uint8_t layout = 0;
  uint32_t size0 = 4 * gf::kPage, off0 = 0;
  uint32_t size1 = 0, off1 = 0;  // off1: the raw u16 (fuzz_guest_fault.h)
  uint8_t gmode = 0, slack = 0;
  uint32_t qsize = 8;
  uint8_t ring_region[3] = {0, 0, 0};
  uint16_t ring_off[3] = {0x0, 0x100, 0x200};
  uint8_t log_pages = 1;
};

void GfSetup(Output& o, const GfSpec& s) {
  o.U8(s.layout);
  o.U16(s.size0 - 1);
  o.U16(s.off0);
  if (s.layout & gf::kTwoRegions) {
    o.U16(s.size1 - 1);
    o.U16(s.off1);
    o.U8(s.gmode);
  }
  o.U8(s.slack);
  if (s.layout & gf::kPacked) {
    o.U8(s.qsize - 1);
  } else {
    uint32_t l = 0;
    while ((1u << l) < s.qsize) l++;
    o.U8(l);
  }
  for (int k = 0; k < 3; k++) {
    o.U8(s.ring_region[k]);
    o.U16(s.ring_off[k]);
  }
  if (s.layout & gf::kLog) o.U8(s.log_pages - 1);
}

struct GfD {
  bool write;
  uint16_t off;  // in region 0, or region 1 with r1
  uint16_t len;
  bool r1 = false;
};
void GfChain(Output& o, uint8_t head, const std::vector<GfD>& ds) {
  o.U8(gf::kAddChain);
  o.U8(ds.size() - 1);
  o.U8(head);
  for (const GfD& d : ds) {
    o.U8((d.write ? 1 : 0) | (d.r1 ? 2 : 0));
    o.U16(d.off);
    o.U16(d.len);
  }
}
void GfPop(Output& o, uint32_t max = 16) { o.U8(gf::kPop); o.U8(max - 1); }
void GfPopDirect(Output& o, uint32_t max = 16) { o.U8(gf::kPopDirect); o.U8(max - 1); }
// Truncation spec: file (gf::TruncFile) | size mode (gf::TruncSize), and its value.
void GfSpecBytes(Output& o, uint8_t sel, uint32_t v = 0) {
  o.U8(sel);
  if ((sel & 0xc) == gf::kSizeRaw) o.U16(v);
  if ((sel & 0xc) == gf::kSizePages || (sel & 0xc) == gf::kSizeShorter) o.U8(v);
}
void GfTruncate(Output& o, uint8_t sel, uint32_t v = 0) {
  o.U8(gf::kTruncate);
  GfSpecBytes(o, sel, v);
}
void GfCopy(Output& o, uint8_t chain) {
  o.U8(gf::kCopy);
  o.U8(chain);
  o.U8(0);
  o.U16(0);
}
void GfCopyTruncating(Output& o, uint8_t chain, uint16_t at, uint8_t sel, uint32_t v = 0) {
  o.U8(gf::kCopy);
  o.U8(chain);
  o.U8(1);
  o.U16(at);
  GfSpecBytes(o, sel, v);
}
void GfPush(Output& o, uint32_t n) { o.U8(gf::kPush); o.U8(n - 1); }
void GfVerify(Output& o) { o.U8(gf::kVerify); }

void GuestFaultSeeds() {
  const std::string t = "guest_fault";
  for (int packed = 0; packed < 2; packed++) {
    const uint8_t p = packed ? gf::kPacked : 0;
    const std::string sfx = packed ? "-packed" : "-split";
    {  // the buffers' pages cut before the pop: the copies fault, the next pop fails
      Output o;
      GfSpec s;
      s.layout = p | gf::kEventIdx;
      GfSetup(o, s);
      GfChain(o, 0, {{false, 0x1000, 512}});
      GfChain(o, 1, {{true, 0x2000, 1024}});
      GfChain(o, 2, {{false, 0x3800, 100}, {true, 0x3000, 64}});
      GfTruncate(o, gf::kFile0 | gf::kSizePages, 1);
      GfPop(o);
      GfCopy(o, 0);
      GfCopy(o, 1);
      GfCopy(o, 2);
      GfPush(o, 3);
      GfPop(o);
      GfVerify(o);
      Save(t, "cut-buffers" + sfx, o);
    }
    {  // the rings' page cut between pop and push
      Output o;
      GfSpec s;
      s.layout = p;
      s.ring_off[0] = 0x3000;
      s.ring_off[1] = 0x3100;
      s.ring_off[2] = 0x3200;
      GfSetup(o, s);
      GfChain(o, 0, {{false, 0x100, 64}, {true, 0x200, 256}});
      GfChain(o, 3, {{true, 0x1000, 1500}});
      GfPop(o);
      GfCopy(o, 0);
      GfTruncate(o, gf::kFile0 | gf::kSizePages, 3);
      GfCopy(o, 1);
      GfPush(o, 2);
      GfChain(o, 5, {{true, 0x400, 64}});
      GfPop(o);
      GfVerify(o);
      Save(t, "cut-rings" + sfx, o);
    }
    {  // the rings' page cut after a push: the next pop faults on the ring itself
      Output o;
      GfSpec s;
      s.layout = p | gf::kEventIdx;
      s.ring_off[0] = 0x2000;
      s.ring_off[1] = 0x2100;
      s.ring_off[2] = 0x2200;
      GfSetup(o, s);
      GfChain(o, 0, {{true, 0x100, 64}});
      GfPop(o);
      GfCopy(o, 0);
      GfPush(o, 1);
      GfTruncate(o, gf::kFile0 | gf::kSizeRaw, 0x1f00);
      GfPop(o);
      GfPop(o);
      GfVerify(o);
      Save(t, "cut-rings-in-pop" + sfx, o);
    }
    {  // two regions in one file (region 1 after region 0), a chain across both; the
       // file cut in the middle of the device's copy, inside region 1
      Output o;
      GfSpec s;
      s.layout = p | gf::kTwoRegions | gf::kSameFile;
      s.size0 = 2 * gf::kPage;
      s.size1 = 2 * gf::kPage;
      GfSetup(o, s);
      GfChain(o, 0, {{false, 0x1f00, 0x200}, {true, 0x1000, 0x1800}});
      GfChain(o, 1, {{true, 0x800, 0x800, true}});
      GfPop(o);
      GfCopyTruncating(o, 0, 0x900, gf::kFile0 | gf::kSizeRaw, 3 * gf::kPage - 100);
      GfCopy(o, 1);
      GfPush(o, 2);
      GfPop(o);
      GfVerify(o);
      Save(t, "copy-cut-one-file" + sfx, o);
    }
    {  // region 1 in its own file, cut to nothing; region 0 (rings) stays intact
      Output o;
      GfSpec s;
      s.layout = p | gf::kTwoRegions;
      s.size0 = gf::kPage;
      s.size1 = 3 * gf::kPage;
      s.off1 = gf::kPage;
      s.gmode = 1;
      GfSetup(o, s);
      GfChain(o, 0, {{false, 0x800, 0x100}, {true, 0x1000, 0x1000, true}});
      GfChain(o, 1, {{true, 0x2000, 0x800, true}});
      GfPop(o);
      GfTruncate(o, gf::kFile1 | gf::kSizeZero);
      GfCopy(o, 0);
      GfVerify(o);
      GfCopy(o, 1);
      GfPush(o, 2);
      GfPop(o);
      Save(t, "other-file-cut" + sfx, o);
    }
    {  // dirty logging (rings too) at 128 MiB: the log's second page cut, the push marks it
      Output o;
      GfSpec s;
      s.layout = p | gf::kLog | gf::kLogRings | gf::kHigh;
      s.log_pages = 2;
      GfSetup(o, s);
      GfChain(o, 0, {{true, 0x1000, 0x1000}});
      GfPop(o);
      GfCopy(o, 0);
      GfTruncate(o, gf::kFileLog | gf::kSizePages, 1);
      GfPush(o, 1);
      GfVerify(o);
      Save(t, "dirty-log-cut" + sfx, o);
    }
    {  // PopDirect (receive buffers), the file cut a few bytes short, then a whole page
      Output o;
      GfSpec s;
      s.layout = p;
      s.size0 = 3 * gf::kPage + 100;
      s.off0 = 100;
      s.ring_off[0] = 0x10;
      s.ring_off[1] = 0x110;
      s.ring_off[2] = 0x210;
      GfSetup(o, s);
      GfChain(o, 0, {{true, 0x1000, 0x800}});
      GfChain(o, 1, {{true, 0x2f00, 0x1000}});
      GfPopDirect(o);
      GfTruncate(o, gf::kFile0 | gf::kSizeShorter, 40);
      GfCopy(o, 0);
      GfCopy(o, 1);
      GfVerify(o);
      GfTruncate(o, gf::kFile0 | gf::kSizeRaw, 2 * gf::kPage + 10);
      GfCopy(o, 1);
      GfPush(o, 2);
      GfPopDirect(o);
      Save(t, "pop-direct-unaligned" + sfx, o);
    }
  }
  {  // a sealable memfd: Map seals it, the truncation is refused, nothing is lost
    Output o;
    GfSpec s;
    s.layout = gf::kSealed | gf::kTwoRegions | gf::kSameFile;
    s.size0 = 2 * gf::kPage;
    s.size1 = gf::kPage;
    GfSetup(o, s);
    GfChain(o, 0, {{false, 0x1000, 0x100}, {true, 0x0, 0x100, true}});
    GfTruncate(o, gf::kFile0 | gf::kSizeZero);
    GfPop(o);
    GfCopy(o, 0);
    GfPush(o, 1);
    GfVerify(o);
    Save(t, "sealed", o);
  }
  {  // two regions sharing bytes of one file (raw offsets), the file cut below both
    Output o;
    GfSpec s;
    s.layout = gf::kPacked | gf::kTwoRegions | gf::kSameFile;
    s.size0 = 3 * gf::kPage;
    s.size1 = 2 * gf::kPage;
    s.off1 = 0x8000 | gf::kPage;
    s.qsize = 4;
    GfSetup(o, s);
    GfChain(o, 0, {{true, 0x1800, 0x1000}});
    GfChain(o, 1, {{false, 0x800, 0x400, true}});
    GfPop(o);
    GfCopyTruncating(o, 0, 0x100, gf::kFile0 | gf::kSizePages, 1);
    GfCopy(o, 1);
    GfVerify(o);
    GfPush(o, 2);
    Save(t, "shared-bytes-packed", o);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: gen_seeds <corpus dir>\n");
    return 2;
  }
  g_root = argv[1];
  mkdir(g_root.c_str(), 0755);
  RingSeeds(false);
  RingSeeds(true);
  PackedResubmitSeed();
  PackedRecordSeed();
  MemorySeeds();
  OffloadSeeds();
  NetSeeds();
  NetOverlapSeed();
  HostIoSeeds();
  BlkSeeds();
  GuestFaultSeeds();
  return 0;
}
