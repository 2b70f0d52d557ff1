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
Ip6 Ip6At(const uint8_t* p) {
  Ip6 a;
  a.hi = (uint64_t{Be32(p)} << 32) | Be32(p + 4);
  a.lo = (uint64_t{Be32(p + 8)} << 32) | Be32(p + 12);
  return a;
}

bool SameMatch(const FlowMatch& a, const FlowMatch& b) {
  return a.fields == b.fields && a.in_port == b.in_port && a.dl_src == b.dl_src && a.dl_dst == b.dl_dst && a.dl_vlan == b.dl_vlan &&
         a.dl_type == b.dl_type && a.nw_src == b.nw_src && a.nw_src_mask == b.nw_src_mask && a.nw_dst == b.nw_dst &&
         a.nw_dst_mask == b.nw_dst_mask && a.nw_proto == b.nw_proto && a.nw_ttl == b.nw_ttl && a.tp_src == b.tp_src &&
         a.tp_dst == b.tp_dst && a.tcp_flags == b.tcp_flags && a.tcp_flags_mask == b.tcp_flags_mask && a.ipv6_src == b.ipv6_src &&
         a.ipv6_src_len == b.ipv6_src_len && a.ipv6_dst == b.ipv6_dst && a.ipv6_dst_len == b.ipv6_dst_len;
}

}  // namespace

uint32_t PackFrame(const uint8_t* h, uint32_t have, int32_t in_port, uint32_t vlan, PackedKey* out) {
  uint32_t l3 = 14;
  uint32_t type = Be16(h + 12);
  if (type == 0x8100 && have >= 18) {
    type = Be16(h + 16);
    l3 = 18;
  }
  PackedKey& p = *out;
  p.w[0] = static_cast<uint32_t>(in_port) | (uint64_t{type} << 32) | (uint64_t{vlan & 0xffff} << 48);
  p.w[1] = Mac(h + 6);
  p.w[2] = Mac(h);
  for (uint32_t i = 3; i < PackedKey::kWords; i++) p.w[i] = 0;
  uint32_t layers = 0, proto = 0, ttl = 0, tp_src = 0, tp_dst = 0, flags = 0;
  const uint8_t* ip = h + l3;
  if (type == 0x86dd && have >= l3 + 40 && (ip[0] >> 4) == 6) {
    layers = kLayerIpv6;
    proto = ip[6];
    ttl = ip[7];
    const Ip6 src = Ip6At(ip + 8), dst = Ip6At(ip + 24);
    p.w[5] = src.hi;
    p.w[6] = src.lo;
    p.w[7] = dst.hi;
    p.w[8] = dst.lo;
    const uint32_t l4 = l3 + 40;
    if ((proto == 6 || proto == 17) && have >= l4 + 4) {
      layers |= kLayerL4;
      tp_src = Be16(ip + 40);
      tp_dst = Be16(ip + 42);
    } else if (proto == 58 && have >= l4 + 2) {
      // ICMPv6 type and code in the ports' places, as Open vSwitch keeps them.
      layers |= kLayerL4;
      tp_src = ip[40];
      tp_dst = ip[41];
    }
    if (proto == 6 && have >= l4 + 14) {
      layers |= kLayerTcp;
      flags = Be16(ip + 52) & 0x0fff;
    }
  } else if (type == 0x0800 && have >= l3 + 20 && (ip[0] >> 4) == 4 && (ip[0] & 0xf) >= 5) {
    const uint32_t ihl = (ip[0] & 0xf) * 4u;
    layers = kLayerIpv4;
    proto = ip[9];
    ttl = ip[8];
    p.w[3] = (uint64_t{Be32(ip + 12)} << 32) | Be32(ip + 16);
    const bool first_fragment = (Be16(ip + 6) & 0x1fff) == 0;
    if ((proto == 6 || proto == 17) && first_fragment && have >= l3 + ihl + 4) {
      layers |= kLayerL4;
      tp_src = Be16(ip + ihl);
      tp_dst = Be16(ip + ihl + 2);
    } else if (proto == 1 && first_fragment && have >= l3 + ihl + 2) {
      layers |= kLayerL4;  // ICMP type and code, as for ICMPv6
      tp_src = ip[ihl];
      tp_dst = ip[ihl + 1];
    }
    if (proto == 6 && first_fragment && have >= l3 + ihl + 14) {
      layers |= kLayerTcp;
      flags = Be16(ip + ihl + 12) & 0x0fff;
    }
  } else if (type == 0x0806 && have >= l3 + 28 && Be16(ip) == 1 && Be16(ip + 2) == 0x0800 && ip[4] == 6 && ip[5] == 4) {
    // Ethernet/IPv4 ARP, as Open vSwitch keeps it: the sender's and target's IPv4 addresses
    // in nw_src and nw_dst, the opcode (up to 255) in nw_proto.
    layers = kLayerArp;
    const uint32_t op = Be16(ip + 6);
    proto = op <= 0xff ? op : 0;
    p.w[3] = (uint64_t{Be32(ip + 14)} << 32) | Be32(ip + 24);
  }
  p.w[4] = proto | (ttl << 8) | (uint64_t{tp_src} << 16) | (uint64_t{tp_dst} << 32) | (uint64_t{flags} << 48);
  return layers;
}

