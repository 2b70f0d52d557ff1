// libFuzzer target: the host side of the switch (host_io.cc): guest TX chains written to a
// TAP (here a SOCK_SEQPACKET socketpair: one read per frame, as a TAP) and sent as VXLAN
// datagrams (UDP over loopback), frames read back from the "TAP", and VXLAN datagrams of
// any shape received (with their inner TCP/UDP checksums made partial on request, which
// RecvUdp must complete, or for TCP over 1500 bytes mark as TSO, and every other checksum
// left alone). Each is compared byte for byte with a reference written here from the
// header comments of host_io.h (virtio_net_hdr, 802.1Q insert / strip, checksum completion,
// RFC 7348 header checks).
//
// Input: the GuestMem layout, Ring::Setup (the TX queue), then operations:
//   0 a ring operation (Ring::Step)    2 TxToUdp of chains of the last pop
//   1 TxToTap of chains of the last pop 3 ReadTap of frames written to the "TAP"
//   4 RecvUdp of raw datagrams          5 FinishFrame of a frame with a TAP header
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "io/host_io.h"
#include "net/net.h"
#include "fuzz_ring.h"

namespace {

using namespace fuzz;
namespace hio = vhostkit::hostio;

constexpr uint32_t kMaxUdpPayload = 65507;  // IPv4 UDP over loopback

struct Sockets {
  int tap[2] = {-1, -1};  // [0] the device side (ours), [1] the kernel side (the harness)
  int udp_tx = -1, udp_rx = -1;
  sockaddr_in rx_addr{};
  uint16_t tx_port = 0;
  Sockets() {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, tap) != 0) Die("socketpair");
    const int big = 8 << 20;
    for (int fd : tap) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    hio::UdpOptions o;
    o.rcvbuf = o.sndbuf = big;
    uint16_t port = 0;
    const char* failed = nullptr;
    if (hio::UdpOpen(reinterpret_cast<sockaddr*>(&a), sizeof a, o, &udp_rx, &port, &failed) != 0) Die("UdpOpen rx: %s", failed);
    rx_addr = a;
    rx_addr.sin_port = htons(port);
    if (hio::UdpOpen(reinterpret_cast<sockaddr*>(&a), sizeof a, o, &udp_tx, &tx_port, &failed) != 0) Die("UdpOpen tx: %s", failed);
    for (int fd : {udp_rx, udp_tx}) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    }
  }
};

Sockets& S() {
  static Sockets s;
  return s;
}

// Reads every message waiting on fd (nonblocking).
std::vector<std::vector<uint8_t>> Drain(int fd) {
  std::vector<std::vector<uint8_t>> out;
  std::vector<uint8_t> buf(kMaxFrame + 4096);
  for (;;) {
    const ssize_t r = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (r < 0) break;
    out.emplace_back(buf.begin(), buf.begin() + r);
  }
  return out;
}

uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

uint16_t Csum(const uint8_t* p, size_t n) {
  uint64_t acc = 0;
  for (; n >= 2; p += 2, n -= 2) acc += (uint32_t{p[0]} << 8) | p[1];
  if (n) acc += uint32_t{p[0]} << 8;
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  const uint16_t c = static_cast<uint16_t>(~acc & 0xffff);
  return c == 0 ? 0xffff : c;
}

enum class V { kSend, kBad, kTooBig, kNeedsSeg };

// The readable bytes of chain c, as host_io.cc's ChainPieces takes them (up to the first
// writable segment); false for a segment outside the table.
bool ChainBytes(const BurstArrays& b, const MemTable& m, uint32_t c, std::vector<uint8_t>* out) {
  out->clear();
  const uint32_t s0 = b.first_seg[c], s1 = b.first_seg[c + 1];
  if (s0 > s1 || s1 > b.max_segs) return false;
  for (uint32_t s = s0; s < s1; s++) {
    if (b.seg_flags[s] & 1) break;
    if (b.seg_len[s] == 0) continue;
    if (b.seg_region[s] >= m.regions().size()) return false;
    const Region& r = m.regions()[b.seg_region[s]];
    const uint64_t off = static_cast<uint64_t>(b.seg_offset[s]);
    if (off + b.seg_len[s] > r.size) return false;
    out->insert(out->end(), r.host() + off, r.host() + off + b.seg_len[s]);
  }
  return true;
}

