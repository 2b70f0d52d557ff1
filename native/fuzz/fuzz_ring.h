// One virtqueue under fuzz: the driver side (a split or packed ring laid out in GuestMem
// from fuzz input, hostile wherever the input says so) and the device side (the engine's
// Virtqueue), with a model of what the device holds in flight, checked after every call.
//
// Input, after the GuestMem layout (fuzz_common.h), Ring::Setup reads:
//   u8 cfg: bit 0 EVENT_IDX, 1 INDIRECT_DESC, 2 ring addresses are frontend-virtual,
//           3 an inflight area, 4 dirty logging on, 5 dirty logging of the rings,
//           6 SET_VRING_BASE from a raw u32 (else 0 / the fresh packed base),
//           7 a ring position record (packed, without an inflight area)
//   u8 queue size (split 1 << (v % 9), packed 1 + v)
//   u8 burst chains (1 + v % 64), u16 burst segments (1 + v % 1024)
//   addr desc, addr driver, addr device (Ring::Addr selectors)
//   [u32 base] [u16 inflight length slack, u8 inflight fill: bit 0 raw bytes]
//   [u16 record length slack, u8 record fill: bit 0 raw bytes]
//   [addr used_gpa for the log]
// then operations, each a u8 opcode (Op) and its arguments, until the input ends.
#pragma once
#include <algorithm>

#include "ring/packed_ring.h"
#include "fuzz_common.h"

namespace fuzz {

enum Op : uint8_t {
  kOpAddChain = 0,
  kOpDriver1,      // split: publish avail idx        | packed: raw flags of a slot
  kOpDriver2,      // split: raw avail idx            | packed: skip slots (driver position moves)
  kOpDriver3,      // split: raw avail ring entry     | packed: raw id of a slot
  kOpDescRaw,      // 16 raw bytes into a descriptor slot
  kOpWriteRaw,     // raw bytes anywhere in guest memory
  kOpDriverEvent,  // split: used_event, avail flags  | packed: driver event suppression
  kOpPop,
  kOpPopDirect,
  kOpPush,
  kOpUnpopLast,
  kOpUnpopRaw,
  kOpNotify,
  kOpQuery,
  kOpSetBase,
  kOpRestart,
  kOpRemap,
  kOpWriteInflight,
  kOpSetLog,
  kOpPushAll,
  kOpServe,
  kOpCount
};

constexpr uint16_t kFNext = 1, kFWrite = 2, kFIndirect = 4;
constexpr uint16_t kPAvail = 1 << 7, kPUsed = 1 << 15;

class Ring {
 public:
  Ring(GuestMem& g, bool packed) : g_(g), packed_(packed) {}

  // Returns false if the queue could not be created (not a finding).
  bool Setup(Input& in) {
    cfg_ = in.U8();
    const uint8_t qs = in.U8();
    size_ = packed_ ? 1u + qs : 1u << (qs % 9);
    chains_ = 1 + in.U8() % 64;
    segs_ = 1 + in.U16() % 1024;
    space_ = (cfg_ & 4) ? AddrSpace::kFrontendVirtual : AddrSpace::kGuestPhysical;
    desc_addr_ = Addr(in, space_);
    driver_addr_ = Addr(in, space_);
    device_addr_ = Addr(in, space_);
    base_ = (cfg_ & 64) ? in.U32() : (packed_ ? (1u << 15) | (1u << 31) : 0);
    if (cfg_ & 8) inflight_len_ = Area(in, packed_ ? PackedRing::InflightBytes(size_) : 16 + 16 * uint64_t{size_}, &inflight_);
    if (packed_ && (cfg_ & 128) && !(cfg_ & 8)) record_len_ = Area(in, PackedRing::RecordBytes(size_), &record_);
    if (cfg_ & 16) used_gpa_ = Addr(in, AddrSpace::kGuestPhysical);
    b_ = std::make_unique<Burst>(chains_, segs_);
    MapRings();
    // The driver's starting state: what SET_VRING_BASE says (as a frontend restoring a ring).
    if (!packed_) {
      avail_shadow_ = static_cast<uint16_t>(base_);
      if (driver_host_) Store16(driver_host_ + 2, avail_shadow_);
      if (device_host_) Store16(device_host_ + 2, avail_shadow_);
    } else {
      next_ = 0;
      wrap_ = true;
    }
    return NewQueue(base_);
  }

