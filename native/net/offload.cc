#include "net/offload.h"

#include <cstring>

namespace vhostkit {

namespace {
inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v & 0xff);
}
inline uint32_t Get32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) | (static_cast<uint32_t>(p[2]) << 8) | p[3];
}
inline void Put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// One's complement sum of 16-bit big-endian words (RFC 1071), not yet folded.
uint64_t Sum(const uint8_t* p, uint32_t n, uint64_t acc = 0) {
  while (n >= 2) {
    acc += Get16(p);
    p += 2;
    n -= 2;
  }
  if (n) acc += static_cast<uint32_t>(p[0]) << 8;
  return acc;
}
uint16_t Fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(~acc & 0xffff);
}
}  // namespace

NetHdr ParseNetHdr(const uint8_t* b) {
  NetHdr h;
  h.flags = b[0];
  h.gso_type = b[1];
  h.hdr_len = static_cast<uint16_t>(b[2] | (b[3] << 8));
  h.gso_size = static_cast<uint16_t>(b[4] | (b[5] << 8));
  h.csum_start = static_cast<uint16_t>(b[6] | (b[7] << 8));
  h.csum_offset = static_cast<uint16_t>(b[8] | (b[9] << 8));
  return h;
}

void WriteNetHdr(const NetHdr& h, uint8_t* b) {
  b[0] = h.flags;
  b[1] = h.gso_type;
  b[2] = static_cast<uint8_t>(h.hdr_len & 0xff);
  b[3] = static_cast<uint8_t>(h.hdr_len >> 8);
  b[4] = static_cast<uint8_t>(h.gso_size & 0xff);
  b[5] = static_cast<uint8_t>(h.gso_size >> 8);
  b[6] = static_cast<uint8_t>(h.csum_start & 0xff);
  b[7] = static_cast<uint8_t>(h.csum_start >> 8);
  b[8] = static_cast<uint8_t>(h.csum_offset & 0xff);
  b[9] = static_cast<uint8_t>(h.csum_offset >> 8);
}

bool AcceptsAsIs(const NetHdr& h, const RxOffloads& rx) {
  const uint8_t gso = h.gso_type & ~kGsoEcn;
  if (gso != kGsoNone) {
    if (!rx.csum) return false;
    if ((h.gso_type & kGsoEcn) && !rx.ecn) return false;
    if (gso == kGsoTcpV4) return rx.tso4;
    if (gso == kGsoTcpV6) return rx.tso6;
    if (gso == kGsoUdp) return rx.ufo;
    return false;
  }
  if (h.flags & kHdrNeedsCsum) return rx.csum;
  return true;
}

bool CompleteChecksum(uint8_t* frame, uint32_t len, uint32_t csum_start, uint32_t csum_offset) {
  if (csum_start >= len || csum_offset > len - csum_start || len - csum_start - csum_offset < 2) return false;
  // The sender put the pseudo-header sum in the checksum field; summing the whole range
  // (field included) and complementing gives the final checksum (as Linux does).
  const uint16_t c = Fold(Sum(frame + csum_start, len - csum_start));
  // A computed 0 goes out as 0xffff (the same in one's complement; UDP requires it).
  Put16(frame + csum_start + csum_offset, c == 0 ? 0xffff : c);
  return true;
}

bool FindPartialL4(const uint8_t* frame, uint32_t len, PartialL4* out) {
  if (len < 14) return false;
  uint32_t l3 = 14;
  uint16_t et = Get16(frame + 12);
  const uint16_t outer = et;
  uint8_t tags = 0;
  for (; tags < 2 && (et == 0x8100 || et == 0x88a8); tags++) {
    if (len < l3 + 4) return false;
    et = Get16(frame + l3 + 2);
    l3 += 4;
  }
  uint32_t l4, l4len;
  uint8_t proto;
  uint64_t acc;
  if (et == 0x0800) {
    if (len < l3 + 20) return false;
    const uint8_t* ip = frame + l3;
    const uint32_t ihl = (ip[0] & 0x0f) * 4u;
    const uint32_t total = Get16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || total < ihl || total > len - l3) return false;
    if (Get16(ip + 6) & 0x3fff) return false;  // MF or a fragment offset: not a whole datagram
    proto = ip[9];
    l4 = l3 + ihl;
    l4len = total - ihl;
    acc = Sum(ip + 12, 8);
  } else if (et == 0x86dd) {
    if (len < l3 + 40) return false;
    const uint8_t* ip = frame + l3;
    const uint32_t payload = Get16(ip + 4);
    if ((ip[0] >> 4) != 6 || payload == 0 || payload > len - l3 - 40) return false;  // 0: jumbogram
    proto = ip[6];  // an extension header (fragment, hop-by-hop, ...) is left alone
    l4 = l3 + 40;
    l4len = payload;
    acc = Sum(ip + 8, 32);
  } else {
    return false;
  }
  uint32_t field;
  if (proto == 6) {
    if (l4len < 20) return false;
    field = 16;
  } else if (proto == 17) {
    if (l4len < 8 || Get16(frame + l4 + 4) != l4len) return false;
    field = 6;
    if (et == 0x0800 && Get16(frame + l4 + 6) == 0) return false;  // IPv4: no checksum
  } else {
    return false;
  }
  acc += proto;
  acc += l4len;
  // The folded pseudo-header sum as Linux writes it (~csum_fold: never 0 for a real header).
  const uint16_t pseudo = static_cast<uint16_t>(~Fold(acc) & 0xffff);
  if (Get16(frame + l4 + field) != pseudo) return false;
  out->l3 = l3;
  out->l4 = l4;
  out->l4_len = l4len;
  out->field = field;
  out->proto = proto;
  out->v6 = et == 0x86dd;
  out->tags = tags;
  out->outer_tpid = tags > 0 ? outer : 0;
  return true;
}