FrameKey FlowKey(const uint8_t* h, uint32_t have, int32_t in_port, uint32_t vlan) {
  PackedKey p;
  const uint32_t layers = PackFrame(h, have, in_port, vlan, &p);
  FrameKey k{};
  k.in_port = static_cast<int32_t>(p.w[0] & 0xffffffff);
  k.dl_type = static_cast<uint32_t>((p.w[0] >> 32) & 0xffff);
  k.dl_vlan = vlan;
  k.dl_src = p.w[1];
  k.dl_dst = p.w[2];
  k.ipv4 = layers & kLayerIpv4;
  k.ipv6 = layers & kLayerIpv6;
  k.arp = layers & kLayerArp;
  k.l4 = layers & kLayerL4;
  k.tcp = layers & kLayerTcp;
  k.nw_src = static_cast<uint32_t>(p.w[3] >> 32);
  k.nw_dst = static_cast<uint32_t>(p.w[3]);
  k.nw_proto = p.w[4] & 0xff;
  k.nw_ttl = (p.w[4] >> 8) & 0xff;
  k.tp_src = (p.w[4] >> 16) & 0xffff;
  k.tp_dst = (p.w[4] >> 32) & 0xffff;
  k.tcp_flags = (p.w[4] >> 48) & 0xfff;
  k.ipv6_src = Ip6{p.w[5], p.w[6]};
  k.ipv6_dst = Ip6{p.w[7], p.w[8]};
  return k;
}