// What the TAP (with its 12-byte header) or a VXLAN datagram (pass_hdr false, no TAP
// header) carries for a chain's bytes.
V Expected(const std::vector<uint8_t>& bytes, bool ok, const hio::TxOptions& o, bool pass_hdr, std::vector<uint8_t>* msg) {
  const uint32_t hl = o.hdr_len;
  if (!ok || bytes.size() < hl + 14) return V::kBad;
  if (bytes.size() - hl > kMaxFrame) return V::kTooBig;
  const uint8_t* h = bytes.data();
  std::vector<uint8_t> f(bytes.begin() + hl, bytes.end());
  uint32_t from = 0;
  int32_t delta = 0;
  std::vector<uint8_t> out;
  if (o.vlan >= 0) {
    out.assign(f.begin(), f.begin() + 12);
    out.push_back(0x81);
    out.push_back(0x00);
    out.push_back(static_cast<uint8_t>(o.vlan >> 8));
    out.push_back(static_cast<uint8_t>(o.vlan));
    from = 12;
    delta = 4;
  } else if (o.vlan == -2 && f.size() >= 18 && f[12] == 0x81 && f[13] == 0x00) {
    out.assign(f.begin(), f.begin() + 12);
    from = 16;
    delta = -4;
  }
  if (f.size() + delta > kMaxFrame) return V::kTooBig;
  uint8_t vh[12] = {};
  const uint32_t cs = Le16(h + 6), co = Le16(h + 8), ghl = Le16(h + 2);
  if (pass_hdr) {
    memcpy(vh, h, 10);
    if (delta != 0 && (h[0] & 1)) {
      if (cs < from) return V::kBad;
      const uint32_t v = cs + delta;
      vh[6] = static_cast<uint8_t>(v);
      vh[7] = static_cast<uint8_t>(v >> 8);
    }
    if (delta != 0 && h[1] != 0 && ghl != 0) {
      if (ghl < from) return V::kBad;
      const uint32_t v = ghl + delta;
      vh[2] = static_cast<uint8_t>(v);
      vh[3] = static_cast<uint8_t>(v >> 8);
    }
  } else {
    if (h[1] != 0) return V::kNeedsSeg;
    if (h[0] & 1) {
      const uint64_t at = uint64_t{cs} + co;
      if (cs < from || at + 2 > f.size()) return V::kBad;
      const uint16_t c = Csum(f.data() + cs, f.size() - cs);
      f[at] = static_cast<uint8_t>(c >> 8);
      f[at + 1] = static_cast<uint8_t>(c);
    }
  }
  out.insert(out.end(), f.begin() + from, f.end());
  msg->clear();
  msg->insert(msg->end(), vh, vh + 12);
  msg->insert(msg->end(), out.begin(), out.end());
  return V::kSend;
}

hio::TxOptions ReadTx(Input& in) {
  hio::TxOptions o;
  const uint8_t f = in.U8();
  o.hdr_len = (f & 1) ? 12 : 10;
  o.pass_hdr = f & 2;
  const uint8_t v = (f >> 2) & 3;
  o.vlan = v == 0 ? -1 : v == 1 ? -2 : static_cast<int32_t>(in.U16());
  return o;
}

// Chain indices as the binding lets them through: below the burst size (a chain past the
// last pop's count is a stale one, or never written: ChainPieces refuses what is not sane).
std::vector<uint16_t> Chains(Input& in, Ring& tx) {
  const uint32_t n = in.U8() % (tx.chains() + 1);
  std::vector<uint16_t> c(n);
  for (auto& x : c) x = static_cast<uint16_t>(in.U8() % tx.chains());
  return c;
}

