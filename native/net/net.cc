#include "net/net.h"

#include "net/vlan.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace vhostkit {

namespace {

inline uint8_t* SegPtr(const BurstArrays& b, const MemTable& m, uint32_t s) {
  return m.host(b.seg_region[s]) + static_cast<uint64_t>(b.seg_offset[s]);
}

// Walks the readable bytes of one chain, after skipping `skip` of them.
class ReadCursor {
 public:
  ReadCursor(const BurstArrays& b, const MemTable& m, uint32_t chain, uint32_t skip) : b_(b), m_(m) {
    s_ = b.first_seg[chain];
    end_ = b.first_seg[chain + 1];
    Skip(skip);
  }
  // Copies up to len bytes into dst; returns how many were copied. memmove: dst may be
  // guest memory too, and a guest sending to itself (two NICs of one VM share its memory)
  // may make its TX buffer overlap its RX buffer.
  uint32_t Read(uint8_t* dst, uint32_t len) {
    uint32_t done = 0;
    while (done < len && s_ < end_ && !(b_.seg_flags[s_] & 1)) {
      const uint32_t avail = b_.seg_len[s_] - off_;
      const uint32_t n = std::min(avail, len - done);
      std::memmove(dst + done, SegPtr(b_, m_, s_) + off_, n);
      done += n;
      off_ += n;
      if (off_ == b_.seg_len[s_]) {
        s_++;
        off_ = 0;
      }
    }
    return done;
  }
  // The next len bytes, if they lie in one readable segment; else null.
  const uint8_t* Contiguous(uint32_t len) const {
    if (s_ >= end_ || (b_.seg_flags[s_] & 1) || b_.seg_len[s_] - off_ < len) return nullptr;
    return SegPtr(b_, m_, s_) + off_;
  }

 private:
  void Skip(uint32_t n) {
    while (n > 0 && s_ < end_ && !(b_.seg_flags[s_] & 1)) {
      const uint32_t take = std::min(n, b_.seg_len[s_] - off_);
      off_ += take;
      n -= take;
      if (off_ == b_.seg_len[s_]) {
        s_++;
        off_ = 0;
      }
    }
  }
  const BurstArrays& b_;
  const MemTable& m_;
  uint32_t s_, end_, off_ = 0;
};

// Bytes of a frame held in one flat host buffer (TAP/VXLAN reads, frames built by us).
// `stable`: the bytes stay where they are until the delivery call returns (the caller's
// buffer), so their copy may be deferred (CopyJob); not so for this file's scratch
// buffers, which the next frame or segment overwrites.
class FlatCursor {
 public:
  FlatCursor(const uint8_t* p, uint32_t len, bool stable) : p_(p), left_(len), stable_(stable) {}
  uint32_t Read(uint8_t* dst, uint32_t len) {
    const uint32_t n = std::min(len, left_);
    std::memmove(dst, p_, n);  // the caller's buffer may be a view of guest memory
    p_ += n;
    left_ -= n;
    return n;
  }
  const uint8_t* Contiguous(uint32_t len) const { return stable_ && left_ >= len ? p_ : nullptr; }

 private:
  const uint8_t* p_;
  uint32_t left_;
  bool stable_;
};

// The frame as the receiver gets it: the source bytes after the header, with an 802.1Q
// tag inserted or removed after the 12 bytes of MAC addresses.
template <typename Cursor>
class FrameReader {
 public:
  FrameReader(Cursor rc, int32_t vlan) : rc_(rc), vlan_(vlan) {
    if (vlan_ >= 0) PutTag(tag_, vlan_);
  }
  uint32_t Read(uint8_t* dst, uint32_t len) {
    if (vlan_ == -1) return rc_.Read(dst, len);  // no VLAN operation: the bytes as they are
    return ReadTagged(dst, len);
  }
  // Where the next len bytes are in the source, if they can be copied as they are (no
  // VLAN operation, one segment); else null.
  const uint8_t* Contiguous(uint32_t len) const { return vlan_ == -1 ? rc_.Contiguous(len) : nullptr; }

