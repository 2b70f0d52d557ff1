// The virtio-net per-packet loops (virtio 1.2 §5.1.6): reading the first bytes of each
// frame of a TX burst for classification, and delivering frames of a TX burst into a
// destination queue's RX buffers (one copy, guest to guest), mergeable or not. JavaScript
// decides where packets go; this moves the bytes.
#pragma once
#include <cstdint>

#include "memory/memory.h"
#include "net/offload.h"
#include "ring/virtqueue.h"

namespace vhostkit {

// The largest frame accepted (64 KiB TSO frames plus headers).
constexpr uint32_t kMaxFrame = 65536 + 256;
// RX chains one packet may spread over (mergeable buffers).
constexpr uint32_t kMaxMergeBuffers = 64;

// Copies bytes [hdr, hdr + stride) of the readable data of chains 0..n-1 of a burst into
// out + i*stride (zero-filled past the frame), and each frame's length (readable bytes
// minus hdr; 0 if shorter than hdr) into lens[i].
void NetPeek(const BurstArrays& b, const MemTable& mem, uint32_t n, uint32_t hdr, uint8_t* out, uint32_t stride,
             uint32_t* lens);

struct DeliverStats {
  uint32_t delivered = 0;
  uint32_t no_buffers = 0;  // destination had no (or not enough) RX buffers: dropped
  uint32_t too_big = 0;     // frame larger than kMaxFrame or than one buffer without mergeable
  uint32_t bad = 0;         // source frame shorter than its header + an Ethernet header
  uint32_t bytes = 0;       // frame bytes delivered
  uint32_t segmented = 0;   // TSO frames cut into segments in software (segments delivered)
  uint32_t csum_done = 0;   // partial checksums completed in software
};

struct RxTarget {
  Virtqueue* q;
  const BurstArrays* arrays;  // scratch for popping RX chains (the target queue's own)
  uint32_t hdr_len;  // 10 (legacy) or 12 (VERSION_1 / MRG_RXBUF)
  bool mergeable;
  RxOffloads offloads;  // what the receiver takes as is; anything else is done in software
  uint32_t max_frame = 0;  // largest non-GSO frame the receiver takes (its MTU + L2 header); 0: no limit
};

struct TxSource {
  const BurstArrays* arrays;
  const MemTable* mem;
  uint32_t hdr_len;
  bool offloads;  // the source's headers may carry offloads (it negotiated CSUM / HOST_TSO*)
  // 802.1Q on the way (vlan.h): kVlanKeep, kVlanStrip (the 4 bytes after the MACs are
  // removed: asked for tagged frames only, as the switch's egress rule does), or a TCI
  // 0..65535 to insert after the MACs.
  int32_t vlan = -1;
};

// Delivers chains[0..n) of the source burst into RX buffers of the target. Returns 1 if
// the driver of the target asked for a notification (and it was signalled), 0 if not, or
// -VqError if the target queue is broken (st says how many were delivered before).
int32_t NetDeliver(const RxTarget& dst, const TxSource& src, const uint16_t* chains, uint32_t n, DeliverStats* st);

// Copies chains[0..n) of a burst into a flat host buffer as finished frames: the VLAN
// operation applied, partial checksums completed, TSO frames cut into segments (so a host
// port that cannot take offloads, like a VXLAN tunnel, gets plain frames). Frame k of the
// output is lens[k] bytes at out + offsets[k]. Returns the number of frames written (stops
// when out or max_frames is full); st counts bad frames and software work.
uint32_t NetToFlat(const TxSource& src, const uint16_t* chains, uint32_t n, uint8_t* out, uint32_t out_len,
                   uint32_t* offsets, uint32_t* lens, uint32_t max_frames, DeliverStats* st);

// Copies the frame of chain c of a burst (the bytes after its header, no VLAN operation)
// to out, and the first 10 bytes of its header to hdr10 (zeros if the source carries no
// offloads). Returns the frame's length, or 0 if it is shorter than an Ethernet header or
// longer than cap.
uint32_t NetReadFrame(const TxSource& src, uint32_t c, uint8_t* out, uint32_t cap, uint8_t* hdr10);

// The same for frames in one host buffer: frame k is lens[k] bytes at base + offsets[k]
// (no virtio_net_hdr); hdr10, if not null, holds 10 header bytes per frame to give the
// receiver (offload flags from a TAP device), else the frames carry no offload.
int32_t NetDeliverFlat(const RxTarget& dst, const uint8_t* base, const uint32_t* offsets, const uint32_t* lens, uint32_t n,
                       const uint8_t* hdr10, int32_t vlan, DeliverStats* st);

}  // namespace vhostkit
