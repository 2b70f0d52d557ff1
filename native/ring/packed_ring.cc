#include "ring/packed_ring.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "ring/chain.h"

namespace vhostkit {

namespace {
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
constexpr uint16_t kDescAvail = 1 << 7;
constexpr uint16_t kDescUsed = 1 << 15;
constexpr uint16_t kEventEnable = 0;
constexpr uint16_t kEventDisable = 1;
constexpr uint16_t kEventDesc = 2;

std::string Fmt(const char* fmt, unsigned a, unsigned b = 0) {
  char buf[128];
  snprintf(buf, sizeof buf, fmt, a, b);
  return buf;
}
}  // namespace

uint32_t PackedRing::GetBase() const {
  return static_cast<uint32_t>(last_avail_) | (avail_wrap_ ? 1u << 15 : 0) | (static_cast<uint32_t>(last_used_) << 16) |
         (used_wrap_ ? 1u << 31 : 0);
}

VqError PackedRing::SetBase(uint32_t base) {
  // Frontends that only know the avail half (DPDK virtio-user sends 1 << 15 for a fresh
  // ring) leave the used half zero: the used state then equals the avail state, as DPDK's
  // vhost library assumes too (rings are stopped with nothing in flight).
  if ((base >> 16) == 0) base |= (base & 0xffff) << 16;
  const uint16_t avail = base & 0x7fff;
  const uint16_t used = (base >> 16) & 0x7fff;
  if (avail >= size_ || used >= size_) {
    error_ = VqError::kBaseOutOfRange;
    error_detail_ = Fmt("vring base avail %u / used %u outside the queue", avail, used);
    return error_;
  }
  last_avail_ = avail;
  avail_wrap_ = (base >> 15) & 1;
  last_used_ = used;
  used_wrap_ = (base >> 31) & 1;
  signalled_used_valid_ = false;
  error_ = VqError::kOk;
  error_detail_.clear();
  return VqError::kOk;
}

bool PackedRing::Avail(uint16_t flags) const {
  const bool a = (flags & kDescAvail) != 0;
  const bool u = (flags & kDescUsed) != 0;
  return a == avail_wrap_ && u != avail_wrap_;
}

uint32_t PackedRing::AvailCount() const {
  if (desc_ == nullptr) return 0;
  uint32_t n = 0;
  uint32_t at = last_avail_;
  bool wrap = avail_wrap_;
  while (n < size_) {
    const uint16_t flags = LoadAcquire<uint16_t>(desc_ + 16 * at + 14);
    if (((flags & kDescAvail) != 0) != wrap || ((flags & kDescUsed) != 0) == wrap) break;
    n++;
    if (++at == size_) {
      at = 0;
      wrap = !wrap;
    }
  }
  return n;
}

bool PackedRing::HasAvail() const {
  return desc_ != nullptr && Avail(LoadAcquire<uint16_t>(desc_ + 16 * last_avail_ + 14));
}

VqError PackedRing::WalkChain(const uint8_t* ring, uint32_t start, uint32_t ring_len, uint32_t max_desc,
                              const BurstArrays& out, uint32_t first, uint32_t* end, uint16_t* id, uint32_t* ndesc,
                              uint64_t* rlen, uint64_t* wlen, bool* full, std::string* detail) {
  ChainBuilder cb(out, first, *mem_);
  uint32_t idx = start;
  uint32_t count = 0;
  for (;;) {
    if (++count > max_desc) {
      *detail = Fmt("chain at %u is longer than %u descriptors", start, max_desc);
      return VqError::kChainTooLong;
    }
    // The head's flags were read with acquire by the caller; the driver wrote the rest
    // of the chain before it, so plain reads see them. Each descriptor is read once.
    const RawDesc d = ReadDesc(ring + 16 * idx);
    const uint16_t flags = d.b;
    if (flags & kDescIndirect) {
      if (!indirect_ok_) {
        *detail = Fmt("descriptor %u is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated", idx);
        return VqError::kIndirectNotNegotiated;
      }
      if (flags & kDescNext) {
        *detail = Fmt("descriptor %u has both INDIRECT and NEXT", idx);
        return VqError::kIndirectNext;
      }
      if (d.len == 0 || d.len % 16 != 0 || d.len / 16 > kMaxIndirect) {
        *detail = Fmt("indirect table of %u bytes (expected a non-zero multiple of 16, at most %u entries)", d.len, kMaxIndirect);
        return VqError::kIndirectLen;
      }
      const uint8_t* table = mem_->TranslateGpaContiguous(d.addr, d.len);
      if (table == nullptr) {
        *detail = Fmt("indirect table of descriptor %u (%u bytes) is not inside one memory region", idx, d.len);
        return VqError::kIndirectAddr;
      }
      // §2.8.19: entries are used in order; NEXT is ignored inside the table.
      for (uint32_t i = 0; i < d.len / 16; i++) {
        const RawDesc e = ReadDesc(table + 16 * i);
        if (e.b & kDescIndirect) {
          *detail = Fmt("indirect entry %u of descriptor %u is itself INDIRECT", i, idx);
          return VqError::kIndirectNested;
        }
        const VqError err = cb.Add(e.addr, e.len, (e.b & kDescWrite) != 0, full, detail);
        if (err != VqError::kOk || *full) return err;
      }
      *id = d.a;
      break;
    }
    const VqError err = cb.Add(d.addr, d.len, (flags & kDescWrite) != 0, full, detail);
    if (err != VqError::kOk || *full) return err;
    if (!(flags & kDescNext)) {
      *id = d.a;
      break;
    }
    if (++idx == ring_len) idx = 0;
  }
  *ndesc = count;
  *end = cb.end();
  *rlen = cb.read_len();
  *wlen = cb.write_len();
  return VqError::kOk;
}

int32_t PackedRing::Pop(const BurstArrays& out, uint32_t max) {
  if (error_ != VqError::kOk) return -static_cast<int32_t>(error_);
  if (MemoryLost()) return -static_cast<int32_t>(error_);
  if (desc_ == nullptr || !mem_) return -static_cast<int32_t>(VqError::kNotReady);
  if (max > out.max_chains) max = out.max_chains;
  const LogState lg = CurrentLog();
  uint32_t n = 0;
  uint32_t seg = 0;
  VqError err = VqError::kOk;
  std::string detail;
  out.first_seg[0] = 0;
  // Chains a previous backend had in flight first, from their saved copies (their ring
  // slots may hold used descriptors by now).
  while (resubmit_pos_ < resubmit_.size() && n < max) {
    const uint16_t id = resubmit_[resubmit_pos_];
    const uint32_t saved = resubmit_ndesc_[resubmit_pos_];
    chain_copy_.resize(16 * static_cast<size_t>(saved));
    for (uint32_t k = 0, e = pool_first_[id]; k < saved; k++, e = pool_next_[e]) {
      __builtin_memcpy(chain_copy_.data() + 16 * k, PoolDesc(e), 16);
    }
    uint32_t end = seg, ndesc = 0;
    uint16_t cid = 0;
    uint64_t rlen = 0, wlen = 0;
    bool full = false;
    err = WalkChain(chain_copy_.data(), 0, saved, saved, out, seg, &end, &cid, &ndesc, &rlen, &wlen, &full, &detail);
    if (full && err == VqError::kOk) break;
    if (err == VqError::kOk && (cid != id || ndesc != saved || rlen > UINT32_MAX || wlen > UINT32_MAX)) {
      err = VqError::kInflightCorrupt;
      detail = Fmt("the saved copy of in-flight buffer id %u does not hold its chain (%u descriptors)", id, saved);
    }
    if (err != VqError::kOk) break;
    EmitChain(out, n, id, static_cast<uint32_t>(rlen), static_cast<uint32_t>(wlen), seg, end, lg);
    seg = end;
    in_flight_count_[id] = ndesc;
    resubmitted_[id] = 1;
    in_flight_++;
    resubmit_pos_++;
    n++;
  }
  const uint32_t resubmitted = n;
  const MemTable& mem = *mem_;
  // No chain is taken from the ring while resubmissions wait (the burst filled up before
  // they were all popped): a buffer id the device still holds from before the restart is
  // free in in_flight_count_ until it is resubmitted, and the driver offering it again
  // would be taken as a new chain (its saved copy overwritten, the id in flight twice).
  // Once resubmitted, offering it again is refused as ID_IN_FLIGHT.
  while (n < max && err == VqError::kOk && resubmit_pos_ >= resubmit_.size()) {
    if (!Avail(LoadAcquire<uint16_t>(desc_ + 16 * last_avail_ + 14))) break;
    {
      // The common chain: one direct descriptor inside the region of the last lookup.
      // Anything else (or any doubt) goes the general way below, which re-reads it.
      const RawDesc d = ReadDesc(desc_ + 16 * last_avail_);
      uint32_t region;
      const uint8_t* p;
      if (!(d.b & (kDescNext | kDescIndirect)) && d.len != 0 && d.a < size_ && in_flight_count_[d.a] == 0 &&
          seg < out.max_segs && inflight_ == nullptr && (p = mem.TranslateHinted(d.addr, d.len, &region)) != nullptr) {
        EmitOneSegment(out, n, d.a, seg, mem, region, p, d.len, (d.b & kDescWrite) != 0, lg);
        seg++;
        in_flight_count_[d.a] = 1;
        popped_at_[d.a] = AvailPos();
        if (++last_avail_ == size_) {
          last_avail_ = 0;
          avail_wrap_ = !avail_wrap_;
        }
        n++;
        continue;
      }
    }
    uint32_t end = seg, ndesc = 0;
    uint16_t id = 0;
    uint64_t rlen = 0, wlen = 0;
    bool full = false;
    err = WalkChain(desc_, last_avail_, size_, size_, out, seg, &end, &id, &ndesc, &rlen, &wlen, &full, &detail);
    if (full && err == VqError::kOk) break;
    if (err == VqError::kOk) {
      if (id >= size_) {
        err = VqError::kIdOutOfRange;
        detail = Fmt("buffer id %u at descriptor %u is outside the queue", id, last_avail_);
      } else if (in_flight_count_[id] != 0) {
        err = VqError::kIdInFlight;
        detail = Fmt("buffer id %u offered again while the device still holds it", id);
      } else if (rlen > UINT32_MAX || wlen > UINT32_MAX) {
        err = VqError::kChainTooLong;
        detail = Fmt("chain of buffer id %u holds 4 GiB or more", id);
      } else if (inflight_ != nullptr && !SaveChain(id, last_avail_, ndesc)) {
        err = VqError::kChainTooLong;
        detail = Fmt("buffer id %u would put more than %u descriptors in flight", id, size_);
      }
    }
    if (err != VqError::kOk) break;
    EmitChain(out, n, id, static_cast<uint32_t>(rlen), static_cast<uint32_t>(wlen), seg, end, lg);
    seg = end;
    in_flight_count_[id] = ndesc;
    popped_at_[id] = AvailPos();
    last_avail_ = static_cast<uint16_t>(last_avail_ + ndesc);
    if (last_avail_ >= size_) {
      last_avail_ = static_cast<uint16_t>(last_avail_ - size_);
      avail_wrap_ = !avail_wrap_;
    }
    n++;
  }
  in_flight_ += n - resubmitted;
  if (inflight_ != nullptr && n > resubmitted) CommitAvail(inflight_counter_ - 1);
  if (event_idx_ && notify_enabled_ && n > 0) WriteDeviceEvent(kEventDesc, lg);
  if (err != VqError::kOk) {
    Fail(err, std::move(detail));
    if (n == 0) return -static_cast<int32_t>(err);
  }
  return static_cast<int32_t>(n);
}

int32_t PackedRing::PopDirect(DirectBuf* out, uint32_t max) {
  if (error_ != VqError::kOk) return -static_cast<int32_t>(error_);
  if (MemoryLost()) return -static_cast<int32_t>(error_);
  if (inflight_ != nullptr || !DirectAllowed()) return 0;
  const MemTable& mem = *mem_;
  uint32_t n = 0;
  while (n < max) {
    const uint8_t* at = desc_ + 16 * last_avail_;
    // No PREFETCHW of these lines, though the used descriptors go back into them: the
    // driver is often still writing the next available descriptors of the same line, and
    // taking it exclusive makes the two CPUs pass it back and forth. Measured in turns
    // (bench/ab.ts, packed, 64 B) without against with: net tx (generator) 1.19-1.24 in
    // the slow phase, 0.93 in one fast round; switch 1.05-1.14 in the slow phase,
    // 0.92-1.04 in the fast one.
    const uint16_t flags = LoadAcquire<uint16_t>(at + 14);
    if (!Avail(flags) || (flags & (kDescNext | kDescIndirect | kDescWrite)) != kDescWrite) break;
    const RawDesc d = ReadDesc(at);
    if (d.len == 0 || d.a >= size_ || in_flight_count_[d.a] != 0) break;
    uint32_t region;
    uint8_t* p = mem.TranslateHinted(d.addr, d.len, &region);
    if (p == nullptr && (p = mem.TranslateGpaContiguous(d.addr, d.len)) == nullptr) break;
    out[n++] = DirectBuf{p, d.len, d.a};
    in_flight_count_[d.a] = 1;
    popped_at_[d.a] = AvailPos();
    if (++last_avail_ == size_) {
      last_avail_ = 0;
      avail_wrap_ = !avail_wrap_;
    }
  }
  in_flight_ += n;
  if (event_idx_ && notify_enabled_ && n > 0) WriteDeviceEvent(kEventDesc, LogState{});
  return static_cast<int32_t>(n);
}

int32_t PackedRing::Push(const uint16_t* ids, const uint32_t* lens, uint32_t n) {
  if (n == 0) return 0;
  // A lost memory table breaks the queue for the next Pop; this push still completes its
  // bookkeeping (the ring it writes is anonymous memory now if it was lost).
  (void)MemoryLost();
  if (desc_ == nullptr || !ClaimIds(ids, n)) return -1;
  const uint16_t start = last_used_;
  const LogState lg = CurrentLog();
  const bool recording = record_ != nullptr && inflight_ == nullptr && RecordBatch(ids, lens, n);
  if (inflight_ != nullptr) {
    // Mark the batch before the ring sees it: a backend dying from here until the
    // commit below leaves the area saying which ids were being completed and where the
    // used position ends; recovery checks the ring for the batch's head flags.
    uint32_t pos = last_used_;
    bool wrap = used_wrap_;
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t ndesc = in_flight_count_[ids[i]] & ~kClaimed;
      StoreRelaxed<uint8_t>(Record(ids[i]), 2);
      FreeChain(ids[i], ndesc);
      pos += ndesc;
      if (pos >= size_) {
        pos -= size_;
        wrap = !wrap;
      }
    }
    StoreRelaxed<uint16_t>(inflight_ + 18, static_cast<uint16_t>(pos | (wrap ? 0x8000 : 0)));
    StoreRelease<uint8_t>(inflight_ + 6, 1);
  }
  uint16_t head_flags = 0;
  uint8_t* head = nullptr;
  // Write every id/len, then the flags, the first element's flags last, so the driver
  // sees the whole batch at once (§2.8.7; as DPDK's flush_shadow_used_ring_packed).
  for (uint32_t i = 0; i < n; i++) {
    uint8_t* d = desc_ + 16 * last_used_;
    StoreRelaxed<uint32_t>(d + 8, lens[i]);
    StoreRelaxed<uint16_t>(d + 12, ids[i]);
    const uint16_t flags = static_cast<uint16_t>((used_wrap_ ? (kDescAvail | kDescUsed) : 0) | (lens[i] ? kDescWrite : 0));
    if (i == 0) {
      head = d;
      head_flags = flags;
    } else {
      StoreRelease<uint16_t>(d + 14, flags);
    }
    const uint32_t ndesc = TakeId(ids[i]);
    if (lg.log) LogCompleted(*lg.log, ids[i], lens[i]);
    uint32_t next = last_used_ + ndesc;
    if (next >= size_) {
      next -= size_;
      used_wrap_ = !used_wrap_;
    }
    last_used_ = static_cast<uint16_t>(next);
  }
  StoreRelease<uint16_t>(head + 14, head_flags);
  if (recording) {
    StoreRelaxed<uint16_t>(record_ + 36, UsedPos());
    StoreRelease<uint8_t>(record_ + 6, 0);
  }
  if (inflight_ != nullptr) {
    for (uint32_t i = 0; i < n; i++) {
      StoreRelaxed<uint8_t>(Record(ids[i]), 0);
      resubmitted_[ids[i]] = 0;
    }
    StoreRelease<uint16_t>(inflight_ + 16, UsedPos());
    StoreRelease<uint8_t>(inflight_ + 6, 0);
  }
  if (lg.rings) {
    // The used descriptors written: [start, last_used_) around the ring (all of it if
    // the batch went round exactly once).
    if (last_used_ > start) {
      LogRing(*lg.log, desc_ + 16 * start, 16u * (last_used_ - start));
    } else {
      LogRing(*lg.log, desc_ + 16 * start, 16u * (size_ - start));
      LogRing(*lg.log, desc_, 16u * last_used_);
    }
  }
  FullFence();  // used flags before reading the driver's event suppression
  const uint16_t since = signalled_used_;
  const bool valid = signalled_used_valid_;
  signalled_used_ = last_used_;
  signalled_used_valid_ = true;
  const uint16_t flags = LoadRelaxed<uint16_t>(driver_ + 2);
  if (flags != kEventDesc || !event_idx_) return flags == kEventDisable ? 0 : 1;
  if (!valid) return 1;
  // §2.8.10 with EVENT_IDX, as DPDK's vhost_vring_call_packed computes it: indices are
  // unwrapped by the ring size so the u16 test of §2.7.10 applies.
  const uint16_t off_wrap = LoadRelaxed<uint16_t>(driver_);
  uint16_t off = off_wrap & 0x7fff;
  uint16_t new_idx = last_used_;
  uint16_t old_idx = since;
  if (new_idx <= old_idx) old_idx = static_cast<uint16_t>(old_idx - size_);
  if (used_wrap_ != static_cast<bool>(off_wrap >> 15)) off = static_cast<uint16_t>(off - size_);
  return VringNeedEvent(off, new_idx, old_idx) ? 1 : 0;
}

