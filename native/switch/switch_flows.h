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
  // Seconds after its last match / after it was added that Expire removes it (0: never).
  uint32_t idle_timeout = 0, hard_timeout = 0;
  int64_t added_ms = 0;  // set by Add
};

// What a flow does in the common cases, read without its actions (FlowHot::out): a port
// (>= 0; one output:PORT, no edit), or one of these.
constexpr int32_t kFlowOutActions = -1;  // edits, handlers or several outputs: read the actions
constexpr int32_t kFlowOutDrop = -2;
constexpr int32_t kFlowOutNormal = -3;
constexpr int32_t kFlowOutFlood = -4;

// What the data path touches of a flow on each frame it matches, apart from the actions of
// the rarer flows: dense, one per flow, so that a hit costs few cache lines.
struct FlowHot {
  int32_t priority = 0;
  int32_t out = kFlowOutActions;
  double packets = 0;
  double bytes = 0;
  int64_t used_ms = 0;  // the last match (the caller's clock), or when added
  uint64_t seq = 0;     // the order flows were added in (among equal priorities, lower first)
};

// The fields of a frame packed in words, as the table's index compares them. Word 0:
// in_port (bits 0-31), dl_type (32-47), VLAN (48-63); 1: dl_src; 2: dl_dst; 3: nw_src
// (32-63), nw_dst (0-31) (ARP: its sender's and target's); 4: nw_proto (ARP: the opcode) (0-7), TTL (8-15), tp_src (16-31), tp_dst (32-47),
// TCP flags (48-59); 5-6: ipv6_src; 7-8: ipv6_dst. A layer the frame lacks is 0. For ICMP
// and ICMPv6, tp_src is the message's type and tp_dst its code (as Open vSwitch keeps
// them: `icmp_type` and `icmp_code` are those fields of an ICMP flow).
struct PackedKey {
  static constexpr uint32_t kWords = 9;
  uint64_t w[kWords];
  bool operator==(const PackedKey&) const = default;
};

// The layers a frame has whole in its head (bits of PackFrame's result). kLayerL4: TCP/UDP
// ports, or an ICMP/ICMPv6 type and code.
// kLayerArp: an Ethernet/IPv4 ARP message (its addresses and opcode in the IPv4 fields'
// places, as Open vSwitch keeps them). kLayerNever: no frame has it.
constexpr uint32_t kLayerIpv4 = 1, kLayerIpv6 = 2, kLayerL4 = 4, kLayerTcp = 8, kLayerArp = 16, kLayerNever = 32;

// The fields of a frame from its first `have` bytes (have >= 14), as words, and its layers:
// the one parser of frames for flows.
uint32_t PackFrame(const uint8_t* head, uint32_t have, int32_t in_port, uint32_t vlan, PackedKey* out);

// The fields of one frame that flows match on. vlan: the VLAN the switch assigned it.
struct FrameKey {
  int32_t in_port;
  uint64_t dl_src, dl_dst;
  uint32_t dl_vlan;
  uint32_t dl_type;  // after an 802.1Q tag
  bool ipv4;         // a whole IPv4 header is in the head
  bool ipv6;         // a whole IPv6 header is in the head
  bool arp;          // a whole Ethernet/IPv4 ARP message is in the head
  uint32_t nw_src, nw_dst, nw_proto, nw_ttl;  // proto, ttl: IPv4's or IPv6's; ARP: its addresses, opcode in proto
  Ip6 ipv6_src, ipv6_dst;
  bool l4;           // TCP or UDP ports (or ICMP/ICMPv6 type and code) are in the head (first fragment)
  uint32_t tp_src, tp_dst;  // ports, or ICMP type (tp_src) and code (tp_dst)
  bool tcp;          // TCP flags are in the head
  uint32_t tcp_flags;
};

// The key of a frame from its first `have` bytes (have >= 14): PackFrame's fields, by name.
FrameKey FlowKey(const uint8_t* head, uint32_t have, int32_t in_port, uint32_t vlan);

// Whether a frame of key k matches m: the one rule of what a match means.
bool FlowMatches(const FlowMatch& m, const FrameKey& k);

