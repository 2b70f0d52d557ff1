#include "io/host_io.h"

#include "net/vlan.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "net/net.h"  // kMaxFrame
#include "net/offload.h"

namespace vhostkit::hostio {

namespace {

constexpr uint32_t kIovMax = 1024;  // Linux UIO_MAXIOV: iovecs in one writev / one message

inline uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void PutLe16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v & 0xff);
  p[1] = static_cast<uint8_t>((v >> 8) & 0xff);
}

inline bool Full(int e) { return e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS; }

struct Piece {
  const uint8_t* p;
  uint32_t len;
};

constexpr uint64_t kBadChain = UINT64_MAX;

// The readable bytes of chain c of a popped burst as host pointers, in order. Stops at the
// first device-writable segment, as ReadCursor does. Returns the byte count. Pop checked
// every segment against the memory table; the check is repeated (it is cheap) so that a
// stale chain index or a table swapped since the pop gives kBadChain, never a wild pointer.
uint64_t ChainPieces(const BurstArrays& b, const MemTable& m, uint32_t c, std::vector<Piece>* out) {
  out->clear();
  const uint32_t first = b.first_seg[c];
  const uint32_t end = b.first_seg[c + 1];
  if (first > end || end > b.max_segs) return kBadChain;
  const auto& regions = m.regions();
  uint64_t total = 0;
  for (uint32_t s = first; s < end; s++) {
    if (b.seg_flags[s] & 1) break;
    if (b.seg_len[s] == 0) continue;
    const double off = b.seg_offset[s];
    if (b.seg_region[s] >= regions.size() || !(off >= 0) || off + b.seg_len[s] > static_cast<double>(regions[b.seg_region[s]].size)) {
      return kBadChain;
    }
    out->push_back({regions[b.seg_region[s]].host() + static_cast<uint64_t>(off), b.seg_len[s]});
    total += b.seg_len[s];
  }
  return total;
}

// Calls f(pointer, length) for each contiguous piece of chain bytes [lo, hi).
template <typename F>
void ForRange(const std::vector<Piece>& pieces, uint64_t lo, uint64_t hi, F f) {
  uint64_t pos = 0;
  for (const Piece& pc : pieces) {
    if (lo >= hi) return;
    const uint64_t end = pos + pc.len;
    if (end > lo) {
      const uint64_t a = lo - pos;
      const uint64_t take = std::min<uint64_t>(end, hi) - lo;
      f(pc.p + a, static_cast<uint32_t>(take));
      lo += take;
    }
    pos = end;
  }
}

void CopyRange(const std::vector<Piece>& pieces, uint64_t lo, uint32_t len, uint8_t* dst) {
  ForRange(pieces, lo, lo + len, [&](const uint8_t* p, uint32_t n) {
    std::memcpy(dst, p, n);
    dst += n;
  });
}

void EmitRange(const std::vector<Piece>& pieces, uint64_t lo, uint64_t hi, std::vector<iovec>* iov) {
  ForRange(pieces, lo, hi, [&](const uint8_t* p, uint32_t n) {
    iov->push_back({const_cast<uint8_t*>(p), n});
  });
}

// The Internet checksum (RFC 1071) of chain bytes [lo, hi), complemented, as a device
// completes a NEEDS_CSUM frame (§5.1.6.2: the field already holds the pseudo-header sum).
// 0 becomes 0xffff (the same value in ones' complement; UDP requires it, RFC 768).
uint16_t Checksum(const std::vector<Piece>& pieces, uint64_t lo, uint64_t hi) {
  uint64_t acc = 0;
  bool odd = false;
  ForRange(pieces, lo, hi, [&](const uint8_t* p, uint32_t n) {
    if (odd && n > 0) {
      acc += p[0];
      p++;
      n--;
      odd = false;
    }
    for (; n >= 2; p += 2, n -= 2) acc += (static_cast<uint32_t>(p[0]) << 8) | p[1];
    if (n == 1) {
      acc += static_cast<uint32_t>(p[0]) << 8;
      odd = true;
    }
  });
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  const uint16_t c = static_cast<uint16_t>(~acc & 0xffff);
  return c == 0 ? 0xffff : c;
}