void PackedRing::Unpop(const uint16_t* ids, uint32_t n) {
  for (uint32_t i = n; i-- > 0;) {
    const uint16_t id = ids[i];
    if (id >= size_ || in_flight_count_[id] == 0) continue;
    const uint32_t c = in_flight_count_[id];
    in_flight_count_[id] = 0;
    in_flight_--;
    if (UnpopResubmitted(id)) continue;
    if (last_avail_ >= c) {
      last_avail_ = static_cast<uint16_t>(last_avail_ - c);
    } else {
      last_avail_ = static_cast<uint16_t>(last_avail_ + size_ - c);
      avail_wrap_ = !avail_wrap_;
    }
    if (inflight_ != nullptr) {
      // One store takes the chain out of the committed pops (its counter is above the
      // committed one), then the record is freed.
      CommitAvail(LoadRelaxed<uint64_t>(Record(id) + 8) - 1);
      StoreRelease<uint8_t>(Record(id), 0);
      FreeChain(id, c);
    }
  }
}

void PackedRing::WriteDeviceEvent(uint16_t flags, const LogState& lg) {
  if (flags == kEventDesc) {
    StoreRelaxed<uint16_t>(device_, static_cast<uint16_t>(last_avail_ | (avail_wrap_ ? 0x8000 : 0)));
  }
  StoreRelease<uint16_t>(device_ + 2, flags);
  if (lg.rings) LogRing(*lg.log, device_, 4);
}