  // One operation; returns false when the input is used up.
  bool Step(Input& in) {
    if (in.done()) return false;
    StepOp(in.U8(), in);
    return true;
  }
  // Operation `code` (mod kOpCount), its arguments from in.
  void StepOp(uint8_t code, Input& in) {
    const uint8_t op = code % kOpCount;
    switch (op) {
      case kOpAddChain: AddChain(in); break;
      case kOpDriver1: packed_ ? RawSlot(in, 14) : Publish(); break;
      case kOpDriver2:
        if (packed_) {
          Skip(in.U8());
        } else if (driver_host_) {
          Store16(driver_host_ + 2, in.U16());
        } else {
          in.U16();
        }
        break;
      case kOpDriver3:
        if (packed_) {
          RawSlot(in, 12);
        } else {
          const uint16_t pos = in.U16(), head = in.U16();
          if (driver_host_) Store16(driver_host_ + 4 + 2 * (pos % size_), head);
        }
        break;
      case kOpDescRaw: {
        const uint16_t i = in.U16();
        uint8_t d[16];
        in.Bytes(d, 16);
        if (desc_host_) memcpy(desc_host_ + 16 * (i % size_), d, 16);
        break;
      }
      case kOpWriteRaw: WriteRaw(in); break;
      case kOpDriverEvent: {
        const uint16_t a = in.U16(), f = in.U16();
        if (packed_) {
          if (driver_host_) {
            Store16(driver_host_, a);
            Store16(driver_host_ + 2, f);
          }
        } else if (driver_host_) {
          Store16(driver_host_ + 4 + 2 * size_, a);
          Store16(driver_host_, f);
        }
        break;
      }
      case kOpPop: DoPop(in.U8()); break;
      case kOpPopDirect: DoPopDirect(1 + in.U8() % 64); break;
      case kOpPush: DoPush(in); break;
      case kOpUnpopLast: DoUnpopLast(in.U8()); break;
      case kOpUnpopRaw: DoUnpopRaw(in); break;
      case kOpNotify: {
        const bool on = in.U8() & 1;
        Snapshot s;
        s.Take(g_);
        q_->SetNotify(on);
        s.Compare(g_, Owned(), "SetNotify");
        break;
      }
      case kOpQuery: {
        Snapshot s;
        s.Take(g_);
        const uint32_t n = q_->AvailCount();
        FUZZ_CHECK(n <= size_, "AvailCount %u > queue size %u", n, size_);
        (void)q_->HasAvail();
        (void)q_->GetBase();
        FUZZ_CHECK(q_->resubmit_pending() <= size_, "resubmit_pending %u", q_->resubmit_pending());
        s.Compare(g_, Ranges{}, "AvailCount/HasAvail");
        break;
      }
      case kOpSetBase: {
        const uint32_t base = in.U32();
        const VqError e = q_->SetBase(base);
        FUZZ_CHECK(e == VqError::kOk || e == VqError::kBaseOutOfRange, "SetBase: %s", VqErrorName(e));
        if (!packed_) used_ = static_cast<uint16_t>(base);
        used_known_ = true;
        break;
      }
      case kOpRestart: {
        const uint32_t base = (in.U8() & 1) ? in.U32() : q_->GetBase();
        Snapshot s;
        s.Take(g_);
        NewQueue(base);
        // A record's recovery finishes the push batch the previous queue was writing:
        // used descriptors, in the descriptor ring only.
        Ranges owned;
        if (record_) owned.Add(desc_host_, 16 * size_t{size_});
        s.Compare(g_, owned, "restart");
        break;
      }
      case kOpRemap: {
        q_->SetMemory(g_.table());
        std::string detail;
        (void)q_->SetRings(desc_addr_, driver_addr_, device_addr_, space_, &detail);
        break;
      }
      case kOpWriteInflight: {
        const uint16_t off = in.U16();
        const uint8_t n = in.U8() % 33;
        uint8_t tmp[32];
        in.Bytes(tmp, n);
        if (inflight_ && inflight_len_ > 0) {
          for (uint32_t k = 0; k < n; k++) inflight_->p[(off + k) % inflight_len_] = tmp[k];
        } else if (record_ && record_len_ > 0) {
          for (uint32_t k = 0; k < n; k++) record_->p[(off + k) % record_len_] = tmp[k];
        }
        break;
      }
      case kOpSetLog: {
        const uint8_t f = in.U8();
        const uint64_t used = Addr(in, AddrSpace::kGuestPhysical);
        q_->SetDirtyLog((f & 1) ? SharedDirtyLog() : nullptr, (f & 2) != 0, used);
        break;
      }
      case kOpPushAll: PushAll(in.U32()); break;
      case kOpServe: {
        const uint32_t rounds = 1 + in.U8() % 8;
        const uint32_t len = in.U32();
        for (uint32_t k = 0; k < rounds; k++) {
          DoPop(chains_);
          PushAll(len);
        }
        break;
      }
    }
  }

