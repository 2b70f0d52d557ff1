// One interface over the split (virtio 1.2 §2.7) and packed (§2.8) ring layouts, seen
// from the device side: pop a burst of available chains, push a burst of used elements,
// honor and set notification suppression, read and set the ring state for
// GET/SET_VRING_BASE.
//
// Everything the driver wrote is hostile until checked. A check that fails breaks the
// queue: Pop returns the chains that were good and the error is latched (error(),
// error_detail()); every later Pop returns -error. Nothing outside the mapped regions
// is ever read or written.
//
// A queue is used by one thread at a time; the caller serializes control operations
// (SetRings, SetBase, SetMemory) with the data path. Two settings may change from another
// thread while the data path runs, as QEMU changes them on running rings: the call fd
// (interrupt masking) and dirty logging (migration start/stop).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "memory/dirty_log.h"
#include "memory/memory.h"

namespace vhostkit {

enum class VqError : int32_t {
  kOk = 0,
  kNotReady = 1,              // rings not set or memory table missing
  kRingAddr = 2,              // ring area not mapped, misaligned, or size invalid
  kAvailIdxJump = 3,          // split: avail->idx moved by more than the queue size
  kHeadOutOfRange = 4,        // split: avail ring entry >= queue size
  kNextOutOfRange = 5,        // next index >= queue size (or >= indirect table entries)
  kDescLoop = 6,              // a descriptor visited twice in one chain
  kChainTooLong = 7,          // more descriptors than the queue size / table, or too many segments
  kDescAddr = 8,              // descriptor (addr, len) not inside guest memory
  kWriteBeforeRead = 9,       // a device-readable descriptor after a device-writable one
  kIndirectNotNegotiated = 10,// INDIRECT flag without VIRTIO_F_INDIRECT_DESC
  kIndirectNested = 11,       // INDIRECT inside an indirect table
  kIndirectLen = 12,          // indirect table length 0, not a multiple of 16, or too large
  kIndirectAddr = 13,         // indirect table not inside one guest memory region
  kIndirectNext = 14,         // INDIRECT and NEXT both set
  kIdOutOfRange = 15,         // packed: buffer id >= queue size
  kIdInFlight = 16,           // the driver offered a head / buffer id the device still holds
  kBaseOutOfRange = 17,       // SET_VRING_BASE index >= queue size (packed)
  kInflightCorrupt = 18,      // packed: a saved in-flight chain no longer walks as saved
  kGuestMemoryLost = 19,      // the frontend truncated a region's file: the memory table lost pages
};
const char* VqErrorName(VqError e);

// Limits on what one chain may expand to.
constexpr uint32_t kMaxChainSegs = 1024;   // segments in one chain (QEMU: VIRTQUEUE_MAX_SIZE)
constexpr uint32_t kMaxIndirect = 1024;    // entries in one indirect table

// Where a burst is written: typed arrays owned by JavaScript, reused for every burst.
struct BurstArrays {
  uint32_t max_chains = 0;
  uint32_t max_segs = 0;
  uint16_t* head = nullptr;       // [max_chains] head descriptor index (split) / buffer id (packed)
  uint32_t* first_seg = nullptr;  // [max_chains + 1] chain i owns segs [first_seg[i], first_seg[i+1])
  uint32_t* read_len = nullptr;   // [max_chains] device-readable bytes of the chain
  uint32_t* write_len = nullptr;  // [max_chains] device-writable bytes of the chain
  uint32_t* seg_region = nullptr; // [max_segs] index in the memory table
  double* seg_offset = nullptr;   // [max_segs] byte offset inside that region (< 2^47: exact)
  uint32_t* seg_len = nullptr;    // [max_segs]
  uint8_t* seg_flags = nullptr;   // [max_segs] bit 0: device-writable
};

// One device-writable buffer of one descriptor, as PopDirect gives it: where it is in this
// process, how many bytes it takes, its head / buffer id.
struct DirectBuf {
  uint8_t* p;
  uint32_t cap;
  uint16_t id;
};

enum class AddrSpace { kFrontendVirtual, kGuestPhysical };

class Virtqueue {
 public:
  virtual ~Virtqueue();
  static std::shared_ptr<Virtqueue> Create(bool packed, uint32_t size, std::string* err);

  bool packed() const { return packed_; }
  uint32_t size() const { return size_; }