bool PackedRing::SetNotify(bool enable) {
  notify_enabled_ = enable;
  if (desc_ == nullptr) return false;
  WriteDeviceEvent(!enable ? kEventDisable : event_idx_ ? kEventDesc : kEventEnable, CurrentLog());
  FullFence();
  return HasAvail();
}

// ---- Inflight I/O tracking (layout in packed_ring.h) ----

bool PackedRing::SetInflight(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len) {
  resubmit_.clear();
  resubmit_ndesc_.clear();
  resubmit_pos_ = 0;
  if (host == nullptr) {
    inflight_ = nullptr;
    inflight_table_.reset();
    return true;
  }
  if (len < InflightBytes(size_)) return false;
  inflight_table_ = std::move(table);
  inflight_ = host;
  pool_first_.assign(size_, 0);
  pool_next_.assign(size_, 0);
  return true;
}

void PackedRing::SyncUsedFromRing() {
  if (desc_ == nullptr) return;
  if (inflight_ != nullptr) {
    if (LoadAcquire<uint32_t>(inflight_) == kInflightMagic && LoadRelaxed<uint16_t>(inflight_ + 4) == size_ &&
        RecoverInflight()) {
      return;
    }
    InitInflight();
    return;
  }
  if (record_ == nullptr) return;
  if (RecoverRecord()) {
    record_state_.store(RecordState::kRecovered, std::memory_order_relaxed);
    return;
  }
  InitRecord();
  record_state_.store(RecordState::kFresh, std::memory_order_relaxed);
}

