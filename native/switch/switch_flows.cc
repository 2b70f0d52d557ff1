#include "switch/switch_flows.h"

#include <algorithm>

namespace vhostkit {
namespace {

namespace ff = layout::flow_field;

constexpr uint32_t Bit(uint32_t f) { return 1u << f; }

uint64_t Mac(const uint8_t* p) {
  return (uint64_t{p[0]} << 40) | (uint64_t{p[1]} << 32) | (uint64_t{p[2]} << 24) | (uint64_t{p[3]} << 16) | (uint64_t{p[4]} << 8) | p[5];
}
uint32_t Be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t Be32(const uint8_t* p) { return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3]; }

bool SameMatch(const FlowMatch& a, const FlowMatch& b) {
  return a.fields == b.fields && a.in_port == b.in_port && a.dl_src == b.dl_src && a.dl_dst == b.dl_dst && a.dl_vlan == b.dl_vlan &&
         a.dl_type == b.dl_type && a.nw_src == b.nw_src && a.nw_src_mask == b.nw_src_mask && a.nw_dst == b.nw_dst &&
         a.nw_dst_mask == b.nw_dst_mask && a.nw_proto == b.nw_proto && a.tp_src == b.tp_src && a.tp_dst == b.tp_dst;
}

}  // namespace

FrameKey FlowKey(const uint8_t* h, uint32_t have, int32_t in_port, uint32_t vlan) {
  FrameKey k{};
  k.in_port = in_port;
  k.dl_dst = Mac(h);
  k.dl_src = Mac(h + 6);
  k.dl_vlan = vlan;
  uint32_t l3 = 14;
  k.dl_type = Be16(h + 12);
  if (k.dl_type == 0x8100 && have >= 18) {
    k.dl_type = Be16(h + 16);
    l3 = 18;
  }
  if (k.dl_type != 0x0800 || have < l3 + 20) return k;
  const uint8_t* ip = h + l3;
  const uint32_t ihl = (ip[0] & 0xf) * 4u;
  if ((ip[0] >> 4) != 4 || ihl < 20) return k;
  k.ipv4 = true;
  k.nw_proto = ip[9];
  k.nw_src = Be32(ip + 12);
  k.nw_dst = Be32(ip + 16);
  const bool first_fragment = (Be16(ip + 6) & 0x1fff) == 0;
  if ((k.nw_proto == 6 || k.nw_proto == 17) && first_fragment && have >= l3 + ihl + 4) {
    k.l4 = true;
    k.tp_src = Be16(ip + ihl);
    k.tp_dst = Be16(ip + ihl + 2);
  }
  return k;
}

bool FlowTable::Add(const Flow& f) {
  for (Flow& g : flows_) {
    if (g.priority == f.priority && SameMatch(g.match, f.match)) {
      const double packets = g.packets;
      const double bytes = g.bytes;
      g = f;
      g.packets = packets;
      g.bytes = bytes;
      indexed_ = false;
      return true;
    }
  }
  if (flows_.size() >= kMaxFlows) return false;
  const auto at = std::find_if(flows_.begin(), flows_.end(), [&](const Flow& g) { return g.priority < f.priority; });
  flows_.insert(at, f);
  indexed_ = false;
  return true;
}

