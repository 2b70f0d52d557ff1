#include "switch/switch_host.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vhostkit {
namespace {

namespace pc = layout::port_counter;
namespace hio = hostio;

constexpr size_t kFlatBytes = 1 << 20;
constexpr size_t kFlatFrames = hio::kMaxBatch;
// Staged frames are sent once less than this is left: room for one TSO frame's segments.
constexpr size_t kFlatReserve = 2 * (kMaxFrame + 4);
constexpr size_t kFlatFramesReserve = 128;

void Account(SwitchPort& q, const hio::TxStats& st) {
  q.Count(pc::TX_PACKETS, st.sent);
  q.Count(pc::TX_BYTES, st.bytes);
  q.Count(pc::DROP_HOST_BUSY, st.dropped + st.errors);
  q.Count(pc::DROP_BAD, st.bad);
  q.Count(pc::DROP_TOO_BIG, st.too_big + st.needs_segmentation);
}

bool Offloaded(const uint8_t* h) { return h != nullptr && ((h[0] & hio::kNeedsCsum) != 0 || (h[1] & ~hio::kGsoEcn) != hio::kGsoNone); }

void AddLe16(uint8_t* p, int32_t adj) {
  const uint16_t v = static_cast<uint16_t>(p[0] | (p[1] << 8));
  const uint16_t w = static_cast<uint16_t>(v + adj);
  p[0] = static_cast<uint8_t>(w);
  p[1] = static_cast<uint8_t>(w >> 8);
}

// One frame to a TAP fd: its 12-byte virtio_net_hdr, then the frame.
void TapWrite(int fd, const uint8_t hdr[hio::kVnetHdrLen], const uint8_t* frame, uint32_t len, hio::TxStats* st) {
  iovec iov[2] = {{const_cast<uint8_t*>(hdr), hio::kVnetHdrLen}, {const_cast<uint8_t*>(frame), len}};
  for (;;) {
    const ssize_t r = writev(fd, iov, 2);
    if (r >= 0) {
      st->sent++;
      st->bytes += len;
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      st->dropped++;
    } else {
      st->errors++;
      st->last_errno = errno;
    }
    return;
  }
}

uint64_t MacAt(const uint8_t* p) {
  return (uint64_t{p[0]} << 40) | (uint64_t{p[1]} << 32) | (uint64_t{p[2]} << 24) | (uint64_t{p[3]} << 16) | (uint64_t{p[4]} << 8) | p[5];
}

// Frames j < m (lens[j] bytes at base + off[j]) out of VXLAN port q with remote VTEPs
// (EVPN): a unicast frame whose MAC the fdb has installed towards remote r goes to that
// VTEP alone; the others (broadcast, multicast, unknown unicast) to every flood VTEP, a
// copy each (head-end replication). TX_PACKETS counts each copy sent.
void SendToVteps(SwitchPort& q, const uint8_t* base, const uint32_t* off, const uint32_t* lens, uint32_t m, HostScratch& sc,
                 hio::TxStats* st) {
  constexpr uint32_t kSent = ~uint32_t{0};
  const VtepTable& t = *q.host.vteps;
  const uint32_t nv = static_cast<uint32_t>(t.vteps.size());
  if (sc.target.size() < m) {
    sc.target.resize(m);
    sc.goff.resize(m);
    sc.glen.resize(m);
  }
  std::fill(sc.target.begin(), sc.target.begin() + m, 0);
  if (t.fdb != nullptr) {
    const FdbGuard guard(*t.fdb);  // one lock for the batch's lookups
    for (uint32_t j = 0; j < m; j++) {
      const uint8_t* f = base + off[j];
      if (lens[j] < 14 || (f[0] & 1) != 0) continue;
      uint32_t vid = q.vlan.access ? q.vlan.vid : (q.vlan.native < 0 ? 0 : static_cast<uint32_t>(q.vlan.native));
      if (lens[j] >= 18 && f[12] == 0x81 && f[13] == 0x00) vid = ((uint32_t{f[14]} << 8) | f[15]) & 0xfff;
      const uint32_t r = t.fdb->RemoteOf(MacAt(f), vid);
      if (r != 0 && r <= nv && t.vteps[r - 1].len != 0) sc.target[j] = r;
    }
  }
  for (uint32_t j = 0; j < m; j++) {
    const uint32_t r = sc.target[j];
    if (r == 0 || r == kSent) continue;
    uint32_t k = 0;
    for (uint32_t i = j; i < m; i++) {
      if (sc.target[i] != r) continue;
      sc.goff[k] = off[i];
      sc.glen[k] = lens[i];
      k++;
      sc.target[i] = kSent;
    }
    const VtepTable::Vtep& v = t.vteps[r - 1];
    hio::FlatToUdp(q.host.fd, base, sc.goff.data(), sc.glen.data(), k, q.host.vxlan_hdr, reinterpret_cast<const sockaddr*>(&v.addr), v.len, st);
  }
  uint32_t k = 0;
  for (uint32_t j = 0; j < m; j++) {
    if (sc.target[j] != 0) continue;
    sc.goff[k] = off[j];
    sc.glen[k] = lens[j];
    k++;
  }
  if (k == 0) return;
  for (const VtepTable::Vtep& v : t.vteps) {
    if (v.len == 0 || !v.flood) continue;
    hio::FlatToUdp(q.host.fd, base, sc.goff.data(), sc.glen.data(), k, q.host.vxlan_hdr, reinterpret_cast<const sockaddr*>(&v.addr), v.len, st);
  }
}

// Frames staged in sc.flat[0, *k) out of a VXLAN port.
void SendStaged(SwitchPort& q, HostScratch& sc, uint32_t* k, size_t* at, hio::TxStats* st) {
  if (*k > 0 && q.host.vteps != nullptr) {
    SendToVteps(q, sc.flat.data(), sc.offsets.data(), sc.lens.data(), *k, sc, st);
  } else if (*k > 0) {
    hio::FlatToUdp(q.host.fd, sc.flat.data(), sc.offsets.data(), sc.lens.data(), *k, q.host.vxlan_hdr,
                   reinterpret_cast<const sockaddr*>(&q.host.dest), q.host.dest_len, st);
  }
  *k = 0;
  *at = 0;
}

}  // namespace

