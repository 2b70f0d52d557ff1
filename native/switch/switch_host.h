// A switch's TAP and VXLAN ports on the data-plane thread: frames of a guest's burst or of a
// host buffer sent out of the port (with the delivery's VLAN edit, offloads passed to a
// TAP that takes them and finished in software for one that does not or for a tunnel),
// and the frames waiting on the port's fd read in one batch. Plain C++ over host_io.h;
// nothing blocks (a full device or socket drops and counts, DROP_HOST_BUSY).
#pragma once
#include <cstdint>
#include <vector>

#include "io/host_io.h"
#include "net/net.h"
#include "switch/switch_port.h"

namespace vhostkit {

// A VXLAN port's remote VTEPs (EVPN, RFC 8365): remote r (>= 1) is vteps[r - 1], the
// VTEP the fdb's installed entries with that remote point at; the flood VTEPs (type-3
// routes) each get a copy of broadcast, multicast and unknown unicast frames (head-end
// replication, RFC 8365 §8.3).
struct VtepTable {
  struct Vtep {
    sockaddr_storage addr{};
    socklen_t len = 0;  // 0: unused
    bool flood = false;
  };
  std::vector<Vtep> vteps;
  const SwitchFdb* fdb = nullptr;
  static constexpr uint32_t kMaxVteps = 4096;
};

// Staging the host paths share (one per forwarder: one data-plane thread), allocated by
// the first send to a host port.
struct HostScratch {
  std::vector<uint8_t> flat;      // finished frames, back to back
  std::vector<uint32_t> offsets;
  std::vector<uint32_t> lens;
  std::vector<uint8_t> frame;     // one frame with a VLAN edit
  std::vector<uint32_t> target;   // VTEP of each frame (VtepTable)
  std::vector<uint32_t> goff, glen;  // one VTEP's frames
  void Ensure();
};

// Chains[0, m) of a guest's popped burst (src, with the delivery's VLAN edit in src.vlan)
// out of host port q.
void HostSendChains(SwitchPort& q, const TxSource& src, const uint16_t* chains, uint32_t m, HostScratch& sc);

// Frames idx[0, m) of a host buffer (frame i: lens[i] bytes at base + off[i]; hdr10, if not
// null, 10 virtio_net_hdr bytes per frame) out of host port q, with the VLAN edit `vlan`.
void HostSendFlat(SwitchPort& q, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10,
                  const uint16_t* idx, uint32_t m, int32_t vlan, HostScratch& sc);

// A host port's read side: one batch of frames from its fd (TAP: read until EAGAIN; VXLAN:
// one recvmmsg, frames of other VNIs dropped and counted as DROP_VLAN).
struct HostBatch {
  std::vector<uint8_t> buf;
  std::vector<uint32_t> offsets;
  std::vector<uint32_t> lens;
  std::vector<uint8_t> hdr10;
  std::vector<uint32_t> vni;
  std::vector<uint8_t> src_addr;
  std::vector<uint16_t> src_port;
  std::vector<uint8_t> src_family;
  explicit HostBatch(uint32_t frames);
};

// Reads what port p's fd has (up to the batch's frames). Returns the frames now in the
// batch, or -errno if the read failed; *with_hdr says whether hdr10 holds offload headers
// to pass on (TAP always; VXLAN when a frame was marked TSO).
int32_t HostRead(SwitchPort& p, HostBatch& b, bool* with_hdr);

}  // namespace vhostkit