uint32_t FlowTable::Remove(const FlowMatch& m, int32_t priority, bool strict) {
  const size_t before = flows_.size();
  flows_.erase(std::remove_if(flows_.begin(), flows_.end(),
                              [&](const Flow& g) {
                                if (strict) return g.priority == priority && SameMatch(g.match, m);
                                // Not strict: every flow whose match has at least m's fields with m's values.
                                if ((g.match.fields & m.fields) != m.fields) return false;
                                FlowMatch masked = g.match;
                                masked.fields = m.fields;
                                FlowMatch want = m;
                                auto keep = [&]<typename T>(uint32_t f, T FlowMatch::*field) {
                                  if ((m.fields & Bit(f)) == 0) masked.*field = want.*field = {};
                                };
                                keep(ff::IN_PORT, &FlowMatch::in_port);
                                keep(ff::DL_SRC, &FlowMatch::dl_src);
                                keep(ff::DL_DST, &FlowMatch::dl_dst);
                                keep(ff::DL_VLAN, &FlowMatch::dl_vlan);
                                keep(ff::DL_TYPE, &FlowMatch::dl_type);
                                keep(ff::NW_SRC, &FlowMatch::nw_src);
                                keep(ff::NW_SRC, &FlowMatch::nw_src_mask);
                                keep(ff::NW_DST, &FlowMatch::nw_dst);
                                keep(ff::NW_DST, &FlowMatch::nw_dst_mask);
                                keep(ff::NW_PROTO, &FlowMatch::nw_proto);
                                keep(ff::TP_SRC, &FlowMatch::tp_src);
                                keep(ff::TP_DST, &FlowMatch::tp_dst);
                                return SameMatch(masked, want);
                              }),
               flows_.end());
  indexed_ = false;
  return static_cast<uint32_t>(before - flows_.size());
}

bool FlowMatches(const FlowMatch& m, const FrameKey& k) {
  {
    const uint32_t s = m.fields;
    if ((s & Bit(ff::IN_PORT)) && m.in_port != k.in_port) return false;
    if ((s & Bit(ff::DL_SRC)) && m.dl_src != k.dl_src) return false;
    if ((s & Bit(ff::DL_DST)) && m.dl_dst != k.dl_dst) return false;
    if ((s & Bit(ff::DL_VLAN)) && m.dl_vlan != k.dl_vlan) return false;
    if ((s & Bit(ff::DL_TYPE)) && m.dl_type != k.dl_type) return false;
    const uint32_t l3 = Bit(ff::NW_SRC) | Bit(ff::NW_DST) | Bit(ff::NW_PROTO);
    if ((s & l3) && !k.ipv4) return false;
    if ((s & Bit(ff::NW_SRC)) && (k.nw_src & m.nw_src_mask) != m.nw_src) return false;
    if ((s & Bit(ff::NW_DST)) && (k.nw_dst & m.nw_dst_mask) != m.nw_dst) return false;
    if ((s & Bit(ff::NW_PROTO)) && m.nw_proto != k.nw_proto) return false;
    const uint32_t l4 = Bit(ff::TP_SRC) | Bit(ff::TP_DST);
    if ((s & l4) && !k.l4) return false;
    if ((s & Bit(ff::TP_SRC)) && m.tp_src != k.tp_src) return false;
    if ((s & Bit(ff::TP_DST)) && m.tp_dst != k.tp_dst) return false;
    return true;
  }
}

namespace {

// The values of m's fields, the others 0 (the key a subtable hashes).
FlowMatch Masked(const FrameKey& k, uint32_t fields, uint32_t src_mask, uint32_t dst_mask) {
  FlowMatch v;
  v.fields = fields;
  if (fields & Bit(ff::IN_PORT)) v.in_port = k.in_port;
  if (fields & Bit(ff::DL_SRC)) v.dl_src = k.dl_src;
  if (fields & Bit(ff::DL_DST)) v.dl_dst = k.dl_dst;
  if (fields & Bit(ff::DL_VLAN)) v.dl_vlan = k.dl_vlan;
  if (fields & Bit(ff::DL_TYPE)) v.dl_type = k.dl_type;
  if (fields & Bit(ff::NW_SRC)) v.nw_src = k.nw_src & src_mask, v.nw_src_mask = src_mask;
  if (fields & Bit(ff::NW_DST)) v.nw_dst = k.nw_dst & dst_mask, v.nw_dst_mask = dst_mask;
  if (fields & Bit(ff::NW_PROTO)) v.nw_proto = k.nw_proto;
  if (fields & Bit(ff::TP_SRC)) v.tp_src = k.tp_src;
  if (fields & Bit(ff::TP_DST)) v.tp_dst = k.tp_dst;
  return v;
}

// m with the fields it does not match zeroed: what a frame's Masked() key equals when m matches.
FlowMatch Normalized(const FlowMatch& m) {
  FlowMatch v;
  v.fields = m.fields;
  if (m.fields & Bit(ff::IN_PORT)) v.in_port = m.in_port;
  if (m.fields & Bit(ff::DL_SRC)) v.dl_src = m.dl_src;
  if (m.fields & Bit(ff::DL_DST)) v.dl_dst = m.dl_dst;
  if (m.fields & Bit(ff::DL_VLAN)) v.dl_vlan = m.dl_vlan;
  if (m.fields & Bit(ff::DL_TYPE)) v.dl_type = m.dl_type;
  if (m.fields & Bit(ff::NW_SRC)) v.nw_src = m.nw_src & m.nw_src_mask, v.nw_src_mask = m.nw_src_mask;
  if (m.fields & Bit(ff::NW_DST)) v.nw_dst = m.nw_dst & m.nw_dst_mask, v.nw_dst_mask = m.nw_dst_mask;
  if (m.fields & Bit(ff::NW_PROTO)) v.nw_proto = m.nw_proto;
  if (m.fields & Bit(ff::TP_SRC)) v.tp_src = m.tp_src;
  if (m.fields & Bit(ff::TP_DST)) v.tp_dst = m.tp_dst;
  return v;
}

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

}  // namespace