const char* ReadFlowActions(const int32_t* w, uint32_t n, FlowActions* out) {
  namespace fa = layout::flow_action;
  namespace op = layout::flow_op;
  if (n > kMaxFlowActions) return "flow: more than 64 actions";
  FlowActions a;
  bool output = false;
  for (uint32_t i = 0; i < n; i++) {
    const int32_t* x = w + static_cast<size_t>(i) * fa::kWords;
    const int32_t code = x[fa::OP];
    const int32_t arg = x[fa::A];
    const bool edit = code >= static_cast<int32_t>(op::STRIP_VLAN);
    if (edit && output) return "flow: an edit after an output (edits come first and apply to every output)";
    auto u16 = [&](uint32_t max) { return arg >= 0 && static_cast<uint32_t>(arg) <= max; };
    FrameEdit& e = a.edit;
    switch (code) {
      case op::OUTPUT:
        if (arg < 0) return "flow: output needs a port";
        a.ports.push_back(arg);
        break;
      case op::FLOOD:
        a.flood = true;
        break;
      case op::NORMAL:
        a.normal = true;
        break;
      case op::HANDLER:
        if (arg < 0) return "flow: handler needs an id";
        a.handlers.push_back(arg);
        break;
      case op::STRIP_VLAN:
        e.set |= FrameEdit::kStripVlan;
        break;
      case op::SET_VLAN_VID:
        if (!u16(4095)) return "flow: mod_vlan_vid needs a VLAN id 0..4095";
        e.set |= FrameEdit::kVlanVid;
        e.vid = static_cast<uint16_t>(arg);
        break;
      case op::SET_VLAN_PCP:
        if (!u16(7)) return "flow: mod_vlan_pcp needs a priority 0..7";
        e.set |= FrameEdit::kVlanPcp;
        e.pcp = static_cast<uint16_t>(arg);
        break;
      case op::SET_DL_SRC:
      case op::SET_DL_DST: {
        const uint64_t mac = (uint64_t{static_cast<uint32_t>(arg) & 0xffff} << 32) | static_cast<uint32_t>(x[fa::B]);
        e.set |= code == op::SET_DL_SRC ? FrameEdit::kDlSrc : FrameEdit::kDlDst;
        (code == op::SET_DL_SRC ? e.dl_src : e.dl_dst) = mac;
        break;
      }
      case op::SET_NW_SRC:
        e.set |= FrameEdit::kNwSrc;
        e.nw_src = static_cast<uint32_t>(arg);
        break;
      case op::SET_NW_DST:
        e.set |= FrameEdit::kNwDst;
        e.nw_dst = static_cast<uint32_t>(arg);
        break;
      case op::SET_IPV6_SRC:
      case op::SET_IPV6_DST: {
        uint8_t* to = code == op::SET_IPV6_SRC ? e.ip6_src : e.ip6_dst;
        for (uint32_t k = 0; k < 4; k++) {
          const uint32_t v = static_cast<uint32_t>(x[fa::A + k]);
          for (uint32_t b = 0; b < 4; b++) to[4 * k + b] = static_cast<uint8_t>(v >> (24 - 8 * b));
        }
        e.set |= code == op::SET_IPV6_SRC ? FrameEdit::kIp6Src : FrameEdit::kIp6Dst;
        break;
      }
      case op::SET_TP_SRC:
      case op::SET_TP_DST:
        if (!u16(65535)) return "flow: mod_tp_src / mod_tp_dst need a port 0..65535";
        e.set |= code == op::SET_TP_SRC ? FrameEdit::kTpSrc : FrameEdit::kTpDst;
        (code == op::SET_TP_SRC ? e.tp_src : e.tp_dst) = static_cast<uint16_t>(arg);
        break;
      case op::DEC_TTL:
        e.set |= FrameEdit::kDecTtl;
        break;
      default:
        return "flow: unknown action";
    }
    output = output || !edit;
  }
  // normal switches by the frame's VLAN: after strip_vlan alone it has none.
  if (a.normal && (a.edit.set & FrameEdit::kVlanEdits) == FrameEdit::kStripVlan) return "flow: normal after strip_vlan (the frame has no VLAN)";
  *out = std::move(a);
  return nullptr;
}

namespace {

// Whether g has at least m's fields, with m's values (and masks) in them: the flows a
// del-flows of m that is not strict removes.
bool Covers(const FlowMatch& m, const FlowMatch& g) {
  if ((g.fields & m.fields) != m.fields) return false;
  FlowMatch masked = g;
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
  keep(ff::NW_TTL, &FlowMatch::nw_ttl);
  keep(ff::TP_SRC, &FlowMatch::tp_src);
  keep(ff::TP_DST, &FlowMatch::tp_dst);
  keep(ff::TCP_FLAGS, &FlowMatch::tcp_flags);
  keep(ff::TCP_FLAGS, &FlowMatch::tcp_flags_mask);
  keep(ff::IPV6_SRC, &FlowMatch::ipv6_src);
  keep(ff::IPV6_SRC, &FlowMatch::ipv6_src_len);
  keep(ff::IPV6_DST, &FlowMatch::ipv6_dst);
  keep(ff::IPV6_DST, &FlowMatch::ipv6_dst_len);
  return SameMatch(masked, want);
}

int32_t OutOf(const FlowActions& a) {
  if (a.Drops()) return kFlowOutDrop;
  if (!a.Simple()) return kFlowOutActions;
  if (a.flood) return kFlowOutFlood;
  if (a.normal) return kFlowOutNormal;
  return a.ports[0];
}

}  // namespace