  // Negotiated ring features.
  void SetFeatures(bool event_idx, bool indirect) { event_idx_ = event_idx; indirect_ok_ = indirect; }
  void SetMemory(std::shared_ptr<MemTable> mem);
  const std::shared_ptr<MemTable>& memory() const { return mem_; }
  // desc table; avail ring (split) / driver event area (packed); used ring (split) /
  // device event area (packed). Checks mapping, size and alignment.
  VqError SetRings(uint64_t desc, uint64_t driver, uint64_t device, AddrSpace space, std::string* detail);
  bool ready() const { return desc_ != nullptr; }
  void Detach();  // forget rings, memory, call fd and dirty log (stop); releases their resources

  // GET/SET_VRING_BASE encoding. Split: bits 0-15 last avail idx. Packed: bits 0-14 last
  // avail idx, bit 15 avail wrap counter, bits 16-30 last used idx, bit 31 used wrap counter
  // (upper half 0 on SET: the used state equals the avail state).
  virtual uint32_t GetBase() const = 0;
  virtual VqError SetBase(uint32_t base) = 0;
  // On start. Split: the used index the device continues from (read from the ring).
  // With an inflight area set (SetInflight), both layouts also recover the chains that
  // were in flight when a previous backend died: Pop returns them first, oldest first.
  // Packed rings also take their ring position from the area then (a frontend cannot
  // restore it: QEMU's SET_VRING_BASE after a backend died is the one of the last start).
  virtual void SyncUsedFromRing() {}
  // Inflight I/O tracking (vhost-user "Inflight I/O tracking", GET/SET_INFLIGHT_FD): the
  // queue's area inside the shared inflight memory (kept mapped through `table`), `len`
  // bytes at `host`. Split rings use the spec's QueueRegionSplit layout, packed rings a
  // private one (packed_ring.h). Returns false if the area is too small.
  virtual bool SetInflight(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len) {
    (void)table;
    (void)host;
    (void)len;
    return false;
  }
  // Chains recovered from the inflight area and not yet popped again.
  uint32_t resubmit_pending() const { return static_cast<uint32_t>(resubmit_.size() - resubmit_pos_); }

  // Ring position record, for packed rings of devices that complete chains in the order
  // they were popped (net) when the frontend keeps no inflight area. QEMU cannot restore a
  // packed ring's position after its backend died (its SET_VRING_BASE is then the one of
  // the last start), so the device keeps its own: `len` bytes at `host` of a file that
  // outlives the process (kept mapped through `table`). `frontend_base` is the value of
  // the frontend's last SET_VRING_BASE. Set before SyncUsedFromRing, which takes the ring
  // position from the record when it was left by a previous backend serving the same
  // rings from the same frontend base, and starts a fresh record otherwise. Returns false
  // if the area is too small or the layout keeps no record (split rings: the frontend
  // restores them from the used index).
  virtual bool SetRingRecord(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len, uint32_t frontend_base) {
    (void)table;
    (void)host;
    (void)len;
    (void)frontend_base;
    return false;
  }
  // The frontend now knows the ring state (GET_VRING_BASE answered): the record no longer
  // describes a restart and is invalidated.
  virtual void ForgetRingRecord() {}
  enum class RecordState : int32_t { kNone = 0, kFresh = 1, kRecovered = 2, kOutOfOrder = 3 };
  // kRecovered: SyncUsedFromRing took the position from the record. kOutOfOrder: a push
  // completed chains out of pop order, so the record was invalidated (the device is not
  // one a record can serve).
  RecordState record_state() const { return record_state_.load(std::memory_order_relaxed); }