 private:
  uint32_t ReadTagged(uint8_t* dst, uint32_t len) {
    uint32_t done = 0;
    while (done < len) {
      uint32_t got;
      if (pos_ < 12 || vlan_ == -1) {
        const uint32_t want = vlan_ == -1 ? len - done : std::min(len - done, 12 - pos_);
        got = rc_.Read(dst + done, want);
      } else if (vlan_ >= 0 && pos_ < 16) {
        got = std::min(len - done, 16 - pos_);
        std::memcpy(dst + done, tag_ + (pos_ - 12), got);
      } else {
        if (vlan_ == -2 && !skipped_) {
          uint8_t drop[4];
          rc_.Read(drop, 4);
          skipped_ = true;
        }
        got = rc_.Read(dst + done, len - done);
      }
      if (got == 0) break;
      done += got;
      pos_ += got;
    }
    return done;
  }

  Cursor rc_;
  int32_t vlan_;
  uint8_t tag_[4] = {0, 0, 0, 0};
  uint32_t pos_ = 0;
  bool skipped_ = false;
};

}  // namespace

namespace {

// The frames of a burst were written by the driver on another CPU, so the first read of
// each misses; read one after another, the misses come one at a time. Asked for together
// first, they overlap. Prefetches bytes [hdr, hdr + span) of the first segment of chains
// chains[0..n) (or 0..n if chains is null), where the segment is a readable one.
void PrefetchHeads(const BurstArrays& b, const MemTable& mem, const uint16_t* chains, uint32_t n, uint32_t hdr, uint32_t span) {
  for (uint32_t k = 0; k < n; k++) {
    const uint32_t i = chains != nullptr ? chains[k] : k;
    const uint32_t s = b.first_seg[i];
    if (s >= b.first_seg[i + 1] || (b.seg_flags[s] & 1) || b.seg_len[s] <= hdr) continue;
    const uint8_t* p = SegPtr(b, mem, s) + hdr;
    __builtin_prefetch(p);
    if (b.seg_len[s] - hdr >= span) __builtin_prefetch(p + span - 1);
  }
}

}  // namespace

void NetPeek(const BurstArrays& b, const MemTable& mem, uint32_t n, uint32_t hdr, uint8_t* out, uint32_t stride,
             uint32_t* lens) {
  PrefetchHeads(b, mem, nullptr, n, hdr, stride);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t* o = out + static_cast<size_t>(i) * stride;
    const uint32_t rl = b.read_len[i];
    lens[i] = rl > hdr ? rl - hdr : 0;
    ReadCursor c(b, mem, i, hdr);
    const uint32_t got = c.Read(o, stride);
    if (got < stride) std::memset(o + got, 0, stride - got);
  }
}