namespace {

constexpr uint32_t kV4 = Bit(ff::NW_SRC) | Bit(ff::NW_DST);
constexpr uint32_t kV6 = Bit(ff::IPV6_SRC) | Bit(ff::IPV6_DST);
constexpr uint32_t kIp = Bit(ff::NW_PROTO) | Bit(ff::NW_TTL);
constexpr uint32_t kL4 = Bit(ff::TP_SRC) | Bit(ff::TP_DST);

// The masks of a subtable: flows of the same fields and masks share one.
struct Masks {
  uint32_t src = 0, dst = 0, flags = 0, src6 = 0, dst6 = 0;
};
Masks MasksOf(const FlowMatch& m) {
  Masks x;
  if (m.fields & Bit(ff::NW_SRC)) x.src = m.nw_src_mask;
  if (m.fields & Bit(ff::NW_DST)) x.dst = m.nw_dst_mask;
  if (m.fields & Bit(ff::TCP_FLAGS)) x.flags = m.tcp_flags_mask;
  if (m.fields & Bit(ff::IPV6_SRC)) x.src6 = m.ipv6_src_len;
  if (m.fields & Bit(ff::IPV6_DST)) x.dst6 = m.ipv6_dst_len;
  return x;
}

// The fields of k a flow of these fields and masks compares, the others 0: equal for a
// frame and a flow exactly when the flow matches the frame (given the frame has the
// layers the fields need). The key a subtable hashes.
FlowMatch Masked(const FrameKey& k, uint32_t fields, const Masks& x) {
  const uint32_t src_mask = x.src, dst_mask = x.dst, flags_mask = x.flags;
  FlowMatch v;
  v.fields = fields;
  if (fields & Bit(ff::IPV6_SRC)) v.ipv6_src = k.ipv6_src.Prefix(x.src6), v.ipv6_src_len = x.src6;
  if (fields & Bit(ff::IPV6_DST)) v.ipv6_dst = k.ipv6_dst.Prefix(x.dst6), v.ipv6_dst_len = x.dst6;
  if (fields & Bit(ff::IN_PORT)) v.in_port = k.in_port;
  if (fields & Bit(ff::DL_SRC)) v.dl_src = k.dl_src;
  if (fields & Bit(ff::DL_DST)) v.dl_dst = k.dl_dst;
  if (fields & Bit(ff::DL_VLAN)) v.dl_vlan = k.dl_vlan;
  if (fields & Bit(ff::DL_TYPE)) v.dl_type = k.dl_type;
  if (fields & Bit(ff::NW_SRC)) v.nw_src = k.nw_src & src_mask, v.nw_src_mask = src_mask;
  if (fields & Bit(ff::NW_DST)) v.nw_dst = k.nw_dst & dst_mask, v.nw_dst_mask = dst_mask;
  if (fields & Bit(ff::NW_PROTO)) v.nw_proto = k.nw_proto;
  if (fields & Bit(ff::NW_TTL)) v.nw_ttl = k.nw_ttl;
  if (fields & Bit(ff::TP_SRC)) v.tp_src = k.tp_src;
  if (fields & Bit(ff::TP_DST)) v.tp_dst = k.tp_dst;
  if (fields & Bit(ff::TCP_FLAGS)) v.tcp_flags = k.tcp_flags & flags_mask, v.tcp_flags_mask = flags_mask;
  return v;
}

// A frame with m's values: Masked(ValuesOf(m), m's fields and masks) is m's own key.
FrameKey ValuesOf(const FlowMatch& m) {
  FrameKey k{};
  k.in_port = m.in_port;
  k.dl_src = m.dl_src;
  k.dl_dst = m.dl_dst;
  k.dl_vlan = m.dl_vlan;
  k.dl_type = m.dl_type;
  k.nw_src = m.nw_src;
  k.nw_dst = m.nw_dst;
  k.nw_proto = m.nw_proto;
  k.nw_ttl = m.nw_ttl;
  k.tp_src = m.tp_src;
  k.tp_dst = m.tp_dst;
  k.tcp_flags = m.tcp_flags;
  k.ipv6_src = m.ipv6_src;
  k.ipv6_dst = m.ipv6_dst;
  return k;
}

FlowMatch Normalized(const FlowMatch& m) { return Masked(ValuesOf(m), m.fields, MasksOf(m)); }

// The layers a flow of these fields needs: all of need, and at least one of any (if not 0).
// NW_SRC/NW_DST are IPv4's or ARP's addresses, NW_PROTO IPv4's or IPv6's protocol or
// ARP's opcode; a frame has one of the three, so the sets of several fields intersect.
void NeedOf(uint32_t fields, uint32_t* need, uint32_t* any) {
  constexpr uint32_t kNone = kLayerIpv4 | kLayerIpv6 | kLayerArp;
  uint32_t a = kNone;
  if (fields & kV4) a &= kLayerIpv4 | kLayerArp;
  if (fields & kV6) a &= kLayerIpv6;
  if (fields & kIp) a &= kLayerIpv4 | kLayerIpv6 | kLayerArp;
  *need = ((fields & kL4) ? kLayerL4 : 0) | ((fields & Bit(ff::TCP_FLAGS)) ? kLayerTcp : 0);
  // No constraint; or one no frame meets (IPv4 and IPv6 fields at once: a layer no frame has).
  *any = a == kNone ? 0 : a == 0 ? kLayerNever : a;
}

bool HasLayers(uint32_t fields, const FrameKey& k) {
  uint32_t need = 0, any = 0;
  NeedOf(fields, &need, &any);
  const uint32_t layers = (k.ipv4 ? kLayerIpv4 : 0) | (k.ipv6 ? kLayerIpv6 : 0) | (k.arp ? kLayerArp : 0) | (k.l4 ? kLayerL4 : 0) | (k.tcp ? kLayerTcp : 0);
  return (layers & need) == need && (any == 0 || (layers & any) != 0);
}

}  // namespace