// ---- Ring position record (layout in packed_ring.h) ----

bool PackedRing::SetRingRecord(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len, uint32_t frontend_base) {
  if (host == nullptr) {
    record_ = nullptr;
    record_table_.reset();
    return true;
  }
  if (len < RecordBytes(size_)) return false;
  record_table_ = std::move(table);
  record_ = host;
  frontend_base_ = frontend_base;
  record_state_.store(RecordState::kNone, std::memory_order_relaxed);
  return true;
}

void PackedRing::ForgetRingRecord() {
  if (record_ != nullptr) StoreRelease<uint32_t>(record_, 0);
}

void PackedRing::InitRecord() {
  StoreRelease<uint32_t>(record_, 0);
  std::memset(record_ + 4, 0, 60);
  StoreRelaxed<uint16_t>(record_ + 4, static_cast<uint16_t>(size_));
  for (int k = 0; k < 3; k++) StoreRelaxed<uint64_t>(record_ + 8 + 8 * k, ring_addr_[k]);
  StoreRelaxed<uint32_t>(record_ + 32, frontend_base_);
  StoreRelaxed<uint16_t>(record_ + 36, UsedPos());
  StoreRelease<uint32_t>(record_, kRecordMagic);
}

bool PackedRing::RecordBatch(const uint16_t* ids, const uint32_t* lens, uint32_t n) {
  uint32_t pos = last_used_;
  bool wrap = used_wrap_;
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t ndesc = in_flight_count_[ids[i]] & ~kClaimed;
    // In pop order, the chain completed next is the one popped from the used position.
    if (popped_at_[ids[i]] != static_cast<uint16_t>(pos | (wrap ? 0x8000 : 0))) {
      StoreRelease<uint32_t>(record_, 0);
      record_ = nullptr;  // the mapping stays with record_table_ until Detach
      record_state_.store(RecordState::kOutOfOrder, std::memory_order_relaxed);
      return false;
    }
    uint8_t* e = Entry(i);
    StoreRelaxed<uint16_t>(e, static_cast<uint16_t>(pos | (wrap ? 0x8000 : 0)));
    StoreRelaxed<uint16_t>(e + 2, ids[i]);
    StoreRelaxed<uint32_t>(e + 4, lens[i]);
    pos += ndesc;
    if (pos >= size_) {
      pos -= size_;
      wrap = !wrap;
    }
  }
  StoreRelaxed<uint16_t>(record_ + 38, static_cast<uint16_t>(pos | (wrap ? 0x8000 : 0)));
  StoreRelaxed<uint32_t>(record_ + 40, n);
  StoreRelease<uint8_t>(record_ + 6, 1);
  return true;
}