// Bytes of one outgoing frame that are not guest memory. Owned per message so that the
// iovecs of a whole sendmmsg batch stay valid until the call.
struct Scratch {
  uint8_t vhdr[kVnetHdrLen];  // TAP header
  uint8_t head[16];           // MACs (+ 802.1Q tag) when the VLAN operation changes the frame
  uint8_t csum[2];            // a checksum completed here
};

enum class Verdict { kSend, kBad, kTooBig, kNeedsSegmentation };

// Appends the iovecs of the frame of a chain (after its virtio_net_hdr) to iov, with the
// VLAN operation and checksum completion of `o` applied; fills the TAP header in sc.
Verdict BuildFrame(const std::vector<Piece>& pieces, uint64_t total, const TxOptions& o, bool pass_hdr, Scratch* sc,
                   std::vector<iovec>* iov, uint32_t* out_len) {
  const uint32_t hl = o.hdr_len;
  if (total == kBadChain || total < static_cast<uint64_t>(hl) + 14) return Verdict::kBad;
  if (total - hl > kMaxFrame) return Verdict::kTooBig;
  const uint32_t frame = static_cast<uint32_t>(total - hl);
  uint8_t h[10];
  CopyRange(pieces, 0, 10, h);
  const uint8_t flags = h[0];
  const uint8_t gso = h[1];
  const uint32_t gso_hdr_len = Le16(h + 2);
  const uint32_t csum_start = Le16(h + 6);
  const uint32_t csum_offset = Le16(h + 8);
  uint8_t eth[14];
  CopyRange(pieces, hl, 14, eth);

  // 802.1Q: the frame from `from` on is guest memory; before it, head_len bytes of scratch.
  uint32_t from = 0;
  uint32_t head_len = 0;
  int32_t delta = 0;
  delta = VlanDelta(o.vlan, HasTag(eth, frame));
  if (delta > 0) {
    std::memcpy(sc->head, eth, kMacBytes);
    PutTag(sc->head + kMacBytes, o.vlan);
    head_len = kMacBytes + kTagBytes;
    from = kMacBytes;
  } else if (delta < 0) {
    std::memcpy(sc->head, eth, kMacBytes);
    head_len = kMacBytes;
    from = kMacBytes + kTagBytes;
  }
  const uint32_t len = static_cast<uint32_t>(static_cast<int64_t>(frame) + delta);
  if (len > kMaxFrame) return Verdict::kTooBig;

  uint64_t csum_at = UINT64_MAX;  // frame offset of a checksum completed here
  if (pass_hdr) {
    // The guest's offload request goes to the kernel; offsets move with the tag.
    std::memcpy(sc->vhdr, h, 10);
    sc->vhdr[10] = sc->vhdr[11] = 0;  // num_buffers: only meaningful towards a guest
    if (delta != 0 && (flags & kNeedsCsum)) {
      if (csum_start < from) return Verdict::kBad;
      PutLe16(sc->vhdr + 6, static_cast<uint32_t>(static_cast<int32_t>(csum_start) + delta));
    }
    if (delta != 0 && gso != kGsoNone && gso_hdr_len != 0) {
      if (gso_hdr_len < from) return Verdict::kBad;
      PutLe16(sc->vhdr + 2, static_cast<uint32_t>(static_cast<int32_t>(gso_hdr_len) + delta));
    }
  } else {
    std::memset(sc->vhdr, 0, sizeof sc->vhdr);
    if (gso != kGsoNone) return Verdict::kNeedsSegmentation;
    if (flags & kNeedsCsum) {
      const uint64_t at = static_cast<uint64_t>(csum_start) + csum_offset;
      if (csum_start < from || at + 2 > frame) return Verdict::kBad;
      const uint16_t c = Checksum(pieces, static_cast<uint64_t>(hl) + csum_start, total);
      sc->csum[0] = static_cast<uint8_t>(c >> 8);
      sc->csum[1] = static_cast<uint8_t>(c & 0xff);
      csum_at = at;
    }
  }

  if (head_len > 0) iov->push_back({sc->head, head_len});
  if (csum_at != UINT64_MAX) {
    EmitRange(pieces, hl + static_cast<uint64_t>(from), hl + csum_at, iov);
    iov->push_back({sc->csum, 2});
    EmitRange(pieces, hl + csum_at + 2, total, iov);
  } else {
    EmitRange(pieces, hl + static_cast<uint64_t>(from), total, iov);
  }
  *out_len = len;
  return Verdict::kSend;
}

