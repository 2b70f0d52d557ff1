// libFuzzer target: the virtio-blk request engine (blk.cc) on a RAM disk, fed chains popped
// from a hostile driver's ring, and raw burst arrays (what Parse re-checks in case the
// memory table changed between pop and submit).
//
// Input: the GuestMem layout, u8 engine options (bit 0 read-only, 1 DISCARD off, 2
// WRITE_ZEROES off, bits 3-4 max segments 1/2/4/16, bits 5-6 max sectors 8/64/4194303/1,
// bit 7 the io_uring engine: on a memfd disk of the same size, every request through the
// ring when the capacity byte is even, copied inline when it is odd),
// u8 capacity (1 + v sectors), u8 layout (bit 0 packed), Ring::Setup, then operations:
//   0 a ring operation (Ring::Step)
//   1 submit the chains of the last pop (u8: how many of them), wait, reap
//   2 submit raw burst arrays to a queue with memory and no rings, wait, reap
// Oracles: the engine writes guest memory only inside device-writable segments of what was
// submitted (and the ring's device areas when it pushes); each request's status byte is the
// one a reference parser written here expects (when no other writable byte aliases it);
// every submitted request is reaped, and the queue holds in flight what the model says.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "blk/blk.h"
#include "fuzz_ring.h"

namespace {

using namespace fuzz;

struct Seg {
  uint8_t* p;
  uint32_t len;
  bool w;
};

uint32_t Le32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
uint64_t Le64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

// The segments of chain i that Parse accepts, or false if Parse refuses the chain.
bool Segments(const BurstArrays& b, uint32_t i, const MemTable& mem, std::vector<Seg>* out) {
  out->clear();
  const uint32_t s0 = b.first_seg[i], s1 = b.first_seg[i + 1];
  if (s1 < s0 || s1 > b.max_segs) return false;
  for (uint32_t s = s0; s < s1; s++) {
    if (b.seg_len[s] == 0) continue;
    if (b.seg_region[s] >= mem.regions().size()) return false;
    const double d = b.seg_offset[s];
    if (!(d >= 0) || d >= 9007199254740992.0) return false;
    const uint64_t off = static_cast<uint64_t>(d);
    const Region& r = mem.regions()[b.seg_region[s]];
    if (off > r.size || b.seg_len[s] > r.size - off) return false;
    out->push_back({r.host() + off, b.seg_len[s], (b.seg_flags[s] & 1) != 0});
  }
  return true;
}

// The bytes of one direction after `skip`, at most n.
std::vector<uint8_t> Gather(const std::vector<Seg>& segs, bool w, uint64_t skip, uint64_t n) {
  std::vector<uint8_t> v;
  for (const Seg& s : segs) {
    if (s.w != w || v.size() >= n) continue;
    for (uint32_t k = 0; k < s.len && v.size() < n; k++) {
      if (skip > 0) {
        skip--;
        continue;
      }
      v.push_back(s.p[k]);
    }
  }
  return v;
}

struct Expect {
  uint8_t* status = nullptr;  // null: no writable byte
  uint8_t value = 0;
};

// §5.2.6, as blk.cc's Parse documents it, for a RAM disk.
Expect Reference(const std::vector<Seg>& segs, const BlkOptions& o, uint64_t capacity) {
  Expect e;
  uint64_t rlen = 0, wlen = 0;
  for (const Seg& s : segs) (s.w ? wlen : rlen) += s.len;
  if (wlen == 0) return e;
  for (size_t k = segs.size(); k-- > 0;) {
    if (segs[k].w) {
      e.status = segs[k].p + segs[k].len - 1;
      break;
    }
  }
  auto in_range = [&](uint64_t sector, uint64_t count) { return sector <= capacity && count <= capacity - sector; };
  if (rlen < 16) return e.value = blk::kStatusIoErr, e;
  const std::vector<uint8_t> hdr = Gather(segs, false, 0, 16);
  const uint32_t type = Le32(hdr.data());
  const uint64_t sector = Le64(hdr.data() + 8);
  switch (type) {
    case blk::kTypeIn: {
      const uint64_t len = wlen - 1;
      e.value = (len % 512 != 0 || !in_range(sector, len / 512)) ? blk::kStatusIoErr : blk::kStatusOk;
      return e;
    }
    case blk::kTypeOut: {
      const uint64_t len = rlen - 16;
      e.value = (o.read_only || len % 512 != 0 || !in_range(sector, len / 512)) ? blk::kStatusIoErr : blk::kStatusOk;
      return e;
    }
    case blk::kTypeFlush:
    case blk::kTypeGetId:
      e.value = blk::kStatusOk;
      return e;
    case blk::kTypeDiscard:
    case blk::kTypeWriteZeroes: {
      const bool discard = type == blk::kTypeDiscard;
      const uint32_t max_seg = discard ? o.max_discard_seg : o.max_write_zeroes_seg;
      const uint32_t max_sectors = discard ? o.max_discard_sectors : o.max_write_zeroes_sectors;
      if (max_seg == 0) return e.value = blk::kStatusUnsupp, e;
      if (o.read_only) return e.value = blk::kStatusIoErr, e;
      const uint64_t payload = rlen - 16;
      if (payload == 0 || payload % 16 != 0 || payload / 16 > max_seg) return e.value = blk::kStatusIoErr, e;
      const std::vector<uint8_t> p = Gather(segs, false, 16, payload);
      bool bad = false;
      for (uint64_t k = 0; k < payload / 16; k++) {
        const uint8_t* d = p.data() + 16 * k;
        const uint64_t sec = Le64(d);
        const uint32_t num = Le32(d + 8), flags = Le32(d + 12);
        if ((flags & ~blk::kDwzFlagUnmap) != 0 || (discard && flags != 0)) return e.value = blk::kStatusUnsupp, e;
        if (num > max_sectors || !in_range(sec, num)) bad = true;
      }
      e.value = bad ? blk::kStatusIoErr : blk::kStatusOk;
      return e;
    }
    default:
      e.value = blk::kStatusUnsupp;
      return e;
  }
}

struct Checked {
  Expect e;
  bool aliased = false;
};

// Expected statuses for chains [0, n) of b, and the ranges the engine may write.
std::vector<Checked> Plan(const BurstArrays& b, uint32_t n, const MemTable& mem, const BlkOptions& o, uint64_t cap,
                          Ranges* allowed) {
  std::vector<Checked> plan(n);
  std::vector<std::vector<Seg>> all(n);
  std::vector<bool> ok(n);
  for (uint32_t i = 0; i < n; i++) {
    ok[i] = Segments(b, i, mem, &all[i]);
    for (const Seg& s : all[i]) {
      if (ok[i] && s.w) allowed->Add(s.p, s.len);
    }
    // The reference reads the request as the engine does: at submit, before any runs.
    if (ok[i]) plan[i].e = Reference(all[i], o, cap);
  }
  // A status byte that another byte of the burst aliases may legitimately end up as
  // something else; so may the status of a request whose readable bytes a writable byte
  // aliases (an earlier request's status, written at once, may change its header).
  auto overlap = [](const Seg& a, const Seg& b) { return a.p < b.p + b.len && b.p < a.p + a.len; };
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t* st = plan[i].e.status;
    if (!st) continue;
    uint32_t uses = 0;
    for (uint32_t j = 0; j < n; j++) {
      for (const Seg& s : all[j]) {
        if (st >= s.p && st < s.p + s.len) uses++;
      }
    }
    plan[i].aliased = uses > 1;
    for (const Seg& r : all[i]) {
      if (r.w) continue;
      for (uint32_t j = 0; j < n; j++) {
        for (const Seg& w : all[j]) {
          if (w.w && overlap(r, w)) plan[i].aliased = true;
        }
      }
    }
  }
  return plan;
}