bool PackedRing::RecoverRecord() {
  if (LoadAcquire<uint32_t>(record_) != kRecordMagic || LoadRelaxed<uint16_t>(record_ + 4) != size_) return false;
  for (int k = 0; k < 3; k++) {
    if (LoadRelaxed<uint64_t>(record_ + 8 + 8 * k) != ring_addr_[k]) return false;
  }
  // The frontend sends the base of the last start again only if it never learned a newer
  // one: a different base means a new ring state (GET_VRING_BASE answered, or a reset).
  if (LoadRelaxed<uint32_t>(record_ + 32) != frontend_base_) return false;
  uint16_t used = LoadRelaxed<uint16_t>(record_ + 36);
  if ((used & 0x7fff) >= size_) return false;
  if (LoadRelaxed<uint8_t>(record_ + 6) == 1) {
    const uint16_t end = LoadRelaxed<uint16_t>(record_ + 38);
    const uint32_t n = LoadRelaxed<uint32_t>(record_ + 40);
    if ((end & 0x7fff) >= size_ || n == 0 || n > size_ || LoadRelaxed<uint16_t>(Entry(0)) != used) return false;
    for (uint32_t i = 0; i < n; i++) {
      if ((LoadRelaxed<uint16_t>(Entry(i)) & 0x7fff) >= size_) return false;
    }
    // The batch's head flags were written last. If the head still holds the driver's
    // available descriptor of this round, the driver has seen none of the batch: write it
    // all again (some of it may be written), the head's flags last, as Push does.
    const uint16_t f = LoadAcquire<uint16_t>(desc_ + 16 * (used & 0x7fff) + 14);
    const bool w = (used >> 15) != 0;
    if (((f & kDescAvailBit) != 0) == w && ((f & kDescUsedBit) != 0) != w) {
      for (uint32_t i = n; i-- > 0;) {
        const uint16_t at = LoadRelaxed<uint16_t>(Entry(i));
        const uint32_t len = LoadRelaxed<uint32_t>(Entry(i) + 4);
        uint8_t* d = desc_ + 16 * (at & 0x7fff);
        StoreRelaxed<uint32_t>(d + 8, len);
        StoreRelaxed<uint16_t>(d + 12, LoadRelaxed<uint16_t>(Entry(i) + 2));
        StoreRelease<uint16_t>(d + 14, UsedFlags((at >> 15) != 0, len));
      }
    }
    used = end;
    StoreRelaxed<uint16_t>(record_ + 36, used);
    StoreRelease<uint8_t>(record_ + 6, 0);
  }
  // Every chain popped after the used position was still in flight: pop them again.
  last_avail_ = last_used_ = static_cast<uint16_t>(used & 0x7fff);
  avail_wrap_ = used_wrap_ = (used >> 15) != 0;
  signalled_used_valid_ = false;
  return true;
}

