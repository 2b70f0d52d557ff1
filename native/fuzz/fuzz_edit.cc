// EditFrame (native/net/edit.h) on hostile frames and edits: it never touches a byte
// outside the frame and its room for a tag, and on a well-formed IPv4 or IPv6 TCP/UDP frame
// (tagged or not, with IP options or not, its L4 checksum complete or partial) every checksum is
// right after any edits: the IPv4 header's, and the L4 one (a partial one once completed,
// as the receiver's side does).
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_common.h"
#include "net/edit.h"
#include "net/offload.h"
#include "net/vlan.h"

namespace {

uint32_t Sum(const uint8_t* p, uint32_t n, uint32_t acc = 0) {
  for (uint32_t i = 0; i + 1 < n; i += 2) acc += (uint32_t{p[i]} << 8) | p[i + 1];
  if (n & 1) acc += uint32_t{p[n - 1]} << 8;
  return acc;
}
uint16_t Fold(uint32_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}
void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

struct Shape {
  bool valid = false;  // a well-formed IPv4 or IPv6 TCP/UDP frame with right checksums
  bool v6 = false;
  uint32_t l3 = 0, l4 = 0, field = 0;
  bool partial = false, udp = false;
};

// The L4 pseudo-header sum of an IP frame (l3: its IP header, l4 its TCP/UDP header).
uint32_t Pseudo(const uint8_t* f, const Shape& s, uint32_t l3, uint32_t l4, uint32_t len) {
  if (s.v6) return Sum(f + l3 + 8, 32) + f[l3 + 6] + (len - l4);
  return Sum(f + l3 + 12, 8) + f[l3 + 9] + (len - l4);
}

// Writes the frame's L4 checksum: complete, or partial (the pseudo-header sum, NEEDS_CSUM).
void Seal(uint8_t* f, uint32_t len, Shape& s, vhostkit::NetHdr* h, bool partial) {
  Put16(f + s.l4 + s.field, 0);
  s.partial = partial;
  if (partial) {
    Put16(f + s.l4 + s.field, Fold(Pseudo(f, s, s.l3, s.l4, len)));
    h->flags = vhostkit::kHdrNeedsCsum;
    h->csum_start = static_cast<uint16_t>(s.l4);
    h->csum_offset = static_cast<uint16_t>(s.field);
  } else {
    uint16_t c = static_cast<uint16_t>(~Fold(Sum(f + s.l4, len - s.l4, Pseudo(f, s, s.l3, s.l4, len))));
    if (s.udp && c == 0) c = 0xffff;
    Put16(f + s.l4 + s.field, c);
    h->flags = 0;
  }
  s.valid = true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const uint8_t mode = in.U8();
  uint32_t len = 14 + in.U8() % 200;
  std::vector<uint8_t> frame(len);
  in.Bytes(frame.data(), len);
  vhostkit::NetHdr h{};
  h.flags = in.U8() & 3;
  h.gso_type = in.U8() % 5;
  h.csum_start = in.U16();
  h.csum_offset = in.U16();
  h.hdr_len = in.U16();
  Shape s;
  if ((mode & 1) && (mode & 32)) {
    // Well formed IPv6: Ethernet (a tag or not), IPv6, TCP or UDP.
    uint8_t* f = frame.data();
    const bool tagged = mode & 2;
    s.l3 = tagged ? 18 : 14;
    s.udp = mode & 8;
    s.field = s.udp ? 6 : 16;
    s.l4 = s.l3 + 40;
    s.v6 = true;
    if (len >= s.l4 + 20) {
      if (tagged) vhostkit::PutTag(f + 12, in.U16() & 0xffff);
      Put16(f + s.l3 - 2, 0x86dd);
      f[s.l3] = 0x60;
      Put16(f + s.l3 + 4, static_cast<uint16_t>(len - s.l4));
      f[s.l3 + 6] = s.udp ? 17 : 6;
      if (s.udp) Put16(f + s.l4 + 4, static_cast<uint16_t>(len - s.l4));
      Seal(f, len, s, &h, mode & 16);
    }
  } else if (mode & 1) {
    // Well formed: Ethernet (a tag or not), IPv4 (options or not), TCP or UDP.
    uint8_t* f = frame.data();
    const bool tagged = mode & 2;
    s.l3 = tagged ? 18 : 14;
    const uint32_t ihl = mode & 4 ? 24 : 20;
    s.udp = mode & 8;
    s.field = s.udp ? 6 : 16;
    s.l4 = s.l3 + ihl;
    if (len >= s.l4 + 20) {
      if (tagged) vhostkit::PutTag(f + 12, in.U16() & 0xffff);
      Put16(f + s.l3 - 2, 0x0800);
      f[s.l3] = static_cast<uint8_t>(0x40 | ihl / 4);
      Put16(f + s.l3 + 2, static_cast<uint16_t>(len - s.l3));
      Put16(f + s.l3 + 6, 0);  // not a fragment
      f[s.l3 + 9] = s.udp ? 17 : 6;
      Put16(f + s.l3 + 10, 0);
      Put16(f + s.l3 + 10, static_cast<uint16_t>(~Fold(Sum(f + s.l3, ihl))));
      if (s.udp) Put16(f + s.l4 + 4, static_cast<uint16_t>(len - s.l4));
      Seal(f, len, s, &h, mode & 16);
    }
  }
  vhostkit::FrameEdit e;
  e.set = in.U16() & 0xfff;
  in.Bytes(e.ip6_src, 16);
  in.Bytes(e.ip6_dst, 16);
  e.vid = in.U16() & 0xfff;
  e.pcp = in.U8() & 7;
  e.dl_src = in.U32();
  e.dl_dst = in.U32();
  e.nw_src = in.U32();
  e.nw_dst = in.U32();
  e.tp_src = in.U16();
  e.tp_dst = in.U16();
  // Exactly the room EditFrame is promised: AddressSanitizer sees a byte past it.
  const uint32_t cap = len + (in.U8() & 1 ? vhostkit::kTagBytes : 0);
  std::vector<uint8_t> buf(cap);
  std::memcpy(buf.data(), frame.data(), len);
  uint32_t out = len;
  const vhostkit::EditResult r = vhostkit::EditFrame(buf.data(), &out, cap, &h, e);
  FUZZ_CHECK(out <= cap && out + vhostkit::kTagBytes >= len, "length %u from %u (room %u)", out, len, cap);
  if (!s.valid || r != vhostkit::EditResult::kDone) return 0;
  uint8_t* f = buf.data();
  const int32_t d = static_cast<int32_t>(out) - static_cast<int32_t>(len);
  const uint32_t l3 = static_cast<uint32_t>(static_cast<int32_t>(s.l3) + d);
  const uint32_t l4 = static_cast<uint32_t>(static_cast<int32_t>(s.l4) + d);
  FUZZ_CHECK(Get16(f + l3 - 2) == (s.v6 ? 0x86dd : 0x0800), "the EtherType moved");
  if (!s.v6) FUZZ_CHECK(Fold(Sum(f + l3, l4 - l3)) == 0xffff, "IPv4 header checksum wrong after edits %#x", e.set);
  if (s.partial) {
    FUZZ_CHECK(h.csum_start == l4 && h.csum_offset == s.field, "csum_start %u (L4 at %u)", h.csum_start, l4);
    FUZZ_CHECK(vhostkit::CompleteChecksum(f, out, h.csum_start, h.csum_offset), "the partial checksum cannot be completed");
  }
  if (!s.partial) FUZZ_CHECK(!s.udp || Get16(f + l4 + s.field) != 0, "a UDP checksum became 0 (none) after edits %#x", e.set);
  FUZZ_CHECK(Fold(Sum(f + l4, out - l4, Pseudo(f, s, l3, l4, out))) == 0xffff, "L4 checksum wrong after edits %#x (partial %d)", e.set,
             s.partial);
  return 0;
}