  // Pops up to min(max, out.max_chains) chains. Returns the count, or -error if the queue
  // is broken and nothing was popped.
  virtual int32_t Pop(const BurstArrays& out, uint32_t max) = 0;
  // The receive fast path: pops up to max chains that are each one device-writable
  // descriptor inside one memory region, as (host pointer, length, id), with Pop's
  // bookkeeping (they are in flight: Push and Unpop take them). Stops at the first chain
  // that is anything else, or that Pop would refuse: Pop takes it from there, and decides.
  // Takes nothing while chains recovered from an inflight area wait, or with an inflight
  // area or a dirty log set (their bookkeeping is Pop's). Returns the count, or -error if
  // the queue is broken.
  virtual int32_t PopDirect(DirectBuf* out, uint32_t max) = 0;
  // Pushes n used elements. Returns 1 if the driver wants a notification now, 0 if not,
  // -1 if an id was not in flight (caller bug: nothing written, queue not broken).
  virtual int32_t Push(const uint16_t* ids, const uint32_t* lens, uint32_t n) = 0;
  // Gives back the last n chains popped (ids in pop order), as if they had not been
  // popped: the device found it could not use them (e.g. an RX packet that does not fit).
  virtual void Unpop(const uint16_t* ids, uint32_t n) = 0;
  // Driver-to-device notifications (kicks) on or off; returns whether chains are already
  // available, so a caller going to sleep re-polls instead of missing them.
  virtual bool SetNotify(bool enable) = 0;
  virtual bool HasAvail() const = 0;
  // Descriptors (packed) / avail ring entries (split) the driver made available that the
  // device has not taken yet: how full the ring is, for metrics. Read-only.
  virtual uint32_t AvailCount() const = 0;
  // The eventfd Signal() writes (the driver's interrupt); -1 for none. Thread-safe; the
  // queue keeps its own duplicate of fd.
  void SetCallFd(int fd);
  // Writes the call fd (if any). Returns false if there is none.
  bool Signal();
  // Dirty logging (VHOST_F_LOG_ALL): with a log set, Push marks the first `len` bytes of
  // each completed chain's writable buffers, and, if log_rings, the ring bytes it wrote
  // (used ring / descriptor ring and event areas) at their guest-physical addresses.
  void SetDirtyLog(std::shared_ptr<DirtyLog> log, bool log_rings, uint64_t used_gpa);
  // A device that holds chains across calls (virtio-blk: a request is in flight for
  // milliseconds) keeps every chain's writable ranges from its Pop, logging or not: a chain
  // popped before dirty logging started (a migration) and completed after it must still
  // mark the pages it wrote, or the destination gets them stale.
  void SetKeepWritten(bool on) { keep_written_.store(on, std::memory_order_relaxed); }
  // Number of chains popped and not yet pushed back.
  uint32_t in_flight() const { return in_flight_; }

  VqError error() const { return error_; }
  const std::string& error_detail() const { return error_detail_; }

 protected:
  Virtqueue(bool packed, uint32_t size);
  int32_t Fail(VqError e, std::string detail);
  // The memory table lost pages (guest_fault.h): the queue breaks (kGuestMemoryLost).
  // Cheap while no guest memory fault happened. Returns whether it broke.
  bool MemoryLost() {
    if (!mem_) return false;
    const int r = mem_->LostRegion();
    if (r < 0) return false;
    LostFail(static_cast<uint32_t>(r));
    return true;
  }
  void LostFail(uint32_t region);
  // Checks that every id of a push is in flight, and not twice in the batch; marks them
  // claimed. On failure nothing is marked. TakeId then returns an id's descriptor count
  // and clears it.
  bool ClaimIds(const uint16_t* ids, uint32_t n);
  // PopDirect may take chains (the ring-specific conditions are the caller's).
  bool DirectAllowed() const {
    return desc_ != nullptr && mem_ && resubmit_pos_ >= resubmit_.size() && !log_on_.load(std::memory_order_relaxed) &&
           !keep_written_.load(std::memory_order_relaxed);
  }
  uint32_t TakeId(uint16_t id) {
    const uint32_t c = in_flight_count_[id] & ~kClaimed;
    in_flight_count_[id] = 0;
    in_flight_--;
    return c;
  }
  static constexpr uint32_t kClaimed = 0x80000000u;

  // Unpop of a chain that came from the resubmission list puts it back there (chains are
  // given back in reverse pop order, and resubmitted ones are popped first). Returns
  // whether it was one.
  bool UnpopResubmitted(uint16_t id) {
    if (!resubmitted_[id]) return false;
    resubmitted_[id] = 0;
    if (resubmit_pos_ > 0) resubmit_[--resubmit_pos_] = id;
    return true;
  }
  // Inflight recovery (both layouts): heads / buffer ids to pop again, oldest first.
  std::vector<uint16_t> resubmit_;
  size_t resubmit_pos_ = 0;
  std::vector<uint8_t> resubmitted_;  // per id: popped from resubmit_ and not pushed yet
  std::atomic<RecordState> record_state_{RecordState::kNone};  // read by the control thread
  // The ring addresses as SetRings got them (frontend-virtual or guest-physical).
  uint64_t ring_addr_[3] = {0, 0, 0};

