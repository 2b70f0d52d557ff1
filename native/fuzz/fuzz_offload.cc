// libFuzzer target: the virtio-net header and the software offloads (offload.cc) on
// hostile headers and frames, with the frames in exact-size heap buffers.
//
// Input: u8 mode (bit 0: stop the segment emitter after u8 segments; bits 1-5 receiver
// offloads), the 10-byte virtio_net_hdr, u16 scratch length slack, then the frame (the rest).
// Oracles: CompleteChecksum succeeds exactly when its offsets fit and changes only the
// two checksum bytes; every segment SegmentTcp emits fits the scratch buffer, has valid
// IPv4 header and TCP checksums, the right sequence number, and the payloads put together
// are the frame's payload.
#include <vector>

#include "net/offload.h"
#include "fuzz_common.h"

namespace {

using namespace fuzz;

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t Get32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint64_t Sum(const uint8_t* p, uint32_t n, uint64_t acc = 0) {
  for (; n >= 2; p += 2, n -= 2) acc += Get16(p);
  if (n) acc += uint32_t{p[0]} << 8;
  return acc;
}
uint16_t Fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(~acc & 0xffff);
}

void CheckChecksum(const uint8_t* frame, uint32_t len, const NetHdr& h) {
  HeapBuf b(len);
  if (len) memcpy(b.p, frame, len);
  const bool ok = CompleteChecksum(b.p, len, h.csum_start, h.csum_offset);
  const bool want = h.csum_start < len && h.csum_offset <= len - h.csum_start && len - h.csum_start - h.csum_offset >= 2;
  FUZZ_CHECK(ok == want, "CompleteChecksum(len %u, start %u, offset %u) returned %d", len, h.csum_start, h.csum_offset, ok);
  const uint32_t at = uint32_t{h.csum_start} + h.csum_offset;
  for (uint32_t i = 0; i < len; i++) {
    if (ok && (i == at || i == at + 1)) continue;
    FUZZ_CHECK(b.p[i] == frame[i], "CompleteChecksum changed byte %u (checksum at %u)", i, at);
  }
}

void CheckSegments(const uint8_t* frame, uint32_t len, const NetHdr& h, uint32_t scratch_len, int32_t stop_after) {
  HeapBuf f(len);
  if (len) memcpy(f.p, frame, len);
  HeapBuf scratch(scratch_len);
  std::vector<uint8_t> payload;
  uint32_t calls = 0;
  uint32_t l3 = 0, l4 = 0, hdrs = 0;
  bool v4 = false;
  const int32_t r = SegmentTcp(f.p, len, h, scratch.p, scratch_len, [&](const uint8_t* p, uint32_t n) {
    FUZZ_CHECK(p == scratch.p && n <= scratch_len, "segment of %u bytes at %p, scratch %u bytes", n, static_cast<const void*>(p), scratch_len);
    if (calls == 0) {
      // The headers of the frame as SegmentTcp accepted them (it returned no error yet).
      l3 = Get16(frame + 12) == 0x8100 ? 18 : 14;
      v4 = (frame[l3] >> 4) == 4;
      l4 = v4 ? l3 + (frame[l3] & 0x0f) * 4u : l3 + 40;
      hdrs = l4 + (frame[l4 + 12] >> 4) * 4u;
    }
    FUZZ_CHECK(n > hdrs && n - hdrs <= h.gso_size, "segment %u: %u bytes, headers %u, mss %u", calls, n, hdrs, h.gso_size);
    const uint8_t* ip = p + l3;
    const uint8_t* tcp = p + l4;
    if (v4) {
      FUZZ_CHECK(Fold(Sum(ip, l4 - l3)) == 0, "segment %u: bad IPv4 header checksum", calls);
      FUZZ_CHECK(Get16(ip + 2) == n - l3, "segment %u: IPv4 total length", calls);
    } else {
      FUZZ_CHECK(Get16(ip + 4) == n - l4, "segment %u: IPv6 payload length", calls);
    }
    uint64_t acc = v4 ? Sum(ip + 12, 8) : Sum(ip + 8, 32);
    acc += 6 + (n - l4);
    FUZZ_CHECK(Fold(Sum(tcp, n - l4, acc)) == 0, "segment %u: bad TCP checksum", calls);
    FUZZ_CHECK(Get32(tcp + 4) == Get32(frame + l4 + 4) + static_cast<uint32_t>(payload.size()), "segment %u: sequence number", calls);
    payload.insert(payload.end(), p + hdrs, p + n);
    calls++;
    return stop_after < 0 || calls < static_cast<uint32_t>(stop_after);
  });
  if (r < 0) {
    FUZZ_CHECK(r == -1 && calls == 0, "SegmentTcp returned %d after %u segments", r, calls);
    return;
  }
  FUZZ_CHECK(static_cast<uint32_t>(r) == calls || (stop_after >= 0 && static_cast<uint32_t>(r) + 1 == calls),
             "SegmentTcp returned %d, emitted %u", r, calls);
  if (stop_after < 0) {
    FUZZ_CHECK(payload.size() == len - hdrs && memcmp(payload.data(), frame + hdrs, payload.size()) == 0,
               "segments do not carry the frame's payload");
  }
  for (uint32_t i = 0; i < len; i++) FUZZ_CHECK(f.p[i] == frame[i], "SegmentTcp changed its input frame");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t mode = in.U8();
  uint8_t raw[10];
  in.Bytes(raw, 10);
  const uint16_t slack = in.U16();
  std::vector<uint8_t> frame(std::min<size_t>(in.left(), 65536 + 256));
  in.Bytes(frame.data(), frame.size());
  const uint32_t len = static_cast<uint32_t>(frame.size());

  const NetHdr h = ParseNetHdr(raw);
  uint8_t back[10];
  WriteNetHdr(h, back);
  FUZZ_CHECK(memcmp(raw, back, 10) == 0, "WriteNetHdr(ParseNetHdr(x)) != x");
  RxOffloads rx;
  rx.csum = mode & 2;
  rx.tso4 = mode & 4;
  rx.tso6 = mode & 8;
  rx.ecn = mode & 16;
  rx.ufo = mode & 32;
  const bool as_is = AcceptsAsIs(h, rx);
  const uint8_t gso = h.gso_type & ~kGsoEcn;
  if (gso == kGsoNone && !(h.flags & kHdrNeedsCsum)) FUZZ_CHECK(as_is, "a plain frame refused");
  if (gso != kGsoNone && !rx.csum) FUZZ_CHECK(!as_is, "GSO accepted without GUEST_CSUM");

  CheckChecksum(frame.data(), len, h);
  // The scratch buffer: what net.cc gives (65536 + 512), or something near what is needed.
  const uint32_t scratch_len = (slack & 0x8000) ? 65536 + 512 : 256 + h.gso_size - 64 + (slack & 127);
  CheckSegments(frame.data(), len, h, scratch_len, (mode & 1) ? (mode >> 6) : -1);
  return 0;
}