// A message with more iovecs than the kernel takes (a chain of ~1000 tiny segments):
// copies iov[start..) into a staging buffer and leaves one iovec over it.
void Flatten(std::vector<iovec>* iov, size_t start, std::vector<uint8_t>* staging) {
  size_t bytes = 0;
  for (size_t i = start; i < iov->size(); i++) bytes += (*iov)[i].iov_len;
  staging->resize(bytes);
  size_t at = 0;
  for (size_t i = start; i < iov->size(); i++) {
    std::memcpy(staging->data() + at, (*iov)[i].iov_base, (*iov)[i].iov_len);
    at += (*iov)[i].iov_len;
  }
  iov->resize(start);
  iov->push_back({staging->data(), bytes});
}

bool Count(Verdict v, TxStats* st) {
  switch (v) {
    case Verdict::kSend:
      return true;
    case Verdict::kBad:
      st->bad++;
      break;
    case Verdict::kTooBig:
      st->too_big++;
      break;
    case Verdict::kNeedsSegmentation:
      st->needs_segmentation++;
      break;
  }
  return false;
}

}  // namespace

void TxToTap(int fd, const BurstArrays& b, const MemTable& mem, const uint16_t* chains, uint32_t n,
             const TxOptions& opts, TxStats* st) {
  thread_local std::vector<Piece> pieces;
  thread_local std::vector<iovec> iov;
  thread_local std::vector<uint8_t> staging;
  Scratch sc;
  for (uint32_t k = 0; k < n; k++) {
    const uint64_t total = ChainPieces(b, mem, chains[k], &pieces);
    iov.clear();
    iov.push_back({sc.vhdr, kVnetHdrLen});
    uint32_t len = 0;
    if (!Count(BuildFrame(pieces, total, opts, opts.pass_hdr, &sc, &iov, &len), st)) continue;
    if (iov.size() > kIovMax) Flatten(&iov, 1, &staging);
    ssize_t r;
    do {
      r = writev(fd, iov.data(), static_cast<int>(iov.size()));
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      st->sent++;
      st->bytes += len;
    } else if (Full(errno)) {
      st->dropped += n - k;  // the queue is full: the rest of the burst goes too
      return;
    } else {
      const int e = errno;
      // A file truncated under guest memory raises no SIGBUS inside a syscall: touch the
      // frame's pages so the guard (guest_fault.h) sees it and the session ends.
      if (e == EFAULT) guest_fault::Probe(iov.data(), iov.size());
      st->errors++;
      st->last_errno = e;
    }
  }
}

// sendmmsg until everything went, the socket is full (the rest is dropped and counted:
// never block), or a message fails (counted, then the next one is tried).
void SendAll(int fd, mmsghdr* msgs, const uint32_t* lens, uint32_t count, TxStats* st) {
  uint32_t i = 0;
  while (i < count) {
    const int r = sendmmsg(fd, msgs + i, count - i, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r > 0) {
      for (uint32_t j = i; j < i + static_cast<uint32_t>(r); j++) {
        st->sent++;
        st->bytes += lens[j];
      }
      i += static_cast<uint32_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r == 0 || Full(errno)) {
      st->dropped += count - i;
      return;
    } else {
      const int e = errno;
      if (e == EFAULT) guest_fault::Probe(msgs[i].msg_hdr.msg_iov, msgs[i].msg_hdr.msg_iovlen);  // as in TxToTap
      st->errors++;
      st->last_errno = e;
      i++;
    }
  }
}

