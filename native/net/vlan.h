// The 802.1Q edit every delivery path applies (virtio-net frames after their header, host
// buffers, TAP and VXLAN sends), written once: an operation is kVlanKeep (the frame as it
// is), kVlanStrip (the tag after the MAC addresses removed) or a TCI >= 0 (a tag with it
// inserted after the MAC addresses); either way the 12 MAC bytes and the tag are the only
// bytes that move, and offsets into the frame (csum_start, hdr_len) move by VlanDelta.
#pragma once
#include <cstdint>

namespace vhostkit {

constexpr int32_t kVlanKeep = -1;
constexpr int32_t kVlanStrip = -2;
constexpr uint32_t kMacBytes = 12;  // destination and source MAC: the tag goes after them
constexpr uint32_t kTagBytes = 4;   // TPID 0x8100 and the TCI

// The frame (len bytes at eth) carries an 802.1Q tag after its MACs.
inline bool HasTag(const uint8_t* eth, uint32_t len) { return len >= kMacBytes + kTagBytes + 2 && eth[12] == 0x81 && eth[13] == 0x00; }

// Writes the tag inserted by operation tci (>= 0).
inline void PutTag(uint8_t* at, int32_t tci) {
  at[0] = 0x81;
  at[1] = 0x00;
  at[2] = static_cast<uint8_t>(tci >> 8);
  at[3] = static_cast<uint8_t>(tci & 0xff);
}

// What the frame's length (and every offset past the MACs) changes by under op, for a
// frame that is tagged or not.
inline int32_t VlanDelta(int32_t op, bool tagged) {
  if (op >= 0) return static_cast<int32_t>(kTagBytes);
  return op == kVlanStrip && tagged ? -static_cast<int32_t>(kTagBytes) : 0;
}

}  // namespace vhostkit
