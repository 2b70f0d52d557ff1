#include "ring/split_ring.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "ring/chain.h"

namespace vhostkit {

namespace {
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
constexpr uint16_t kAvailNoInterrupt = 1;
constexpr uint16_t kUsedNoNotify = 1;

std::string Fmt(const char* fmt, unsigned a, unsigned b = 0) {
  char buf[128];
  snprintf(buf, sizeof buf, fmt, a, b);
  return buf;
}
}  // namespace

SplitRing::SplitRing(uint32_t size)
    : Virtqueue(false, size), mask_(static_cast<uint16_t>(size - 1)), stamp_(size, 0), ind_stamp_(kMaxIndirect, 0) {}

VqError SplitRing::SetBase(uint32_t base) {
  last_avail_ = static_cast<uint16_t>(base);
  last_used_ = last_avail_;
  signalled_used_valid_ = false;
  error_ = VqError::kOk;
  error_detail_.clear();
  return VqError::kOk;
}

void SplitRing::SyncUsedFromRing() {
  if (device_ != nullptr) last_used_ = LoadAcquire<uint16_t>(device_ + 2);
  if (inflight_ != nullptr && device_ != nullptr) RecoverInflight();
}

bool SplitRing::SetInflight(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len) {
  if (host == nullptr) {
    inflight_ = nullptr;
    inflight_table_.reset();
    return true;
  }
  if (len < 16 + 16 * static_cast<uint64_t>(size_)) return false;
  inflight_table_ = std::move(table);
  inflight_ = host;
  return true;
}

// On start: an area never used (version 0) is initialized; otherwise the last batch of a
// backend that died between writing the used ring and clearing its flags is settled, and
// every descriptor still marked in flight is queued for resubmission, oldest first, as
// libvhost-user's vu_check_queue_inflights does. Nothing here trusts the area: indices
// are bounded by the queue size and a bad area is reinitialized.
void SplitRing::RecoverInflight() {
  resubmit_.clear();
  resubmit_pos_ = 0;
  const uint16_t ring_used = LoadAcquire<uint16_t>(device_ + 2);
  const uint16_t version = LoadRelaxed<uint16_t>(inflight_ + 8);
  const uint16_t desc_num = LoadRelaxed<uint16_t>(inflight_ + 10);
  if (version != 1 || desc_num != size_) {
    std::memset(inflight_, 0, 16 + 16 * static_cast<size_t>(size_));
    StoreRelaxed<uint16_t>(inflight_ + 10, static_cast<uint16_t>(size_));
    StoreRelaxed<uint16_t>(inflight_ + 14, ring_used);
    StoreRelease<uint16_t>(inflight_ + 8, 1);
    inflight_counter_ = 1;
    return;
  }
  const uint16_t used_idx = LoadRelaxed<uint16_t>(inflight_ + 14);
  if (used_idx != ring_used) {
    // The used ring got entries whose inflight flags were not cleared yet: walk the last
    // batch list (at most the batch size, at most the queue size) and clear them.
    const uint32_t batch = static_cast<uint16_t>(ring_used - used_idx);
    uint16_t i = LoadRelaxed<uint16_t>(inflight_ + 12);
    for (uint32_t k = 0; k < batch && k < size_ && i < size_; k++) {
      InflightDesc(i)[0] = 0;
      i = LoadRelaxed<uint16_t>(InflightDesc(i) + 6);
    }
    StoreRelease<uint16_t>(inflight_ + 14, ring_used);
  }
  std::vector<std::pair<uint64_t, uint16_t>> live;
  uint64_t max_counter = 0;
  for (uint32_t i = 0; i < size_; i++) {
    const uint64_t c = LoadRelaxed<uint64_t>(InflightDesc(i) + 8);
    if (c > max_counter) max_counter = c;
    if (InflightDesc(i)[0] == 1) live.emplace_back(c, static_cast<uint16_t>(i));
  }
  std::sort(live.begin(), live.end());
  for (auto& e : live) resubmit_.push_back(e.second);
  inflight_counter_ = max_counter + 1;
  // The driver's avail ring moved past the chains we had popped: continue after them.
  last_used_ = ring_used;
  last_avail_ = static_cast<uint16_t>(ring_used + live.size());
}

uint32_t SplitRing::AvailCount() const {
  if (driver_ == nullptr) return 0;
  const uint16_t n = static_cast<uint16_t>(AvailIdx() - last_avail_);
  return n > size_ ? size_ : n;
}

bool SplitRing::HasAvail() const { return driver_ != nullptr && AvailIdx() != last_avail_; }

VqError SplitRing::WalkChain(uint16_t head, const BurstArrays& out, uint32_t first, uint32_t* end, uint64_t* rlen,
                             uint64_t* wlen, bool* full, std::string* detail) {
  ChainBuilder cb(out, first, *mem_);
  if (++gen_ == 0) {  // generation wrapped: clear stamps once every 2^32 chains
    std::fill(stamp_.begin(), stamp_.end(), 0);
    std::fill(ind_stamp_.begin(), ind_stamp_.end(), 0);
    gen_ = 1;
  }
  uint32_t idx = head;
  uint32_t count = 0;
  for (;;) {
    if (stamp_[idx] == gen_) {
      *detail = Fmt("descriptor %u is visited twice in the chain of head %u", idx, head);
      return VqError::kDescLoop;
    }
    if (++count > size_) {
      *detail = Fmt("chain of head %u is longer than the queue size %u", head, size_);
      return VqError::kChainTooLong;
    }
    stamp_[idx] = gen_;
    const RawDesc d = ReadDesc(desc_ + 16 * idx);
    const uint16_t flags = d.a;
    if (flags & kDescIndirect) {
      // §2.7.5.3: an indirect descriptor ends the chain; it may not also chain on.
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
      const uint32_t entries = d.len / 16;
      uint32_t i = 0;
      uint32_t walked = 0;
      for (;;) {
        if (ind_stamp_[i] == gen_) {
          *detail = Fmt("indirect descriptor %u is visited twice (head %u)", i, head);
          return VqError::kDescLoop;
        }
        if (++walked > entries) {
          *detail = Fmt("indirect chain longer than its table of %u entries", entries);
          return VqError::kChainTooLong;
        }
        ind_stamp_[i] = gen_;
        const RawDesc e = ReadDesc(table + 16 * i);
        if (e.a & kDescIndirect) {
          *detail = Fmt("indirect descriptor %u of head %u is itself INDIRECT", i, head);
          return VqError::kIndirectNested;
        }
        const VqError err = cb.Add(e.addr, e.len, (e.a & kDescWrite) != 0, full, detail);
        if (err != VqError::kOk || *full) return err;
        if (!(e.a & kDescNext)) break;
        if (e.b >= entries) {
          *detail = Fmt("indirect next %u is outside the table of %u entries", e.b, entries);
          return VqError::kNextOutOfRange;
        }
        i = e.b;
      }
      break;
    }
    const VqError err = cb.Add(d.addr, d.len, (flags & kDescWrite) != 0, full, detail);
    if (err != VqError::kOk || *full) return err;
    if (!(flags & kDescNext)) break;
    if (d.b >= size_) {
      *detail = Fmt("descriptor %u: next %u is outside the queue", idx, d.b);
      return VqError::kNextOutOfRange;
    }
    idx = d.b;
  }
  *end = cb.end();
  *rlen = cb.read_len();
  *wlen = cb.write_len();
  return VqError::kOk;
}

int32_t SplitRing::Pop(const BurstArrays& out, uint32_t max) {
  if (error_ != VqError::kOk) return -static_cast<int32_t>(error_);
  if (MemoryLost()) return -static_cast<int32_t>(error_);
  if (desc_ == nullptr || !mem_) return -static_cast<int32_t>(VqError::kNotReady);
  const uint16_t avail_idx = AvailIdx();  // acquire: ring entries below are read after it
  const uint16_t count = static_cast<uint16_t>(avail_idx - last_avail_);
  if (count > size_) {
    return Fail(VqError::kAvailIdxJump, Fmt("avail idx %u is more than the queue size ahead of last avail idx %u", avail_idx, last_avail_));
  }
  if (max > out.max_chains) max = out.max_chains;
  const LogState lg = CurrentLog();
  uint32_t n = 0;
  uint32_t seg = 0;
  VqError err = VqError::kOk;
  std::string detail;
  out.first_seg[0] = 0;
  // Chains a previous backend had in flight first (they were popped before: the avail
  // ring is not read for them).
  while (resubmit_pos_ < resubmit_.size() && n < max) {
    const uint16_t head = resubmit_[resubmit_pos_];
    if (in_flight_count_[head] != 0) {
      resubmit_pos_++;
      continue;
    }
    uint32_t end = seg;
    uint64_t rlen = 0, wlen = 0;
    bool full = false;
    err = WalkChain(head, out, seg, &end, &rlen, &wlen, &full, &detail);
    if (full && err == VqError::kOk) break;
    if (err != VqError::kOk) break;
    // (Also logged when dirty logging is on, as any popped chain: it was missing here.)
    EmitChain(out, n, head, static_cast<uint32_t>(std::min<uint64_t>(rlen, UINT32_MAX)),
              static_cast<uint32_t>(std::min<uint64_t>(wlen, UINT32_MAX)), seg, end, lg);
    seg = end;
    in_flight_count_[head] = 1;
    resubmitted_[head] = 1;
    in_flight_++;
    resubmit_pos_++;
    n++;
  }
  if (err != VqError::kOk) {
    Fail(err, std::move(detail));
    return n > 0 ? static_cast<int32_t>(n) : -static_cast<int32_t>(err);
  }
  const uint32_t resubmitted = n;
  const MemTable& mem = *mem_;
  // Nothing is taken from the ring while resubmissions wait (the burst filled up before
  // they were all popped): they go first, oldest first, as on the packed ring.
  while (n < max && n - resubmitted < count && resubmit_pos_ >= resubmit_.size()) {
    const uint16_t head = LoadRelaxed<uint16_t>(driver_ + 4 + 2 * ((last_avail_ + n - resubmitted) & mask_));
    if (head >= size_) {
      err = VqError::kHeadOutOfRange;
      detail = Fmt("avail ring entry %u is head %u, outside the queue", (last_avail_ + n - resubmitted) & mask_, head);
      break;
    }
    if (in_flight_count_[head] != 0) {
      err = VqError::kIdInFlight;
      detail = Fmt("head %u offered again while the device still holds it", head);
      break;
    }
    if (inflight_ == nullptr && seg < out.max_segs) {
      // The common chain: one direct descriptor inside the region of the last lookup.
      // Anything else (or any doubt) goes the general way below, which re-reads it.
      const RawDesc d = ReadDesc(desc_ + 16 * head);
      uint32_t region;
      const uint8_t* p;
      if (!(d.a & (kDescNext | kDescIndirect)) && d.len != 0 && (p = mem.TranslateHinted(d.addr, d.len, &region)) != nullptr) {
        EmitOneSegment(out, n, head, seg, mem, region, p, d.len, (d.a & kDescWrite) != 0, lg);
        seg++;
        in_flight_count_[head] = 1;
        n++;
        continue;
      }
    }
    uint32_t end = seg;
    uint64_t rlen = 0, wlen = 0;
    bool full = false;
    err = WalkChain(head, out, seg, &end, &rlen, &wlen, &full, &detail);
    if (full && err == VqError::kOk) break;  // no room left in this burst: next Pop takes it
    if (err == VqError::kOk && (rlen > UINT32_MAX || wlen > UINT32_MAX)) {
      err = VqError::kChainTooLong;
      detail = Fmt("chain of head %u holds 4 GiB or more", head);
    }
    if (err != VqError::kOk) break;
    EmitChain(out, n, head, static_cast<uint32_t>(rlen), static_cast<uint32_t>(wlen), seg, end, lg);
    seg = end;
    in_flight_count_[head] = 1;
    if (inflight_ != nullptr) {
      StoreRelaxed<uint64_t>(InflightDesc(head) + 8, inflight_counter_++);
      StoreRelease<uint8_t>(InflightDesc(head), 1);
    }
    n++;
  }
  last_avail_ = static_cast<uint16_t>(last_avail_ + n - resubmitted);
  in_flight_ += n - resubmitted;
  // With EVENT_IDX, ask for a kick as soon as the driver adds past what we took (§2.7.10).
  if (event_idx_ && notify_enabled_ && n > 0) {
    StoreRelaxed<uint16_t>(AvailEventPtr(), last_avail_);
    if (lg.rings) lg.log->Mark(lg.used_gpa + 4 + 8 * size_, 2);
  }
  if (err != VqError::kOk) {
    Fail(err, std::move(detail));
    if (n == 0) return -static_cast<int32_t>(err);
  }
  return static_cast<int32_t>(n);
}

int32_t SplitRing::PopDirect(DirectBuf* out, uint32_t max) {
  if (error_ != VqError::kOk) return -static_cast<int32_t>(error_);
  if (MemoryLost()) return -static_cast<int32_t>(error_);
  if (inflight_ != nullptr || !DirectAllowed()) return 0;
  const uint16_t count = static_cast<uint16_t>(AvailIdx() - last_avail_);  // acquire
  if (count > size_) return 0;  // Pop refuses it
  if (max > count) max = count;
  const MemTable& mem = *mem_;
  uint32_t n = 0;
  while (n < max) {
    const uint16_t head = LoadRelaxed<uint16_t>(driver_ + 4 + 2 * ((last_avail_ + n) & mask_));
    if (head >= size_ || in_flight_count_[head] != 0) break;
    const RawDesc d = ReadDesc(desc_ + 16 * head);
    if ((d.a & (kDescNext | kDescIndirect | kDescWrite)) != kDescWrite || d.len == 0) break;
    uint32_t region;
    uint8_t* p = mem.TranslateHinted(d.addr, d.len, &region);
    if (p == nullptr && (p = mem.TranslateGpaContiguous(d.addr, d.len)) == nullptr) break;
    out[n++] = DirectBuf{p, d.len, head};
    in_flight_count_[head] = 1;
  }
  last_avail_ = static_cast<uint16_t>(last_avail_ + n);
  in_flight_ += n;
  if (event_idx_ && notify_enabled_ && n > 0) StoreRelaxed<uint16_t>(AvailEventPtr(), last_avail_);
  return static_cast<int32_t>(n);
}

int32_t SplitRing::Push(const uint16_t* ids, const uint32_t* lens, uint32_t n) {
  if (n == 0) return 0;
  // A lost memory table breaks the queue for the next Pop; this push still completes its
  // bookkeeping (the ring it writes is anonymous memory now if it was lost).
  (void)MemoryLost();
  if (desc_ == nullptr || !ClaimIds(ids, n)) return -1;
  const LogState lg = CurrentLog();
  const uint16_t old = last_used_;
  if (inflight_ != nullptr) {
    // The batch list first, so that a backend dying after the used idx update but before
    // the flags are cleared can be settled on restart (RecoverInflight).
    uint16_t batch_head = LoadRelaxed<uint16_t>(inflight_ + 12);
    for (uint32_t i = 0; i < n; i++) {
      StoreRelaxed<uint16_t>(InflightDesc(ids[i]) + 6, batch_head);
      batch_head = ids[i];
    }
    StoreRelease<uint16_t>(inflight_ + 12, batch_head);
  }
  for (uint32_t i = 0; i < n; i++) {
    TakeId(ids[i]);
    uint8_t* e = device_ + 4 + 8 * ((old + i) & mask_);
    StoreRelaxed<uint32_t>(e, ids[i]);
    StoreRelaxed<uint32_t>(e + 4, lens[i]);
    if (lg.log) {
      LogCompleted(*lg.log, ids[i], lens[i]);
      if (lg.rings) lg.log->Mark(lg.used_gpa + 4 + 8 * ((old + i) & mask_), 8);
    }
  }
  last_used_ = static_cast<uint16_t>(old + n);
  StoreRelease<uint16_t>(device_ + 2, last_used_);  // entries before idx (§2.7.8)
  if (inflight_ != nullptr) {
    for (uint32_t i = 0; i < n; i++) {
      StoreRelease<uint8_t>(InflightDesc(ids[i]), 0);
      resubmitted_[ids[i]] = 0;
    }
    StoreRelease<uint16_t>(inflight_ + 14, last_used_);
  }
  if (lg.rings) lg.log->Mark(lg.used_gpa + 2, 2);
  FullFence();                                      // idx before reading used_event / flags
  if (event_idx_) {
    const uint16_t since = signalled_used_valid_ ? signalled_used_ : old;
    const bool valid = signalled_used_valid_;
    signalled_used_ = last_used_;
    signalled_used_valid_ = true;
    const uint16_t used_event = LoadRelaxed<uint16_t>(UsedEventPtr());
    return (!valid || VringNeedEvent(used_event, last_used_, since)) ? 1 : 0;
  }
  return (LoadRelaxed<uint16_t>(driver_) & kAvailNoInterrupt) ? 0 : 1;
}

void SplitRing::Unpop(const uint16_t* ids, uint32_t n) {
  for (uint32_t i = n; i-- > 0;) {
    const uint16_t id = ids[i];
    if (id >= size_ || in_flight_count_[id] == 0) continue;
    in_flight_count_[id] = 0;
    in_flight_--;
    if (UnpopResubmitted(id)) continue;
    if (inflight_ != nullptr) StoreRelease<uint8_t>(InflightDesc(id), 0);
    last_avail_--;
  }
}

bool SplitRing::SetNotify(bool enable) {
  notify_enabled_ = enable;
  if (desc_ == nullptr) return false;
  const LogState lg = CurrentLog();
  if (event_idx_) {
    if (enable) StoreRelaxed<uint16_t>(AvailEventPtr(), last_avail_);
    if (enable && lg.rings) lg.log->Mark(lg.used_gpa + 4 + 8 * size_, 2);
  } else {
    StoreRelaxed<uint16_t>(device_, enable ? 0 : kUsedNoNotify);
    if (lg.rings) lg.log->Mark(lg.used_gpa, 2);
  }
  FullFence();
  return HasAvail();
}

}  // namespace vhostkit
