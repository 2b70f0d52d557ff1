// A switch's flow table: match-action rules over the fields of each frame's head, checked
// by priority (the highest first; among equal ones, the one added first), on the
// data-plane thread after classification. A frame no flow matches is switched by the
// learning switch, as if a flow of priority 0 said `actions=normal` (ovs-ofctl's terms).
// Each flow counts the frames and bytes it matched.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "net/edit.h"
#include "switch/switch_layout.h"

namespace vhostkit {

// An IPv6 address as two 64-bit halves (the first 8 bytes, big-endian, in hi).
struct Ip6 {
  uint64_t hi = 0, lo = 0;
  bool operator==(const Ip6&) const = default;
  // The address under a prefix of len bits (0..128).
  Ip6 Prefix(uint32_t len) const {
    Ip6 r;
    r.hi = len >= 64 ? hi : len == 0 ? 0 : hi & (~uint64_t{0} << (64 - len));
    r.lo = len >= 128 ? lo : len <= 64 ? 0 : lo & (~uint64_t{0} << (128 - len));
    return r;
  }
};

struct FlowMatch {
  uint32_t fields = 0;  // bits of layout::flow_field
  int32_t in_port = 0;
  uint64_t dl_src = 0;
  uint64_t dl_dst = 0;
  uint32_t dl_vlan = 0;
  uint32_t dl_type = 0;
  uint32_t nw_src = 0, nw_src_mask = 0;
  uint32_t nw_dst = 0, nw_dst_mask = 0;
  uint32_t nw_proto = 0;
  uint32_t nw_ttl = 0;
  uint32_t tp_src = 0, tp_dst = 0;
  uint32_t tcp_flags = 0, tcp_flags_mask = 0;
  Ip6 ipv6_src, ipv6_dst;  // under their prefix lengths
  uint32_t ipv6_src_len = 0, ipv6_dst_len = 0;
};

// What a flow does with a frame it matches: its edits (applied to a copy of the frame),
// then its outputs. No output: the frame is dropped.
struct FlowActions {
  FrameEdit edit;
  std::vector<int32_t> ports;     // output:PORT, in order
  std::vector<int32_t> handlers;  // handler:ID
  bool flood = false;
  bool normal = false;
  bool Drops() const { return ports.empty() && handlers.empty() && !flood && !normal; }
  // One destination and no edit: the frame goes where the learning switch's would have,
  // without a copy.
  bool Simple() const { return edit.set == 0 && handlers.empty() && ports.size() + (flood ? 1u : 0u) + (normal ? 1u : 0u) <= 1; }
};

// The actions of a flow from their words (layout::flow_action, n of them): null, or what is
// wrong with them (an unknown op, an argument out of range, an edit after an output, normal
// with a VLAN edit).
constexpr uint32_t kMaxFlowActions = 64;
const char* ReadFlowActions(const int32_t* words, uint32_t n, FlowActions* out);

struct Flow {
  int32_t priority = 0;
  FlowMatch match;
  FlowActions actions;
  int32_t id = 0;
  double packets = 0;
  double bytes = 0;
};

// The fields of one frame that flows match on. vlan: the VLAN the switch assigned it.
struct FrameKey {
  int32_t in_port;
  uint64_t dl_src, dl_dst;
  uint32_t dl_vlan;
  uint32_t dl_type;  // after an 802.1Q tag
  bool ipv4;         // a whole IPv4 header is in the head
  bool ipv6;         // a whole IPv6 header is in the head
  uint32_t nw_src, nw_dst, nw_proto, nw_ttl;  // proto, ttl: IPv4's or IPv6's
  Ip6 ipv6_src, ipv6_dst;
  bool l4;           // TCP or UDP ports are in the head (first fragment)
  uint32_t tp_src, tp_dst;
  bool tcp;          // TCP flags are in the head
  uint32_t tcp_flags;
};

// The key of a frame from its first `have` bytes (have >= 14).
FrameKey FlowKey(const uint8_t* head, uint32_t have, int32_t in_port, uint32_t vlan);

// Whether a frame of key k matches m: the one rule of what a match means.
bool FlowMatches(const FlowMatch& m, const FrameKey& k);

class FlowTable {
 public:
  bool empty() const { return flows_.empty(); }
  size_t size() const { return flows_.size(); }
  static constexpr size_t kMaxFlows = 65536;
  // Adds a flow, or replaces the one with the same priority and match (keeping its counters).
  // False if the table holds kMaxFlows already.
  bool Add(const Flow& f);
  // Removes the flows whose match is f's (strict: and whose priority is f's); all if f
  // matches everything and !strict. Returns how many.
  uint32_t Remove(const FlowMatch& m, int32_t priority, bool strict);
  // The flow a frame matches (the highest priority; among equal ones the first added), or null.
  Flow* Lookup(const FrameKey& k);
  const std::vector<Flow>& flows() const { return flows_; }

 private:
  // Tuple space search, as Open vSwitch's classifier does: flows are grouped by the fields
  // they match and their masks (a subtable), each subtable a hash of the flows' values;
  // a lookup packs the frame's fields once, then probes one hash per subtable (the packed
  // fields under the subtable's mask), highest priority first, and stops once no subtable
  // left can beat what it found. 1,000 5-tuple flows are one probe.
  struct Packed {
    static constexpr uint32_t kWords = 9;
    uint64_t w[kWords];
    bool operator==(const Packed&) const = default;
    Packed operator&(const Packed& m) const {
      Packed r;
      for (uint32_t i = 0; i < kWords; i++) r.w[i] = w[i] & m.w[i];
      return r;
    }
  };
  struct Subtable {
    uint32_t fields;
    uint32_t nw_src_mask, nw_dst_mask, tcp_flags_mask, ipv6_src_len, ipv6_dst_len;
    int32_t max_priority;
    Packed mask;
    // The words of Packed its mask keeps (the others are 0 in every key of it).
    uint8_t words[Packed::kWords];
    uint8_t nwords;
    // Open addressing by hash (a power of two of slots, at most half used): each slot the
    // flows of one hash, flows_ indices ascending.
    std::vector<uint64_t> slot_hash;
    std::vector<int32_t> slot_list;  // -1: empty; else an index of lists
    std::vector<std::vector<uint32_t>> lists;
  };
  static Packed Pack(const FrameKey& k);
  static Packed MaskOf(uint32_t fields, uint32_t src_mask, uint32_t dst_mask, uint32_t flags_mask, uint32_t src6, uint32_t dst6);
  static uint64_t Hash(const Packed& key, const Subtable& st);
  // Equal in the subtable's words (the only ones its keys may differ in).
  static bool Same(const Packed& a, const Packed& b, const Subtable& st);
  void Index();

  std::vector<Flow> flows_;  // by priority, highest first; equal ones in the order added
  std::vector<Subtable> subtables_;  // by max_priority, highest first
  std::vector<Packed> keys_;         // per flow: its values under its subtable's mask
  bool indexed_ = true;      // subtables_ matches flows_ (rebuilt by the first lookup after a change)
};

}  // namespace vhostkit