namespace {

// Used elements staged for one Push: a frame's buffers must reach the used ring in one
// update (a receiver that sees num_buffers = 44 but only some of them drops the frame),
// and a mergeable 64 KiB frame can take more buffers than a burst's arrays hold.
struct UsedStage {
  std::vector<uint16_t> ids;
  std::vector<uint32_t> lens;
};
UsedStage& Stage() {
  thread_local UsedStage s;
  return s;
}

// A frame written into its RX buffer at the end of the burst, not when it is taken. With
// the driver on another CPU, the stores into its buffers miss (it read the last frames
// there); x86 commits stores in order, so a missing store holds back every store after it
// in the store queue, bookkeeping included. Deferred, the burst's buffer stores come one
// after another with nothing between them, and the misses of many frames overlap (DPDK's
// vhost batches its small copies for the same reason).
struct CopyJob {
  uint8_t* dst;
  const uint8_t* src;
  uint32_t len;      // frame bytes from src
  uint32_t hdr_len;  // header bytes from hdr, before them
  uint8_t hdr[12];
};

// RX chains popped ahead in one Pop and handed out one at a time (a small frame takes one):
// one Pop per burst of frames instead of one per frame. Per thread, for the delivery call
// in progress; what is left is given back (Unpop) when the call ends. Chains that are one
// writable descriptor each come through PopDirect (into `direct`: no burst arrays to write
// and read back); anything else through Pop (then `direct` is false until the next refill).
struct RxPrefetch {
  uint32_t next = 0;
  uint32_t count = 0;
  uint32_t want = 1;
  bool is_direct = false;
  std::vector<DirectBuf> direct;
  std::vector<uint16_t> unpop;
  std::vector<CopyJob> jobs;  // [max_chains]: see CopyJob
};
RxPrefetch& Prefetch() {
  thread_local RxPrefetch p;
  return p;
}

void BeginPrefetch(const RxTarget& dst, RxPrefetch& p, uint32_t frames) {
  p.next = p.count = 0;
  p.want = std::max<uint32_t>(1, std::min(frames, dst.arrays->max_chains));
  if (p.direct.size() < p.want) p.direct.resize(dst.arrays->max_chains);
  if (p.jobs.size() < p.want) p.jobs.resize(dst.arrays->max_chains);
}

// Pops the next chains ahead (count 0: none available, counted by the caller). Returns
// the count or -VqError.
int32_t RefillPrefetch(const RxTarget& dst, RxPrefetch& p) {
  p.next = p.count = 0;
  int32_t r = dst.q->PopDirect(p.direct.data(), p.want);
  p.is_direct = r > 0;
  // No PREFETCHW of the buffers' lines here. It helped while each frame was copied as
  // soon as it was taken; with the copies deferred to the end of the burst (CopyJob),
  // alternating runs of the generator (64 B into testpmd virtio-user rxonly) read about
  // 5% more without it (packed 18.3 vs 17.3 Mpps, split 20.5 vs 19 in the fast phase, no
  // worse in the slow one), and the switch could not tell the two apart.
  if (r == 0) r = dst.q->Pop(*dst.arrays, p.want);
  if (r > 0) p.count = static_cast<uint32_t>(r);
  return r;
}

uint16_t PrefetchId(const RxTarget& dst, const RxPrefetch& p, uint32_t c) {
  return p.is_direct ? p.direct[c].id : dst.arrays->head[c];
}

// Gives back `before` (the current frame's chains, popped first) and the chains popped
// ahead and not used, in pop order.
void ReleasePrefetch(const RxTarget& dst, RxPrefetch& p, const uint16_t* before, uint32_t nbefore) {
  if (nbefore + (p.count - p.next) > 0) {
    p.unpop.assign(before, before + nbefore);
    for (uint32_t c = p.next; c < p.count; c++) p.unpop.push_back(PrefetchId(dst, p, c));
    dst.q->Unpop(p.unpop.data(), static_cast<uint32_t>(p.unpop.size()));
  }
  p.next = p.count = 0;
}

// State of one delivery call: the thread's scratch (looked up once per call: thread_local
// access from a shared object costs a __tls_get_addr call) and what is staged.
struct DeliverCtx {
  UsedStage& us;
  RxPrefetch& pf;
  uint32_t pending = 0;  // used elements staged in us
  int32_t signal = 0;    // the receiver asked for an interrupt
  bool empty = false;    // a frame found the ring empty: the rest of the call is dropped
  uint32_t njobs = 0;    // CopyJobs in pf.jobs, written before anything is pushed
};

// Writes the deferred frames (see CopyJob). memmove: a guest sending to itself may make
// a source overlap a destination.
void FlushCopies(DeliverCtx& cx) {
  CopyJob* j = cx.pf.jobs.data();
  for (uint32_t i = 0; i < cx.njobs; i++) {
    std::memcpy(j[i].dst, j[i].hdr, j[i].hdr_len);
    std::memmove(j[i].dst + j[i].hdr_len, j[i].src, j[i].len);
  }
  cx.njobs = 0;
}

// Pushes the staged used elements (after writing the frames they hold).
int32_t PushStaged(const RxTarget& dst, DeliverCtx& cx) {
  FlushCopies(cx);
  const int32_t r = dst.q->Push(cx.us.ids.data(), cx.us.lens.data(), cx.pending);
  cx.pending = 0;
  if (r == 1) cx.signal = 1;
  return r;
}

// Writes header and frame into one buffer that holds them (num_buffers = 1); returns the
// bytes written.
template <typename Reader>
inline uint32_t WriteWhole(const RxTarget& dst, uint8_t* p, const uint8_t* hdr, Reader& rd, uint32_t frame) {
  std::memcpy(p, hdr, 10);  // hdr_len is 10 or 12
  if (dst.hdr_len == 12) {
    p[10] = 1;
    p[11] = 0;
  }
  return dst.hdr_len + rd.Read(p + dst.hdr_len, frame);
}

// Delivers one frame (already adjusted for the VLAN operation: `frame` bytes come out of
// `rd`) with header `hdr` into RX buffers of dst. Returns 1 delivered, 0 dropped (counted),
// or -VqError. Used elements are staged (cx.pending of them, see UsedStage) and pushed, at a
// frame boundary, once enough are staged.
template <typename Reader>
[[gnu::noinline]] int32_t DeliverChains(const RxTarget& dst, const MemTable& dmem, Reader& rd, const uint8_t* hdr, uint32_t frame,
                                        DeliverCtx& cx, DeliverStats* st) {
  const BurstArrays& db = *dst.arrays;
  if (dst.max_frame != 0 && frame > dst.max_frame && (hdr[1] & ~kGsoEcn) == kGsoNone) {
    st->too_big++;  // over the receiver's MTU (NET_SET_MTU) and not a GSO frame it agreed to
    return 0;
  }
  const uint32_t total = dst.hdr_len + frame;
  uint32_t written = 0;
  uint16_t ids[kMaxMergeBuffers];
  uint32_t lens[kMaxMergeBuffers];
  uint32_t nbuf = 0;
  uint8_t* nb_at[2] = {nullptr, nullptr};  // where num_buffers (header bytes 10, 11) landed
  RxPrefetch& pf = cx.pf;
  // Writes header and frame bytes into one writable segment; returns the bytes written.
  auto fill = [&](uint8_t* p, uint32_t room) -> uint32_t {
    uint32_t put = 0;
    while (room > 0 && written < total) {
      uint32_t m;
      if (written < dst.hdr_len) {
        m = std::min(room, dst.hdr_len - written);
        if (written <= 10 && 10 < written + m) nb_at[0] = p + (10 - written);
        if (written <= 11 && 11 < written + m) nb_at[1] = p + (11 - written);
        std::memcpy(p, hdr + written, m);
      } else {
        m = rd.Read(p, std::min(room, total - written));
        if (m == 0) {  // the source ran short of what it claimed: never loop
          written = total;
          break;
        }
      }
      p += m;
      room -= m;
      written += m;
      put += m;
    }
    return put;
  };
  // The common case: the whole frame in the chain's first buffer, num_buffers = 1.
  auto whole = [&](uint8_t* p) -> uint32_t { return WriteWhole(dst, p, hdr, rd, frame); };
  while (written < total) {
    if (nbuf == kMaxMergeBuffers || (nbuf == 1 && !dst.mergeable)) {
      st->too_big++;
      ReleasePrefetch(dst, pf, ids, nbuf);
      return 0;
    }
    if (pf.next == pf.count) {
      // The burst's arrays are reused: this frame's earlier chains were written and their
      // ids kept in ids[].
      const int32_t r = RefillPrefetch(dst, pf);
      if (r <= 0) {
        if (r == 0) st->no_buffers++;
        // An empty ring at a frame's start stays empty for the rest of the call (as DPDK
        // drops the rest of a burst): polling it again per frame only takes the line with
        // the ring index away from the driver, which is writing it. Chains given back by
        // a frame that did not fit may still take a smaller frame.
        if (r == 0 && nbuf == 0) cx.empty = true;
        ReleasePrefetch(dst, pf, ids, nbuf);
        return r;
      }
    }
    const uint32_t c = pf.next++;
    uint32_t in_chain = 0;
    if (pf.is_direct) {
      const DirectBuf& b = pf.direct[c];
      ids[nbuf] = b.id;
      if (nbuf == 0 && b.cap >= total) {
        lens[nbuf++] = whole(b.p);
        break;
      }
      in_chain = fill(b.p, b.cap);
    } else {
      ids[nbuf] = db.head[c];
      const uint32_t s0 = db.first_seg[c];
      const uint32_t s1 = db.first_seg[c + 1];
      if (nbuf == 0 && s0 < s1 && (db.seg_flags[s0] & 1) && db.seg_len[s0] >= total) {
        lens[nbuf++] = whole(SegPtr(db, dmem, s0));
        break;
      }
      for (uint32_t s = s0; s < s1 && written < total; s++) {
        if (db.seg_flags[s] & 1) in_chain += fill(SegPtr(db, dmem, s), db.seg_len[s]);  // readable parts of an RX chain: skipped
      }
    }
    if (in_chain == 0) st->bad++;  // an RX chain with no writable byte
    lens[nbuf++] = in_chain;
  }
  if (dst.hdr_len >= 12) {  // num_buffers, le16 (VERSION_1 or MRG_RXBUF)
    if (nb_at[0]) *nb_at[0] = static_cast<uint8_t>(nbuf & 0xff);
    if (nb_at[1]) *nb_at[1] = static_cast<uint8_t>(nbuf >> 8);
  }
  UsedStage& us = cx.us;
  if (us.ids.size() < cx.pending + nbuf) {  // grow only: resize() down and up would zero-fill every time
    us.ids.resize(cx.pending + nbuf + 256);
    us.lens.resize(cx.pending + nbuf + 256);
  }
  for (uint32_t j = 0; j < nbuf; j++) {
    us.ids[cx.pending] = ids[j];
    us.lens[cx.pending] = lens[j];
    (cx.pending)++;
  }
  if (cx.pending >= 256) {  // a frame boundary: publish what is staged
    const int32_t r = PushStaged(dst, cx);
    if (r < 0) return r;
  }
  st->delivered++;
  st->bytes += frame;
  return 1;
}

// Delivers one frame as DeliverChains does; the common case is done here, small enough to
// inline into the burst loops: the next buffer popped ahead is one writable descriptor
// that takes header and frame whole. Few stores per frame matter: with the driver on
// another CPU, every buffer line is a miss for writing, and the frames whose misses
// overlap are those whose stores fit in the store queue together.
template <typename Reader>
inline int32_t DeliverOne(const RxTarget& dst, const MemTable& dmem, Reader& rd, const uint8_t* hdr, uint32_t frame,
                          DeliverCtx& cx, DeliverStats* st) {
  if (cx.empty) {
    st->no_buffers++;
    return 0;
  }
  RxPrefetch& pf = cx.pf;
  const uint32_t total = dst.hdr_len + frame;
  if (pf.next < pf.count && pf.is_direct && cx.pending < cx.us.ids.size() && pf.direct[pf.next].cap >= total &&
      (dst.max_frame == 0 || frame <= dst.max_frame)) {
    const DirectBuf& b = pf.direct[pf.next++];
    cx.us.ids[cx.pending] = b.id;
    const uint8_t* src = rd.Contiguous(frame);
    if (src != nullptr && cx.njobs < pf.jobs.size()) {
      CopyJob& j = pf.jobs[cx.njobs++];
      j.dst = b.p;
      j.src = src;
      j.len = frame;
      j.hdr_len = dst.hdr_len;
      std::memcpy(j.hdr, hdr, 10);  // hdr_len is 10 or 12
      j.hdr[10] = 1;                // num_buffers
      j.hdr[11] = 0;
      cx.us.lens[cx.pending] = total;
    } else {
      cx.us.lens[cx.pending] = WriteWhole(dst, b.p, hdr, rd, frame);
    }
    if (++cx.pending >= 256) {  // a frame boundary: publish what is staged
      const int32_t r = PushStaged(dst, cx);
      if (r < 0) return r;
    }
    st->delivered++;
    st->bytes += frame;
    return 1;
  }
  return DeliverChains(dst, dmem, rd, hdr, frame, cx, st);
}

// The frame length the receiver gets after the VLAN operation, or 0 if it cannot be done.
inline uint32_t AdjustForVlan(uint32_t frame, int32_t vlan) {
  if (vlan == -2) return frame < 18 ? 0 : frame - 4;
  if (vlan >= 0) return frame + 4;
  return frame;
}

// The length a frame of `len` bytes (after its header) has once delivered with the VLAN
// operation, or 0 after counting why it cannot be delivered.
uint32_t CheckedFrameLen(uint32_t len, int32_t vlan, DeliverStats* st) {
  if (len < 14) {
    st->bad++;
    return 0;
  }
  const uint32_t frame = AdjustForVlan(len, vlan);
  if (frame == 0) {
    st->bad++;
    return 0;
  }
  if (frame > kMaxFrame) {
    st->too_big++;
    return 0;
  }
  return frame;
}

// Staging for the software offload path (one per thread: the engine runs per thread).
uint8_t* Staging() {
  thread_local std::vector<uint8_t> buf(kMaxFrame + 4096);
  return buf.data();
}
uint8_t* SegScratch() {
  thread_local std::vector<uint8_t> buf(65536 + 512);
  return buf.data();
}

// Delivers one frame from cursor `cur` (its bytes before the VLAN operation; `frame` is
// the length after it), honoring the sender's offload header `sh` (null: none): passed
// through when the receiver accepts it, else completed or segmented here.
template <typename Cursor>
int32_t DeliverFrame(const RxTarget& dst, const MemTable& dmem, Cursor cur, uint32_t frame, const NetHdr* sh, int32_t vlan,
                     DeliverCtx& cx, DeliverStats* st) {
  uint8_t hdr[16];
  std::memset(hdr, 0, sizeof hdr);
  FrameReader<Cursor> rd(cur, vlan);
  const bool offloaded = sh != nullptr && ((sh->gso_type & ~kGsoEcn) != kGsoNone || (sh->flags & kHdrNeedsCsum));
  if (!offloaded) return DeliverOne(dst, dmem, rd, hdr, frame, cx, st);
  const int32_t adj = VlanDelta(vlan, true);  // a strip is asked for tagged frames only (TxSource::vlan)
  if (AcceptsAsIs(*sh, dst.offloads)) {
    NetHdr h = *sh;
    if (h.flags & kHdrNeedsCsum) h.csum_start = static_cast<uint16_t>(h.csum_start + adj);
    if (h.hdr_len) h.hdr_len = static_cast<uint16_t>(h.hdr_len + adj);
    WriteNetHdr(h, hdr);
    return DeliverOne(dst, dmem, rd, hdr, frame, cx, st);
  }
  // The receiver cannot take it: bring the frame here and finish the work in software.
  uint8_t* stage = Staging();
  if (rd.Read(stage, frame) != frame) {
    st->bad++;
    return 0;
  }
  if ((sh->gso_type & ~kGsoEcn) != kGsoNone) {
    int32_t err = 0;
    const int32_t n = SegmentTcp(stage, frame, *sh, SegScratch(), 65536 + 512, [&](const uint8_t* p, uint32_t len) {
      FrameReader<FlatCursor> r2(FlatCursor(p, len, false), -1);
      const int32_t r = DeliverOne(dst, dmem, r2, hdr, len, cx, st);
      if (r < 0) {
        err = r;
        return false;
      }
      st->segmented += static_cast<uint32_t>(r);
      return true;
    });
    if (err < 0) return err;
    if (n < 0) st->bad++;
    return 0;
  }
  if (!CompleteChecksum(stage, frame, static_cast<uint32_t>(sh->csum_start + adj), sh->csum_offset)) {
    st->bad++;
    return 0;
  }
  st->csum_done++;
  FrameReader<FlatCursor> r2(FlatCursor(stage, frame, false), -1);
  return DeliverOne(dst, dmem, r2, hdr, frame, cx, st);
}

int32_t Finish(const RxTarget& dst, DeliverCtx& cx) {
  ReleasePrefetch(dst, cx.pf, nullptr, 0);
  if (cx.pending > 0) {
    const int32_t r = PushStaged(dst, cx);
    if (r < 0) return r;
  }
  if (cx.signal) dst.q->Signal();
  return cx.signal;
}

}  // namespace