  // Address selectors (gpa or uva space): a few structured choices and raw u64.
  uint64_t Addr(Input& in, AddrSpace space) {
    const auto& r = g_.regs();
    const bool uva = space == AddrSpace::kFrontendVirtual;
    const uint64_t b0 = uva ? r[0].uva : r[0].gpa;
    const uint64_t bl = uva ? r.back().uva : r.back().gpa;
    const uint8_t s = in.U8();
    switch (s & 7) {
      case 0: return b0 + in.U16();
      case 1: return bl + in.U16();
      case 2: return in.U64();
      case 3: return b0 + r[0].size - in.U8();
      case 4: return b0 - 1 - in.U8();
      case 5: return bl + r.back().size - in.U8();
      case 6: return b0 + 16 * uint64_t{in.U8()};
      default: return 0;
    }
  }
  static uint32_t Len(Input& in) {
    const uint8_t s = in.U8();
    switch (s & 3) {
      case 0: return in.U8();
      case 1: return in.U16();
      case 2: return in.U32();
      default: return s >> 2;
    }
  }

  Virtqueue& q() { return *q_; }
  Burst& burst() { return *b_; }
  uint32_t size() const { return size_; }
  uint32_t chains() const { return chains_; }
  uint32_t model_in_flight() const { return in_flight_; }
  bool packed() const { return packed_; }

  // What the device may write in guest memory: the used ring (split); the descriptor
  // ring and the device event area (packed).
  Ranges Owned() const {
    Ranges o;
    if (!packed_) {
      o.Add(device_host_, 6 + 8 * size_);
    } else {
      o.Add(desc_host_, 16 * size_);
      o.Add(device_host_, 4);
    }
    return o;
  }

  // Adds every range a descriptor now in the ring (or in an indirect table it points to)
  // marks device-writable: a superset of where a device may put data. A packed queue with
  // an inflight area also resubmits chains from the copies saved there (their ring slots
  // may hold other descriptors by now): every saved descriptor counts too.
  void AddWritableBuffers(Ranges* r) const {
    if (!desc_host_) return;
    AddWritable(desc_host_, size_, r);
    if (packed_ && inflight_ && inflight_len_ >= PackedRing::InflightBytes(size_)) {
      AddWritable(inflight_->p + 64 + 16 * size_t{size_}, size_, r);  // the saved-descriptor pool
    }
  }

  // The device-writable ranges of `count` descriptors at `descs` (and of the indirect
  // tables they point to).
  void AddWritable(const uint8_t* descs, uint32_t count, Ranges* r) const {
    for (uint32_t i = 0; i < count; i++) {
      RawLe d = ReadLe(descs + 16 * i);
      const uint16_t flags = packed_ ? d.b : d.a;
      if (flags & kFIndirect) {
        if (d.len == 0 || d.len % 16 != 0) continue;
        const uint8_t* t = g_.Gpa(d.addr, d.len);
        if (!t) continue;
        for (uint32_t k = 0; k < d.len / 16; k++) {
          RawLe e = ReadLe(t + 16 * k);
          if ((packed_ ? e.b : e.a) & kFWrite) AddGpaRange(r, e.addr, e.len);
        }
      } else if (flags & kFWrite) {
        AddGpaRange(r, d.addr, d.len);
      }
    }
  }

