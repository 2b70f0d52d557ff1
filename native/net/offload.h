// Software fallbacks for virtio-net offloads (virtio 1.2 §5.1.6.2): when a sender hands us
// a partially checksummed (NEEDS_CSUM) or TSO (GSO) frame and the receiver did not
// negotiate taking it as is, we complete the checksum or cut the frame into MSS-sized
// TCP segments ourselves, so no guest ever receives a frame it did not agree to. Every
// number in the sender's header is checked against the frame before use.
#pragma once
#include <cstdint>
#include <functional>

namespace vhostkit {

// struct virtio_net_hdr (the first 10 bytes).
struct NetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
constexpr uint8_t kHdrNeedsCsum = 1;
constexpr uint8_t kHdrDataValid = 2;
constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcpV4 = 1;
constexpr uint8_t kGsoUdp = 3;
constexpr uint8_t kGsoTcpV6 = 4;
constexpr uint8_t kGsoEcn = 0x80;

NetHdr ParseNetHdr(const uint8_t* b);
void WriteNetHdr(const NetHdr& h, uint8_t* b);

// What a receiver negotiated (its GUEST_* features, or a TAP's TUNSETOFFLOAD).
struct RxOffloads {
  bool csum = false;  // GUEST_CSUM
  bool tso4 = false;  // GUEST_TSO4
  bool tso6 = false;  // GUEST_TSO6
  bool ecn = false;   // GUEST_ECN
  bool ufo = false;   // GUEST_UFO
};

// Can this receiver take a frame with this header as it is?
bool AcceptsAsIs(const NetHdr& h, const RxOffloads& rx);

// Writes the Internet checksum over frame[csum_start, len) at csum_start + csum_offset.
// False if the offsets do not fit the frame.
bool CompleteChecksum(uint8_t* frame, uint32_t len, uint32_t csum_start, uint32_t csum_offset);

// A frame that arrived without offload metadata (a VXLAN datagram from a UDP socket) whose
// TCP or UDP checksum may have been left partial by the sender: Linux, for a packet it
// knows will not leave the host (veth, bridge, a netns VTEP), keeps CHECKSUM_PARTIAL and
// puts only the folded pseudo-header sum in the checksum field; a UDP socket then hands us
// the bytes without saying so. If the frame (Ethernet, up to two 802.1Q / 802.1ad tags,
// IPv4 not fragmented or IPv6 without extension headers, TCP or UDP, lengths from the IP
// header so that Ethernet padding is not summed) has exactly that value in its checksum
// field, the checksum is completed in place and true returned. Anything else (other
// protocols, fragments, IPv4 UDP with checksum 0, a field that is not the pseudo-header sum,
// a complete checksum, right or wrong) is left untouched and false returned: real corruption
// still reaches the receiver as corruption. A complete checksum that happens to equal the
// pseudo-header sum is rewritten with the same value (0 may become 0xffff, the same in ones'
// complement), so the frame stays valid.
bool CompletePartialL4(uint8_t* frame, uint32_t len);

// Where CompletePartialL4 found a partial checksum (offsets from the frame's start).
struct PartialL4 {
  uint32_t l3 = 0;         // IP header
  uint32_t l4 = 0;         // TCP / UDP header (csum_start)
  uint32_t l4_len = 0;     // TCP / UDP header + payload, from the IP header
  uint32_t field = 0;      // csum_offset: 16 (TCP) or 6 (UDP)
  uint8_t proto = 0;       // 6 or 17
  bool v6 = false;
  uint8_t tags = 0;        // VLAN tags before the IP header
  uint16_t outer_tpid = 0; // the first tag's TPID, if any
};
// The test of CompletePartialL4 without the completion: true (and *out) if the frame's
// checksum field holds exactly its folded pseudo-header sum.
bool FindPartialL4(const uint8_t* frame, uint32_t len, PartialL4* out);

// Cuts a TSO frame (IPv4 or IPv6, TCP, no IP options beyond what the header lengths say)
// into segments of at most gso_size payload bytes, each a complete frame with correct
// lengths, IPv4 ids and checksums, TCP sequence numbers, flags and checksums, written to
// `scratch` (at least 256 + gso_size bytes) and handed to `emit`. Returns the number of
// segments, or -1 if the frame or header is malformed.
int32_t SegmentTcp(const uint8_t* frame, uint32_t len, const NetHdr& h, uint8_t* scratch, uint32_t scratch_len,
                   const std::function<bool(const uint8_t*, uint32_t)>& emit);

}  // namespace vhostkit