void ToTap(Input& in, GuestMem& g, Ring& tx) {
  const std::vector<uint16_t> chains = Chains(in, tx);
  const hio::TxOptions o = ReadTx(in);
  if (!tx.q().memory() || chains.empty()) return;
  const MemTable& m = *tx.q().memory();
  std::vector<std::vector<uint8_t>> want;
  hio::TxStats ref;
  std::vector<uint8_t> bytes, msg;
  for (uint16_t c : chains) {
    const bool ok = ChainBytes(tx.burst().a, m, c, &bytes);
    switch (Expected(bytes, ok, o, o.pass_hdr, &msg)) {
      case V::kSend: want.push_back(msg); break;
      case V::kBad: ref.bad++; break;
      case V::kTooBig: ref.too_big++; break;
      case V::kNeedsSeg: ref.needs_segmentation++; break;
    }
  }
  Snapshot s;
  s.Take(g);
  hio::TxStats st;
  hio::TxToTap(S().tap[0], tx.burst().a, m, chains.data(), static_cast<uint32_t>(chains.size()), o, &st);
  s.Compare(g, Ranges{}, "TxToTap");
  const auto got = Drain(S().tap[1]);
  FUZZ_TRACE("TxToTap(%zu chains) -> sent %u bad %u too_big %u needs_seg %u dropped %u errors %u (errno %d)\n", chains.size(), st.sent,
             st.bad, st.too_big, st.needs_segmentation, st.dropped, st.errors, st.last_errno);
  FUZZ_CHECK(st.bad == ref.bad && st.too_big == ref.too_big && st.needs_segmentation == ref.needs_segmentation,
             "TxToTap verdicts: bad %u too_big %u needs_segmentation %u, reference %u %u %u", st.bad, st.too_big,
             st.needs_segmentation, ref.bad, ref.too_big, ref.needs_segmentation);
  FUZZ_CHECK(st.errors == 0 && st.dropped == 0, "TxToTap: errors %u (errno %d), dropped %u", st.errors, st.last_errno, st.dropped);
  FUZZ_CHECK(got.size() == want.size() && st.sent == want.size(), "TxToTap sent %u frames, %zu arrived, reference %zu", st.sent,
             got.size(), want.size());
  for (size_t i = 0; i < got.size(); i++) FUZZ_CHECK(got[i] == want[i], "TxToTap frame %zu differs from the reference", i);
}

void ToUdp(Input& in, GuestMem& g, Ring& tx) {
  const std::vector<uint16_t> chains = Chains(in, tx);
  hio::TxOptions o = ReadTx(in);
  uint8_t vx[8];
  in.Bytes(vx, 8);
  if (!tx.q().memory() || chains.empty()) return;
  const MemTable& m = *tx.q().memory();
  std::vector<std::vector<uint8_t>> want;
  uint32_t too_large = 0;
  std::vector<uint8_t> bytes, msg;
  for (uint16_t c : chains) {
    const bool ok = ChainBytes(tx.burst().a, m, c, &bytes);
    if (Expected(bytes, ok, o, false, &msg) != V::kSend) continue;
    std::vector<uint8_t> d(vx, vx + 8);
    d.insert(d.end(), msg.begin() + 12, msg.end());
    if (d.size() > kMaxUdpPayload) {
      too_large++;  // EMSGSIZE: counted as an error, not sent
      continue;
    }
    want.push_back(std::move(d));
  }
  Snapshot s;
  s.Take(g);
  hio::TxStats st;
  hio::TxToUdp(S().udp_tx, tx.burst().a, m, chains.data(), static_cast<uint32_t>(chains.size()), o, vx,
               reinterpret_cast<const sockaddr*>(&S().rx_addr), sizeof(sockaddr_in), &st);
  s.Compare(g, Ranges{}, "TxToUdp");
  const auto got = Drain(S().udp_rx);
  FUZZ_TRACE("TxToUdp(%zu chains) -> sent %u bad %u too_big %u needs_seg %u dropped %u errors %u\n", chains.size(), st.sent, st.bad,
             st.too_big, st.needs_segmentation, st.dropped, st.errors);
  FUZZ_CHECK(st.errors == too_large && st.dropped == 0, "TxToUdp: errors %u (errno %d, %u too large), dropped %u", st.errors,
             st.last_errno, too_large, st.dropped);
  FUZZ_CHECK(got.size() == want.size() && st.sent == want.size(), "TxToUdp sent %u, %zu arrived, reference %zu", st.sent, got.size(),
             want.size());
  for (size_t i = 0; i < got.size(); i++) FUZZ_CHECK(got[i] == want[i], "TxToUdp datagram %zu differs from the reference", i);
}