void PackedRing::CommitAvail(uint64_t counter) {
  StoreRelease<uint64_t>(inflight_ + 8, (counter << 16) | AvailPos());
}

// A fresh area (or one that cannot be trusted): nothing in flight, the ring state is the
// one SET_VRING_BASE gave.
void PackedRing::InitInflight() {
  StoreRelease<uint32_t>(inflight_, 0);
  std::memset(inflight_ + 4, 0, InflightBytes(size_) - 4);
  StoreRelaxed<uint16_t>(inflight_ + 4, static_cast<uint16_t>(size_));
  StoreRelaxed<uint64_t>(inflight_ + 8, AvailPos());
  StoreRelaxed<uint16_t>(inflight_ + 16, UsedPos());
  StoreRelease<uint32_t>(inflight_, kInflightMagic);
  inflight_counter_ = 1;
  pool_free_.clear();
  for (uint32_t i = size_; i-- > 0;) pool_free_.push_back(static_cast<uint16_t>(i));
  resubmit_.clear();
  resubmit_ndesc_.clear();
  resubmit_pos_ = 0;
}

bool PackedRing::RecoverInflight() {
  resubmit_.clear();
  resubmit_ndesc_.clear();
  resubmit_pos_ = 0;
  uint16_t used = LoadRelaxed<uint16_t>(inflight_ + 16);
  const uint64_t ac = LoadRelaxed<uint64_t>(inflight_ + 8);
  const uint16_t avail = static_cast<uint16_t>(ac);
  const uint64_t committed = ac >> 16;
  if ((used & 0x7fff) >= size_ || (avail & 0x7fff) >= size_) return false;
  const bool batch = LoadRelaxed<uint8_t>(inflight_ + 6) == 1;
  bool published = false;
  if (batch) {
    const uint16_t batch_used = LoadRelaxed<uint16_t>(inflight_ + 18);
    if ((batch_used & 0x7fff) >= size_) return false;
    // The batch's head descriptor (at the committed used position) was written last. It
    // still holds the driver's available descriptor of this round unless the batch was
    // published (then it is used, or already made available again by the driver in the
    // next round).
    const uint16_t f = LoadAcquire<uint16_t>(desc_ + 16 * (used & 0x7fff) + 14);
    const bool w = (used >> 15) != 0;
    published = !(((f & kDescAvail) != 0) == w && ((f & kDescUsed) != 0) != w);
    if (published) used = batch_used;
  }
  std::vector<std::pair<uint64_t, uint16_t>> live;
  std::vector<uint8_t> pool_used(size_, 0);
  uint64_t max_counter = committed;
  uint32_t total = 0;
  for (uint32_t id = 0; id < size_; id++) {
    uint8_t* r = Record(id);
    const uint8_t state = LoadRelaxed<uint8_t>(r);
    const uint64_t counter = LoadRelaxed<uint64_t>(r + 8);
    if (counter > max_counter) max_counter = counter;
    // 2: being completed when the backend died; done if its batch reached the ring.
    const bool live_state = state == 1 || (state == 2 && !(batch && published));
    if (!live_state || counter > committed) continue;  // completed, free, or popped in a burst never committed
    const uint16_t ndesc = LoadRelaxed<uint16_t>(r + 2);
    uint16_t e = LoadRelaxed<uint16_t>(r + 4);
    if (ndesc == 0 || ndesc > size_) return false;
    pool_first_[id] = e;
    for (uint32_t k = 0; k < ndesc; k++) {
      if (e >= size_ || pool_used[e]) return false;
      pool_used[e] = 1;
      const uint16_t next = LoadRelaxed<uint16_t>(PoolNext(e));
      pool_next_[e] = next;
      if (k + 1 < ndesc) e = next;
    }
    total += ndesc;
    live.emplace_back(counter, static_cast<uint16_t>(id));
  }
  // The descriptors in flight are exactly those between the used and avail positions.
  const uint32_t ua = (used & 0x7fff), aa = (avail & 0x7fff);
  const bool same_wrap = (used >> 15) == (avail >> 15);
  if (same_wrap ? aa < ua : aa > ua) return false;
  const uint32_t distance = same_wrap ? aa - ua : aa + size_ - ua;
  if (distance != total) return false;

  // The area is consistent: settle it, then continue from it.
  std::sort(live.begin(), live.end());
  std::vector<uint8_t> is_live(size_, 0);
  for (auto& e : live) is_live[e.second] = 1;
  for (uint32_t id = 0; id < size_; id++) StoreRelaxed<uint8_t>(Record(id), is_live[id]);
  StoreRelaxed<uint16_t>(inflight_ + 16, used);
  StoreRelease<uint8_t>(inflight_ + 6, 0);
  for (auto& e : live) {
    resubmit_.push_back(e.second);
    resubmit_ndesc_.push_back(LoadRelaxed<uint16_t>(Record(e.second) + 2));
  }
  pool_free_.clear();
  for (uint32_t i = size_; i-- > 0;) {
    if (!pool_used[i]) pool_free_.push_back(static_cast<uint16_t>(i));
  }
  inflight_counter_ = max_counter + 1;
  last_avail_ = static_cast<uint16_t>(aa);
  avail_wrap_ = (avail >> 15) != 0;
  last_used_ = static_cast<uint16_t>(ua);
  used_wrap_ = (used >> 15) != 0;
  signalled_used_valid_ = false;
  return true;
}

