#include "switch/switch_forward.h"

#include <algorithm>
#include <cstring>

#include "switch/switch_capture.h"

namespace vhostkit {
namespace {

namespace pc = layout::port_counter;
namespace qs = layout::queue_stat;

constexpr uint32_t kHostRounds = 16;  // batches one ServiceHost call reads at most
constexpr int32_t kFlowMulti = -10;   // dest_: several destinations, in acts_
constexpr uint32_t kEditRoom = kMaxFrame + kTagBytes;  // an edited copy: a frame and a pushed tag

uint32_t KindOf(int32_t op) { return op == kVlanKeep ? 0 : op == kVlanStrip ? 1 : 2; }

}  // namespace

Forwarder::Forwarder(SwitchFdb& fdb, uint32_t burst, Resolve resolve)
    : fdb_(fdb),
      burst_(burst),
      resolve_(resolve),
      heads_(static_cast<size_t>(burst) * kSwitchHead),
      lens_(burst),
      dest_(burst),
      vid_(burst),
      tagged_(burst),
      acts_(burst),
      learned_(burst),
      as_is_(burst),
      which_(burst),
      found_(burst),
      goff_(burst),
      glen_(burst),
      ghdr_(static_cast<size_t>(burst) * 10),
      iota_(burst) {
  for (uint32_t i = 0; i < burst; i++) iota_[i] = static_cast<uint16_t>(i);
}

SwitchPort& Forwarder::Set(SwitchPort p) {
  SwitchPort* q = Find(p.id);
  if (q == nullptr) {
    list_.push_back(std::make_unique<SwitchPort>());
    q = list_.back().get();
    by_id_[p.id] = q;
  }
  *q = std::move(p);
  q->lists.assign(static_cast<size_t>(q->Queues()) * 3 * burst_, 0);
  q->counts.assign(static_cast<size_t>(q->Queues()) * 3, 0);
  q->touched = false;
  if (q->kind == PortKind::kGuest) batches_.erase(q->id);
  return *q;
}

void Forwarder::Remove(int32_t id) {
  by_id_.erase(id);
  batches_.erase(id);
  list_.erase(std::remove_if(list_.begin(), list_.end(), [id](const std::unique_ptr<SwitchPort>& p) { return p->id == id; }),
              list_.end());
}

SwitchPort* Forwarder::Find(int32_t id) {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

void Forwarder::Begin() {
  broken_.clear();
  captures_done_.clear();
  have_ts_ = false;
}

const timespec& Forwarder::Now() {
  if (!have_ts_) {
    clock_gettime(CLOCK_REALTIME, &ts_);
    have_ts_ = true;
  }
  return ts_;
}

void Forwarder::Captured(SwitchPort& p, bool going) {
  if (!going && std::find(captures_done_.begin(), captures_done_.end(), p.id) == captures_done_.end()) captures_done_.push_back(p.id);
}

double Forwarder::Classify(SwitchPort& src, uint32_t n, int64_t now, int64_t aging_ms, const int32_t* verdict) {
  now_ = now;
  aging_ms_ = aging_ms;
  ClassifyCounts c;
  SwitchClassify(fdb_, src.id, src.vlan.Ingress(), heads_.data(), nullptr, kSwitchHead, kSwitchHead, lens_.data(), n, now, aging_ms,
                 verdict, dest_.data(), vid_.data(), tagged_.data(), &c);
  src.Count(pc::RX_PACKETS, n);
  src.Count(pc::RX_BYTES, c.bytes);
  src.Count(pc::DROP_BAD, c.bad);
  src.Count(pc::DROP_HOOK, c.hook);
  src.Count(pc::DROP_VLAN, c.vlan);
  src.Count(pc::FLOODED, c.flooded);
  return c.bytes;
}

bool Forwarder::ApplyFlows(SwitchPort& src, uint32_t n, const TxSource* tx, const FlatSource* flat) {
  bool edited = false;
  uint32_t m = 0;
  for (uint32_t i = 0; i < n; i++) {
    acts_[i] = nullptr;
    if (!edit_len_.empty()) edit_len_[i] = 0;
    if (dest_[i] != kClassifyDrop) which_[m++] = static_cast<uint16_t>(i);  // not dropped before any flow (malformed, VLAN, hook)
  }
  flows_.LookupBurst(heads_.data(), kSwitchHead, lens_.data(), vid_.data(), src.id, which_.data(), m, found_.data());
  for (uint32_t j = 0; j < m; j++) {
    const uint32_t i = which_[j];
    const int32_t f = found_[i];
    if (f < 0) continue;  // the learning switch's destination stands
    FlowHot& hot = flows_.hot(static_cast<size_t>(f));
    hot.packets++;
    hot.bytes += lens_[i];
    hot.used_ms = now_;
    switch (hot.out) {
      case kFlowOutNormal:
        continue;
      case kFlowOutDrop:
        dest_[i] = kClassifyDrop;
        src.Count(pc::DROP_FLOW, 1);
        continue;
      case kFlowOutFlood:
        dest_[i] = kClassifyFlood;
        continue;
      case kFlowOutActions:
        break;
      default:
        dest_[i] = hot.out;
        continue;
    }
    const FlowActions& a = flows_.flow(static_cast<size_t>(f)).actions;
    acts_[i] = &a;
    learned_[i] = dest_[i];
    if (a.edit.set == 0) {
      dest_[i] = kFlowMulti;
      if (a.handlers.empty()) continue;
      uint8_t hdr[10] = {};
      if (tx != nullptr) {
        one_frame_.resize(kMaxFrame);
        const uint32_t len = NetReadFrame(*tx, i, one_frame_.data(), kMaxFrame, hdr);
        if (len > 0) ToHandlers(a, src, i, one_frame_.data(), len, ParseNetHdr(hdr));
      } else {
        if (flat->hdr10 != nullptr) std::memcpy(hdr, flat->hdr10 + 10 * size_t{i}, 10);
        ToHandlers(a, src, i, flat->base + flat->off[i], flat->lens[i], ParseNetHdr(hdr));
      }
      continue;
    }
    // An edit: a copy of the frame, edited, delivered after the frames that go as they are.
    dest_[i] = kClassifyDrop;
    if (edit_len_.empty()) {
      edit_buf_.resize(static_cast<size_t>(burst_) * kEditRoom);
      edit_hdr_.resize(static_cast<size_t>(burst_) * 10);
      edit_off_.resize(burst_);
      edit_len_.assign(burst_, 0);
      for (uint32_t j = 0; j < burst_; j++) edit_off_[j] = j * kEditRoom;
    }
    uint8_t* copy = edit_buf_.data() + edit_off_[i];
    uint8_t* hdr = edit_hdr_.data() + 10 * size_t{i};
    uint32_t len = 0;
    if (tx != nullptr) {
      len = NetReadFrame(*tx, i, copy, kMaxFrame, hdr);
    } else if (flat->lens[i] <= kMaxFrame) {
      len = flat->lens[i];
      std::memcpy(copy, flat->base + flat->off[i], len);
      if (flat->hdr10 != nullptr) {
        std::memcpy(hdr, flat->hdr10 + 10 * size_t{i}, 10);
      } else {
        std::memset(hdr, 0, 10);
      }
    }
    NetHdr h = ParseNetHdr(hdr);
    FrameEdit e = a.edit;
    if ((e.set & FrameEdit::kVlanPcp) && !(e.set & FrameEdit::kVlanVid)) {
      // A priority for the frame's own VLAN: a tag pushed carries that VLAN.
      e.set |= FrameEdit::kVlanVid;
      e.vid = static_cast<uint16_t>(vid_[i] & 0xfff);
    }
    if (len == 0 || EditFrame(copy, &len, kEditRoom, &h, e) == EditResult::kTtlExpired) {
      src.Count(pc::DROP_FLOW, 1);
      continue;
    }
    WriteNetHdr(h, hdr);
    edit_len_[i] = len;
    edited = true;
    ToHandlers(a, src, i, copy, len, h);
  }
  return edited;
}

void Forwarder::ToHandlers(const FlowActions& a, const SwitchPort& src, uint32_t i, const uint8_t* frame, uint32_t len,
                           const NetHdr& h) {
  for (int32_t id : a.handlers) handler_stage_.Put(id, src.id, static_cast<uint32_t>(vid_[i]), h, frame, len);
}

void Forwarder::DeliverEdited(SwitchPort& src, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    dest_[i] = kClassifyDrop;
    if (edit_len_[i] == 0) continue;
    const FlowActions& a = *acts_[i];
    const uint8_t* copy = edit_buf_.data() + edit_off_[i];
    const uint32_t len = edit_len_[i];
    // The head as edited: the RX queue of the frame's flow, and where normal sends it.
    uint8_t* head = heads_.data() + static_cast<size_t>(i) * kSwitchHead;
    const uint32_t have = std::min(len, kSwitchHead);
    std::memcpy(head, copy, have);
    std::memset(head + have, 0, kSwitchHead - have);
    lens_[i] = len;
    // mod_vlan_vid / mod_vlan_pcp: the frame is now of that VLAN (tagged), and ports take
    // it by their VLAN rules; strip_vlan alone: it leaves every port untagged, as it is.
    if (a.edit.set & (FrameEdit::kVlanVid | FrameEdit::kVlanPcp)) {
      if (a.edit.set & FrameEdit::kVlanVid) vid_[i] = a.edit.vid;
      tagged_[i] = HasTag(copy, len) ? 1 : 0;
    } else if (a.edit.set & FrameEdit::kStripVlan) {
      as_is_[i] = 1;
    }
    if (a.normal && (a.edit.set & (FrameEdit::kDlDst | FrameEdit::kVlanVid))) {
      const uint64_t mac = (uint64_t{head[0]} << 40) | (uint64_t{head[1]} << 32) | (uint64_t{head[2]} << 24) |
                           (uint64_t{head[3]} << 16) | (uint64_t{head[4]} << 8) | head[5];
      if (head[0] & 1) {
        learned_[i] = kClassifyFlood;
      } else {
        const FdbGuard guard(fdb_);
        learned_[i] = fdb_.Lookup(mac, static_cast<uint32_t>(vid_[i]), now_, aging_ms_);
      }
      if (learned_[i] < 0) learned_[i] = kClassifyFlood;
    }
    dest_[i] = kFlowMulti;
  }
  Group(src, n);
  const FlatSource f{edit_buf_.data(), edit_off_.data(), edit_len_.data(), edit_hdr_.data()};
  Deliver(nullptr, &f);
  for (uint32_t i = 0; i < n; i++) as_is_[i] = 0;
}

void Forwarder::Switch(SwitchPort& src, uint32_t n, const TxSource* tx, const FlatSource* flat) {
  const bool edited = !flows_.empty() && ApplyFlows(src, n, tx, flat);
  Group(src, n);
  Deliver(tx, flat);
  if (edited) DeliverEdited(src, n);
}

void Forwarder::Stage(SwitchPort& q, uint32_t i) {
  if (q.staged_seq == stage_seq_) return;  // this frame is staged here already
  q.staged_seq = stage_seq_;
  const int32_t op = as_is_[i] ? kVlanKeep : q.vlan.Egress(static_cast<uint32_t>(vid_[i]), tagged_[i] == 1);
  if (op == kEgressNone) return;  // not its VLAN (not a drop: not its traffic)
  StageOp(q, i, op);
}

void Forwarder::StageOp(SwitchPort& q, uint32_t i, int32_t op) {
  const uint32_t nq = q.Queues();
  if (nq == 0) {
    q.Count(pc::DROP_NO_QUEUE, 1);
    return;
  }
  const uint32_t k = nq == 1 ? 0 : SwitchFlowHash(heads_.data() + static_cast<size_t>(i) * kSwitchHead) % nq;
  const uint32_t kind = KindOf(op);
  if (kind == 2) q.insert_tci = op;
  uint32_t& c = q.counts[k * 3 + kind];
  q.lists[(static_cast<size_t>(k) * 3 + kind) * burst_ + c++] = static_cast<uint16_t>(i);
  if (!q.touched) {
    q.touched = true;
    touched_.push_back(&q);
  }
}

void Forwarder::StageFlood(const SwitchPort& src, uint32_t i) {
  for (const auto& q : list_) {
    if (q.get() != &src) Stage(*q, i);
  }
}

void Forwarder::StageTo(const SwitchPort& src, int32_t port, uint32_t i) {
  SwitchPort* q = Find(port);
  if (q != nullptr && q != &src) Stage(*q, i);
}

void Forwarder::Group(const SwitchPort& src, uint32_t n) {
  int32_t last_d = kClassifyDrop;
  SwitchPort* last_q = nullptr;
  for (uint32_t i = 0; i < n; i++) {
    const int32_t d = dest_[i];
    if (d == kClassifyDrop) continue;
    stage_seq_++;
    if (d == kClassifyFlood) {
      StageFlood(src, i);
      continue;
    }
    if (d == kFlowMulti) {
      const FlowActions& a = *acts_[i];
      for (int32_t p : a.ports) StageTo(src, p, i);
      if (a.flood) StageFlood(src, i);
      if (a.normal && learned_[i] == kClassifyFlood) StageFlood(src, i);
      if (a.normal && learned_[i] >= 0) StageTo(src, learned_[i], i);
      continue;
    }
    if (d != last_d) {
      last_q = Find(d);
      last_d = d;
    }
    if (last_q != nullptr && last_q != &src) Stage(*last_q, i);
  }
}

void Forwarder::Deliver(const TxSource* tx, const FlatSource* flat) {
  for (SwitchPort* q : touched_) {
    q->touched = false;
    if (q->handoff != nullptr) {
      DeliverRemote(*q, tx, flat);
      continue;
    }
    if (q->kind == PortKind::kGuest) {
      for (uint32_t k = 0; k < q->Queues(); k++) DeliverGuest(*q, k, tx, flat);
      continue;
    }
    for (uint32_t kind = 0; kind < 3; kind++) {
      const uint32_t m = q->counts[kind];
      if (m == 0) continue;
      q->counts[kind] = 0;
      const int32_t op = kind == 0 ? kVlanKeep : kind == 1 ? kVlanStrip : q->insert_tci;
      const uint16_t* list = q->lists.data() + static_cast<size_t>(kind) * burst_;
      if (tx != nullptr) {
        TxSource s = *tx;
        s.vlan = op;
        if (q->captured) Captured(*q, CaptureChains(*q, s, list, m, Now()));
        HostSendChains(*q, s, list, m, host_);
      } else {
        if (q->captured) Captured(*q, CaptureFlat(*q, flat->base, flat->off, flat->lens, list, m, op, Now()));
        HostSendFlat(*q, flat->base, flat->off, flat->lens, flat->hdr10, list, m, op, host_);
      }
    }
  }
  touched_.clear();
}

void Forwarder::DeliverGuest(SwitchPort& q, uint32_t k, const TxSource* tx, const FlatSource* flat) {
  uint32_t* counts = q.counts.data() + static_cast<size_t>(k) * 3;
  if (counts[0] + counts[1] + counts[2] == 0) return;
  const RxQueueRef& ref = q.rx[k];
  Virtqueue* rq = nullptr;
  const BurstArrays* arrays = nullptr;
  const bool found = resolve_(ref.slot, &rq, &arrays) && rq != nullptr;
  const RxTarget dst{rq, arrays, q.hdr_len, q.mergeable, q.offloads, q.max_frame};
  DeliverStats st;
  int32_t result = 0;
  for (uint32_t kind = 0; kind < 3; kind++) {
    const uint32_t m = counts[kind];
    counts[kind] = 0;
    if (m == 0 || result < 0) continue;  // nothing, or the queue broke on a group before
    if (!found) {
      st.no_buffers += m;  // the queue went away under us: nothing to deliver into
      continue;
    }
    const int32_t op = kind == 0 ? kVlanKeep : kind == 1 ? kVlanStrip : q.insert_tci;
    const uint16_t* list = q.lists.data() + (static_cast<size_t>(k) * 3 + kind) * burst_;
    int32_t r;
    if (tx != nullptr) {
      TxSource s = *tx;
      s.vlan = op;
      if (q.captured) Captured(q, CaptureChains(q, s, list, m, Now()));
      r = NetDeliver(dst, s, list, m, &st);
    } else {
      if (q.captured) Captured(q, CaptureFlat(q, flat->base, flat->off, flat->lens, list, m, op, Now()));
      for (uint32_t j = 0; j < m; j++) {
        goff_[j] = flat->off[list[j]];
        glen_[j] = flat->lens[list[j]];
        if (flat->hdr10 != nullptr) std::memcpy(ghdr_.data() + 10 * size_t{j}, flat->hdr10 + 10 * size_t{list[j]}, 10);
      }
      r = NetDeliverFlat(dst, flat->base, goff_.data(), glen_.data(), m, flat->hdr10 != nullptr ? ghdr_.data() : nullptr, op, &st);
    }
    if (r < 0 || r > result) result = r;
  }
  double* s = ref.stats;
  s[qs::PACKETS] += st.delivered;
  s[qs::BYTES] += st.bytes;
  if (st.delivered > 0 && result >= 0) s[result == 1 ? qs::NOTIFY : qs::SUPPRESSED]++;
  q.Count(pc::TX_PACKETS, st.delivered);
  q.Count(pc::TX_BYTES, st.bytes);
  q.Count(pc::DROP_NO_BUFFERS, st.no_buffers);
  q.Count(pc::DROP_TOO_BIG, st.too_big);
  q.Count(pc::DROP_BAD, st.bad);
  if (result < 0) {
    // The receiver broke its RX ring: the caller stops the queue and tells the control plane.
    q.Count(pc::QUEUE_ERRORS, 1);
    broken_.push_back(Broken{q.id, ref.slot});
  }
}

void Forwarder::DeliverRemote(SwitchPort& q, const TxSource* tx, const FlatSource* flat) {
  HandoffRing& ring = *q.handoff;
  uint32_t full = 0;
  uint32_t bad = 0;
  for (uint32_t kind = 0; kind < 3; kind++) {
    const uint32_t m = q.counts[kind];
    if (m == 0) continue;
    q.counts[kind] = 0;
    const int32_t op = kind == 0 ? kVlanKeep : kind == 1 ? kVlanStrip : q.insert_tci;
    const uint16_t* list = q.lists.data() + static_cast<size_t>(kind) * burst_;
    // The frame goes as it left its sender, with its header; the owner makes the VLAN edit
    // as it delivers (moving the header's offsets with it, as every delivery path does).
    for (uint32_t j = 0; j < m; j++) {
      const uint32_t i = list[j];
      const uint32_t cap = std::min(tx != nullptr ? lens_[i] : flat->lens[i], kMaxFrame);
      uint8_t* out = ring.Begin(cap);
      if (out == nullptr) {
        full += m - j;  // the owner is behind: the rest of this group waits for no one
        break;
      }
      uint8_t hdr[10] = {};
      uint32_t len = 0;
      if (tx != nullptr) {
        len = NetReadFrame(*tx, i, out, cap, hdr);
      } else if (flat->lens[i] <= kMaxFrame) {
        len = flat->lens[i];
        std::memcpy(out, flat->base + flat->off[i], len);
        if (flat->hdr10 != nullptr) std::memcpy(hdr, flat->hdr10 + 10 * size_t{i}, 10);
      }
      if (len == 0) {
        bad++;
        continue;
      }
      ring.End(q.id, len, hdr, op);
    }
  }
  if (ring.Publish()) shared_->Wake(q.owner);
  q.Count(pc::DROP_NO_BUFFERS, full);
  q.Count(pc::DROP_BAD, bad);
}

void Forwarder::SetShared(SwitchShared* shared, uint32_t self) {
  shared_ = shared;
  self_ = self;
  hoff_.resize(burst_);
  hlen_.resize(burst_);
  hhdr_.resize(static_cast<size_t>(burst_) * 10);
}

uint32_t Forwarder::DrainHandoff(uint32_t max_frames) {
  Begin();
  if (shared_ == nullptr) return 0;
  uint32_t total = 0;
  for (uint32_t from = 0; from < shared_->threads() && total < max_frames; from++) {
    if (from == self_) continue;
    HandoffRing& ring = shared_->Ring(from, self_);
    while (total < max_frames) {
      // A run of frames for one port and VLAN operation, up to a burst, read where they lie
      // in the ring.
      uint32_t m = 0;
      int32_t port = -1;
      int32_t vlan = kVlanKeep;
      HandoffRing::Record r;
      while (m < burst_ && ring.Front(&r)) {
        if (m > 0 && (r.port != port || r.vlan != vlan)) break;
        port = r.port;
        vlan = r.vlan;
        hoff_[m] = static_cast<uint32_t>(r.frame - ring.data());
        hlen_[m] = r.len;
        std::memcpy(hhdr_.data() + 10 * size_t{m}, r.hdr10, 10);
        ring.Take();
        m++;
      }
      if (m == 0) {
        ring.Release();
        if (!ring.Pending()) break;  // a record that raced in with the release is taken now
        continue;
      }
      // A port removed since is gone for good (ids are not reused): its frames are dropped.
      if (SwitchPort* q = Find(port); q != nullptr) OutputFrames(*q, ring.data(), hoff_.data(), hlen_.data(), hhdr_.data(), m, vlan);
      ring.Release();
      total += m;
    }
  }
  return total;
}

int32_t Forwarder::Burst(SwitchPort& src, Virtqueue& q, const BurstArrays& b, const MemTable& mem, uint16_t* used_id,
                         uint32_t* used_len, uint32_t n, int64_t now, int64_t aging_ms, const int32_t* verdict, double* tx_stats) {
  Begin();
  n = std::min(n, burst_);
  NetPeek(b, mem, n, src.hdr_len, heads_.data(), kSwitchHead, lens_.data());
  const TxSource s{&b, &mem, src.hdr_len, src.tx_offloads, kVlanKeep};
  if (src.captured) Captured(src, CaptureChains(src, s, iota_.data(), n, Now()));
  const double bytes = Classify(src, n, now, aging_ms, verdict);
  Switch(src, n, &s, nullptr);
  for (uint32_t i = 0; i < n; i++) {
    used_id[i] = b.head[i];
    used_len[i] = 0;
  }
  const int32_t pushed = q.Push(used_id, used_len, n);
  if (pushed == 1) q.Signal();
  tx_stats[qs::PACKETS] += n;
  tx_stats[qs::BYTES] += bytes;
  if (pushed >= 0) tx_stats[pushed == 1 ? qs::NOTIFY : qs::SUPPRESSED]++;
  return pushed;
}

void Forwarder::FlatBurst(SwitchPort& src, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10,
                          uint32_t n, int64_t now, int64_t aging_ms) {
  n = std::min(n, burst_);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t* h = heads_.data() + static_cast<size_t>(i) * kSwitchHead;
    const uint32_t have = std::min(lens[i], kSwitchHead);
    std::memcpy(h, base + off[i], have);
    std::memset(h + have, 0, kSwitchHead - have);
    lens_[i] = lens[i];
  }
  if (src.captured) Captured(src, CaptureFlat(src, base, off, lens, nullptr, n, kVlanKeep, Now()));
  Classify(src, n, now, aging_ms, nullptr);
  const FlatSource f{base, off, lens, hdr10};
  Switch(src, n, nullptr, &f);
}