// u8 count, per message u16 length and bytes; u32 buffer length, u16 slot, u8 max frames.
void FromTap(Input& in) {
  const uint32_t n = in.U8() % 16;
  std::vector<std::vector<uint8_t>> msgs(n);
  for (auto& m : msgs) {
    m.resize(in.U16() % 9000 + 1);
    in.Bytes(m.data(), m.size());
  }
  const uint32_t buf_len = in.U32() % (64 * 1024);
  const uint32_t slot = std::max<uint32_t>(26, in.U16());  // the binding's minimum
  const uint32_t max = in.U8() % 20;
  for (const auto& m : msgs) {
    if (send(S().tap[1], m.data(), m.size(), MSG_DONTWAIT) != static_cast<ssize_t>(m.size())) Die("send to the TAP side");
  }
  HeapBuf buf(buf_len);
  std::vector<uint32_t> offsets(max), lens(max);
  std::vector<uint8_t> hdrs(10 * size_t{max});
  hio::ReadStats st;
  const int32_t k = hio::ReadTap(S().tap[0], buf.p, buf_len, slot, offsets.data(), lens.data(), hdrs.data(), max, &st);
  // Reference: read by read while there are frames to record and a slot of room.
  const uint32_t sl = std::max<uint32_t>(slot, 12 + 14);
  uint32_t at = 0, rk = 0, trunc = 0, bad = 0;
  size_t i = 0;
  std::vector<std::pair<size_t, uint32_t>> rec;  // message, offset
  while (rk < max && at <= buf_len && buf_len - at >= sl && i < msgs.size()) {
    const uint32_t room = buf_len - at;
    const auto& m = msgs[i++];
    if (m.size() >= room) {
      trunc++;
      continue;
    }
    if (m.size() < 26) {
      bad++;
      continue;
    }
    rec.emplace_back(i - 1, at);
    rk++;
    at += static_cast<uint32_t>(m.size());
  }
  Drain(S().tap[0]);
  FUZZ_CHECK(k == static_cast<int32_t>(rk) && st.truncated == trunc && st.bad == bad, "ReadTap -> %d (truncated %u bad %u), reference %u (%u %u)", k,
             st.truncated, st.bad, rk, trunc, bad);
  for (uint32_t j = 0; j < rk; j++) {
    const auto& m = msgs[rec[j].first];
    FUZZ_CHECK(offsets[j] == rec[j].second + 12 && lens[j] == m.size() - 12, "ReadTap frame %u at %u (+%u)", j, offsets[j], lens[j]);
    FUZZ_CHECK(memcmp(buf.p + offsets[j], m.data() + 12, lens[j]) == 0 && memcmp(hdrs.data() + 10 * j, m.data(), 10) == 0,
               "ReadTap frame %u bytes", j);
  }
}

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// Reference for the partial checksums RecvUdp completes (host_io.h, offload.h
// CompletePartialL4): where the TCP/UDP checksum field of an Ethernet frame is, the range
// it covers and the folded (not complemented) pseudo-header sum, if the frame is one whose
// checksum may be completed: up to two tags (0x8100 / 0x88a8), IPv4 with MF and offset
// clear and a total length that fits, or IPv6 with a non-zero payload length that fits and
// TCP / UDP as its next header; TCP of at least 20 bytes, UDP of at least 8 whose length
// field is the IP payload's, IPv4 UDP not with checksum 0.
struct L4Ref {
  bool ok = false;
  size_t l3 = 0, l4 = 0, end = 0, field = 0;
  uint32_t pseudo = 0;
  int tags = 0;
  uint16_t outer = 0;
  bool v6 = false, tcp = false;
};

L4Ref ParseL4(const uint8_t* f, size_t n) {
  L4Ref r;
  if (n < 14) return r;
  size_t l3 = 14;
  uint16_t et = Be16(f + 12);
  r.outer = et;
  for (; r.tags < 2 && (et == 0x8100 || et == 0x88a8); r.tags++) {
    if (n < l3 + 4) return r;
    et = Be16(f + l3 + 2);
    l3 += 4;
  }
  r.l3 = l3;
  r.v6 = et == 0x86dd;
  uint64_t acc = 0;
  uint8_t proto = 0;
  size_t l4len = 0;
  if (et == 0x0800) {
    if (n < l3 + 20) return r;
    const uint8_t* ip = f + l3;
    const size_t ihl = size_t{ip[0] & 15u} * 4, tot = Be16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl || l3 + tot > n || (Be16(ip + 6) & 0x3fff) != 0) return r;
    proto = ip[9];
    r.l4 = l3 + ihl;
    l4len = tot - ihl;
    for (size_t i = 12; i < 20; i += 2) acc += Be16(ip + i);
  } else if (et == 0x86dd) {
    if (n < l3 + 40) return r;
    const uint8_t* ip = f + l3;
    l4len = Be16(ip + 4);
    if ((ip[0] >> 4) != 6 || l4len == 0 || l3 + 40 + l4len > n) return r;
    proto = ip[6];
    r.l4 = l3 + 40;
    for (size_t i = 8; i < 40; i += 2) acc += Be16(ip + i);
  } else {
    return r;
  }
  if (proto == 6 && l4len >= 20) {
    r.field = r.l4 + 16;
    r.tcp = true;
  } else if (proto == 17 && l4len >= 8 && Be16(f + r.l4 + 4) == l4len && !(et == 0x0800 && Be16(f + r.l4 + 6) == 0)) {
    r.field = r.l4 + 6;
  } else {
    return r;
  }
  acc += proto + l4len;
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  r.pseudo = static_cast<uint32_t>(acc);
  r.end = r.l4 + l4len;
  r.ok = true;
  return r;
}

