#include "memory/dirty_log.h"

namespace vhostkit {

std::shared_ptr<DirtyLog> DirtyLog::Map(int fd, uint64_t size, uint64_t offset, std::string* err) {
  auto m = Mapping::Map(fd, size, offset, err);
  if (!m) return nullptr;
  auto log = std::make_shared<DirtyLog>();
  log->map_ = std::move(m);
  return log;
}

void DirtyLog::Mark(uint64_t gpa, uint64_t len) {
  if (len == 0) return;
  uint64_t last;
  if (__builtin_add_overflow(gpa, len - 1, &last)) last = UINT64_MAX;
  const uint64_t bytes = map_->size();
  uint8_t* bits = map_->host();
  for (uint64_t page = gpa >> kPageShift; page <= (last >> kPageShift); page++) {
    const uint64_t byte = page >> 3;
    if (byte >= bytes) return;
    __atomic_fetch_or(bits + byte, static_cast<uint8_t>(1u << (page & 7)), __ATOMIC_RELAXED);
  }
}

}  // namespace vhostkit