bool PackedRing::SaveChain(uint16_t id, uint32_t start, uint32_t ndesc) {
  if (pool_free_.size() < ndesc) return false;
  uint16_t first = 0, prev = 0;
  for (uint32_t k = 0; k < ndesc; k++) {
    const uint16_t e = pool_free_.back();
    pool_free_.pop_back();
    uint32_t slot = start + k;
    if (slot >= size_) slot -= size_;
    __builtin_memcpy(PoolDesc(e), desc_ + 16 * slot, 16);
    if (k == 0) {
      first = e;
    } else {
      pool_next_[prev] = e;
      StoreRelaxed<uint16_t>(PoolNext(prev), e);
    }
    prev = e;
  }
  pool_first_[id] = first;
  uint8_t* r = Record(id);
  StoreRelaxed<uint16_t>(r + 2, static_cast<uint16_t>(ndesc));
  StoreRelaxed<uint16_t>(r + 4, first);
  StoreRelaxed<uint64_t>(r + 8, inflight_counter_++);
  StoreRelease<uint8_t>(r, 1);
  return true;
}

void PackedRing::FreeChain(uint16_t id, uint32_t ndesc) {
  for (uint32_t k = 0, e = pool_first_[id]; k < ndesc; k++, e = pool_next_[e]) pool_free_.push_back(static_cast<uint16_t>(e));
}

}  // namespace vhostkit