  const bool packed_;
  const uint32_t size_;
  bool event_idx_ = false;
  bool indirect_ok_ = false;
  bool notify_enabled_ = true;
  std::shared_ptr<MemTable> mem_;
  uint8_t* desc_ = nullptr;
  uint8_t* driver_ = nullptr;
  uint8_t* device_ = nullptr;
  // Per id: 0 = not in flight, else the number of ring descriptors it used (packed) or 1.
  std::vector<uint32_t> in_flight_count_;
  uint32_t in_flight_ = 0;
  VqError error_ = VqError::kOk;
  std::string error_detail_;
  // Dirty logging state: per in-flight id, its writable (gpa, len) ranges.
  struct LogRange {
    uint64_t gpa;
    uint32_t len;
  };
  struct LogState {
    std::shared_ptr<DirtyLog> log;  // null: not logging
    bool rings = false;
    uint64_t used_gpa = 0;
  };
  LogState CurrentLog();
  void LogChain(uint16_t id, const BurstArrays& out, uint32_t first, uint32_t end);
  void LogCompleted(DirtyLog& log, uint16_t id, uint32_t len);
  void LogRing(DirtyLog& log, const uint8_t* host, uint64_t len);
  // Chain i of a Pop burst: its id, lengths and segment range (and, when logging, its
  // writable ranges for the dirty log).
  void EmitChain(const BurstArrays& out, uint32_t i, uint16_t id, uint32_t rlen, uint32_t wlen, uint32_t first_seg,
                 uint32_t end_seg, const LogState& lg) {
    out.head[i] = id;
    out.read_len[i] = rlen;
    out.write_len[i] = wlen;
    out.first_seg[i + 1] = end_seg;
    if (lg.log || keep_written_.load(std::memory_order_relaxed)) LogChain(id, out, first_seg, end_seg);
  }
  // Chain i of a Pop burst when it is one descriptor inside one region (both layouts'
  // fast path): segment `seg` at host address p of region `region`.
  void EmitOneSegment(const BurstArrays& out, uint32_t i, uint16_t id, uint32_t seg, const MemTable& mem, uint32_t region,
                      const uint8_t* p, uint32_t len, bool writable, const LogState& lg) {
    out.seg_region[seg] = region;
    out.seg_offset[seg] = static_cast<double>(p - mem.host(region));
    out.seg_len[seg] = len;
    out.seg_flags[seg] = writable ? 1 : 0;
    EmitChain(out, i, id, writable ? 0 : len, writable ? len : 0, seg, seg + 1, lg);
  }
  std::mutex ctl_mu_;                  // guards call_fd_, log_, log_rings_, used_gpa_
  int call_fd_ = -1;
  std::atomic<bool> log_on_{false};    // fast path: no lock while not logging
  std::atomic<bool> keep_written_{false};  // SetKeepWritten
  std::shared_ptr<DirtyLog> log_;      // read through CurrentLog()
  bool log_rings_ = false;
  uint64_t used_gpa_ = 0;  // split: log_guest_addr of the used ring
  std::vector<std::vector<LogRange>> log_ranges_;
  // EVENT_IDX bookkeeping (§2.7.10, as Linux vhost and DPDK keep it).
  uint16_t signalled_used_ = 0;
  bool signalled_used_valid_ = false;
};

// Called by both layouts. u16 arithmetic of §2.7.10.
inline bool VringNeedEvent(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

// Loads and stores of ring fields shared with the driver.
template <typename T>
inline T LoadAcquire(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const T*>(p), __ATOMIC_ACQUIRE);
}
template <typename T>
inline T LoadRelaxed(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const T*>(p), __ATOMIC_RELAXED);
}
template <typename T>
inline void StoreRelease(uint8_t* p, T v) {
  __atomic_store_n(reinterpret_cast<T*>(p), v, __ATOMIC_RELEASE);
}
template <typename T>
inline void StoreRelaxed(uint8_t* p, T v) {
  __atomic_store_n(reinterpret_cast<T*>(p), v, __ATOMIC_RELAXED);
}
// Store-load ordering between publishing used entries and reading the driver's
// suppression fields (and between enabling kicks and re-checking avail).
inline void FullFence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

}  // namespace vhostkit