int32_t NetDeliver(const RxTarget& dst, const TxSource& src, const uint16_t* chains, uint32_t n, DeliverStats* st) {
  const MemTable* dmem = dst.q->memory().get();
  if (dmem == nullptr) return -static_cast<int32_t>(VqError::kNotReady);
  DeliverCtx cx{Stage(), Prefetch()};
  BeginPrefetch(dst, cx.pf, n);
  for (uint32_t k = 0; k < n; k++) {
    const uint32_t c = chains[k];
    const uint32_t rl = src.arrays->read_len[c];
    const uint32_t frame = CheckedFrameLen(rl < src.hdr_len ? 0 : rl - src.hdr_len, src.vlan, st);
    if (frame == 0) continue;
    NetHdr sh;
    if (src.offloads) {
      uint8_t raw[10];
      ReadCursor h(*src.arrays, *src.mem, c, 0);
      h.Read(raw, 10);
      sh = ParseNetHdr(raw);
    }
    const int32_t r = DeliverFrame(dst, *dmem, ReadCursor(*src.arrays, *src.mem, c, src.hdr_len), frame, src.offloads ? &sh : nullptr,
                                   src.vlan, cx, st);
    if (r < 0) {
      ReleasePrefetch(dst, cx.pf, nullptr, 0);
      return r;
    }
  }
  return Finish(dst, cx);
}