enum class Rx { kAsIs, kCompleted, kMarked };

// What RecvUdp should leave of frame f and its header h (10 bytes, zeroed here): a partial
// TCP frame whose IP packet is over 1500 bytes and ends the frame, with no tag or one 802.1Q
// tag and a TCP header length in [20, TCP bytes), gets NEEDS_CSUM | GSO_TCPV4/6, hdr_len to
// the end of the TCP header, gso_size 1500 - IP header - TCP header, csum_start/offset, and
// keeps its bytes (when headers are asked for); another partial one has its checksum
// completed (pseudo-header + segment with the field zeroed, complemented, 0 sent as
// 0xffff); anything else is untouched.
Rx ExpectedRx(std::vector<uint8_t>* f, uint8_t* h, bool with_hdrs) {
  std::memset(h, 0, 10);
  const L4Ref r = ParseL4(f->data(), f->size());
  if (!r.ok || Be16(f->data() + r.field) != r.pseudo) return Rx::kAsIs;
  const size_t ip_len = r.end - r.l3;
  const size_t thl = r.tcp ? static_cast<size_t>((*f)[r.l4 + 12] >> 4) * 4 : 0;
  if (with_hdrs && r.tcp && ip_len > 1500 && r.end == f->size() && thl >= 20 && thl < r.end - r.l4 &&
      (r.tags == 0 || (r.tags == 1 && r.outer == 0x8100))) {
    const size_t hl = r.l4 + thl, mss = 1500 - (r.l4 - r.l3) - thl;
    h[0] = 1;
    h[1] = r.v6 ? 4 : 1;
    h[2] = static_cast<uint8_t>(hl);
    h[3] = static_cast<uint8_t>(hl >> 8);
    h[4] = static_cast<uint8_t>(mss);
    h[5] = static_cast<uint8_t>(mss >> 8);
    h[6] = static_cast<uint8_t>(r.l4);
    h[7] = static_cast<uint8_t>(r.l4 >> 8);
    h[8] = 16;
    return Rx::kMarked;
  }
  (*f)[r.field] = (*f)[r.field + 1] = 0;
  uint64_t acc = r.pseudo;
  for (size_t i = r.l4; i < r.end; i += 2) acc += (uint32_t{(*f)[i]} << 8) | (i + 1 < r.end ? (*f)[i + 1] : 0);
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  uint16_t c = static_cast<uint16_t>(~acc & 0xffff);
  if (c == 0) c = 0xffff;
  (*f)[r.field] = static_cast<uint8_t>(c >> 8);
  (*f)[r.field + 1] = static_cast<uint8_t>(c);
  return Rx::kCompleted;
}