bool FlowMatches(const FlowMatch& m, const FrameKey& k) {
  if (!HasLayers(m.fields, k)) return false;
  return SameMatch(Masked(k, m.fields, MasksOf(m)), Normalized(m));
}

PackedKey FlowTable::Pack(const FrameKey& k) {
  PackedKey p;
  p.w[0] = static_cast<uint32_t>(k.in_port) | (uint64_t{k.dl_type & 0xffff} << 32) | (uint64_t{k.dl_vlan & 0xffff} << 48);
  p.w[1] = k.dl_src;
  p.w[2] = k.dl_dst;
  p.w[3] = (uint64_t{k.nw_src} << 32) | k.nw_dst;
  p.w[4] = (k.nw_proto & 0xff) | ((k.nw_ttl & 0xff) << 8) | (uint64_t{k.tp_src & 0xffff} << 16) | (uint64_t{k.tp_dst & 0xffff} << 32) |
           (uint64_t{k.tcp_flags & 0xfff} << 48);
  p.w[5] = k.ipv6_src.hi;
  p.w[6] = k.ipv6_src.lo;
  p.w[7] = k.ipv6_dst.hi;
  p.w[8] = k.ipv6_dst.lo;
  return p;
}

PackedKey FlowTable::MaskOf(uint32_t fields, uint32_t src_mask, uint32_t dst_mask, uint32_t flags_mask, uint32_t src6, uint32_t dst6) {
  PackedKey m{};
  auto on = [&](uint32_t f) { return (fields & Bit(f)) != 0; };
  if (on(ff::IN_PORT)) m.w[0] |= 0xffffffffULL;
  if (on(ff::DL_TYPE)) m.w[0] |= 0xffffULL << 32;
  if (on(ff::DL_VLAN)) m.w[0] |= 0xffffULL << 48;
  if (on(ff::DL_SRC)) m.w[1] = 0xffffffffffffULL;
  if (on(ff::DL_DST)) m.w[2] = 0xffffffffffffULL;
  if (on(ff::NW_SRC)) m.w[3] |= uint64_t{src_mask} << 32;
  if (on(ff::NW_DST)) m.w[3] |= dst_mask;
  if (on(ff::NW_PROTO)) m.w[4] |= 0xff;
  if (on(ff::NW_TTL)) m.w[4] |= 0xff00;
  if (on(ff::TP_SRC)) m.w[4] |= 0xffffULL << 16;
  if (on(ff::TP_DST)) m.w[4] |= 0xffffULL << 32;
  if (on(ff::TCP_FLAGS)) m.w[4] |= uint64_t{flags_mask & 0xfff} << 48;
  const Ip6 ones{~uint64_t{0}, ~uint64_t{0}};
  if (on(ff::IPV6_SRC)) m.w[5] = ones.Prefix(src6).hi, m.w[6] = ones.Prefix(src6).lo;
  if (on(ff::IPV6_DST)) m.w[7] = ones.Prefix(dst6).hi, m.w[8] = ones.Prefix(dst6).lo;
  return m;
}

