// The switch's whole burst in native code for the common case: after classification
// (switch_fdb.h), frames are grouped by destination port, RX queue (flow hash) and VLAN
// operation, and each group is delivered into its receiver's RX buffers (net.h: one copy,
// guest to guest). Ports this cannot serve (host ports, captured ports, ports without RX
// queues) are left to JavaScript, frame by frame. The table is owned by one data-plane
// thread; nothing here is shared between threads.
#pragma once
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "net.h"
#include "switch_fdb.h"

namespace vhostkit {

constexpr uint32_t kSwitchMaxRx = 8;      // RX queues of a port served here
constexpr int32_t kEgressNone = -3;       // the port does not carry the frame's VLAN
constexpr uint32_t kSwitchHead = 64;      // bytes of each frame head read for classification

// One port as the native burst sees it.
struct SwitchPort {
  int32_t id = 0;
  bool deliver = false;  // frames for it are delivered here (else JavaScript does it)
  uint32_t hdr_len = 12;
  bool mergeable = true;
  RxOffloads offloads;
  uint32_t max_frame = 0;
  bool tx_offloads = false;  // its TX headers may carry offloads
  uint32_t nrx = 0;
  uint32_t rx_slot[kSwitchMaxRx] = {};  // its RX queues (native slots), in queue order
  bool access = true;
  uint32_t vid = 1;
  int32_t native = -1;
  bool all_allowed = true;
  uint32_t allowed[4096 / 32] = {};

  IngressVlan Ingress() const;
  // The VLAN operation (-1 keep, -2 strip, or a TCI to insert) for a frame of vid, or
  // kEgressNone if this port does not carry vid.
  int32_t Egress(uint32_t vid, bool tagged) const;

  // Per-burst staging: lists[(k * 3 + kind) * burst ...] frame indices, kind 0 keep, 1 strip, 2 insert.
  std::vector<uint16_t> lists;
  uint32_t counts[kSwitchMaxRx][3] = {};
  int32_t insert_tci = 0;
  bool touched = false;
};

// A flow's RX queue among several: FNV-1a of the IPv4 addresses and ports (else of the
// MACs) of a 64-byte head, with a final avalanche. The same as the engine's flowHash.
uint32_t SwitchFlowHash(const uint8_t* head);

// What delivering to one RX queue of one port gave in a burst.
struct SwitchRecord {
  int32_t port;
  uint32_t k;       // the queue's position among the port's RX queues
  int32_t result;   // 1 the driver was notified, 0 not, < 0 the queue broke (-VqError)
  DeliverStats st;
};

class SwitchPorts {
 public:
  explicit SwitchPorts(uint32_t burst) : burst_(burst) {}
  // Adds or replaces port p.id.
  void Set(const SwitchPort& p);
  void Remove(int32_t id);
  SwitchPort* Find(int32_t id);
  // RX queues of the ports delivered here (bounds the records of one burst).
  uint32_t DeliverQueues() const;

  // Finds an RX queue by its native slot: the queue and its burst arrays (scratch for popping).
  using Resolve = bool (*)(uint32_t slot, Virtqueue** q, const BurstArrays** arrays);

  // Groups frames [0, n) of a classified burst from `src` (dest, vid, tagged as
  // SwitchClassify wrote them, heads at kSwitchHead stride) and delivers the groups of ports
  // served here from the source burst `tx`. Frames that also go to a port not served here
  // are listed in left[0, *nleft). One SwitchRecord per (port, queue) delivered to goes to
  // records (*nrec of them; room for DeliverQueues() is needed).
  void Forward(const SwitchPort& src, const TxSource& tx, const uint8_t* heads, const int32_t* dest, const int32_t* vid,
               const int32_t* tagged, uint32_t n, Resolve resolve, uint16_t* left, uint32_t* nleft, SwitchRecord* records,
               uint32_t max_rec, uint32_t* nrec);

 private:
  void Stage(SwitchPort& q, uint32_t i, const uint8_t* heads, const int32_t* vid, const int32_t* tagged);

  uint32_t burst_;
  std::vector<std::unique_ptr<SwitchPort>> list_;  // for flooding, in the order added
  std::unordered_map<int32_t, SwitchPort*> by_id_;
  std::vector<SwitchPort*> touched_;
};

}  // namespace vhostkit