uint32_t NetToFlat(const TxSource& src, const uint16_t* chains, uint32_t n, uint8_t* out, uint32_t out_len,
                   uint32_t* offsets, uint32_t* lens, uint32_t max_frames, DeliverStats* st) {
  uint32_t at = 0;
  uint32_t k = 0;
  auto room = [&](uint32_t len) { return k < max_frames && len <= out_len - at; };
  // The header and the first line of each frame (the rest of a long frame streams in).
  PrefetchHeads(*src.arrays, *src.mem, chains, n, 0, src.hdr_len + 64);
  // Frame k is the len bytes just written at out + at.
  auto commit = [&](uint32_t len) {
    offsets[k] = at;
    lens[k] = len;
    k++;
    at += len;
    st->delivered++;
    st->bytes += len;
  };
  auto put = [&](const uint8_t* p, uint32_t len) {
    if (!room(len)) return false;
    std::memcpy(out + at, p, len);
    commit(len);
    return true;
  };
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t c = chains[i];
    const uint32_t rl = src.arrays->read_len[c];
    if (rl < src.hdr_len + 14) {
      st->bad++;
      continue;
    }
    const uint32_t frame = AdjustForVlan(rl - src.hdr_len, src.vlan);
    if (frame == 0 || frame > kMaxFrame) {
      st->bad++;
      continue;
    }
    NetHdr sh{};
    if (src.offloads) {
      uint8_t raw[10];
      ReadCursor h(*src.arrays, *src.mem, c, 0);
      h.Read(raw, 10);
      sh = ParseNetHdr(raw);
    }
    FrameReader<ReadCursor> rd(ReadCursor(*src.arrays, *src.mem, c, src.hdr_len), src.vlan);
    const bool gso = (sh.gso_type & ~kGsoEcn) != kGsoNone;
    if (!gso && !(sh.flags & kHdrNeedsCsum)) {
      // A finished frame: read straight into out (one copy).
      if (!room(frame)) break;
      if (rd.Read(out + at, frame) != frame) {
        st->bad++;
        continue;
      }
      commit(frame);
      continue;
    }
    uint8_t* stage = Staging();
    if (rd.Read(stage, frame) != frame) {
      st->bad++;
      continue;
    }
    const int32_t adj = VlanDelta(src.vlan, true);  // a strip is asked for tagged frames only (TxSource::vlan)
    if (gso) {
      bool full = false;
      const int32_t m = SegmentTcp(stage, frame, sh, SegScratch(), 65536 + 512, [&](const uint8_t* p, uint32_t len) {
        if (!put(p, len)) {
          full = true;
          return false;
        }
        st->segmented++;
        return true;
      });
      if (m < 0) st->bad++;
      if (full) break;
      continue;
    }
    if (sh.flags & kHdrNeedsCsum) {
      if (!CompleteChecksum(stage, frame, static_cast<uint32_t>(sh.csum_start + adj), sh.csum_offset)) {
        st->bad++;
        continue;
      }
      st->csum_done++;
    }
    if (!put(stage, frame)) break;
  }
  return k;
}