void TxToUdp(int fd, const BurstArrays& b, const MemTable& mem, const uint16_t* chains, uint32_t n,
             const TxOptions& opts, const uint8_t vxlan_hdr[kVxlanHdrLen], const sockaddr* dest, socklen_t dest_len,
             TxStats* st) {
  thread_local std::vector<Piece> pieces;
  thread_local std::vector<iovec> iov;
  thread_local std::vector<Scratch> scratch;
  thread_local std::vector<std::vector<uint8_t>> staging;
  thread_local std::vector<mmsghdr> msgs;
  thread_local std::vector<uint32_t> starts, lens;
  if (scratch.size() < n) scratch.resize(n);
  if (staging.size() < n) staging.resize(n);
  iov.clear();
  starts.clear();
  lens.clear();
  for (uint32_t k = 0; k < n; k++) {
    const uint64_t total = ChainPieces(b, mem, chains[k], &pieces);
    const size_t start = iov.size();
    const uint32_t m = static_cast<uint32_t>(starts.size());
    iov.push_back({const_cast<uint8_t*>(vxlan_hdr), kVxlanHdrLen});
    uint32_t len = 0;
    if (!Count(BuildFrame(pieces, total, opts, false, &scratch[m], &iov, &len), st)) {
      iov.resize(start);
      continue;
    }
    if (iov.size() - start > kIovMax) Flatten(&iov, start + 1, &staging[m]);
    starts.push_back(static_cast<uint32_t>(start));
    lens.push_back(len);
  }
  const uint32_t count = static_cast<uint32_t>(starts.size());
  if (msgs.size() < count) msgs.resize(count);
  for (uint32_t m = 0; m < count; m++) {
    const size_t end = m + 1 < count ? starts[m + 1] : iov.size();
    std::memset(&msgs[m], 0, sizeof msgs[m]);
    msgs[m].msg_hdr.msg_name = const_cast<sockaddr*>(dest);
    msgs[m].msg_hdr.msg_namelen = dest_len;
    msgs[m].msg_hdr.msg_iov = iov.data() + starts[m];
    msgs[m].msg_hdr.msg_iovlen = end - starts[m];
  }
  SendAll(fd, msgs.data(), lens.data(), count, st);
}

void FlatToUdp(int fd, const uint8_t* base, const uint32_t* offsets, const uint32_t* lens, uint32_t n,
               const uint8_t vxlan_hdr[kVxlanHdrLen], const sockaddr* dest, socklen_t dest_len, TxStats* st) {
  thread_local std::vector<iovec> iov;
  thread_local std::vector<mmsghdr> msgs;
  iov.resize(2 * static_cast<size_t>(n));
  msgs.resize(n);
  for (uint32_t k = 0; k < n; k++) {
    iov[2 * k] = {const_cast<uint8_t*>(vxlan_hdr), kVxlanHdrLen};
    iov[2 * k + 1] = {const_cast<uint8_t*>(base + offsets[k]), lens[k]};
    std::memset(&msgs[k], 0, sizeof msgs[k]);
    msgs[k].msg_hdr.msg_name = const_cast<sockaddr*>(dest);
    msgs[k].msg_hdr.msg_namelen = dest_len;
    msgs[k].msg_hdr.msg_iov = &iov[2 * k];
    msgs[k].msg_hdr.msg_iovlen = 2;
  }
  SendAll(fd, msgs.data(), lens, n, st);
}

int32_t ReadTap(int fd, uint8_t* buf, uint32_t buf_len, uint32_t slot, uint32_t* offsets, uint32_t* lens,
                uint8_t* hdrs10, uint32_t max_frames, ReadStats* st) {
  slot = std::max(slot, kVnetHdrLen + 14);
  uint32_t at = 0;
  uint32_t k = 0;
  int err = 0;
  while (k < max_frames && at <= buf_len && buf_len - at >= slot) {
    const uint32_t room = buf_len - at;
    const ssize_t r = read(fd, buf + at, room);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
      break;
    }
    if (r == 0) break;
    // tun_put_user copies what fits and reports the bytes copied (Linux 6.x), or the
    // frame's full size: either way a read that fills the room may be a frame cut short.
    if (static_cast<uint64_t>(r) >= room) {
      st->truncated++;
      continue;
    }
    if (static_cast<uint32_t>(r) < kVnetHdrLen + 14) {
      st->bad++;
      continue;
    }
    offsets[k] = at + kVnetHdrLen;
    lens[k] = static_cast<uint32_t>(r) - kVnetHdrLen;
    if (hdrs10 != nullptr) std::memcpy(hdrs10 + 10 * static_cast<size_t>(k), buf + at, 10);
    st->frames++;
    st->bytes += lens[k];
    k++;
    at += static_cast<uint32_t>(r);
  }
  if (k == 0 && err != 0) return -err;
  return static_cast<int32_t>(k);
}

