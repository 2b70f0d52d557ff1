#include "switch/switch_port.h"

#include <cstring>

namespace vhostkit {

IngressVlan VlanRule::Ingress() const {
  IngressVlan in;
  in.access = access;
  in.vid = vid;
  in.native = native;
  in.all_allowed = all_allowed;
  in.allowed = allowed;
  return in;
}

int32_t VlanRule::Egress(uint32_t v, bool tagged) const {
  if (access) {
    if (vid != v) return kEgressNone;
    return tagged ? kVlanStrip : kVlanKeep;
  }
  const bool is_native = native >= 0 && static_cast<uint32_t>(native) == v;
  if (!all_allowed && !is_native && ((allowed[(v & 0xfff) >> 5] >> (v & 31)) & 1) == 0) return kEgressNone;
  if (is_native) return tagged ? kVlanStrip : kVlanKeep;
  return tagged ? kVlanKeep : static_cast<int32_t>(v & 0xfff);
}

uint32_t SwitchFlowHash(const uint8_t* h) {
  uint32_t x = 0x811c9dc5u;
  const bool ipv4 = h[12] == 0x08 && h[13] == 0x00;
  const uint32_t from = ipv4 ? 26 : 0;
  const uint32_t to = ipv4 ? 38 : 12;
  for (uint32_t k = from; k < to; k++) x = (x ^ h[k]) * 16777619u;
  x ^= x >> 16;
  x *= 0x45d9f3bu;
  x ^= x >> 16;
  return x;
}

uint32_t ApplyVlan(const uint8_t* f, uint32_t len, int32_t op, uint8_t* out) {
  if (op == kVlanStrip && HasTag(f, len)) {
    std::memcpy(out, f, kMacBytes);
    std::memcpy(out + kMacBytes, f + kMacBytes + kTagBytes, len - kMacBytes - kTagBytes);
    return len - kTagBytes;
  }
  if (op >= 0 && len >= kMacBytes) {
    std::memcpy(out, f, kMacBytes);
    PutTag(out + kMacBytes, op);
    std::memcpy(out + kMacBytes + kTagBytes, f + kMacBytes, len - kMacBytes);
    return len + kTagBytes;
  }
  std::memcpy(out, f, len);
  return len;
}

}  // namespace vhostkit
