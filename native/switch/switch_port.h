// A switch port as the data plane sees it: its kind (a guest, a TAP device, a VXLAN
// tunnel), its virtio-net settings, its VLAN rules, its RX queues and counters, its host
// side and capture. Each rule of where a frame goes on the way out (VLAN membership and
// edit, the RX queue of a flow) is written here once, for every path.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <vector>

#include "net/offload.h"
#include "switch/switch_fdb.h"
#include "switch/switch_layout.h"
#include "net/vlan.h"

namespace vhostkit {

// Bytes of each frame's head read for classification and flows: enough for an 802.1Q tag,
// the longest IPv4 header and TCP up to its flags (18 + 60 + 14 = 92; IPv6: 18 + 40 + 14),
// rounded to 16.
constexpr uint32_t kSwitchHead = 96;

constexpr int32_t kEgressNone = -3;  // the port does not carry the frame's VLAN

enum class PortKind : int32_t { kGuest = 0, kTap = 1, kVxlan = 2 };

// 802.1Q membership: an access port (one VLAN, untagged) or a trunk (tagged VLANs, all or a
// set, and optionally a native VLAN carried untagged).
struct VlanRule {
  bool access = true;
  uint32_t vid = 1;
  int32_t native = -1;
  bool all_allowed = true;
  uint32_t allowed[layout::port_word::kAllowedWords] = {};

  IngressVlan Ingress() const;
  // The VLAN operation (kVlanKeep, kVlanStrip or a TCI to insert) for a frame of vid that
  // came tagged or not, or kEgressNone if this port does not carry vid.
  int32_t Egress(uint32_t vid, bool tagged) const;
};

// A flow's RX queue among several: FNV-1a of the IPv4 addresses and ports (else of the
// MACs) of a kSwitchHead-byte head, with a final avalanche (FNV-1a alone leaves the low
// bits, used for "% queues", weak).
uint32_t SwitchFlowHash(const uint8_t* head);

// The 802.1Q edit of `op` applied to a frame: at most len + 4 bytes written to out.
// Returns the new length (a strip of an untagged frame leaves it as it is).
uint32_t ApplyVlan(const uint8_t* frame, uint32_t len, int32_t op, uint8_t* out);

struct RxQueueRef {
  uint32_t slot;   // the native queue slot (bind_queue.cc)
  double* stats;   // layout::queue_stat words, held by the binding
};

struct VtepTable;  // switch_host.h
class HandoffRing;  // switch_handoff.h

// Where a TAP or VXLAN port's frames go and come from.
struct HostSide {
  int fd = -1;
  bool offloads = false;  // TAP: the device takes (and gives) virtio_net_hdr offloads
  uint32_t vni = 0;       // VXLAN
  uint8_t vxlan_hdr[8] = {};
  sockaddr_storage dest{};
  socklen_t dest_len = 0;
  // VXLAN with many remote VTEPs (EVPN): frames go by the table, not to dest. Held by the binding.
  const VtepTable* vteps = nullptr;
};

// A capture's staging: pcap records (16-byte header, then the frame cut at snaplen) appended
// at state[AT] in buf, which the binding holds and JavaScript hands on.
struct PcapStage {
  uint8_t* buf = nullptr;
  size_t len = 0;
  double* state = nullptr;  // layout::capture_word
};

struct SwitchPort {
  int32_t id = 0;
  PortKind kind = PortKind::kGuest;
  uint32_t hdr_len = 12;
  bool mergeable = true;
  RxOffloads offloads;      // what its guest takes as is
  uint32_t max_frame = 0;   // largest non-GSO frame its guest takes, 0: no limit
  bool tx_offloads = false; // its guest's TX headers may carry offloads
  VlanRule vlan;
  std::vector<RxQueueRef> rx;   // guest: its RX queues in queue order
  double* counters = nullptr;   // layout::port_counter words, held by the binding
  HostSide host;
  bool captured = false;
  PcapStage capture;
  // A port another data-plane thread of the switch owns: frames for it go into the ring
  // to that thread (switch_handoff.h), which delivers them.
  HandoffRing* handoff = nullptr;
  uint32_t owner = 0;

  // Destinations of one burst: one queue for a host port or the ring to the owner, else
  // its RX queues.
  uint32_t Queues() const { return kind == PortKind::kGuest && handoff == nullptr ? static_cast<uint32_t>(rx.size()) : 1; }
  void Count(uint32_t counter, double v) { counters[counter] += v; }

  // Per-burst staging (switch_forward.cc): lists[(k * 3 + kind) * burst ...] frame indices
  // for queue k, kind 0 keep, 1 strip, 2 insert insert_tci.
  std::vector<uint16_t> lists;
  std::vector<uint32_t> counts;  // [queues * 3]
  int32_t insert_tci = 0;
  bool touched = false;
  // The last frame staged here (Forwarder's stage_seq_): a frame that a flow sends to this
  // port twice (output:P,output:P; FLOOD,NORMAL) is staged once, so a list holds at most a
  // burst.
  uint64_t staged_seq = 0;
};

}  // namespace vhostkit