int32_t FinishFrame(const uint8_t* frame, uint32_t len, const uint8_t hdr10[10], int32_t adj, uint8_t* out, uint32_t out_len,
                    uint32_t* offsets, uint32_t* lens, uint32_t max_out) {
  const NetHdr h = ParseNetHdr(hdr10);
  if ((h.gso_type & ~vhostkit::kGsoEcn) != vhostkit::kGsoNone) {
    thread_local std::vector<uint8_t> scratch(65536 + 512);
    uint32_t at = 0, k = 0;
    bool full = false;
    const int32_t n = SegmentTcp(frame, len, h, scratch.data(), static_cast<uint32_t>(scratch.size()), [&](const uint8_t* p, uint32_t l) {
      if (k >= max_out || l > out_len - at) {
        full = true;
        return false;
      }
      std::memcpy(out + at, p, l);
      offsets[k] = at;
      lens[k] = l;
      at += l;
      k++;
      return true;
    });
    if (full) return kFinishNoRoom;
    return n < 0 ? kFinishBad : static_cast<int32_t>(k);
  }
  if (max_out < 1 || len > out_len) return kFinishNoRoom;
  std::memcpy(out, frame, len);
  if (h.flags & kHdrNeedsCsum) {
    const int64_t start = static_cast<int64_t>(h.csum_start) + adj;
    if (start < 0 || !CompleteChecksum(out, len, static_cast<uint32_t>(start), h.csum_offset)) return kFinishBad;
  }
  offsets[0] = 0;
  lens[0] = len;
  return 1;
}

int32_t RecvUdp(int fd, uint8_t* buf, uint32_t slot, uint32_t max_frames, const RecvOut& out, RecvStats* st) {
  thread_local std::vector<mmsghdr> msgs;
  thread_local std::vector<iovec> iov;
  thread_local std::vector<sockaddr_storage> from;
  max_frames = std::min(max_frames, kMaxBatch);
  if (max_frames == 0) return 0;
  if (msgs.size() < max_frames) {
    msgs.resize(max_frames);
    iov.resize(max_frames);
    from.resize(max_frames);
  }
  for (uint32_t j = 0; j < max_frames; j++) {
    iov[j] = {buf + static_cast<size_t>(j) * slot, slot};
    std::memset(&msgs[j], 0, sizeof msgs[j]);
    msgs[j].msg_hdr.msg_name = &from[j];
    msgs[j].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
    msgs[j].msg_hdr.msg_iov = &iov[j];
    msgs[j].msg_hdr.msg_iovlen = 1;
  }
  int r;
  do {
    r = recvmmsg(fd, msgs.data(), max_frames, MSG_DONTWAIT, nullptr);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  uint32_t k = 0;
  for (uint32_t j = 0; j < static_cast<uint32_t>(r); j++) {
    st->datagrams++;
    const uint32_t len = msgs[j].msg_len;
    uint8_t* p = buf + static_cast<size_t>(j) * slot;
    if (msgs[j].msg_hdr.msg_flags & MSG_TRUNC) {
      st->truncated++;
      continue;
    }
    if (len < kVxlanHdrLen + 14) {
      st->too_short++;
      continue;
    }
    // RFC 7348 §5: flags (I = 0x08), 24 reserved bits, 24-bit VNI, 8 reserved bits.
    if (!(p[0] & 0x08)) {
      st->bad_flags++;
      continue;
    }
    if (p[0] != 0x08 || p[1] != 0 || p[2] != 0 || p[3] != 0 || p[7] != 0) {
      st->reserved++;
      continue;
    }
    out.vni[k] = (static_cast<uint32_t>(p[4]) << 16) | (static_cast<uint32_t>(p[5]) << 8) | p[6];
    out.offsets[k] = j * slot + kVxlanHdrLen;
    out.lens[k] = len - kVxlanHdrLen;
    uint8_t* a = out.src_addr + 16 * static_cast<size_t>(k);
    std::memset(a, 0, 16);
    if (from[j].ss_family == AF_INET) {
      const auto* s4 = reinterpret_cast<const sockaddr_in*>(&from[j]);
      std::memcpy(a, &s4->sin_addr, 4);
      out.src_port[k] = ntohs(s4->sin_port);
      out.src_family[k] = 4;
    } else if (from[j].ss_family == AF_INET6) {
      const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&from[j]);
      std::memcpy(a, &s6->sin6_addr, 16);
      out.src_port[k] = ntohs(s6->sin6_port);
      out.src_family[k] = 6;
    } else {
      out.src_port[k] = 0;
      out.src_family[k] = 0;
    }
    uint8_t* frame = p + kVxlanHdrLen;
    uint8_t* hdr = out.hdrs10 != nullptr ? out.hdrs10 + 10 * static_cast<size_t>(k) : nullptr;
    if (hdr != nullptr) std::memset(hdr, 0, 10);
    PartialL4 pl;
    if (FindPartialL4(frame, out.lens[k], &pl)) {
      const uint32_t ip_len = pl.l4 - pl.l3 + pl.l4_len;
      const uint32_t thl = pl.proto == 6 ? (frame[pl.l4 + 12] >> 4) * 4u : 0;
      if (hdr != nullptr && pl.proto == 6 && ip_len > kStdMtu && pl.l3 + ip_len == out.lens[k] && thl >= 20 && thl < pl.l4_len &&
          (pl.tags == 0 || (pl.tags == 1 && pl.outer_tpid == 0x8100))) {
        NetHdr g{};
        g.flags = kHdrNeedsCsum;
        g.gso_type = pl.v6 ? vhostkit::kGsoTcpV6 : vhostkit::kGsoTcpV4;
        g.hdr_len = static_cast<uint16_t>(pl.l4 + thl);
        g.gso_size = static_cast<uint16_t>(kStdMtu - (pl.l4 - pl.l3) - thl);
        g.csum_start = static_cast<uint16_t>(pl.l4);
        g.csum_offset = static_cast<uint16_t>(pl.field);
        WriteNetHdr(g, hdr);
        st->gso_marked++;
      } else if (CompleteChecksum(frame, pl.l4 + pl.l4_len, pl.l4, pl.field)) {
        st->csum_completed++;
      }
    }
    st->accepted++;
    st->bytes += out.lens[k];
    k++;
  }
  return static_cast<int32_t>(k);
}