  // Pops (checked) and returns the count (or the negative error).
  int32_t DoPop(uint32_t max) {
    Snapshot s;
    s.Take(g_);
    const VqError before = q_->error();
    const int32_t r = q_->Pop(b_->a, max);
    FUZZ_TRACE("%s Pop(%u) -> %d%s%s\n", Name(), max, r, r < 0 ? " " : "", r < 0 ? q_->error_detail().c_str() : "");
    s.Compare(g_, Owned(), "Pop");
    if (r < 0) {
      FUZZ_CHECK(KnownVqError(-r), "Pop returned %d, not an engine error", r);
      if (-r != static_cast<int32_t>(VqError::kNotReady)) {
        FUZZ_CHECK(static_cast<int32_t>(q_->error()) == -r, "Pop returned %d, error() is %s", r, VqErrorName(q_->error()));
      }
    } else {
      FUZZ_CHECK(before == VqError::kOk, "a broken queue (%s) popped %d chains", VqErrorName(before), r);
      FUZZ_CHECK(static_cast<uint32_t>(r) <= std::min(max, chains_), "Pop returned %d chains, max %u, burst %u", r, max, chains_);
      CheckBurst(g_, *q_->memory(), b_->a, static_cast<uint32_t>(r), size_);
      last_batch_.clear();
      for (int32_t i = 0; i < r; i++) Take(b_->head[i], "Pop");
    }
    CheckCount("Pop");
    return r;
  }

  // Pushes every chain in flight, in pop order, with used length len.
  void PushAll(uint32_t len) {
    std::vector<uint16_t> ids;
    std::vector<uint8_t> seen(size_, 0);
    for (uint16_t id : order_) {  // (an id popped, given back and popped again is there twice)
      if (model_[id] && !seen[id]) ids.push_back(id);
      seen[id] = 1;
    }
    order_.clear();
    std::vector<uint32_t> lens(ids.size(), len);
    for (size_t at = 0; at < ids.size(); at += chains_) {
      const uint32_t n = static_cast<uint32_t>(std::min<size_t>(chains_, ids.size() - at));
      Push(ids.data() + at, lens.data() + at, n);
    }
  }

  // Push with the model's verdict: -1 exactly when an id is not in flight (or twice in the
  // batch) or the rings are not set; else 0 or 1 and the ids are no longer in flight.
  int32_t Push(const uint16_t* ids, const uint32_t* lens, uint32_t n) {
    bool valid = q_->ready();
    std::vector<uint8_t> seen(size_, 0);
    for (uint32_t i = 0; i < n && valid; i++) {
      if (ids[i] >= size_ || !model_[ids[i]] || seen[ids[i]]) valid = false;
      if (valid) seen[ids[i]] = 1;
    }
    Snapshot s;
    s.Take(g_);
    const uint32_t base = q_->GetBase();
    const int32_t r = q_->Push(ids, lens, n);
    FUZZ_TRACE("%s Push(%u ids) -> %d\n", Name(), n, r);
    s.Compare(g_, Owned(), "Push");
    if (n == 0) {
      FUZZ_CHECK(r == 0, "Push of nothing returned %d", r);
    } else if (valid) {
      FUZZ_CHECK(r == 0 || r == 1, "Push of %u chains in flight returned %d", n, r);
      CheckUsed(ids, lens, n, base);
      for (uint32_t i = 0; i < n; i++) Give(ids[i]);
    } else {
      FUZZ_CHECK(r == -1, "Push of ids not in flight returned %d", r);
    }
    CheckCount("Push");
    return r;
  }

  // A device reset (the queue broken for good, or the frontend restarting it): a new
  // queue over the same rings and inflight area, from the current ring base.
  void Reset() { NewQueue(q_->GetBase()); }
  // Code other than the harness popped and pushed on this queue (net delivery, blk reap):
  // the last pop is no longer the harness's, and the split used index is read back from
  // the ring after the harness's next push.
  void UsedElsewhere() {
    last_batch_.clear();
    used_known_ = false;
  }

  // Takes / gives back an id in the model.
  void Take(uint16_t id, const char* what) {
    FUZZ_CHECK(id < size_, "%s: id %u >= size %u", what, id, size_);
    FUZZ_CHECK(!model_[id], "%s returned id %u, which the device already holds", what, id);
    model_[id] = 1;
    in_flight_++;
    order_.push_back(id);
    last_batch_.push_back(id);
  }
  void Give(uint16_t id) {
    if (id < size_ && model_[id]) {
      model_[id] = 0;
      in_flight_--;
    }
  }
  void CheckCount(const char* what) const {
    FUZZ_CHECK(q_->in_flight() == in_flight_, "after %s: the queue has %u chains in flight, the model %u", what, q_->in_flight(),
               in_flight_);
  }

