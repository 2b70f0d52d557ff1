// Appends the segments of one descriptor chain to a burst: translates each
// (guest-physical addr, len) through the memory table, splitting a buffer that spans
// adjacent regions, enforcing readable-before-writable and the per-chain segment cap.
#pragma once
#include <cstdio>
#include <string>

#include "ring/virtqueue.h"

namespace vhostkit {

// Not an error: the chain does not fit in what is left of the burst arrays.
constexpr int32_t kBurstFull = -1;

class ChainBuilder {
 public:
  ChainBuilder(const BurstArrays& out, uint32_t first, const MemTable& mem) : out_(out), first_(first), next_(first), mem_(mem) {}

  // Returns kOk, an error, or sets *full when the burst arrays are exhausted.
  VqError Add(uint64_t addr, uint32_t len, bool writable, bool* full, std::string* detail) {
    if (writable) {
      seen_write_ = true;
    } else if (seen_write_) {
      *detail = "readable descriptor after a writable one";
      return VqError::kWriteBeforeRead;
    }
    // A zero-length descriptor touches no memory: nothing to translate, no segment.
    uint64_t rest = len;
    uint64_t a = addr;
    while (rest > 0) {
      uint64_t here = 0;
      uint32_t region = 0;
      const uint8_t* p = mem_.TranslateGpa(a, rest, &here, &region);
      if (p == nullptr) {
        char buf[96];
        snprintf(buf, sizeof buf, "buffer gpa 0x%llx len %u is outside guest memory",
                 static_cast<unsigned long long>(addr), len);
        *detail = buf;
        return VqError::kDescAddr;
      }
      if (next_ - first_ >= kMaxChainSegs) {
        *detail = "chain has more than " + std::to_string(kMaxChainSegs) + " segments";
        return VqError::kChainTooLong;
      }
      if (next_ >= out_.max_segs) {
        *full = true;
        return VqError::kOk;
      }
      const Region& r = mem_.regions()[region];
      out_.seg_region[next_] = region;
      out_.seg_offset[next_] = static_cast<double>(p - r.host());
      out_.seg_len[next_] = static_cast<uint32_t>(here);
      out_.seg_flags[next_] = writable ? 1 : 0;
      next_++;
      a += here;  // cannot wrap: the whole range was checked by TranslateGpa
      rest -= here;
    }
    if (writable) write_len_ += len; else read_len_ += len;
    return VqError::kOk;
  }

  uint32_t end() const { return next_; }
  uint64_t read_len() const { return read_len_; }
  uint64_t write_len() const { return write_len_; }

 private:
  const BurstArrays& out_;
  const uint32_t first_;
  uint32_t next_;
  const MemTable& mem_;
  bool seen_write_ = false;
  uint64_t read_len_ = 0;
  uint64_t write_len_ = 0;
};

// Reads one 16-byte descriptor once (no double fetch of guest-controlled fields).
struct RawDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t a;  // split: flags  | packed: id
  uint16_t b;  // split: next   | packed: flags
};
static_assert(sizeof(RawDesc) == 16, "descriptor is 16 bytes");
inline RawDesc ReadDesc(const uint8_t* p) {
  RawDesc d;
  __builtin_memcpy(&d, p, sizeof d);
  return d;
}

}  // namespace vhostkit