uint64_t FlowTable::KeyOf(const PackedKey& all, const Subtable& st, uint64_t* key) {
  // Each word multiplied on its own (the products do not wait on each other), then mixed.
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ st.fields;
  for (uint32_t j = 0; j < st.nwords; j++) {
    const uint32_t i = st.words[j];
    key[j] = all.w[i] & st.mask.w[i];
    h ^= ((key[j] ^ (0x632be59bd9b4e019ULL * (i + 1))) * 0xbf58476d1ce4e5b9ULL) >> (i & 7);
    h = (h << 27) | (h >> 37);
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

int32_t FlowTable::SubtableOf(const FlowMatch& m, bool create) {
  const Masks x = MasksOf(m);
  for (size_t t = 0; t < subtables_.size(); t++) {
    const Subtable& st = subtables_[t];
    if (st.fields == m.fields && st.nw_src_mask == x.src && st.nw_dst_mask == x.dst && st.tcp_flags_mask == x.flags && st.ipv6_src_len == x.src6 &&
        st.ipv6_dst_len == x.dst6) {
      return static_cast<int32_t>(t);
    }
  }
  if (!create) return -1;
  Subtable t{};
  t.fields = m.fields;
  t.nw_src_mask = x.src;
  t.nw_dst_mask = x.dst;
  t.tcp_flags_mask = x.flags;
  t.ipv6_src_len = x.src6;
  t.ipv6_dst_len = x.dst6;
  t.mask = MaskOf(m.fields, x.src, x.dst, x.flags, x.src6, x.dst6);
  for (uint32_t w = 0; w < PackedKey::kWords; w++) {
    if (t.mask.w[w] != 0) t.words[t.nwords++] = static_cast<uint8_t>(w);
  }
  NeedOf(m.fields, &t.need, &t.any);
  t.stride = 2 + t.nwords;
  t.cap_mask = 15;
  t.slots.assign(16 * size_t{t.stride}, 0);
  subtables_.push_back(std::move(t));
  return static_cast<int32_t>(subtables_.size() - 1);
}

int64_t FlowTable::Find(const Subtable& st, const uint64_t* key, uint64_t h, int32_t priority) const {
  for (uint64_t s = h & st.cap_mask;; s = (s + 1) & st.cap_mask) {
    const uint64_t* e = &st.slots[s * st.stride];
    if (e[1] == 0) return -1;
    if (e[0] != h || hot_[e[1] - 1].priority != priority) continue;
    bool same = true;
    for (uint32_t w = 0; w < st.nwords; w++) same &= e[2 + w] == key[w];
    if (same) return static_cast<int64_t>(s);
  }
}

void FlowTable::Insert(Subtable& st, uint32_t handle, const uint64_t* key, uint64_t h) {
  if (2 * (size_t{st.count} + 1) > st.cap_mask + 1) {
    // Twice the slots, every flow placed again by its hash.
    std::vector<uint64_t> old = std::move(st.slots);
    const uint64_t cap = 2 * (st.cap_mask + 1);
    st.cap_mask = cap - 1;
    st.slots.assign(cap * st.stride, 0);
    for (size_t at = 0; at < old.size(); at += st.stride) {
      if (old[at + 1] == 0) continue;
      uint64_t s = old[at] & st.cap_mask;
      while (st.slots[s * st.stride + 1] != 0) s = (s + 1) & st.cap_mask;
      std::copy(old.begin() + static_cast<ptrdiff_t>(at), old.begin() + static_cast<ptrdiff_t>(at + st.stride), st.slots.begin() + static_cast<ptrdiff_t>(s * st.stride));
    }
  }
  uint64_t s = h & st.cap_mask;
  while (st.slots[s * st.stride + 1] != 0) s = (s + 1) & st.cap_mask;
  uint64_t* e = &st.slots[s * st.stride];
  e[0] = h;
  e[1] = uint64_t{handle} + 1;
  for (uint32_t w = 0; w < st.nwords; w++) e[2 + w] = key[w];
  st.count++;
}

void FlowTable::Erase(Subtable& st, uint64_t slot) {
  // Backward shift: the flows after the freed slot in its run move back into it where their
  // own hash allows, so that no probe meets a hole before the flow it looks for.
  uint64_t i = slot;
  for (uint64_t j = (i + 1) & st.cap_mask;; j = (j + 1) & st.cap_mask) {
    uint64_t* ej = &st.slots[j * st.stride];
    if (ej[1] == 0) break;
    const uint64_t home = ej[0] & st.cap_mask;
    // ej stays if its home lies cyclically in (i, j].
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    std::copy(ej, ej + st.stride, &st.slots[i * st.stride]);
    i = j;
  }
  std::fill_n(&st.slots[i * st.stride], st.stride, 0);
  st.count--;
}

void FlowTable::Reorder() {
  order_.clear();
  for (uint32_t t = 0; t < subtables_.size(); t++) {
    if (subtables_[t].count > 0) order_.push_back(t);
  }
  std::stable_sort(order_.begin(), order_.end(), [&](uint32_t a, uint32_t b) { return subtables_[a].max_priority > subtables_[b].max_priority; });
}

bool FlowTable::Add(const Flow& f, int64_t now) {
  const bool timed = f.idle_timeout != 0 || f.hard_timeout != 0;
  const auto t = static_cast<uint32_t>(SubtableOf(f.match, true));
  uint64_t key[PackedKey::kWords];
  const uint64_t h = KeyOf(Pack(ValuesOf(f.match)), subtables_[t], key);
  const int64_t at = Find(subtables_[t], key, h, f.priority);
  if (at >= 0) {
    const auto handle = static_cast<uint32_t>(subtables_[t].slots[static_cast<uint64_t>(at) * subtables_[t].stride + 1] - 1);
    timed_ -= pool_[handle].idle_timeout != 0 || pool_[handle].hard_timeout != 0;
    timed_ += timed;
    pool_[handle] = f;
    pool_[handle].added_ms = now;
    hot_[handle].out = OutOf(f.actions);  // the counters stay
    hot_[handle].used_ms = now;
    return true;
  }
  if (live_count_ >= kMaxFlows) return false;
  uint32_t handle;
  if (free_.empty()) {
    handle = static_cast<uint32_t>(pool_.size());
    pool_.emplace_back();
    hot_.emplace_back();
    live_.push_back(0);
    sub_.push_back(0);
  } else {
    handle = free_.back();
    free_.pop_back();
  }
  pool_[handle] = f;
  pool_[handle].added_ms = now;
  FlowHot& hot = hot_[handle];
  hot = FlowHot{};
  hot.priority = f.priority;
  hot.out = OutOf(f.actions);
  hot.used_ms = now;
  hot.seq = next_seq_++;
  live_[handle] = 1;
  sub_[handle] = t;
  live_count_++;
  timed_ += timed;
  Subtable& st = subtables_[t];
  Insert(st, handle, key, h);
  if (st.count == 1 || f.priority > st.max_priority) {
    st.max_priority = st.count == 1 ? f.priority : std::max(st.max_priority, f.priority);
    Reorder();
  }
  return true;
}

void FlowTable::RemoveHandle(uint32_t handle) {
  Subtable& st = subtables_[sub_[handle]];
  uint64_t key[PackedKey::kWords];
  const uint64_t h = KeyOf(Pack(ValuesOf(pool_[handle].match)), st, key);
  // Its slot lies in the run from its hash's home (at most every slot: never an endless loop).
  uint64_t s = h & st.cap_mask;
  for (uint64_t k = 0; k <= st.cap_mask; k++, s = (s + 1) & st.cap_mask) {
    if (st.slots[s * st.stride + 1] == uint64_t{handle} + 1) {
      Erase(st, s);
      break;
    }
  }
  if (st.count == 0) Reorder();
  timed_ -= pool_[handle].idle_timeout != 0 || pool_[handle].hard_timeout != 0;
  pool_[handle] = Flow{};  // its actions' memory back
  live_[handle] = 0;
  free_.push_back(handle);
  live_count_--;
}

uint32_t FlowTable::Remove(const FlowMatch& m, int32_t priority, bool strict) {
  if (strict) {
    // The one flow of this match and priority: found by its key.
    const int32_t t = SubtableOf(m, false);
    if (t < 0) return 0;
    const Subtable& st = subtables_[static_cast<size_t>(t)];
    uint64_t key[PackedKey::kWords];
    const uint64_t h = KeyOf(Pack(ValuesOf(m)), st, key);
    const int64_t at = Find(st, key, h, priority);
    if (at < 0) return 0;
    RemoveHandle(static_cast<uint32_t>(st.slots[static_cast<uint64_t>(at) * st.stride + 1] - 1));
    return 1;
  }
  uint32_t n = 0;
  for (uint32_t handle = 0; handle < pool_.size(); handle++) {
    if (!live_[handle] || !Covers(m, pool_[handle].match)) continue;
    RemoveHandle(handle);
    n++;
  }
  return n;
}

uint32_t FlowTable::Expire(int64_t now) {
  if (timed_ == 0) return 0;
  uint32_t n = 0;
  for (uint32_t handle = 0; handle < pool_.size(); handle++) {
    if (!live_[handle]) continue;
    const Flow& f = pool_[handle];
    if ((f.idle_timeout != 0 && now - hot_[handle].used_ms >= int64_t{f.idle_timeout} * 1000) ||
        (f.hard_timeout != 0 && now - f.added_ms >= int64_t{f.hard_timeout} * 1000)) {
      RemoveHandle(handle);
      n++;
    }
  }
  return n;
}

std::vector<uint32_t> FlowTable::Ordered() const {
  std::vector<uint32_t> out;
  out.reserve(live_count_);
  for (uint32_t handle = 0; handle < pool_.size(); handle++) {
    if (live_[handle]) out.push_back(handle);
  }
  std::sort(out.begin(), out.end(), [&](uint32_t a, uint32_t b) { return Before(hot_[a], hot_[b]); });
  return out;
}

void FlowTable::LookupPacked(const PackedKey* keys, const uint32_t* layers, uint32_t n, int32_t* found) {
  for (uint32_t i = 0; i < n; i++) found[i] = -1;
  if (cand_.size() < n) {
    cand_.resize(n);
    cand_hash_.resize(n);
    cand_key_.resize(static_cast<size_t>(n) * PackedKey::kWords);
  }
  for (uint32_t t : order_) {
    const Subtable& st = subtables_[t];
    // The frames this subtable may decide: those with its layers, and no match yet of a
    // priority above its flows'. Their keys and hashes first, each slot prefetched...
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
      if (found[i] >= 0 && hot_[static_cast<size_t>(found[i])].priority > st.max_priority) continue;
      if (!st.Has(layers[i])) continue;
      const uint64_t h = KeyOf(keys[i], st, &cand_key_[static_cast<size_t>(m) * PackedKey::kWords]);
      __builtin_prefetch(&st.slots[(h & st.cap_mask) * st.stride]);
      cand_[m] = i;
      cand_hash_[m++] = h;
    }
    // ... then probed: a flow matches exactly when its key is the frame's (FlowMatches, with
    // the subtable's fields and masks, the layers checked above). Flows of one key at other
    // priorities lie further on in the same run of slots.
    for (uint32_t j = 0; j < m; j++) {
      const uint32_t i = cand_[j];
      const uint64_t h = cand_hash_[j];
      const uint64_t* key = &cand_key_[static_cast<size_t>(j) * PackedKey::kWords];
      for (uint64_t s = h & st.cap_mask;; s = (s + 1) & st.cap_mask) {
        const uint64_t* e = &st.slots[s * st.stride];
        if (e[1] == 0) break;
        if (e[0] != h) continue;
        bool same = true;
        for (uint32_t w = 0; w < st.nwords; w++) same &= e[2 + w] == key[w];
        const auto handle = static_cast<int32_t>(e[1] - 1);
        if (same && (found[i] < 0 || Before(hot_[static_cast<size_t>(handle)], hot_[static_cast<size_t>(found[i])]))) found[i] = handle;
      }
    }
  }
}

int32_t FlowTable::Lookup(const FrameKey& k) {
  const PackedKey p = Pack(k);
  const uint32_t layers = (k.ipv4 ? kLayerIpv4 : 0) | (k.ipv6 ? kLayerIpv6 : 0) | (k.arp ? kLayerArp : 0) | (k.l4 ? kLayerL4 : 0) | (k.tcp ? kLayerTcp : 0);
  int32_t found = -1;
  LookupPacked(&p, &layers, 1, &found);
  return found;
}

void FlowTable::LookupBurst(const uint8_t* heads, uint32_t stride, const uint32_t* lens, const int32_t* vlans, int32_t in_port,
                            const uint16_t* which, uint32_t m, int32_t* found) {
  if (burst_keys_.size() < m) {
    burst_keys_.resize(m);
    burst_layers_.resize(m);
    burst_found_.resize(m);
  }
  for (uint32_t j = 0; j < m; j++) {
    const uint32_t i = which[j];
    burst_layers_[j] = PackFrame(heads + static_cast<size_t>(i) * stride, std::min(lens[i], stride), in_port, static_cast<uint32_t>(vlans[i]), &burst_keys_[j]);
  }
  LookupPacked(burst_keys_.data(), burst_layers_.data(), m, burst_found_.data());
  for (uint32_t j = 0; j < m; j++) found[which[j]] = burst_found_[j];
}

}  // namespace vhostkit
