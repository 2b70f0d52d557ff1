// The edits a flow's actions make to a frame (ovs-ofctl's strip_vlan, mod_vlan_vid,
// mod_vlan_pcp, mod_dl_src/dst, mod_nw_src/dst, set_field of ipv6_src/dst, mod_tp_src/dst,
// dec_ttl), applied to a copy of the frame with its virtio_net_hdr beside it. Checksums stay right without being
// recomputed over the frame: the IPv4 header checksum and a complete TCP/UDP checksum are
// updated incrementally (RFC 1624); a partial one (NEEDS_CSUM: the field holds the
// pseudo-header sum, the rest is summed by whoever completes it) is updated for the
// addresses only, as the pseudo-header is all it covers; a UDP checksum of 0 (none) stays 0.
// A tag pushed or popped moves csum_start and hdr_len with the bytes they point at.
#pragma once
#include <cstdint>

#include "net/offload.h"

namespace vhostkit {

struct FrameEdit {
  enum : uint32_t {
    kStripVlan = 1u << 0,
    kVlanVid = 1u << 1,
    kVlanPcp = 1u << 2,
    kDlSrc = 1u << 3,
    kDlDst = 1u << 4,
    kNwSrc = 1u << 5,
    kNwDst = 1u << 6,
    kTpSrc = 1u << 7,
    kTpDst = 1u << 8,
    kDecTtl = 1u << 9,
    kIp6Src = 1u << 10,
    kIp6Dst = 1u << 11,
  };
  static constexpr uint32_t kVlanEdits = kStripVlan | kVlanVid | kVlanPcp;
  uint32_t set = 0;  // which edits, in the order above (a strip before a new tag)
  uint16_t vid = 0, pcp = 0;
  uint64_t dl_src = 0, dl_dst = 0;
  uint32_t nw_src = 0, nw_dst = 0;
  uint8_t ip6_src[16] = {}, ip6_dst[16] = {};
  uint16_t tp_src = 0, tp_dst = 0;
};

// What EditFrame did.
enum class EditResult { kDone, kTtlExpired };

// Applies e to the frame of *len bytes at f (room for cap >= *len + 4 bytes), h its header.
// Edits of fields the frame does not have (IPv4 addresses of an ARP frame, ports of a
// fragment) are skipped; IPv6 frames are edited when no extension header comes before
// TCP/UDP. kTtlExpired: dec_ttl met an IPv4 TTL or IPv6 hop limit of 0 or 1 (the frame is
// left as it was after the VLAN and MAC edits; a router drops it or answers it).
EditResult EditFrame(uint8_t* f, uint32_t* len, uint32_t cap, NetHdr* h, const FrameEdit& e);

// A complemented Internet checksum after a 32-bit word of what it covers went from `from`
// to `to` (RFC 1624, eqn. 3).
uint16_t ChecksumUpdate32(uint16_t sum, uint32_t from, uint32_t to);

}  // namespace vhostkit
