// What the data-plane threads of one switch share: the forwarding table (under a lock each
// classified burst takes once) and the handoff rings. Every port is owned by one thread,
// which alone fills its RX queues and writes its host fd; a frame another thread switched
// to it is copied as it left its sender, with its virtio_net_hdr and the VLAN edit the
// port's egress rule asks for, into the ring from that thread to the owner, which delivers
// it with that edit. One ring per (from, to) pair,
// single producer and single consumer: no lock on the way, and a flow, which enters on one
// port and so on one thread, keeps its order.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "switch/switch_fdb.h"

namespace vhostkit {

// A byte ring of records: a 32-byte header (record bytes, port, frame length, VLAN
// operation, 10 header bytes), then the frame, each record 8-byte aligned and never split
// across the end (a zero record length says "go back to the start").
class HandoffRing {
 public:
  static constexpr uint32_t kHeader = 32;

  explicit HandoffRing(size_t bytes);

  // Producer: room for a frame of up to max_len bytes; where to write it, or nullptr if
  // the ring is full (the frame is dropped). Then End() with what was written (len <=
  // max_len), or nothing: a Begin not ended leaves the ring as it was.
  uint8_t* Begin(uint32_t max_len);
  void End(int32_t port, uint32_t len, const uint8_t* hdr10, int32_t vlan);
  // Makes the records ended so far visible; true if the consumer had taken everything
  // before them (it may be asleep: wake it).
  bool Publish();

  // Consumer: the oldest record not taken yet (false: none); Take() moves past it, and
  // Release() gives the space of every record taken back to the producer.
  struct Record {
    int32_t port;
    uint32_t len;
    int32_t vlan;  // the VLAN operation to deliver it with (vlan.h)
    const uint8_t* hdr10;
    const uint8_t* frame;
  };
  bool Front(Record* r);
  void Take();
  void Release();
  // Whether the producer published records not taken yet (after a Release: a record that
  // raced in with it).
  bool Pending() const;
  // The ring's bytes (a record's frame is at Record::frame, inside them).
  const uint8_t* data() const { return buf_.data(); }

 private:
  std::vector<uint8_t> buf_;
  uint64_t mask_;
  alignas(64) std::atomic<uint64_t> tail_{0};  // producer: bytes published
  uint64_t tail_local_ = 0;                    // producer: bytes written, not yet published
  uint64_t head_cached_ = 0;                   // producer: the consumer's head last read
  uint64_t skip_ = 0;                          // producer: the end left unused by the last Begin
  alignas(64) std::atomic<uint64_t> head_{0};  // consumer: bytes released
  uint64_t head_local_ = 0;                    // consumer: bytes taken
  uint64_t tail_cached_ = 0;                   // consumer: the producer's tail last read
};

// One switch's shared data-plane state: its table, and threads x threads handoff rings with
// one wake-up eventfd per thread.
class SwitchShared {
 public:
  SwitchShared(uint32_t threads, uint32_t fdb_entries, size_t ring_bytes);
  ~SwitchShared();
  SwitchShared(const SwitchShared&) = delete;
  SwitchShared& operator=(const SwitchShared&) = delete;

  SwitchFdb& fdb() { return fdb_; }
  uint32_t threads() const { return threads_; }
  HandoffRing& Ring(uint32_t from, uint32_t to) { return *rings_[from * threads_ + to]; }
  // Thread t's wake-up eventfd (readable when a ring to it went from empty to not).
  int WakeFd(uint32_t t) const { return wake_[t].fd; }
  // Whether thread t may not look at its rings soon (it sleeps on WakeFd): producers wake it.
  void SetWantWake(uint32_t t, bool want) { wake_[t].want.store(want, std::memory_order_seq_cst); }
  // After a Publish() that found the ring empty: wakes thread t if it asked to be.
  void Wake(uint32_t t);

 private:
  struct WakeState {
    int fd = -1;
    std::atomic<bool> want{true};
  };
  std::mutex fdb_mu_;
  SwitchFdb fdb_;
  uint32_t threads_;
  std::vector<std::unique_ptr<HandoffRing>> rings_;
  std::unique_ptr<WakeState[]> wake_;
};

// Process-wide registry, so that the threads of one switch (each its own JavaScript
// realm) find the same SwitchShared by a number.
uint32_t RegisterSwitchShared(std::shared_ptr<SwitchShared> s);
std::shared_ptr<SwitchShared> FindSwitchShared(uint32_t token);
void UnregisterSwitchShared(uint32_t token);

}  // namespace vhostkit