void CheckStatuses(const std::vector<Checked>& plan, const Ranges& ring_areas) {
  for (size_t i = 0; i < plan.size(); i++) {
    const Checked& c = plan[i];
    if (!c.e.status || c.aliased || ring_areas.Has(c.e.status)) continue;
    FUZZ_CHECK(*c.e.status == c.e.value, "request %zu: status %u, the reference expects %u", i, *c.e.status, c.e.value);
  }
}

BlkOptions Options(uint8_t f, uint8_t cap) {
  BlkOptions o;
  o.ram = true;
  o.capacity_sectors = 1 + uint64_t{cap};
  o.read_only = f & 1;
  o.threads = 1;
  const uint32_t segs[4] = {1, 2, 4, 16};
  const uint32_t secs[4] = {8, 64, 4194303, 1};
  o.max_discard_seg = (f & 2) ? 0 : segs[(f >> 3) & 3];
  o.max_write_zeroes_seg = (f & 4) ? 0 : segs[(f >> 3) & 3];
  o.max_discard_sectors = o.max_write_zeroes_sectors = secs[(f >> 5) & 3];
  memcpy(o.serial.data(), "vhostkit-fuzz-serial", blk::kIdBytes);
  return o;
}

void SubmitPopped(Input& in, GuestMem& g, Ring& ring, BlkEngine& e, const BlkOptions& o, int32_t popped) {
  const uint32_t k = in.U8();
  if (popped <= 0 || !ring.q().memory()) return;
  const uint32_t n = std::min<uint32_t>(k, static_cast<uint32_t>(popped));
  const BurstArrays& b = ring.burst().a;
  Ranges allowed = ring.Owned();
  const std::vector<Checked> plan = Plan(b, n, *ring.q().memory(), o, e.capacity_sectors(), &allowed);
  std::vector<uint16_t> ids(b.head, b.head + n);
  Snapshot s;
  s.Take(g);
  FUZZ_CHECK(e.Submit(ring.q(), b, n), "Submit refused");
  FUZZ_CHECK(e.WaitIdle(-1), "WaitIdle");
  const int32_t r = e.Reap(ring.q());
  FUZZ_TRACE("blk Submit(%u) Reap -> %d; ok %llu ioerr %llu unsupp %llu\n", n, r, static_cast<unsigned long long>(e.Stats().ok),
             static_cast<unsigned long long>(e.Stats().ioerr), static_cast<unsigned long long>(e.Stats().unsupp));
  s.Compare(g, allowed, "blk Submit/Reap");
  FUZZ_CHECK(r == static_cast<int32_t>(n), "Reap of %u requests returned %d", n, r);
  for (uint16_t id : ids) ring.Give(id);
  ring.UsedElsewhere();
  ring.CheckCount("Reap");
  CheckStatuses(plan, ring.Owned());
  FUZZ_CHECK(e.InFlight(nullptr) == 0, "requests left in flight");
}

