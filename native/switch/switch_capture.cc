#include "switch/switch_capture.h"

#include <algorithm>
#include <cstring>

namespace vhostkit {
namespace {

namespace cw = layout::capture_word;
constexpr uint32_t kRecordHead = 16;  // ts_sec, ts_usec, incl_len, orig_len (u32, little endian)

bool Done(const SwitchPort& p) { return p.capture.state[cw::DONE] != 0; }

void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }  // x86-64 and arm64: little endian

// Finishes a record whose frame (len bytes) is already at buf + at + kRecordHead.
void Commit(SwitchPort& p, size_t at, uint32_t len, const timespec& ts) {
  double* s = p.capture.state;
  const uint32_t incl = std::min<uint32_t>(len, static_cast<uint32_t>(s[cw::SNAPLEN]));
  uint8_t* r = p.capture.buf + at;
  Put32(r, static_cast<uint32_t>(ts.tv_sec));
  Put32(r + 4, static_cast<uint32_t>(ts.tv_nsec / 1000));
  Put32(r + 8, incl);
  Put32(r + 12, len);
  s[cw::AT] = static_cast<double>(at + kRecordHead + incl);
  s[cw::PENDING]++;
  s[cw::PACKETS]++;
  if (s[cw::LIMIT] > 0 && s[cw::PACKETS] >= s[cw::LIMIT]) s[cw::DONE] = 1;
}

// Room for a record of up to `len` frame bytes at the staging's end, or null (counted lost).
uint8_t* Room(SwitchPort& p, size_t len, size_t* at) {
  *at = static_cast<size_t>(p.capture.state[cw::AT]);
  if (*at > p.capture.len || p.capture.len - *at < kRecordHead + len) {
    p.capture.state[cw::LOST]++;
    p.Count(layout::port_counter::CAPTURE_LOST, 1);
    return nullptr;
  }
  return p.capture.buf + *at + kRecordHead;
}

}  // namespace

bool CaptureChains(SwitchPort& p, const TxSource& src, const uint16_t* chains, uint32_t n, const timespec& ts) {
  for (uint32_t j = 0; j < n && !Done(p); j++) {
    size_t at = 0;
    // A chain's frame is at most kMaxFrame bytes, + 4 for an inserted tag.
    uint8_t* out = Room(p, kMaxFrame + 4, &at);
    if (out == nullptr) continue;
    uint32_t off = 0;
    uint32_t len = 0;
    DeliverStats st;
    // The frame as the guest wrote it (no offload finished), with the delivery's VLAN edit.
    TxSource plain = src;
    plain.offloads = false;
    if (NetToFlat(plain, chains + j, 1, out, kMaxFrame + 4, &off, &len, 1, &st) == 1) Commit(p, at, len, ts);
  }
  return !Done(p);
}

bool CaptureFlat(SwitchPort& p, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint16_t* idx, uint32_t n,
                 int32_t vlan, const timespec& ts) {
  for (uint32_t j = 0; j < n && !Done(p); j++) {
    const uint32_t i = idx != nullptr ? idx[j] : j;
    size_t at = 0;
    uint8_t* out = Room(p, size_t{lens[i]} + 4, &at);
    if (out == nullptr) continue;
    Commit(p, at, ApplyVlan(base + off[i], lens[i], vlan, out), ts);
  }
  return !Done(p);
}

}  // namespace vhostkit