void HostScratch::Ensure() {
  if (!flat.empty()) return;
  flat.resize(kFlatBytes);
  offsets.resize(kFlatFrames);
  lens.resize(kFlatFrames);
  frame.resize(kMaxFrame + 8);
}

HostBatch::HostBatch(uint32_t frames)
    : buf(static_cast<size_t>(frames) * 65536 + hio::kVnetHdrLen + 65536 + 256),
      offsets(frames),
      lens(frames),
      hdr10(static_cast<size_t>(frames) * 10),
      vni(frames),
      src_addr(static_cast<size_t>(frames) * 16),
      src_port(frames),
      src_family(frames) {}

void HostSendChains(SwitchPort& q, const TxSource& src, const uint16_t* chains, uint32_t m, HostScratch& sc) {
  sc.Ensure();
  hio::TxStats st;
  hio::TxOptions o;
  o.hdr_len = src.hdr_len;
  o.vlan = src.vlan;
  if (q.kind == PortKind::kTap) {
    o.pass_hdr = q.host.offloads && src.offloads;
    hio::TxToTap(q.host.fd, *src.arrays, *src.mem, chains, m, o, &st);
  } else if (!src.offloads && q.host.vteps == nullptr) {
    o.pass_hdr = false;
    hio::TxToUdp(q.host.fd, *src.arrays, *src.mem, chains, m, o, q.host.vxlan_hdr, reinterpret_cast<const sockaddr*>(&q.host.dest),
                 q.host.dest_len, &st);
  } else {
    // The guest may send TSO / partial-checksum frames: finished here first (a tunnel takes
    // no offloads), a chain at a time into the staging, sent when it is nearly full.
    uint32_t k = 0;
    size_t at = 0;
    for (uint32_t j = 0; j < m; j++) {
      if (sc.flat.size() - at < kFlatReserve || kFlatFrames - k < kFlatFramesReserve) SendStaged(q, sc, &k, &at, &st);
      DeliverStats ds;
      const uint32_t got = NetToFlat(src, chains + j, 1, sc.flat.data() + at, static_cast<uint32_t>(sc.flat.size() - at),
                                     sc.offsets.data() + k, sc.lens.data() + k, static_cast<uint32_t>(kFlatFrames - k), &ds);
      st.bad += ds.bad;
      for (uint32_t i = 0; i < got; i++) sc.offsets[k + i] += static_cast<uint32_t>(at);
      if (got > 0) at = sc.offsets[k + got - 1] + sc.lens[k + got - 1];
      k += got;
    }
    SendStaged(q, sc, &k, &at, &st);
  }
  Account(q, st);
}