 private:
  struct RawLe {
    uint64_t addr;
    uint32_t len;
    uint16_t a, b;
  };
  static RawLe ReadLe(const uint8_t* p) {
    RawLe d;
    memcpy(&d.addr, p, 8);
    memcpy(&d.len, p + 8, 4);
    memcpy(&d.a, p + 12, 2);
    memcpy(&d.b, p + 14, 2);
    return d;
  }
  static void WriteLe(uint8_t* p, uint64_t addr, uint32_t len, uint16_t a, uint16_t b) {
    memcpy(p, &addr, 8);
    memcpy(p + 8, &len, 4);
    memcpy(p + 12, &a, 2);
    memcpy(p + 14, &b, 2);
  }
  static void Store16(uint8_t* p, uint16_t v) { memcpy(p, &v, 2); }

  void AddGpaRange(Ranges* r, uint64_t gpa, uint64_t len) const {
    // Piece by piece over adjacent regions, as the engine splits a buffer.
    while (len > 0) {
      bool found = false;
      for (const auto& reg : g_.regs()) {
        if (gpa < reg.gpa || gpa - reg.gpa >= reg.size) continue;
        const uint64_t off = gpa - reg.gpa;
        const uint64_t k = std::min<uint64_t>(len, reg.size - off);
        r->Add(g_.buf() + reg.host_off + off, k);
        gpa += k;
        len -= k;
        found = true;
        break;
      }
      if (!found) return;
    }
  }

  // An inflight area or ring record of about `need` bytes (u16 slack: a little more, or
  // with bit 15 too little), zero-filled or (u8 bit 0) raw bytes from the input.
  static uint64_t Area(Input& in, uint64_t need, std::unique_ptr<HeapBuf>* out) {
    const uint16_t slack = in.U16();
    const uint64_t len = (slack & 0x8000) ? need - 1 - (slack & 15) % need : need + (slack & 63);
    *out = std::make_unique<HeapBuf>(len);
    if (in.U8() & 1) {
      in.Bytes((*out)->p, len);
    } else {
      memset((*out)->p, 0, len);
    }
    return len;
  }

  void MapRings() {
    auto tr = [&](uint64_t a, uint64_t len) { return space_ == AddrSpace::kGuestPhysical ? g_.Gpa(a, len) : g_.Uva(a, len); };
    desc_host_ = tr(desc_addr_, 16 * uint64_t{size_});
    driver_host_ = tr(driver_addr_, packed_ ? 4 : 6 + 2 * uint64_t{size_});
    device_host_ = tr(device_addr_, packed_ ? 4 : 6 + 8 * uint64_t{size_});
  }

  bool NewQueue(uint32_t base) {
    std::string err;
    q_ = Virtqueue::Create(packed_, size_, &err);
    if (!q_) return false;
    model_.assign(size_, 0);
    in_flight_ = 0;
    order_.clear();
    last_batch_.clear();
    q_->SetFeatures(cfg_ & 1, cfg_ & 2);
    q_->SetMemory(g_.table());
    std::string detail;
    const VqError e = q_->SetRings(desc_addr_, driver_addr_, device_addr_, space_, &detail);
    FUZZ_TRACE("%s queue size %u: SetRings -> %s %s\n", Name(), size_, VqErrorName(e), detail.c_str());
    // The harness's own translation agrees with the engine's on where the rings are.
    if (e == VqError::kOk) {
      FUZZ_CHECK(desc_host_ && driver_host_ && device_host_, "SetRings accepted rings the harness finds outside memory");
    } else {
      FUZZ_CHECK(e == VqError::kRingAddr || e == VqError::kNotReady, "SetRings: %s", VqErrorName(e));
    }
    const VqError be = q_->SetBase(base);
    FUZZ_CHECK(be == VqError::kOk || be == VqError::kBaseOutOfRange, "SetBase: %s", VqErrorName(be));
    // Split: the used index the device continues from is the ring's (SyncUsedFromRing
    // below), or the base when the rings are not set.
    used_ = static_cast<uint16_t>(base);
    used_known_ = true;
    if (!packed_ && q_->ready()) memcpy(&used_, device_host_ + 2, 2);
    if (inflight_) (void)q_->SetInflight(g_.table(), inflight_->p, inflight_len_);
    if (record_) (void)q_->SetRingRecord(g_.table(), record_->p, record_len_, base);
    if (cfg_ & 16) q_->SetDirtyLog(SharedDirtyLog(), (cfg_ & 32) != 0, used_gpa_);
    q_->SyncUsedFromRing();
    FUZZ_TRACE("%s base %08x, resubmit pending %u\n", Name(), q_->GetBase(), q_->resubmit_pending());
    return true;
  }
  const char* Name() const { return packed_ ? "packed" : "split"; }

