#include "net/edit.h"

#include <cstring>

#include "net/vlan.h"

namespace vhostkit {
namespace {

inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline uint32_t Get32(const uint8_t* p) { return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3]; }
inline void Put32(uint8_t* p, uint32_t v) {
  Put16(p, static_cast<uint16_t>(v >> 16));
  Put16(p + 2, static_cast<uint16_t>(v));
}
inline void PutMac(uint8_t* p, uint64_t mac) {
  for (int i = 0; i < 6; i++) p[i] = static_cast<uint8_t>(mac >> (40 - 8 * i));
}

// HC' = ~(~HC + ~m + m') over 16-bit words, end-around carry folded.
uint16_t Update16(uint16_t sum, uint16_t from, uint16_t to) {
  uint32_t s = static_cast<uint32_t>(static_cast<uint16_t>(~sum)) + static_cast<uint16_t>(~from) + to;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s);
}

// csum_start and hdr_len point into the frame: a tag pushed (+4) or popped (-4) after the
// MACs moves what they point at.
void ShiftHeader(NetHdr* h, int32_t d) {
  if (h == nullptr) return;
  if ((h->flags & kHdrNeedsCsum) && h->csum_start >= kMacBytes) h->csum_start = static_cast<uint16_t>(h->csum_start + d);
  if ((h->gso_type & ~kGsoEcn) != kGsoNone && h->hdr_len >= kMacBytes) h->hdr_len = static_cast<uint16_t>(h->hdr_len + d);
}

// The TCP or UDP checksum of an IPv4 frame, as an edit must keep it.
struct L4Sum {
  uint8_t* field = nullptr;  // null: none to keep (not TCP/UDP, a later fragment, UDP without one)
  bool partial = false;      // holds the pseudo-header sum only (NEEDS_CSUM)
  bool udp = false;
  void Change32(uint32_t from, uint32_t to) {
    if (field == nullptr) return;
    if (partial) {
      Put16(field, static_cast<uint16_t>(~ChecksumUpdate32(static_cast<uint16_t>(~Get16(field)), from, to)));
      return;
    }
    uint16_t v = ChecksumUpdate32(Get16(field), from, to);
    if (udp && v == 0) v = 0xffff;  // 0 means "no checksum" in UDP
    Put16(field, v);
  }
  // A port: summed with the payload, so a partial sum does not cover it.
  void Change16(uint16_t from, uint16_t to) {
    if (field == nullptr || partial) return;
    uint16_t v = Update16(Get16(field), from, to);
    if (udp && v == 0) v = 0xffff;
    Put16(field, v);
  }
};

// Where a frame's TCP/UDP checksum is (at l4 + at, proto 6 or 17), as an edit must keep it.
L4Sum FindL4Sum(uint8_t* f, uint32_t n, uint32_t l4, uint8_t proto, const NetHdr* h) {
  L4Sum sum;
  const uint32_t at = proto == 6 ? 16 : 6;
  if ((proto != 6 && proto != 17) || n < l4 + at + 2) return sum;
  sum.field = f + l4 + at;
  sum.udp = proto == 17;
  const bool needs = h != nullptr && (h->flags & kHdrNeedsCsum);
  sum.partial = needs;
  // A partial checksum somewhere else than this header's field is not one we know how to
  // keep: left to whoever completes it. A UDP checksum of 0 is none.
  if ((needs && (h->csum_start != l4 || h->csum_offset != at)) || (!needs && sum.udp && Get16(sum.field) == 0)) sum.field = nullptr;
  return sum;
}

// The ports of a TCP/UDP header at l4, their checksum kept.
void EditPorts(uint8_t* f, uint32_t n, uint32_t l4, uint8_t proto, L4Sum& sum, const FrameEdit& e) {
  if ((proto != 6 && proto != 17) || n < l4 + 4) return;
  auto port = [&](uint32_t off, uint16_t to) {
    const uint16_t from = Get16(f + l4 + off);
    Put16(f + l4 + off, to);
    sum.Change16(from, to);
  };
  if (e.set & FrameEdit::kTpSrc) port(0, e.tp_src);
  if (e.set & FrameEdit::kTpDst) port(2, e.tp_dst);
}