void HostSendFlat(SwitchPort& q, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10,
                  const uint16_t* idx, uint32_t m, int32_t vlan, HostScratch& sc) {
  sc.Ensure();
  hio::TxStats st;
  bool any_offloaded = false;
  for (uint32_t j = 0; j < m && hdr10 != nullptr; j++) any_offloaded = any_offloaded || Offloaded(hdr10 + 10 * size_t{idx[j]});
  if (q.kind == PortKind::kVxlan && vlan == kVlanKeep && !any_offloaded) {
    // The common case (TAP or announcements to a tunnel): one sendmmsg from the buffer.
    for (uint32_t j = 0; j < m; j++) {
      sc.offsets[j] = off[idx[j]];
      sc.lens[j] = lens[idx[j]];
    }
    if (q.host.vteps != nullptr) {
      SendToVteps(q, base, sc.offsets.data(), sc.lens.data(), m, sc, &st);
    } else {
      hio::FlatToUdp(q.host.fd, base, sc.offsets.data(), sc.lens.data(), m, q.host.vxlan_hdr,
                     reinterpret_cast<const sockaddr*>(&q.host.dest), q.host.dest_len, &st);
    }
    Account(q, st);
    return;
  }
  uint32_t k = 0;
  size_t at = 0;
  for (uint32_t j = 0; j < m; j++) {
    const uint32_t i = idx[j];
    const uint8_t* h = hdr10 != nullptr ? hdr10 + 10 * size_t{i} : nullptr;
    const uint32_t len = ApplyVlan(base + off[i], lens[i], vlan, sc.frame.data());
    const int32_t adj = static_cast<int32_t>(len) - static_cast<int32_t>(lens[i]);
    const uint8_t* f = sc.frame.data();
    // A TAP with offloads takes partial checksums and TSO frames as they are; a tunnel or a
    // TAP without offloads gets them finished here (checksum completed, segmented).
    const bool pass = q.kind == PortKind::kTap && q.host.offloads;
    if (Offloaded(h) && !pass) {
      if (q.kind == PortKind::kVxlan && (sc.flat.size() - at < kFlatReserve || kFlatFrames - k < kFlatFramesReserve)) {
        SendStaged(q, sc, &k, &at, &st);
      }
      const int32_t got = hio::FinishFrame(f, len, h, adj, sc.flat.data() + at, static_cast<uint32_t>(sc.flat.size() - at),
                                           sc.offsets.data() + k, sc.lens.data() + k, static_cast<uint32_t>(kFlatFrames - k));
      if (got < 0) {
        (got == hio::kFinishBad ? st.bad : st.too_big)++;
        continue;
      }
      if (q.kind == PortKind::kTap) {
        const uint8_t zero[hio::kVnetHdrLen] = {};
        for (int32_t s = 0; s < got; s++) TapWrite(q.host.fd, zero, sc.flat.data() + at + sc.offsets[k + s], sc.lens[k + s], &st);
        continue;
      }
      for (int32_t s = 0; s < got; s++) sc.offsets[k + s] += static_cast<uint32_t>(at);
      at = sc.offsets[k + got - 1] + sc.lens[k + got - 1];
      k += static_cast<uint32_t>(got);
      continue;
    }
    if (q.kind == PortKind::kTap) {
      uint8_t hdr[hio::kVnetHdrLen] = {};
      if (pass && h != nullptr) {
        std::memcpy(hdr, h, 10);
        // csum_start and hdr_len move with a tag inserted or removed
        if (adj != 0 && (hdr[0] & hio::kNeedsCsum) != 0) AddLe16(hdr + 6, adj);
        if (adj != 0 && (hdr[1] & ~hio::kGsoEcn) != hio::kGsoNone) AddLe16(hdr + 2, adj);
      }
      TapWrite(q.host.fd, hdr, f, len, &st);
      continue;
    }
    if (sc.flat.size() - at < kFlatReserve || kFlatFrames - k < kFlatFramesReserve) SendStaged(q, sc, &k, &at, &st);
    std::memcpy(sc.flat.data() + at, f, len);
    sc.offsets[k] = static_cast<uint32_t>(at);
    sc.lens[k] = len;
    at += len;
    k++;
  }
  if (q.kind == PortKind::kVxlan) SendStaged(q, sc, &k, &at, &st);
  Account(q, st);
}

int32_t HostRead(SwitchPort& p, HostBatch& b, bool* with_hdr) {
  const uint32_t max = static_cast<uint32_t>(b.offsets.size());
  if (p.kind == PortKind::kTap) {
    hio::ReadStats st;
    *with_hdr = true;
    const int32_t n = hio::ReadTap(p.host.fd, b.buf.data(), static_cast<uint32_t>(b.buf.size()), hio::kVnetHdrLen + 65536 + 256,
                                   b.offsets.data(), b.lens.data(), b.hdr10.data(), max, &st);
    p.Count(pc::DROP_BAD, st.bad + st.truncated);
    return n;
  }
  hio::RecvStats st;
  hio::RecvOut out{b.offsets.data(), b.lens.data(), b.vni.data(), b.src_addr.data(), b.src_port.data(), b.src_family.data(), b.hdr10.data()};
  const int32_t n = hio::RecvUdp(p.host.fd, b.buf.data(), 65536, max, out, &st);
  if (n < 0) return n;
  p.Count(pc::RX_CSUM_COMPLETED, st.csum_completed + st.gso_marked);
  p.Count(pc::DROP_BAD, st.too_short + st.bad_flags + st.reserved + st.truncated);
  // Oversized partial TCP frames come with a TSO header: the headers are passed on then only.
  *with_hdr = st.gso_marked > 0;
  // Only this port's VNI: the socket may be shared with the kernel's view of the port.
  uint32_t w = 0;
  for (uint32_t i = 0; i < static_cast<uint32_t>(n); i++) {
    if (b.vni[i] != p.host.vni) {
      p.Count(pc::DROP_VLAN, 1);
      continue;
    }
    b.offsets[w] = b.offsets[i];
    b.lens[w] = b.lens[i];
    if (*with_hdr && w != i) std::memmove(b.hdr10.data() + 10 * size_t{w}, b.hdr10.data() + 10 * size_t{i}, 10);
    w++;
  }
  return static_cast<int32_t>(w);
}

}  // namespace vhostkit