bool ParseSockaddr(const std::string& addr, uint16_t port, sockaddr_storage* out, socklen_t* len) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (getaddrinfo(addr.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) return false;
  const bool ok = res->ai_addrlen <= sizeof(sockaddr_storage) &&
                  (res->ai_family == AF_INET || res->ai_family == AF_INET6);
  if (ok) {
    std::memset(out, 0, sizeof *out);
    std::memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
  }
  freeaddrinfo(res);
  return ok;
}

int UdpOpen(const sockaddr* addr, socklen_t len, const UdpOptions& opts, int* fd_out, uint16_t* bound_port,
            const char** failed) {
  *fd_out = -1;
  const int fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *failed = "socket";
    return errno;
  }
  auto fail = [&](const char* step) {
    const int e = errno;
    close(fd);
    *failed = step;
    return e;
  };
  const int one = 1;
  if (opts.reuse_addr && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) return fail("setsockopt SO_REUSEADDR");
  if (addr->sa_family == AF_INET6 && opts.v6_only >= 0) {
    const int v = opts.v6_only ? 1 : 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v) < 0) return fail("setsockopt IPV6_V6ONLY");
  }
  if (opts.rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opts.rcvbuf, sizeof opts.rcvbuf) < 0) return fail("setsockopt SO_RCVBUF");
  if (opts.sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &opts.sndbuf, sizeof opts.sndbuf) < 0) return fail("setsockopt SO_SNDBUF");
  if (bind(fd, addr, len) < 0) return fail("bind");
  sockaddr_storage got;
  socklen_t got_len = sizeof got;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&got), &got_len) < 0) return fail("getsockname");
  *bound_port = got.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&got)->sin6_port)
                                          : ntohs(reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  *fd_out = fd;
  return 0;
}

}  // namespace vhostkit::hostio
