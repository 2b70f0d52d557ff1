// Guest memory: the regions a frontend shares with us, mapped MAP_SHARED, and the
// translation of guest-physical (descriptor) and frontend-virtual (ring) addresses
// to host pointers. Every check is overflow-safe: a (addr, len) pair is accepted only
// if every byte of it lies inside mapped regions.
//
// A MemTable is immutable once built; a queue holds it through shared_ptr, so a table
// swapped out by SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG stays mapped until the last
// queue that uses it lets go. Mappings are shared between tables (ADD_MEM_REG builds a
// new table from the old regions plus one).
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memory/guest_fault.h"

namespace vhostkit {

// One mmap of one region's fd. Unmapped when the last holder drops it.
class Mapping {
 public:
  // Maps [0, mmap_offset + size) of fd and points host() at mmap_offset.
  // Returns nullptr and sets err on failure. Does not take ownership of fd.
  static std::shared_ptr<Mapping> Map(int fd, uint64_t size, uint64_t mmap_offset, std::string* err);
  // An area this process owns and keeps alive itself (the fuzz harnesses' guest memory, a
  // heap buffer under AddressSanitizer): host() is `host`, nothing is unmapped.
  static std::shared_ptr<Mapping> Borrow(uint8_t* host, uint64_t size);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  uint8_t* host() const { return host_; }
  uint64_t size() const { return size_; }
  bool sealed() const { return sealed_; }
  // Pages of the mapping were lost (the file was truncated under it) and replaced by
  // anonymous memory (guest_fault.h): what it holds is no longer the guest's.
  bool lost() const { return lost_.load(std::memory_order_relaxed) != 0; }
  // Whether the SIGBUS guard covers this mapping (guest_fault.h; a borrowed area is not).
  bool guarded() const { return fault_slot_ >= 0; }

 private:
  Mapping() = default;
  void* base_ = nullptr;
  size_t map_len_ = 0;
  uint8_t* host_ = nullptr;
  uint64_t size_ = 0;
  bool sealed_ = false;
  int fault_slot_ = -1;               // guest_fault registry slot, -1: not registered
  std::atomic<uint32_t> lost_{0};     // set by the SIGBUS handler
};

struct Region {
  uint64_t gpa = 0;          // guest physical address of the first byte
  uint64_t size = 0;         // bytes
  uint64_t uva = 0;          // frontend (QEMU) virtual address of the first byte
  uint64_t mmap_offset = 0;  // offset of the region in the fd
  std::shared_ptr<Mapping> map;
  uint8_t* host() const { return map->host(); }
};

// Limits a table enforces (vhost-user GET_MAX_MEM_SLOTS answers kMaxRegions).
constexpr size_t kMaxRegions = 64;

class MemTable {
 public:
  MemTable() = default;
  // Builds a table. Refuses (returns nullptr, sets err) more than kMaxRegions regions,
  // empty regions, regions whose gpa or uva range wraps u64, and regions that overlap
  // another region in guest-physical or in frontend-virtual space.
  static std::shared_ptr<MemTable> Build(std::vector<Region> regions, std::string* err);

  const std::vector<Region>& regions() const { return regions_; }

  // Guest-physical (addr, len) -> host pointer of addr, and how many bytes are contiguous
  // from there inside one region (may be < len when the range continues in the next
  // region). Returns nullptr if addr is not mapped or if the range cannot be covered in
  // full by adjacent regions (so a caller that walks the pieces never hits a hole).
  uint8_t* TranslateGpa(uint64_t addr, uint64_t len, uint64_t* contiguous, uint32_t* region) const;

  // Guest-physical range that must be contiguous in one region (rings, indirect tables).
  uint8_t* TranslateGpaContiguous(uint64_t addr, uint64_t len) const;
  // Frontend-virtual range that must be contiguous in one region (vring addresses).
  uint8_t* TranslateUvaContiguous(uint64_t addr, uint64_t len) const;

  // Frontend virtual address -> guest physical (for dirty logging of rings).
  bool UvaToGpa(uint64_t uva, uint64_t* gpa) const;

  // The hot path's lookup: [addr, addr + len) (len > 0) inside the region that served the
  // last lookup. nullptr means "not there", not "not mapped": take TranslateGpa then.
  uint8_t* TranslateHinted(uint64_t addr, uint32_t len, uint32_t* region) const {
    const uint32_t h = last_hit_.load(std::memory_order_relaxed);
    if (h >= spans_.size()) return nullptr;
    const Span& s = spans_[h];
    const uint64_t off = addr - s.gpa;  // wraps (huge) when addr < gpa: refused below
    if (addr < s.gpa || off >= s.size || len > s.size - off) return nullptr;
    *region = h;
    return s.host + off;
  }
  // Index of a region whose mapping lost pages (its frontend truncated the file), or -1.
  // One relaxed-cost load while no guest memory fault happened since the last check.
  int LostRegion() const {
    const uint32_t e = guest_fault::Epoch();
    if (e == checked_epoch_.load(std::memory_order_relaxed)) return -1;
    for (size_t i = 0; i < regions_.size(); i++) {
      if (regions_[i].map->lost()) return static_cast<int>(i);
    }
    checked_epoch_.store(e, std::memory_order_relaxed);
    return -1;
  }
  // Host address of region i's first byte (i < regions().size()).
  uint8_t* host(uint32_t i) const { return spans_[i].host; }

 private:
  int FindGpa(uint64_t addr) const;  // index of the region containing addr, or -1
  // What the hot path reads of each region, packed together (no shared_ptr to follow).
  struct Span {
    uint64_t gpa;
    uint64_t size;
    uint8_t* host;
  };
  std::vector<Region> regions_;  // sorted by gpa
  std::vector<Span> spans_;      // spans_[i] describes regions_[i]
  // Lookup cache: any value is a valid hint. Atomic because queues on several threads
  // share one table; written only when it changes.
  mutable std::atomic<uint32_t> last_hit_{0};
  // The fault epoch at which no region was lost (LostRegion).
  mutable std::atomic<uint32_t> checked_epoch_{0};
};

}  // namespace vhostkit