  // What a successful Push wrote: split, every used element at the positions after the used
  // index the model expects, then the index (§2.7.8); packed, the first used descriptor at
  // the device's used position, with its wrap bits (§2.8.7).
  void CheckUsed(const uint16_t* ids, const uint32_t* lens, uint32_t n, uint32_t base) {
    if (!packed_) {
      if (!used_known_) {
        memcpy(&used_, device_host_ + 2, 2);
        used_known_ = true;
        return;
      }
      for (uint32_t i = 0; i < n; i++) {
        const uint8_t* e = device_host_ + 4 + 8 * ((used_ + i) & (size_ - 1));
        uint32_t id, len;
        memcpy(&id, e, 4);
        memcpy(&len, e + 4, 4);
        FUZZ_CHECK(id == ids[i] && len == lens[i], "used element %u: id %u len %u, pushed %u %u", i, id, len, ids[i], lens[i]);
      }
      used_ = static_cast<uint16_t>(used_ + n);
      uint16_t idx;
      memcpy(&idx, device_host_ + 2, 2);
      FUZZ_CHECK(idx == used_, "used idx %u after the push, expected %u", idx, used_);
      return;
    }
    const uint32_t at = (base >> 16) & 0x7fff;
    const bool wrap = (base >> 31) != 0;
    const RawLe d = ReadLe(desc_host_ + 16 * at);
    const uint16_t want = static_cast<uint16_t>((wrap ? (kPAvail | kPUsed) : 0) | (lens[0] ? kFWrite : 0));
    FUZZ_CHECK(d.a == ids[0] && d.len == lens[0] && d.b == want, "used descriptor %u: id %u len %u flags %04x, expected %u %u %04x", at,
               d.a, d.len, d.b, ids[0], lens[0], want);
  }

  void Publish() {
    if (driver_host_) Store16(driver_host_ + 2, avail_shadow_);
  }

  void RawSlot(Input& in, uint32_t field) {
    const uint16_t slot = in.U16(), v = in.U16();
    if (desc_host_) Store16(desc_host_ + 16 * (slot % size_) + field, v);
  }

  void Skip(uint32_t n) {
    for (uint32_t k = 0; k < n % (2 * size_ + 1); k++) Advance();
  }
  void Advance() {
    if (++next_ == size_) {
      next_ = 0;
      wrap_ = !wrap_;
    }
  }

  void WriteRaw(Input& in) {
    const uint16_t off = in.U16();
    const uint8_t n = in.U8() % 65;
    uint8_t tmp[64];
    in.Bytes(tmp, n);
    const uint32_t total = g_.total_region_bytes();
    for (uint32_t k = 0; k < n; k++) *g_.RegionByte((off + k) % total) = tmp[k];
  }

  // An indirect table: u8 entries (bit 7: the descriptor's len from Len() instead of
  // 16 * entries), then per entry u8 flags (bit 0 WRITE, 1 INDIRECT, 2 raw next u16,
  // 3 NEXT on the last), addr, len. Written where addr says if that is inside memory.
  void IndirectTable(Input& in, uint64_t* addr, uint32_t* len) {
    const uint8_t ne = in.U8();
    const uint32_t entries = 1 + ne % 16;
    *addr = Addr(in, AddrSpace::kGuestPhysical);
    *len = (ne & 0x80) ? Len(in) : 16 * entries;
    uint8_t* t = g_.Gpa(*addr, 16 * uint64_t{entries});
    for (uint32_t k = 0; k < entries; k++) {
      const uint8_t f = in.U8();
      const uint16_t raw_next = (f & 4) ? in.U16() : 0;
      const uint64_t a = Addr(in, AddrSpace::kGuestPhysical);
      const uint32_t l = Len(in);
      uint16_t flags = static_cast<uint16_t>(((f & 1) ? kFWrite : 0) | ((f & 2) ? kFIndirect : 0));
      if (k + 1 < entries || (f & 8)) flags |= kFNext;
      const uint16_t next = (f & 4) ? raw_next : static_cast<uint16_t>(k + 1);
      if (t) {
        if (packed_) {
          WriteLe(t + 16 * k, a, l, 0, flags);
        } else {
          WriteLe(t + 16 * k, a, l, flags, next);
        }
      }
    }
  }