// IPv6 (no IP header checksum; the addresses are in the L4 pseudo-header). Frames whose
// next header is not TCP/UDP get their addresses and hop limit edited, their L4 left.
EditResult EditIpv6(uint8_t* f, uint32_t n, uint32_t l3, NetHdr* h, const FrameEdit& e) {
  uint8_t* ip = f + l3;
  if ((ip[0] >> 4) != 6) return EditResult::kDone;
  if (e.set & FrameEdit::kDecTtl) {
    if (ip[7] <= 1) return EditResult::kTtlExpired;
    ip[7]--;
  }
  const uint8_t proto = ip[6];
  const uint32_t l4 = l3 + 40;
  L4Sum sum = FindL4Sum(f, n, l4, proto, h);
  auto addr = [&](uint32_t off, const uint8_t* to) {
    for (uint32_t k = 0; k < 16; k += 4) {
      const uint32_t from = Get32(ip + off + k);
      const uint32_t v = Get32(to + k);
      Put32(ip + off + k, v);
      sum.Change32(from, v);
    }
  };
  if (e.set & FrameEdit::kIp6Src) addr(8, e.ip6_src);
  if (e.set & FrameEdit::kIp6Dst) addr(24, e.ip6_dst);
  EditPorts(f, n, l4, proto, sum, e);
  return EditResult::kDone;
}

}  // namespace

uint16_t ChecksumUpdate32(uint16_t sum, uint32_t from, uint32_t to) {
  return Update16(Update16(sum, static_cast<uint16_t>(from >> 16), static_cast<uint16_t>(to >> 16)), static_cast<uint16_t>(from),
                  static_cast<uint16_t>(to));
}

EditResult EditFrame(uint8_t* f, uint32_t* len, uint32_t cap, NetHdr* h, const FrameEdit& e) {
  uint32_t n = *len;
  if (n < kMacBytes + 2) return EditResult::kDone;
  if ((e.set & FrameEdit::kStripVlan) && HasTag(f, n)) {
    std::memmove(f + kMacBytes, f + kMacBytes + kTagBytes, n - kMacBytes - kTagBytes);
    n -= kTagBytes;
    ShiftHeader(h, -static_cast<int32_t>(kTagBytes));
  }
  if (e.set & (FrameEdit::kVlanVid | FrameEdit::kVlanPcp)) {
    bool tagged = HasTag(f, n);
    if (!tagged && n + kTagBytes <= cap) {
      // A tag pushed onto an untagged frame: VLAN 0, priority 0 but for what is set below.
      std::memmove(f + kMacBytes + kTagBytes, f + kMacBytes, n - kMacBytes);
      PutTag(f + kMacBytes, 0);
      n += kTagBytes;
      ShiftHeader(h, static_cast<int32_t>(kTagBytes));
      tagged = true;
    }
    if (tagged) {
      uint16_t tci = Get16(f + 14);
      if (e.set & FrameEdit::kVlanVid) tci = static_cast<uint16_t>((tci & 0xf000) | (e.vid & 0x0fff));
      if (e.set & FrameEdit::kVlanPcp) tci = static_cast<uint16_t>((tci & 0x1fff) | ((e.pcp & 7) << 13));
      Put16(f + 14, tci);
    }
  }
  *len = n;
  if (e.set & FrameEdit::kDlDst) PutMac(f, e.dl_dst);
  if (e.set & FrameEdit::kDlSrc) PutMac(f + 6, e.dl_src);

  const uint32_t l3 = HasTag(f, n) ? kMacBytes + kTagBytes + 2 : kMacBytes + 2;
  if (n >= l3 + 40 && Get16(f + l3 - 2) == 0x86dd) return EditIpv6(f, n, l3, h, e);
  if (n < l3 + 20 || Get16(f + l3 - 2) != 0x0800) return EditResult::kDone;
  uint8_t* ip = f + l3;
  const uint32_t ihl = (ip[0] & 0xfu) * 4;
  if ((ip[0] >> 4) != 4 || ihl < 20 || n < l3 + ihl) return EditResult::kDone;
  if (e.set & FrameEdit::kDecTtl) {
    if (ip[8] <= 1) return EditResult::kTtlExpired;
    const uint16_t from = Get16(ip + 8);
    ip[8]--;
    Put16(ip + 10, Update16(Get16(ip + 10), from, Get16(ip + 8)));
  }
  const uint8_t proto = ip[9];
  const bool first = (Get16(ip + 6) & 0x1fff) == 0;
  const uint32_t l4 = l3 + ihl;
  // Later fragments carry no L4 header: their addresses change, nothing else.
  L4Sum sum = first ? FindL4Sum(f, n, l4, proto, h) : L4Sum{};
  auto addr = [&](uint32_t off, uint32_t to) {
    const uint32_t from = Get32(ip + off);
    Put32(ip + off, to);
    Put16(ip + 10, ChecksumUpdate32(Get16(ip + 10), from, to));
    sum.Change32(from, to);
  };
  if (e.set & FrameEdit::kNwSrc) addr(12, e.nw_src);
  if (e.set & FrameEdit::kNwDst) addr(16, e.nw_dst);
  if (first) EditPorts(f, n, l4, proto, sum, e);
  return EditResult::kDone;
}

}  // namespace vhostkit