uint32_t NetReadFrame(const TxSource& src, uint32_t c, uint8_t* out, uint32_t cap, uint8_t* hdr10) {
  std::memset(hdr10, 0, 10);
  const uint32_t rl = src.arrays->read_len[c];
  if (rl < src.hdr_len + 14 || rl - src.hdr_len > cap) return 0;
  const uint32_t frame = rl - src.hdr_len;
  if (src.offloads && ReadCursor(*src.arrays, *src.mem, c, 0).Read(hdr10, 10) != 10) return 0;
  return ReadCursor(*src.arrays, *src.mem, c, src.hdr_len).Read(out, frame) == frame ? frame : 0;
}

int32_t NetDeliverFlat(const RxTarget& dst, const uint8_t* base, const uint32_t* offsets, const uint32_t* lens, uint32_t n,
                       const uint8_t* hdr10, int32_t vlan, DeliverStats* st) {
  const MemTable* dmem = dst.q->memory().get();
  if (dmem == nullptr) return -static_cast<int32_t>(VqError::kNotReady);
  DeliverCtx cx{Stage(), Prefetch()};
  BeginPrefetch(dst, cx.pf, n);
  for (uint32_t k = 0; k < n; k++) {
    const uint32_t frame = CheckedFrameLen(lens[k], vlan, st);
    if (frame == 0) continue;
    NetHdr sh;
    if (hdr10 != nullptr) sh = ParseNetHdr(hdr10 + 10 * static_cast<size_t>(k));
    const int32_t r = DeliverFrame(dst, *dmem, FlatCursor(base + offsets[k], lens[k], true), frame, hdr10 != nullptr ? &sh : nullptr, vlan,
                                   cx, st);
    if (r < 0) {
      ReleasePrefetch(dst, cx.pf, nullptr, 0);
      return r;
    }
  }
  return Finish(dst, cx);
}

}  // namespace vhostkit