  // Descriptor k of an n-descriptor chain in AddChain's input: u8 f (bit 0 WRITE, 1
  // INDIRECT with its table, 2 a raw u16 follows, 3 NEXT even on the last), addr, len.
  struct ChainDesc {
    uint8_t f;
    uint16_t raw;
    uint64_t addr;
    uint32_t len;
    uint16_t flags;  // WRITE / INDIRECT / NEXT, no wrap bits
  };
  ChainDesc ReadChainDesc(Input& in, uint32_t k, uint32_t n) {
    ChainDesc d;
    d.f = in.U8();
    d.raw = (d.f & 4) ? in.U16() : 0;
    d.addr = Addr(in, AddrSpace::kGuestPhysical);
    d.len = Len(in);
    if (d.f & 2) IndirectTable(in, &d.addr, &d.len);
    d.flags = static_cast<uint16_t>(((d.f & 1) ? kFWrite : 0) | ((d.f & 2) ? kFIndirect : 0));
    if (k + 1 < n || (d.f & 8)) d.flags |= kFNext;
    return d;
  }

  // A chain: split: u8 head, u8 count (1 + v % 8; bit 7: not published);
  //          packed: u8 count (1 + v % 8; bit 7: wrong AVAIL/USED bits), u16 buffer id;
  // then per descriptor u8 flags (bit 0 WRITE, 1 INDIRECT, 2 raw next u16 (split) / raw
  // flags u16 (packed), 3 NEXT on the last), addr, len, and the table if INDIRECT.
  void AddChain(Input& in) {
    if (!packed_) {
      const uint16_t head = in.U8() % size_;
      const uint8_t c = in.U8();
      const uint32_t n = 1 + (c & 0x7f) % 8;
      for (uint32_t k = 0; k < n; k++) {
        const auto [f, raw, addr, len, flags] = ReadChainDesc(in, k, n);
        const uint32_t idx = (head + k) % size_;
        const uint16_t next = (f & 4) ? raw : static_cast<uint16_t>((head + k + 1) % size_);
        if (desc_host_) WriteLe(desc_host_ + 16 * idx, addr, len, flags, next);
      }
      if (driver_host_) Store16(driver_host_ + 4 + 2 * (avail_shadow_ % size_), head);
      avail_shadow_++;
      if (!(c & 0x80)) Publish();
      return;
    }
    const uint8_t c = in.U8();
    const uint32_t n = 1 + (c & 0x7f) % 8;
    const uint16_t id = in.U16();
    uint8_t* head = nullptr;
    uint16_t head_flags = 0;
    for (uint32_t k = 0; k < n; k++) {
      auto [f, raw, addr, len, flags] = ReadChainDesc(in, k, n);
      const bool w = (c & 0x80) ? !wrap_ : wrap_;
      flags |= w ? kPAvail : kPUsed;
      if (f & 4) flags = raw;
      if (desc_host_) {
        uint8_t* d = desc_host_ + 16 * next_;
        // The head's flags last, as a driver makes a chain available (§2.8.21).
        WriteLe(d, addr, len, id, k == 0 ? 0 : flags);
        if (k == 0) {
          head = d;
          head_flags = flags;
        }
      }
      Advance();
    }
    if (head) Store16(head + 14, head_flags);
  }

  void DoPopDirect(uint32_t max) {
    std::vector<DirectBuf> out(max);
    Snapshot s;
    s.Take(g_);
    const int32_t r = q_->PopDirect(out.data(), max);
    FUZZ_TRACE("%s PopDirect(%u) -> %d\n", Name(), max, r);
    s.Compare(g_, Owned(), "PopDirect");
    if (r < 0) {
      FUZZ_CHECK(KnownVqError(-r) && static_cast<int32_t>(q_->error()) == -r, "PopDirect returned %d", r);
    } else {
      FUZZ_CHECK(static_cast<uint32_t>(r) <= max, "PopDirect returned %d of %u", r, max);
      last_batch_.clear();
      for (int32_t i = 0; i < r; i++) {
        const DirectBuf& d = out[i];
        FUZZ_CHECK(d.cap > 0, "PopDirect buffer %d is empty", i);
        FUZZ_CHECK(g_.HostInRegion(d.p, d.cap), "PopDirect buffer %d (%u bytes) is not inside one region", i, d.cap);
        FUZZ_CHECK(__asan_region_is_poisoned(d.p, d.cap) == nullptr, "PopDirect buffer %d touches poisoned memory", i);
        Take(d.id, "PopDirect");
      }
    }
    CheckCount("PopDirect");
  }