class FlowTable {
 public:
  bool empty() const { return live_count_ == 0; }
  size_t size() const { return live_count_; }
  static constexpr size_t kMaxFlows = 65536;
  // Adds a flow at time now (ms, the clock Expire is given), or replaces the one with the
  // same priority and match (keeping its counters; its timeouts start again). False if the
  // table holds kMaxFlows already.
  bool Add(const Flow& f, int64_t now);
  // Removes the flows whose match is m (strict: and whose priority is `priority`); not
  // strict: every flow whose match has at least m's fields with m's values (all if m has
  // none). Returns how many.
  uint32_t Remove(const FlowMatch& m, int32_t priority, bool strict);
  // Removes the flows whose idle or hard timeout has passed at now; returns how many.
  uint32_t Expire(int64_t now);
  // The handle of the flow a frame matches (the highest priority; among equal ones the
  // first added), or -1. A flow's handle stays the same while it is in the table.
  int32_t Lookup(const FrameKey& k);
  // The same for frames which[0..m) of a burst whose heads are `stride` (>= 14) bytes apart,
  // zero past a frame's end (frame i's first min(lens[i], stride) bytes its own, vlans[i]
  // its VLAN): found[which[j]].
  void LookupBurst(const uint8_t* heads, uint32_t stride, const uint32_t* lens, const int32_t* vlans, int32_t in_port, const uint16_t* which,
                   uint32_t m, int32_t* found);
  // The flows' handles in table order: by priority, highest first; equal ones in the order added.
  std::vector<uint32_t> Ordered() const;
  const Flow& flow(size_t handle) const { return pool_[handle]; }
  FlowHot& hot(size_t handle) { return hot_[handle]; }
  const FlowHot& hot(size_t handle) const { return hot_[handle]; }

 private:
  // Tuple space search, as Open vSwitch's classifier does: flows are grouped by the fields
  // they match and their masks (a subtable), each subtable a hash of the flows' values;
  // a lookup packs the frame's fields once, then probes one hash per subtable (the packed
  // fields under the subtable's mask), highest priority first, and skips a subtable once
  // what it found beats every flow of it. A burst is looked up a subtable at a time: the
  // frames' slots are hashed and prefetched first, then probed, so that their cache misses
  // overlap. Adding or removing a flow changes its subtable's hash in place (no rebuild).
  struct Subtable {
    uint32_t fields;
    uint32_t nw_src_mask, nw_dst_mask, tcp_flags_mask, ipv6_src_len, ipv6_dst_len;
    // At least the highest priority of its flows (kept when that flow goes: then it only
    // skips less).
    int32_t max_priority;
    PackedKey mask;
    // The words of PackedKey its mask keeps (the others are 0 in every key of it); a
    // subtable's key is those words, masked, in this order.
    uint8_t words[PackedKey::kWords];
    uint8_t nwords;
    // The layers a frame must have for a flow of it to match: all of need, and one of any
    // (if not 0).
    uint32_t need;
    uint32_t any;
    // Linear probing by hash, at most half full, slots of `stride` words: the hash; the
    // flow's handle + 1 (0: an empty slot); the flow's key. Flows of the same key (other
    // priorities) take slots of their own further on.
    uint32_t stride;
    uint64_t cap_mask;
    uint32_t count;
    std::vector<uint64_t> slots;
    bool Has(uint32_t layers) const { return (layers & need) == need && (any == 0 || (layers & any) != 0); }
  };
  static PackedKey Pack(const FrameKey& k);
  static PackedKey MaskOf(uint32_t fields, uint32_t src_mask, uint32_t dst_mask, uint32_t flags_mask, uint32_t src6, uint32_t dst6);
  // A subtable's key of the packed fields `all`, into key[0..nwords), and its hash.
  static uint64_t KeyOf(const PackedKey& all, const Subtable& st, uint64_t* key);
  // Whether flow a comes before flow b in table order.
  static bool Before(const FlowHot& a, const FlowHot& b) { return a.priority > b.priority || (a.priority == b.priority && a.seq < b.seq); }
  // The subtable of a match's fields and masks: its index, or -1 (create: a new one).
  int32_t SubtableOf(const FlowMatch& m, bool create);
  // The slot of the flow of this key and priority in st, or -1.
  int64_t Find(const Subtable& st, const uint64_t* key, uint64_t h, int32_t priority) const;
  void Insert(Subtable& st, uint32_t handle, const uint64_t* key, uint64_t h);
  void Erase(Subtable& st, uint64_t slot);
  void RemoveHandle(uint32_t handle);
  // order_ from the subtables' counts and priorities.
  void Reorder();
  // The lookup of n packed frames: found[i] for keys[i] of layers[i].
  void LookupPacked(const PackedKey* keys, const uint32_t* layers, uint32_t n, int32_t* found);

  // Flows by handle; a removed flow's handle is reused.
  std::vector<Flow> pool_;
  std::vector<FlowHot> hot_;
  std::vector<uint8_t> live_;
  std::vector<uint32_t> sub_;  // its subtable
  std::vector<uint32_t> free_;
  size_t live_count_ = 0;
  uint64_t next_seq_ = 0;
  uint32_t timed_ = 0;  // flows with a timeout (Expire has nothing to do without)
  std::vector<Subtable> subtables_;
  std::vector<uint32_t> order_;  // the subtables with flows, by max_priority, highest first
  // A burst's packed fields, layers, and each subtable's candidates (frame, key, hash).
  std::vector<PackedKey> burst_keys_;
  std::vector<uint32_t> burst_layers_;
  std::vector<int32_t> burst_found_;
  std::vector<uint32_t> cand_;
  std::vector<uint64_t> cand_key_, cand_hash_;
};

}  // namespace vhostkit
