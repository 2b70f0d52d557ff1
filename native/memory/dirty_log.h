// Dirty page log for live migration (vhost-user "Migration"): one bit per 4 KiB page of
// guest-physical memory, in a shared area the frontend gave us (SET_LOG_BASE). Bits are
// set with atomic OR: the frontend clears them concurrently.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "memory/memory.h"

namespace vhostkit {

class DirtyLog {
 public:
  static constexpr uint64_t kPageShift = 12;  // VHOST_LOG_PAGE 0x1000
  static std::shared_ptr<DirtyLog> Map(int fd, uint64_t size, uint64_t offset, std::string* err);
  // Marks every page of [gpa, gpa+len). Pages past the end of the log are not marked
  // (the frontend sizes the log to cover all of guest memory).
  void Mark(uint64_t gpa, uint64_t len);
  uint64_t size() const { return map_->size(); }
  // The frontend truncated the log's file under the mapping (guest_fault.h).
  bool lost() const { return map_->lost(); }

 private:
  std::shared_ptr<Mapping> map_;
};

}  // namespace vhostkit
