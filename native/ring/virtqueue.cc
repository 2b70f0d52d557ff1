#include "ring/virtqueue.h"

#include <cstdio>
#include <fcntl.h>
#include <unistd.h>

#include "ring/packed_ring.h"
#include "ring/split_ring.h"

namespace vhostkit {

const char* VqErrorName(VqError e) {
  switch (e) {
    case VqError::kOk: return "OK";
    case VqError::kNotReady: return "NOT_READY";
    case VqError::kRingAddr: return "RING_ADDR";
    case VqError::kAvailIdxJump: return "AVAIL_IDX_JUMP";
    case VqError::kHeadOutOfRange: return "HEAD_OUT_OF_RANGE";
    case VqError::kNextOutOfRange: return "NEXT_OUT_OF_RANGE";
    case VqError::kDescLoop: return "DESC_LOOP";
    case VqError::kChainTooLong: return "CHAIN_TOO_LONG";
    case VqError::kDescAddr: return "DESC_ADDR";
    case VqError::kWriteBeforeRead: return "WRITE_BEFORE_READ";
    case VqError::kIndirectNotNegotiated: return "INDIRECT_NOT_NEGOTIATED";
    case VqError::kIndirectNested: return "INDIRECT_NESTED";
    case VqError::kIndirectLen: return "INDIRECT_LEN";
    case VqError::kIndirectAddr: return "INDIRECT_ADDR";
    case VqError::kIndirectNext: return "INDIRECT_NEXT";
    case VqError::kIdOutOfRange: return "ID_OUT_OF_RANGE";
    case VqError::kIdInFlight: return "ID_IN_FLIGHT";
    case VqError::kBaseOutOfRange: return "BASE_OUT_OF_RANGE";
    case VqError::kInflightCorrupt: return "INFLIGHT_CORRUPT";
    case VqError::kGuestMemoryLost: return "GUEST_MEMORY_LOST";
  }
  return "UNKNOWN";
}

std::shared_ptr<Virtqueue> Virtqueue::Create(bool packed, uint32_t size, std::string* err) {
  if (size == 0 || size > 32768) {
    *err = "queue size " + std::to_string(size) + ", expected 1..32768";
    return nullptr;
  }
  if (!packed && (size & (size - 1)) != 0) {
    *err = "split queue size " + std::to_string(size) + " is not a power of 2";
    return nullptr;
  }
  if (packed) return std::make_shared<PackedRing>(size);
  return std::make_shared<SplitRing>(size);
}

Virtqueue::Virtqueue(bool packed, uint32_t size)
    : packed_(packed), size_(size), in_flight_count_(size, 0), log_ranges_(size) {
  resubmitted_.assign(size, 0);
}

Virtqueue::~Virtqueue() {
  if (call_fd_ >= 0) close(call_fd_);
}

void Virtqueue::SetCallFd(int fd) {
  const int dup = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (dup >= 0) {
    const int fl = fcntl(dup, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) (void)fcntl(dup, F_SETFL, fl | O_NONBLOCK);  // a full pipe must not stall us
  }
  std::lock_guard<std::mutex> g(ctl_mu_);
  if (call_fd_ >= 0) close(call_fd_);
  call_fd_ = dup;
}

bool Virtqueue::Signal() {
  std::lock_guard<std::mutex> g(ctl_mu_);
  if (call_fd_ < 0) return false;
  const uint64_t one = 1;
  ssize_t r = write(call_fd_, &one, sizeof one);
  (void)r;  // EAGAIN: counter saturated, the driver is signalled anyway
  return true;
}

void Virtqueue::SetMemory(std::shared_ptr<MemTable> mem) {
  mem_ = std::move(mem);
  desc_ = driver_ = device_ = nullptr;  // ring pointers belong to the old table
}

void Virtqueue::Detach() {
  desc_ = driver_ = device_ = nullptr;
  mem_.reset();
  SetCallFd(-1);
  SetDirtyLog(nullptr, false, 0);
  SetInflight(nullptr, nullptr, 0);
  SetRingRecord(nullptr, nullptr, 0, 0);
}

VqError Virtqueue::SetRings(uint64_t desc, uint64_t driver, uint64_t device, AddrSpace space, std::string* detail) {
  desc_ = driver_ = device_ = nullptr;
  if (!mem_) {
    *detail = "no memory table";
    return VqError::kNotReady;
  }
  const uint64_t n = size_;
  const uint64_t desc_len = 16 * n;
  const uint64_t driver_len = packed_ ? 4 : 6 + 2 * n;
  const uint64_t device_len = packed_ ? 4 : 6 + 8 * n;
  const uint64_t driver_align = packed_ ? 4 : 2;
  const uint64_t device_align = 4;
  auto tr = [&](uint64_t a, uint64_t len) {
    return space == AddrSpace::kGuestPhysical ? mem_->TranslateGpaContiguous(a, len) : mem_->TranslateUvaContiguous(a, len);
  };
  uint8_t* d = tr(desc, desc_len);
  uint8_t* dr = tr(driver, driver_len);
  uint8_t* dv = tr(device, device_len);
  const char* bad = d == nullptr ? "descriptor table" : dr == nullptr ? (packed_ ? "driver area" : "avail ring")
                  : dv == nullptr ? (packed_ ? "device area" : "used ring") : nullptr;
  if (bad != nullptr) {
    *detail = std::string(bad) + " is not inside one memory region";
    return VqError::kRingAddr;
  }
  // Alignment of the host pointers (§2.7 / §2.8 alignment table); misaligned atomics are UB.
  if ((reinterpret_cast<uintptr_t>(d) & 15) != 0 || (reinterpret_cast<uintptr_t>(dr) & (driver_align - 1)) != 0 ||
      (reinterpret_cast<uintptr_t>(dv) & (device_align - 1)) != 0) {
    *detail = "ring area misaligned";
    return VqError::kRingAddr;
  }
  desc_ = d;
  driver_ = dr;
  device_ = dv;
  ring_addr_[0] = desc;
  ring_addr_[1] = driver;
  ring_addr_[2] = device;
  return VqError::kOk;
}

void Virtqueue::LostFail(uint32_t region) {
  const Region& r = mem_->regions()[region];
  char b[160];
  snprintf(b, sizeof b, "guest memory file truncated: region %u (gpa 0x%llx, size 0x%llx) lost pages", region,
           static_cast<unsigned long long>(r.gpa), static_cast<unsigned long long>(r.size));
  Fail(VqError::kGuestMemoryLost, b);
}

int32_t Virtqueue::Fail(VqError e, std::string detail) {
  if (error_ == VqError::kOk) {
    error_ = e;
    error_detail_ = std::move(detail);
  }
  return -static_cast<int32_t>(error_);
}

void Virtqueue::SetDirtyLog(std::shared_ptr<DirtyLog> log, bool log_rings, uint64_t used_gpa) {
  std::lock_guard<std::mutex> g(ctl_mu_);
  log_rings_ = log != nullptr && log_rings;
  used_gpa_ = used_gpa;
  log_on_.store(log != nullptr, std::memory_order_release);
  log_ = std::move(log);
}

Virtqueue::LogState Virtqueue::CurrentLog() {
  if (!log_on_.load(std::memory_order_acquire)) return {};
  std::lock_guard<std::mutex> g(ctl_mu_);
  return {log_, log_rings_, used_gpa_};
}

void Virtqueue::LogChain(uint16_t id, const BurstArrays& out, uint32_t first, uint32_t end) {
  std::vector<LogRange>& v = log_ranges_[id];
  v.clear();
  for (uint32_t s = first; s < end; s++) {
    if (!(out.seg_flags[s] & 1)) continue;
    const Region& r = mem_->regions()[out.seg_region[s]];
    v.push_back({r.gpa + static_cast<uint64_t>(out.seg_offset[s]), out.seg_len[s]});
  }
}

void Virtqueue::LogCompleted(DirtyLog& log, uint16_t id, uint32_t len) {
  if (id >= log_ranges_.size()) return;
  uint64_t left = len;
  for (const LogRange& r : log_ranges_[id]) {
    if (left == 0) break;
    const uint64_t n = r.len < left ? r.len : left;
    log.Mark(r.gpa, n);
    left -= n;
  }
  log_ranges_[id].clear();
}

void Virtqueue::LogRing(DirtyLog& log, const uint8_t* host, uint64_t len) {
  // Ring bytes are found by host pointer; their gpa comes from the region holding them.
  for (const Region& r : mem_->regions()) {
    if (host >= r.host() && host < r.host() + r.size) {
      log.Mark(r.gpa + static_cast<uint64_t>(host - r.host()), len);
      return;
    }
  }
}

bool Virtqueue::ClaimIds(const uint16_t* ids, uint32_t n) {
  // Mark each id with kClaimed so that a duplicate inside the batch is caught too; undo
  // the marks if any id is not in flight. No allocation: this is the hot path.
  uint32_t i = 0;
  for (; i < n; i++) {
    const uint16_t id = ids[i];
    if (id >= size_ || in_flight_count_[id] == 0 || (in_flight_count_[id] & kClaimed) != 0) break;
    in_flight_count_[id] |= kClaimed;
  }
  if (i == n) return true;
  for (uint32_t j = 0; j < i; j++) in_flight_count_[ids[j]] &= ~kClaimed;
  return false;
}

}  // namespace vhostkit
