// The L2 switch's forwarding database and its per-burst classification (ingress VLAN,
// learning, lookup), so that deciding where a burst of frames goes is one native call.
// A table shared by several data-plane threads (switch_handoff.h) has a mutex, and whoever
// reads or changes it holds it (FdbGuard): classification once per burst.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

namespace vhostkit {

// (VLAN, MAC) -> (port, last seen), open addressing with linear probing and backward-shift
// deletion (no tombstones), at most half full, keyed through a per-table random seed: a
// guest choosing source MACs cannot aim them at one probe run.
//
// An entry is learned from data, or installed by a control plane (EVPN, RFC 7432 §9.2.2:
// a MAC behind remote VTEP `remote` of a VXLAN port). An installed entry never ages and is
// never refreshed or moved by frames from its own port; a frame from another port (a local
// one: the guest moved here, RFC 7432 §15) takes it over as a learned entry.
class SwitchFdb {
 public:
  struct Stats {
    double learned = 0;
    double moved = 0;
    double aged = 0;
    double full = 0;  // learning refused because the table was full
  };
  struct Entry {
    uint64_t mac;
    uint32_t vlan;
    int32_t port;
    int64_t seen;
    uint32_t remote;  // 0: learned; else installed, towards this remote VTEP of the port
  };

  explicit SwitchFdb(uint32_t max_entries);

  // Records that mac was seen on port in vlan at `now` (ms); true if new or moved.
  bool Learn(uint64_t mac, uint32_t vlan, int32_t port, int64_t now);
  // The port of mac in vlan, or -1 if unknown or not seen for more than aging_ms.
  int32_t Lookup(uint64_t mac, uint32_t vlan, int64_t now, int64_t aging_ms) const;
  // Removes the entries not seen for more than aging_ms / those on `port`; returns how many.
  uint32_t Age(int64_t now, int64_t aging_ms);
  uint32_t FlushPort(int32_t port);
  // Installs mac in vlan on port towards remote VTEP `remote` (>= 1), replacing any entry;
  // false if the table is full.
  bool SetRemote(uint64_t mac, uint32_t vlan, int32_t port, uint32_t remote);
  // Removes the entry of mac in vlan if it is still the one installed on port towards
  // remote; true if removed.
  bool RemoveRemote(uint64_t mac, uint32_t vlan, int32_t port, uint32_t remote);
  // The remote VTEP of mac's entry in vlan, or 0 (no entry, or a learned one).
  uint32_t RemoteOf(uint64_t mac, uint32_t vlan) const;
  // Every entry (live or not yet aged out), in table order.
  std::vector<Entry> Dump() const;

  uint32_t size() const { return count_; }
  uint32_t max_entries() const { return max_; }
  // The lock of a table several threads share (null: one thread's own table).
  void SetMutex(std::mutex* m) { mu_ = m; }
  std::mutex* mutex() const { return mu_; }
  const Stats& stats() const { return stats_; }

 private:
  struct Slot {
    uint64_t key;  // vlan << 48 | mac
    int64_t seen;
    int32_t port;  // -1: empty
    uint32_t remote;  // Entry::remote
  };
  static uint64_t Key(uint64_t mac, uint32_t vlan) { return (uint64_t{vlan & 0xffff} << 48) | (mac & 0xffffffffffffULL); }
  uint64_t Home(uint64_t key) const;
  // The slot holding key, or -1.
  int64_t Find(uint64_t key) const;
  void Grow();
  void EraseAt(uint64_t i);
  template <typename Pred>
  uint32_t EraseIf(Pred pred);

  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  uint64_t seed_;
  uint32_t count_ = 0;
  uint32_t max_;
  Stats stats_;
  std::mutex* mu_ = nullptr;
};

// Holds a shared table's lock for a scope (nothing for a table of one thread).
class FdbGuard {
 public:
  explicit FdbGuard(const SwitchFdb& f) : mu_(f.mutex()) {
    if (mu_ != nullptr) mu_->lock();
  }
  ~FdbGuard() {
    if (mu_ != nullptr) mu_->unlock();
  }
  FdbGuard(const FdbGuard&) = delete;
  FdbGuard& operator=(const FdbGuard&) = delete;

 private:
  std::mutex* mu_;
};

// How a port takes frames in (its VLAN configuration), as classification reads it.
struct IngressVlan {
  bool access = true;
  uint32_t vid = 1;         // access: the port's VLAN
  int32_t native = -1;      // trunk: the VLAN of untagged frames, -1: untagged frames are dropped
  bool all_allowed = true;  // trunk: every VLAN allowed, else those set in `allowed`
  const uint32_t* allowed = nullptr;  // 4096 bits
};

// Per-burst counters of the ingress port.
struct ClassifyCounts {
  uint32_t packets = 0;
  double bytes = 0;
  uint32_t bad = 0;      // shorter than an Ethernet header (or a tag)
  uint32_t hook = 0;     // dropped by the hook's verdict
  uint32_t vlan = 0;     // not allowed in on this port's VLAN configuration
  uint32_t flooded = 0;  // sent to every port (multicast, broadcast or unknown unicast)
};

constexpr int32_t kClassifyDrop = -1;
constexpr int32_t kClassifyFlood = -3;
constexpr int32_t kVerdictSwitch = -1;
constexpr int32_t kVerdictDrop = -2;

// Frame i's first bytes are at heads + off[i] (or + i * stride when off is null), with
// min(lens[i], cap) of them there (at least 16 bytes readable at each frame, or the
// frame's length if shorter). For each frame: dest[i] = a port, kClassifyFlood or
// kClassifyDrop (counted), vid[i] and tagged[i] the frame's VLAN and whether it came
// tagged. verdict (may be null): the hook's Verdict per frame, a port overriding the
// lookup. Learns source addresses on `port`.
void SwitchClassify(SwitchFdb& fdb, int32_t port, const IngressVlan& in, const uint8_t* heads, const uint32_t* off,
                    uint32_t stride, uint32_t cap, const uint32_t* lens, uint32_t n, int64_t now, int64_t aging_ms,
                    const int32_t* verdict, int32_t* dest, int32_t* vid, int32_t* tagged, ClassifyCounts* counts);

}  // namespace vhostkit
