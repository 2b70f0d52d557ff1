#include "switch_forward.h"

#include <algorithm>

namespace vhostkit {

IngressVlan SwitchPort::Ingress() const {
  IngressVlan in;
  in.access = access;
  in.vid = vid;
  in.native = native;
  in.all_allowed = all_allowed;
  in.allowed = allowed;
  return in;
}

int32_t SwitchPort::Egress(uint32_t v, bool tagged) const {
  if (access) {
    if (vid != v) return kEgressNone;
    return tagged ? -2 : -1;
  }
  const bool is_native = native >= 0 && static_cast<uint32_t>(native) == v;
  if (!all_allowed && !is_native && ((allowed[(v & 0xfff) >> 5] >> (v & 31)) & 1) == 0) return kEgressNone;
  if (is_native) return tagged ? -2 : -1;
  return tagged ? -1 : static_cast<int32_t>(v & 0xfff);
}

uint32_t SwitchFlowHash(const uint8_t* h) {
  uint32_t x = 0x811c9dc5u;
  const bool ipv4 = h[12] == 0x08 && h[13] == 0x00;
  const uint32_t from = ipv4 ? 26 : 0;
  const uint32_t to = ipv4 ? 38 : 12;
  for (uint32_t k = from; k < to; k++) x = (x ^ h[k]) * 16777619u;
  x ^= x >> 16;
  x *= 0x45d9f3bu;
  x ^= x >> 16;
  return x;
}

void SwitchPorts::Set(const SwitchPort& p) {
  SwitchPort* q = Find(p.id);
  if (q == nullptr) {
    list_.push_back(std::make_unique<SwitchPort>());
    q = list_.back().get();
    by_id_[p.id] = q;
  }
  *q = p;
  q->nrx = std::min(q->nrx, kSwitchMaxRx);
  q->lists.assign(static_cast<size_t>(kSwitchMaxRx) * 3 * burst_, 0);
  for (auto& c : q->counts) c[0] = c[1] = c[2] = 0;
  q->touched = false;
}

void SwitchPorts::Remove(int32_t id) {
  by_id_.erase(id);
  list_.erase(std::remove_if(list_.begin(), list_.end(), [id](const std::unique_ptr<SwitchPort>& p) { return p->id == id; }),
              list_.end());
}

SwitchPort* SwitchPorts::Find(int32_t id) {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

uint32_t SwitchPorts::DeliverQueues() const {
  uint32_t n = 0;
  for (const auto& p : list_) {
    if (p->deliver) n += p->nrx;
  }
  return n;
}

void SwitchPorts::Stage(SwitchPort& q, uint32_t i, const uint8_t* heads, const int32_t* vid, const int32_t* tagged) {
  const int32_t op = q.Egress(static_cast<uint32_t>(vid[i]), tagged[i] == 1);
  if (op == kEgressNone || q.nrx == 0) return;  // not its VLAN (not a drop: not its traffic)
  const uint32_t k = q.nrx == 1 ? 0 : SwitchFlowHash(heads + static_cast<size_t>(i) * kSwitchHead) % q.nrx;
  const uint32_t kind = op == -1 ? 0 : op == -2 ? 1 : 2;
  if (kind == 2) q.insert_tci = op;
  uint32_t& c = q.counts[k][kind];
  q.lists[(k * 3 + kind) * burst_ + c++] = static_cast<uint16_t>(i);
  if (!q.touched) {
    q.touched = true;
    touched_.push_back(&q);
  }
}

void SwitchPorts::Forward(const SwitchPort& src, const TxSource& tx, const uint8_t* heads, const int32_t* dest,
                          const int32_t* vid, const int32_t* tagged, uint32_t n, Resolve resolve, uint16_t* left,
                          uint32_t* nleft, SwitchRecord* records, uint32_t max_rec, uint32_t* nrec) {
  *nleft = 0;
  *nrec = 0;
  n = std::min(n, burst_);
  int32_t last_d = kClassifyDrop;
  SwitchPort* last_q = nullptr;
  for (uint32_t i = 0; i < n; i++) {
    const int32_t d = dest[i];
    if (d == kClassifyDrop) continue;
    bool other = false;  // it also goes to a port JavaScript serves
    if (d == kClassifyFlood) {
      for (const auto& q : list_) {
        if (q.get() == &src) continue;
        if (q->deliver) {
          Stage(*q, i, heads, vid, tagged);
        } else {
          other = true;
        }
      }
    } else {
      if (d != last_d) {
        last_q = Find(d);
        last_d = d;
      }
      if (last_q != nullptr && last_q != &src) {
        if (last_q->deliver) {
          Stage(*last_q, i, heads, vid, tagged);
        } else {
          other = true;
        }
      }
    }
    if (other) left[(*nleft)++] = static_cast<uint16_t>(i);
  }
  TxSource s = tx;
  for (SwitchPort* q : touched_) {
    q->touched = false;
    for (uint32_t k = 0; k < q->nrx; k++) {
      uint32_t* counts = q->counts[k];
      if (counts[0] + counts[1] + counts[2] == 0) continue;
      SwitchRecord rec{q->id, k, 0, {}};
      Virtqueue* rq = nullptr;
      const BurstArrays* arrays = nullptr;
      const bool found = resolve(q->rx_slot[k], &rq, &arrays) && rq != nullptr;
      const RxTarget dst{rq, arrays, q->hdr_len, q->mergeable, q->offloads, q->max_frame};
      for (uint32_t kind = 0; kind < 3; kind++) {
        const uint32_t m = counts[kind];
        counts[kind] = 0;
        if (m == 0 || rec.result < 0) continue;  // nothing, or the queue broke on a group before
        if (!found) {
          rec.st.no_buffers += m;  // the queue went away under us: nothing to deliver into
          continue;
        }
        s.vlan = kind == 0 ? -1 : kind == 1 ? -2 : q->insert_tci;
        const int32_t r = NetDeliver(dst, s, q->lists.data() + (static_cast<size_t>(k) * 3 + kind) * burst_, m, &rec.st);
        if (r < 0 || r > rec.result) rec.result = r;
      }
      if (*nrec < max_rec) records[(*nrec)++] = rec;
    }
  }
  touched_.clear();
}

}  // namespace vhostkit