// u8 count, per datagram u16 length (bit 15: make its inner checksum partial, i.e. write
// the pseudo-header sum in the field, when ParseL4 finds one) and bytes; u16 slot, u8 max frames.
void FromUdp(Input& in) {
  const uint32_t n = in.U8() % 16;
  std::vector<std::vector<uint8_t>> dg(n);
  for (auto& d : dg) {
    const uint16_t l = in.U16();
    d.resize((l & 0x7fff) % 9000);
    in.Bytes(d.data(), d.size());
    if ((l & 0x8000) && d.size() > 8) {
      const L4Ref r = ParseL4(d.data() + 8, d.size() - 8);
      if (r.ok) {
        d[8 + r.field] = static_cast<uint8_t>(r.pseudo >> 8);
        d[8 + r.field + 1] = static_cast<uint8_t>(r.pseudo);
      }
    }
  }
  const uint32_t slot = 22 + in.U16() % 9100;  // the binding's minimum: a VXLAN and an Ethernet header
  const uint8_t mb = in.U8();
  const uint32_t max = (mb & 0x7f) % 20;
  const bool with_hdrs = !(mb & 0x80);  // bit 7: no header array
  for (const auto& d : dg) {
    if (sendto(S().udp_tx, d.data(), d.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&S().rx_addr), sizeof(sockaddr_in)) !=
        static_cast<ssize_t>(d.size())) {
      Die("sendto");
    }
  }
  HeapBuf buf(size_t{slot} * std::max<uint32_t>(max, 1));
  std::vector<uint32_t> offsets(max), lens(max), vni(max);
  std::vector<uint8_t> src(16 * size_t{max}), fam(max);
  std::vector<uint16_t> port(max);
  std::vector<uint8_t> hdrs(10 * size_t{max} + 1, 0xee);
  hio::RecvOut out{offsets.data(), lens.data(), vni.data(), src.data(), port.data(), fam.data(), with_hdrs ? hdrs.data() : nullptr};
  hio::RecvStats st;
  const int32_t k = hio::RecvUdp(S().udp_rx, buf.p, slot, max, out, &st);
  Drain(S().udp_rx);
  // Reference (RFC 7348 §5): the first min(n, max) datagrams, partial inner checksums completed.
  uint32_t rk = 0, completed = 0, marked = 0;
  for (uint32_t j = 0; j < std::min(n, max); j++) {
    const auto& d = dg[j];
    if (d.size() > slot || d.size() < 22 || d[0] != 0x08 || d[1] || d[2] || d[3] || d[7]) continue;
    FUZZ_CHECK(static_cast<int32_t>(rk) < k, "RecvUdp accepted %d, the reference accepts datagram %u too", k, j);
    FUZZ_CHECK(offsets[rk] == j * slot + 8 && lens[rk] == d.size() - 8, "RecvUdp datagram %u: at %u +%u", j, offsets[rk], lens[rk]);
    FUZZ_CHECK(vni[rk] == ((uint32_t{d[4]} << 16) | (uint32_t{d[5]} << 8) | d[6]), "RecvUdp datagram %u: vni", j);
    std::vector<uint8_t> want(d.begin() + 8, d.end());
    uint8_t wh[10];
    const Rx what = ExpectedRx(&want, wh, with_hdrs);
    completed += what == Rx::kCompleted;
    marked += what == Rx::kMarked;
    FUZZ_CHECK(memcmp(buf.p + offsets[rk], want.data(), lens[rk]) == 0, "RecvUdp datagram %u: bytes", j);
    if (with_hdrs) FUZZ_CHECK(memcmp(hdrs.data() + 10 * size_t{rk}, wh, 10) == 0, "RecvUdp datagram %u: header", j);
    FUZZ_CHECK(fam[rk] == 4 && port[rk] == S().tx_port && src[16 * rk] == 127, "RecvUdp datagram %u: source", j);
    rk++;
  }
  FUZZ_CHECK(k == static_cast<int32_t>(rk), "RecvUdp accepted %d, reference %u", k, rk);
  FUZZ_TRACE("RecvUdp(%u datagrams, max %u, headers %d) -> %d accepted, %u completed, %u marked GSO\n", n, max, with_hdrs, k, st.csum_completed,
             st.gso_marked);
  FUZZ_CHECK(st.csum_completed == completed && st.gso_marked == marked, "RecvUdp completed %u checksums, marked %u GSO, reference %u %u",
             st.csum_completed, st.gso_marked, completed, marked);
  FUZZ_CHECK(!with_hdrs || hdrs[10 * size_t{max}] == 0xee, "RecvUdp wrote a header past max");
  if (with_hdrs) {
    for (size_t i = 10 * static_cast<size_t>(rk); i < 10 * size_t{max}; i++) FUZZ_CHECK(hdrs[i] == 0xee, "RecvUdp wrote header byte %zu of %d frames", i, k);
  }
  FUZZ_CHECK(st.datagrams == std::min(n, max), "RecvUdp took %u datagrams of %u", st.datagrams, std::min(n, max));
}