void Forwarder::Flat(SwitchPort& src, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10, uint32_t n,
                     int64_t now, int64_t aging_ms) {
  Begin();
  for (uint32_t at = 0; at < n; at += burst_) {
    const uint32_t m = std::min(burst_, n - at);
    FlatBurst(src, base, off + at, lens + at, hdr10 != nullptr ? hdr10 + 10 * size_t{at} : nullptr, m, now, aging_ms);
  }
}

bool Forwarder::Output(int32_t dst, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10, uint32_t n) {
  Begin();
  SwitchPort* q = Find(dst);
  if (q == nullptr) return false;
  OutputFrames(*q, base, off, lens, hdr10, n, kVlanKeep);
  return true;
}

void Forwarder::OutputFrames(SwitchPort& q, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10,
                             uint32_t n, int32_t vlan) {
  for (uint32_t at = 0; at < n; at += burst_) {
    const uint32_t m = std::min(burst_, n - at);
    for (uint32_t i = 0; i < m; i++) {
      // The head for the flow hash (the RX queue of the frame's flow).
      uint8_t* h = heads_.data() + static_cast<size_t>(i) * kSwitchHead;
      const uint32_t have = std::min(lens[at + i], kSwitchHead);
      std::memcpy(h, base + off[at + i], have);
      std::memset(h + have, 0, kSwitchHead - have);
      StageOp(q, i, vlan);
    }
    const FlatSource f{base, off + at, lens + at, hdr10 != nullptr ? hdr10 + 10 * size_t{at} : nullptr};
    Deliver(nullptr, &f);
  }
}

int32_t Forwarder::ServiceHost(SwitchPort& p, int64_t now, int64_t aging_ms) {
  Begin();
  std::unique_ptr<HostBatch>& b = batches_[p.id];
  if (!b) b = std::make_unique<HostBatch>(burst_);
  int32_t total = 0;
  for (uint32_t round = 0; round < kHostRounds; round++) {
    bool with_hdr = false;
    const int32_t n = HostRead(p, *b, &with_hdr);
    if (n < 0) return n;
    if (n == 0) break;
    FlatBurst(p, b->buf.data(), b->offsets.data(), b->lens.data(), with_hdr ? b->hdr10.data() : nullptr, static_cast<uint32_t>(n), now,
              aging_ms);
    total += n;
  }
  return total;
}

}  // namespace vhostkit
