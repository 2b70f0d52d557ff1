// Batch I/O between the switch and the host, per burst: guest TX chains written to a TAP
// fd or sent as VXLAN datagrams (RFC 7348) straight from guest memory (iovecs over the
// chain's readable segments, no staging copy of the payload), and frames read from a TAP
// fd or received from a UDP socket into one flat host buffer (which NetDeliverFlat then
// copies into guest RX buffers). Plain C++, no N-API; nothing here ever blocks: a full
// socket or device queue (EAGAIN) drops the frame and counts it.
//
// Each TX chain starts with a virtio_net_hdr of hdr_len (10 or 12) bytes (virtio 1.2
// §5.1.6: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset[, num_buffers]),
// little-endian, then the Ethernet frame.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "memory/memory.h"
#include "ring/virtqueue.h"

namespace vhostkit::hostio {

inline constexpr uint32_t kVnetHdrLen = 12;   // the TAP header (tap.h)
inline constexpr uint32_t kVxlanHdrLen = 8;   // RFC 7348 §5
inline constexpr uint32_t kMaxBatch = 1024;   // frames per call (UIO_MAXIOV messages)

// virtio_net_hdr fields (§5.1.6).
inline constexpr uint8_t kNeedsCsum = 1;   // VIRTIO_NET_HDR_F_NEEDS_CSUM
inline constexpr uint8_t kGsoNone = 0;     // VIRTIO_NET_HDR_GSO_NONE
inline constexpr uint8_t kGsoEcn = 0x80;   // VIRTIO_NET_HDR_GSO_ECN

// Counters of one TX call (the binding adds them to the caller's array).
struct TxStats {
  uint32_t sent = 0;                // frames the kernel took
  uint32_t bytes = 0;               // their Ethernet bytes (after the VLAN operation)
  uint32_t dropped = 0;             // EAGAIN / ENOBUFS: the queue was full (rest of burst dropped)
  uint32_t errors = 0;              // any other send error (last_errno says which)
  uint32_t bad = 0;                 // shorter than header + Ethernet header, or a bad csum_start/offset
  uint32_t too_big = 0;             // frame longer than kMaxFrame
  uint32_t needs_segmentation = 0;  // GSO frame where it cannot go out as it is: not sent
  int32_t last_errno = 0;           // errno of the last error counted in `errors`, else 0
};

// What happens to the frame on the way out.
struct TxOptions {
  uint32_t hdr_len = 12;  // virtio_net_hdr bytes at the start of each chain: 10 or 12
  // 802.1Q, as NetDeliver's TxSource::vlan: -1 leave the frame as it is; -2 remove the
  // 802.1Q tag after the MACs (only if there is one: TPID 0x8100; an untagged frame goes
  // out unchanged); 0..65535 insert a tag with this TCI after the MACs. The 12 MAC bytes and
  // the tag are the only bytes copied; csum_start / hdr_len in a passed header move with them.
  int32_t vlan = -1;
  // TAP only: pass the guest's header (its first 10 bytes, num_buffers 0) to the kernel,
  // which completes partial checksums and segments GSO frames itself. When false the TAP
  // gets a zeroed header: a NEEDS_CSUM frame has its checksum completed here (the two
  // checksum bytes are the only other bytes copied) and a GSO frame is counted in
  // needs_segmentation and not sent. VXLAN always behaves as if false.
  bool pass_hdr = true;
};

// Writes chains[0..n) of a popped burst to a TAP fd, one writev per frame: the 12-byte
// virtio_net_hdr, then the frame's bytes from guest memory. A chain index must be < the
// burst's chain count (the caller checks). On EAGAIN the frame and every later one of the
// burst are dropped (counted), so a full queue costs one syscall per burst.
void TxToTap(int fd, const BurstArrays& b, const MemTable& mem, const uint16_t* chains, uint32_t n,
             const TxOptions& opts, TxStats* st);

// Sends chains[0..n) as VXLAN datagrams to one destination with sendmmsg: each datagram
// is the 8-byte VXLAN header (the same for all) then the frame from guest memory.
void TxToUdp(int fd, const BurstArrays& b, const MemTable& mem, const uint16_t* chains, uint32_t n,
             const TxOptions& opts, const uint8_t vxlan_hdr[kVxlanHdrLen], const sockaddr* dest, socklen_t dest_len,
             TxStats* st);

struct ReadStats {
  uint32_t frames = 0;     // frames recorded
  uint32_t bytes = 0;      // their Ethernet bytes
  uint32_t bad = 0;        // reads shorter than the header + an Ethernet header
  uint32_t truncated = 0;  // reads that filled all the room left: maybe a frame cut short, dropped
};

// Reads frames from a TAP fd into buf until EAGAIN, max_frames, or fewer than `slot` bytes
// left (slot: the room a read must have, header included, and more than the largest frame;
// 12 + 65536 + 256 takes any frame of a TAP with offloads). A frame larger than the room
// left is cut short by the kernel with no error, so a read that fills the room is counted
// as truncated and dropped. Frames are packed back to back: frame k's 12-byte header is
// at offsets[k] - 12, its len[k] Ethernet bytes at offsets[k], and its first 10 header bytes
// are copied to hdrs10 + 10k. Returns the frame count, or -errno if a read failed with an
// error other than EAGAIN before any frame was recorded (after one, the error is left for
// the next call).
// Sends frames held in one host buffer (frame k: lens[k] bytes at base + offsets[k]) as
// VXLAN datagrams to one destination, with sendmmsg. Frames that switch from one host port
// to another (TAP -> VXLAN, announcements) take this path; guest frames take TxToUdp.
void FlatToUdp(int fd, const uint8_t* base, const uint32_t* offsets, const uint32_t* lens, uint32_t n,
               const uint8_t vxlan_hdr[kVxlanHdrLen], const sockaddr* dest, socklen_t dest_len, TxStats* st);

int32_t ReadTap(int fd, uint8_t* buf, uint32_t buf_len, uint32_t slot, uint32_t* offsets, uint32_t* lens,
                uint8_t* hdrs10, uint32_t max_frames, ReadStats* st);

// A frame from a host buffer that carries offload requests (a TAP's header: NEEDS_CSUM,
// GSO) finished in software for a port that takes none (a VXLAN port): written to out as
// one frame with its partial checksum completed (offload.h CompleteChecksum), or as the TCP
// segments of a TSO frame (SegmentTcp), or copied as it is if the header asks for nothing.
// hdr10: the header's first 10 bytes; adj: what the frame's length changed by since the
// header was written (+4 a tag inserted, -4 one removed), added to csum_start. Output frame
// k is lens[k] bytes at out + offsets[k]. Returns the frame count, kFinishBad for a header
// that does not fit the frame (or a GSO type other than TCP), kFinishNoRoom if out or
// max_out is too small.
inline constexpr int32_t kFinishBad = -1;
inline constexpr int32_t kFinishNoRoom = -2;
int32_t FinishFrame(const uint8_t* frame, uint32_t len, const uint8_t hdr10[10], int32_t adj, uint8_t* out, uint32_t out_len,
                    uint32_t* offsets, uint32_t* lens, uint32_t max_out);

struct RecvStats {
  uint32_t datagrams = 0;  // datagrams taken from the socket (accepted or not)
  uint32_t accepted = 0;
  uint32_t bytes = 0;      // Ethernet bytes of the accepted ones
  uint32_t too_short = 0;  // less than the VXLAN header + an Ethernet header
  uint32_t bad_flags = 0;  // I flag (0x08) clear
  uint32_t reserved = 0;   // other flag bits or reserved bytes set (Linux vxlan_rcv drops these too)
  uint32_t truncated = 0;  // larger than a slot
  uint32_t csum_completed = 0;  // accepted frames whose partial TCP/UDP checksum was completed
  uint32_t gso_marked = 0;      // accepted partial TCP frames over kStdMtu given a GSO header instead
};

// The IP packet size above which a partial TCP frame from a tunnel is handed on as a TSO
// frame (RecvUdp) rather than as one oversized frame.
inline constexpr uint32_t kStdMtu = 1500;

// Where accepted datagram k came from and what it carried.
struct RecvOut {
  uint32_t* offsets;   // [max] Ethernet frame at buf + offsets[k] (after the VXLAN header)
  uint32_t* lens;      // [max]
  uint32_t* vni;       // [max] 24-bit VNI
  uint8_t* src_addr;   // [16 * max] IPv4: first 4 bytes; IPv6: 16 bytes (network order)
  uint16_t* src_port;  // [max] host order
  uint8_t* src_family; // [max] 4 or 6
  uint8_t* hdrs10 = nullptr;  // [10 * max] or null: a virtio_net_hdr (first 10 bytes) per frame
};

// One recvmmsg of up to max_frames datagrams into slots of `slot` bytes (datagram j in
// buf + j*slot). Malformed datagrams are counted and skipped; accepted ones are listed in
// out[0..count). Returns the count, or -errno for an error other than EAGAIN.
// An accepted frame whose inner TCP/UDP checksum is partial (its field holds the folded
// pseudo-header sum: what a Linux VTEP on the same host leaves, offload.h
// CompletePartialL4) has it completed in buf, counted in csum_completed; any other
// checksum, right or wrong, is left as it came. With out.hdrs10, every accepted frame gets
// a header there: zero, except for a partial TCP frame whose IP packet is larger than
// kStdMtu and that SegmentTcp can cut (no tag or one 802.1Q tag, no bytes after the IP
// packet): such a frame is a GSO packet the VTEP's kernel never segmented (a veth takes
// them whole) and is left partial with NEEDS_CSUM | GSO_TCPV4/6, gso_size kStdMtu minus
// its IP and TCP headers (counted in gso_marked), so that each receiver takes it as TSO or
// gets it segmented (NetDeliverFlat, FinishFrame). Without hdrs10 it is completed.
int32_t RecvUdp(int fd, uint8_t* buf, uint32_t slot, uint32_t max_frames, const RecvOut& out, RecvStats* st);

// A numeric IPv4 or IPv6 address (an IPv6 one may carry a "%scope" zone) and a port as a
// sockaddr. No name lookups. Returns false if the address is not numeric.
bool ParseSockaddr(const std::string& addr, uint16_t port, sockaddr_storage* out, socklen_t* len);

struct UdpOptions {
  bool reuse_addr = true;   // SO_REUSEADDR
  int v6_only = -1;         // IPV6_V6ONLY for IPv6 sockets: -1 leave the system default
  int rcvbuf = 0;           // SO_RCVBUF if > 0
  int sndbuf = 0;           // SO_SNDBUF if > 0
};

// socket(SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC) of the address's family, options, bind.
// Returns 0 with *fd_out and the bound port (useful for port 0), or a positive errno with
// *failed naming the step; no fd is left open on failure.
int UdpOpen(const sockaddr* addr, socklen_t len, const UdpOptions& opts, int* fd_out, uint16_t* bound_port,
            const char** failed);

}  // namespace vhostkit::hostio