uint64_t FlowTable::Hash(const FlowMatch& m) {
  uint64_t h = m.fields;
  h = Mix(h, static_cast<uint32_t>(m.in_port));
  h = Mix(h, m.dl_src);
  h = Mix(h, m.dl_dst);
  h = Mix(h, (uint64_t{m.dl_vlan} << 16) | m.dl_type);
  h = Mix(h, (uint64_t{m.nw_src} << 32) | m.nw_dst);
  h = Mix(h, (uint64_t{m.nw_proto} << 32) | (uint64_t{m.tp_src} << 16) | m.tp_dst);
  // murmur3's finalizer: every bit reaches the low bits the hash map uses
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

void FlowTable::Index() {
  subtables_.clear();
  for (uint32_t i = 0; i < flows_.size(); i++) {
    const FlowMatch& m = flows_[i].match;
    const uint32_t sm = (m.fields & Bit(ff::NW_SRC)) ? m.nw_src_mask : 0;
    const uint32_t dm = (m.fields & Bit(ff::NW_DST)) ? m.nw_dst_mask : 0;
    auto st = std::find_if(subtables_.begin(), subtables_.end(),
                           [&](const Subtable& t) { return t.fields == m.fields && t.nw_src_mask == sm && t.nw_dst_mask == dm; });
    if (st == subtables_.end()) {
      subtables_.push_back(Subtable{m.fields, sm, dm, flows_[i].priority, {}});
      st = subtables_.end() - 1;
    }
    // flows_ is by priority: the first flow of a subtable has its highest priority.
    st->buckets[Hash(Normalized(m))].push_back(i);
  }
  std::stable_sort(subtables_.begin(), subtables_.end(), [](const Subtable& a, const Subtable& b) { return a.max_priority > b.max_priority; });
  indexed_ = true;
}

Flow* FlowTable::Lookup(const FrameKey& k) {
  if (!indexed_) Index();
  constexpr uint32_t kL3 = Bit(ff::NW_SRC) | Bit(ff::NW_DST) | Bit(ff::NW_PROTO);
  constexpr uint32_t kL4 = Bit(ff::TP_SRC) | Bit(ff::TP_DST);
  int64_t best = -1;  // an index of flows_: lower is better (higher priority, or added first)
  for (const Subtable& st : subtables_) {
    if (best >= 0 && flows_[static_cast<size_t>(best)].priority > st.max_priority) break;
    if (((st.fields & kL3) && !k.ipv4) || ((st.fields & kL4) && !k.l4)) continue;
    const auto b = st.buckets.find(Hash(Masked(k, st.fields, st.nw_src_mask, st.nw_dst_mask)));
    if (b == st.buckets.end()) continue;
    for (uint32_t i : b->second) {
      if (best >= 0 && static_cast<int64_t>(i) > best) break;
      if (FlowMatches(flows_[i].match, k)) {
        best = i;
        break;
      }
    }
  }
  return best >= 0 ? &flows_[static_cast<size_t>(best)] : nullptr;
}

}  // namespace vhostkit