// FinishFrame (host-to-host frames with a TAP's offload header, for a port that takes none):
// u16 frame length and bytes, 10 header bytes, u8 adj (-4, 0, 4), u32 out room, u8 max out.
// Every output frame lies in out, in order, without overlap; a frame without GSO comes out
// once, byte for byte but for a completed checksum (reference: Csum over [csum_start + adj,
// end) with the field as it was) or not at all (bad / no room, exactly when the reference
// says so); a TSO frame's segments (their content is fuzz_offload's business) carry no more
// bytes than mss each plus the frame's headers.
void Finish(Input& in) {
  std::vector<uint8_t> f(in.U16() % 9000);
  in.Bytes(f.data(), f.size());
  uint8_t h[10];
  in.Bytes(h, 10);
  const int32_t adj = static_cast<int32_t>(in.U8() % 3) * 4 - 4;
  const uint32_t room = in.U32() % (128 * 1024);
  const uint32_t max = in.U8() % 80;
  HeapBuf out(room);
  std::vector<uint32_t> offs(max), lens(max);
  HeapBuf frame(f.size());  // exact size: ASan sees a read past the frame
  if (!f.empty()) memcpy(frame.p, f.data(), f.size());
  const int32_t r = hio::FinishFrame(frame.p, static_cast<uint32_t>(f.size()), h, adj, out.p, room, offs.data(), lens.data(), max);
  FUZZ_TRACE("FinishFrame(%zu bytes, flags %u gso %u, adj %d, room %u, max %u) -> %d\n", f.size(), h[0], h[1], adj, room, max, r);
  FUZZ_CHECK(r == hio::kFinishBad || r == hio::kFinishNoRoom || (r >= 0 && static_cast<uint32_t>(r) <= max), "FinishFrame -> %d", r);
  FUZZ_CHECK(f.empty() || memcmp(frame.p, f.data(), f.size()) == 0, "FinishFrame wrote its input");
  uint64_t at = 0;
  for (int32_t k = 0; k < r; k++) {
    FUZZ_CHECK(offs[k] >= at && uint64_t{offs[k]} + lens[k] <= room, "FinishFrame frame %d at %u +%u (room %u)", k, offs[k], lens[k], room);
    at = uint64_t{offs[k]} + lens[k];
  }
  if ((h[1] & 0x7f) != 0) {
    const uint32_t mss = Le16(h + 4);
    for (int32_t k = 0; k < r; k++) FUZZ_CHECK(lens[k] <= f.size() && lens[k] - std::min<uint32_t>(lens[k], 14 + 4 + 60 + 60) <= mss, "segment %d of %u bytes, mss %u", k, lens[k], mss);
    return;
  }
  if (max < 1 || f.size() > room) {
    FUZZ_CHECK(r == hio::kFinishNoRoom, "FinishFrame -> %d, reference: no room", r);
    return;
  }
  std::vector<uint8_t> want = f;
  if (h[0] & 1) {
    const int64_t cs = int64_t{Le16(h + 6)} + adj;
    const uint64_t at2 = static_cast<uint64_t>(cs) + Le16(h + 8);
    if (cs < 0 || static_cast<uint64_t>(cs) >= f.size() || at2 + 2 > f.size()) {
      FUZZ_CHECK(r == hio::kFinishBad, "FinishFrame -> %d, reference: bad csum_start %lld / offset %u for %zu bytes", r,
                 static_cast<long long>(cs), Le16(h + 8), f.size());
      return;
    }
    const uint16_t c = Csum(f.data() + cs, f.size() - static_cast<size_t>(cs));
    want[at2] = static_cast<uint8_t>(c >> 8);
    want[at2 + 1] = static_cast<uint8_t>(c);
  }
  FUZZ_CHECK(r == 1 && offs[0] == 0 && lens[0] == f.size() && (want.empty() || memcmp(out.p, want.data(), want.size()) == 0), "FinishFrame -> %d, frame differs from the reference", r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  GuestMem g;
  if (!g.Read(in)) return 0;
  Ring tx(g, false);
  if (!tx.Setup(in)) return 0;
  for (int ops = 0; ops < 256 && !in.done(); ops++) {
    switch (in.U8() % 6) {
      case 0: tx.Step(in); break;
      case 1: ToTap(in, g, tx); break;
      case 2: ToUdp(in, g, tx); break;
      case 3: FromTap(in); break;
      case 4: FromUdp(in); break;
      default: Finish(in); break;
    }
  }
  g.CheckCanaries("the run");
  return 0;
}