  void DoPush(Input& in) {
    const uint32_t n = in.U8() % (chains_ + 1);
    std::vector<uint16_t> ids(n);
    std::vector<uint32_t> lens(n);
    std::vector<uint16_t> live;
    for (uint16_t id : order_) {
      if (model_[id]) live.push_back(id);
    }
    for (uint32_t i = 0; i < n; i++) {
      const uint8_t sel = in.U8();
      if (sel & 0x80) {
        ids[i] = in.U16();
      } else {
        ids[i] = live.empty() ? 0 : live[sel % live.size()];
      }
      lens[i] = (sel & 0x40) ? in.U32() : in.U8();
    }
    Push(ids.data(), lens.data(), n);
  }

  // Gives back the last k chains of the last pop that are still in flight (the contract:
  // the last chains popped, in pop order).
  void DoUnpopLast(uint32_t k) {
    size_t from = last_batch_.size();
    while (from > 0 && k > 0 && model_[last_batch_[from - 1]]) {
      from--;
      k--;
    }
    std::vector<uint16_t> ids(last_batch_.begin() + static_cast<long>(from), last_batch_.end());
    last_batch_.resize(from);
    Snapshot s;
    s.Take(g_);
    q_->Unpop(ids.data(), static_cast<uint32_t>(ids.size()));
    FUZZ_TRACE("%s Unpop(%zu of the last pop)\n", Name(), ids.size());
    s.Compare(g_, Owned(), "Unpop");
    for (uint16_t id : ids) Give(id);
    CheckCount("Unpop");
  }

  // Any ids (a caller that breaks the contract): memory safety and the count only.
  void DoUnpopRaw(Input& in) {
    const uint32_t n = in.U8() % 8;
    std::vector<uint16_t> ids(n);
    for (auto& id : ids) id = in.U16();
    Snapshot s;
    s.Take(g_);
    q_->Unpop(ids.data(), n);
    s.Compare(g_, Owned(), "Unpop");
    for (uint32_t i = n; i-- > 0;) Give(ids[i]);
    CheckCount("Unpop (raw ids)");
  }

  GuestMem& g_;
  const bool packed_;
  uint8_t cfg_ = 0;
  uint32_t size_ = 1;
  uint32_t chains_ = 1;
  uint32_t segs_ = 1;
  AddrSpace space_ = AddrSpace::kGuestPhysical;
  uint64_t desc_addr_ = 0, driver_addr_ = 0, device_addr_ = 0;
  uint8_t* desc_host_ = nullptr;
  uint8_t* driver_host_ = nullptr;
  uint8_t* device_host_ = nullptr;
  uint32_t base_ = 0;
  std::unique_ptr<HeapBuf> inflight_;
  uint64_t inflight_len_ = 0;
  std::unique_ptr<HeapBuf> record_;
  uint64_t record_len_ = 0;
  uint64_t used_gpa_ = 0;
  std::shared_ptr<Virtqueue> q_;
  std::unique_ptr<Burst> b_;
  // Driver state.
  uint16_t avail_shadow_ = 0;  // split: the driver's next avail idx
  uint16_t used_ = 0;          // split: the used idx the device's next push starts at
  bool used_known_ = true;     // false after pushes by other code (UsedElsewhere)
  uint32_t next_ = 0;          // packed: the driver's next slot
  bool wrap_ = true;           // packed: the driver's wrap counter
  // Model of the device side.
  std::vector<uint8_t> model_;
  uint32_t in_flight_ = 0;
  std::vector<uint16_t> order_;       // pop order (may hold ids no longer in flight)
  std::vector<uint16_t> last_batch_;  // ids of the last Pop / PopDirect
};

}  // namespace fuzz