bool CompletePartialL4(uint8_t* frame, uint32_t len) {
  PartialL4 p;
  return FindPartialL4(frame, len, &p) && CompleteChecksum(frame, p.l4 + p.l4_len, p.l4, p.field);
}

int32_t SegmentTcp(const uint8_t* frame, uint32_t len, const NetHdr& h, uint8_t* scratch, uint32_t scratch_len,
                   const std::function<bool(const uint8_t*, uint32_t)>& emit) {
  // L2: Ethernet, optionally one 802.1Q tag.
  if (len < 14) return -1;
  uint32_t l3 = 14;
  uint16_t et = Get16(frame + 12);
  if (et == 0x8100) {
    if (len < 18) return -1;
    et = Get16(frame + 16);
    l3 = 18;
  }
  const bool v4 = et == 0x0800;
  const bool v6 = et == 0x86dd;
  const uint8_t gso = h.gso_type & ~kGsoEcn;
  if (!(v4 && gso == kGsoTcpV4) && !(v6 && gso == kGsoTcpV6)) return -1;
  uint32_t l4;
  if (v4) {
    if (len < l3 + 20) return -1;
    const uint32_t ihl = (frame[l3] & 0x0f) * 4u;
    if ((frame[l3] >> 4) != 4 || ihl < 20 || len < l3 + ihl || frame[l3 + 9] != 6) return -1;
    l4 = l3 + ihl;
  } else {
    if (len < l3 + 40 || (frame[l3] >> 4) != 6 || frame[l3 + 6] != 6) return -1;  // no extension headers
    l4 = l3 + 40;
  }
  if (len < l4 + 20) return -1;
  const uint32_t thl = (frame[l4 + 12] >> 4) * 4u;
  if (thl < 20 || len < l4 + thl) return -1;
  const uint32_t hdrs = l4 + thl;
  const uint32_t mss = h.gso_size;
  if (mss == 0 || hdrs + mss > scratch_len || hdrs > 256) return -1;
  const uint32_t payload = len - hdrs;
  if (payload == 0) return -1;
  const uint32_t nseg = (payload + mss - 1) / mss;
  if (nseg > 65535 / 8 + 1) return -1;
  const uint32_t seq0 = Get32(frame + l4 + 4);
  const uint8_t flags0 = frame[l4 + 13];
  const uint16_t id0 = v4 ? Get16(frame + l3 + 4) : 0;
  for (uint32_t i = 0; i < nseg; i++) {
    const uint32_t off = i * mss;
    const uint32_t plen = payload - off < mss ? payload - off : mss;
    const uint32_t slen = hdrs + plen;
    std::memcpy(scratch, frame, hdrs);
    std::memcpy(scratch + hdrs, frame + hdrs + off, plen);
    uint8_t* ip = scratch + l3;
    uint8_t* tcp = scratch + l4;
    if (v4) {
      Put16(ip + 2, static_cast<uint16_t>(slen - l3));
      Put16(ip + 4, static_cast<uint16_t>(id0 + i));
      Put16(ip + 10, 0);
      Put16(ip + 10, Fold(Sum(ip, l4 - l3)));
    } else {
      Put16(ip + 4, static_cast<uint16_t>(slen - l4));
    }
    Put32(tcp + 4, seq0 + off);
    uint8_t fl = flags0;
    if (i + 1 < nseg) fl &= static_cast<uint8_t>(~(0x01 | 0x08));  // FIN, PSH only on the last
    if (i > 0) fl &= static_cast<uint8_t>(~0x80);                   // CWR only on the first
    tcp[13] = fl;
    // TCP checksum over the pseudo-header and the segment.
    uint64_t acc = 0;
    const uint32_t tcplen = slen - l4;
    if (v4) {
      acc = Sum(ip + 12, 8);
    } else {
      acc = Sum(ip + 8, 32);
    }
    acc += 6;
    acc += tcplen;
    Put16(tcp + 16, 0);
    Put16(tcp + 16, Fold(Sum(tcp, tcplen, acc)));
    if (!emit(scratch, slen)) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(nseg);
}

}  // namespace vhostkit