// Burst arrays straight from the input: u8 chains (1 + v % 8), u8 segments (v % 24), then
// per chain u16 head, per chain boundary u8 first_seg, per segment u8 region, u8 offset
// mode + value, u32 len (small mostly), u8 flags.
void SubmitRaw(Input& in, GuestMem& g, BlkEngine& e, const BlkOptions& o, Virtqueue& bare) {
  const uint32_t n = 1 + in.U8() % 8;
  const uint32_t segs = in.U8() % 24;
  Burst bb(n, std::max<uint32_t>(segs, 1));
  BurstArrays& b = bb.a;
  for (uint32_t i = 0; i < n; i++) b.head[i] = in.U16();
  for (uint32_t i = 0; i <= n; i++) b.first_seg[i] = in.U8() % (segs + 3);
  b.first_seg[0] = std::min(b.first_seg[0], segs);
  for (uint32_t s = 0; s < segs; s++) {
    b.seg_region[s] = in.U8() % 4;
    const uint8_t m = in.U8();
    switch (m & 3) {
      case 0: b.seg_offset[s] = in.U16(); break;
      case 1: b.seg_offset[s] = -1.0 * in.U8(); break;
      case 2: b.seg_offset[s] = static_cast<double>(in.U64()); break;
      default: b.seg_offset[s] = in.U16() + 0.5; break;
    }
    const uint8_t lm = in.U8();
    b.seg_len[s] = (lm & 1) ? in.U32() : in.U16() % 1100;
    b.seg_flags[s] = in.U8() & 1;
  }
  Ranges allowed;
  const std::vector<Checked> plan = Plan(b, n, *bare.memory(), o, e.capacity_sectors(), &allowed);
  Snapshot s;
  s.Take(g);
  FUZZ_CHECK(e.Submit(bare, b, n), "Submit refused");
  FUZZ_CHECK(e.WaitIdle(-1), "WaitIdle");
  const int32_t r = e.Reap(bare);
  FUZZ_TRACE("blk raw Submit(%u) Reap -> %d; ok %llu ioerr %llu unsupp %llu\n", n, r, static_cast<unsigned long long>(e.Stats().ok),
             static_cast<unsigned long long>(e.Stats().ioerr), static_cast<unsigned long long>(e.Stats().unsupp));
  s.Compare(g, allowed, "blk Submit/Reap (raw burst)");
  FUZZ_CHECK(r == -1, "Reap on a queue without rings returned %d", r);  // its Push refuses
  CheckStatuses(plan, Ranges{});
  FUZZ_CHECK(e.InFlight(nullptr) == 0, "requests left in flight");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  GuestMem g;
  if (!g.Read(in)) return 0;
  const uint8_t f = in.U8();
  const uint8_t cap = in.U8();
  const BlkOptions o = Options(f, cap);
  std::string err;
  // The io_uring engine (bit 7): the same disk in a memfd, so that its I/O goes through the
  // ring (the kernel writes guest memory: the snapshot oracle sees it) or the inline copy.
  BlkOptions ou = o;
  int memfd = -1;
  if (f & 0x80) {
    memfd = memfd_create("fuzz-blk-disk", MFD_CLOEXEC);
    FUZZ_CHECK(memfd >= 0 && ftruncate(memfd, static_cast<off_t>(o.capacity_sectors * blk::kSectorSize)) == 0, "memfd disk");
    ou.ram = false;
    ou.fd = memfd;
    ou.engine = BlkEngineKind::kIoUring;
    ou.inline_max = (cap & 1) ? ou.inline_max : 0;
  }
  std::unique_ptr<BlkEngine> e = BlkEngine::Create(ou, &err);
  if (memfd >= 0) close(memfd);  // the engine keeps its own duplicate
  FUZZ_CHECK(e != nullptr, "BlkEngine::Create: %s", err.c_str());
  FUZZ_CHECK(!(f & 0x80) || e->engine() == BlkEngineKind::kIoUring, "engine io_uring refused");
  Ring ring(g, in.U8() & 1);
  if (!ring.Setup(in)) return 0;
  std::shared_ptr<Virtqueue> bare = Virtqueue::Create(false, 8, &err);
  bare->SetMemory(g.table());
  int32_t popped = 0;
  for (int ops = 0; ops < 128 && !in.done(); ops++) {
    switch (in.U8() % 3) {
      case 0: {
        // A ring operation; a pop is the one the next submit takes chains from.
        const uint8_t op = in.U8();
        if (op % kOpCount == kOpPop) {
          popped = ring.DoPop(in.U8());
        } else {
          ring.StepOp(op, in);
          popped = 0;
        }
        break;
      }
      case 1:
        SubmitPopped(in, g, ring, *e, o, popped);
        popped = 0;
        break;
      default:
        SubmitRaw(in, g, *e, o, *bare);
        break;
    }
  }
  e->Close();
  g.CheckCanaries("the run");
  return 0;
}
