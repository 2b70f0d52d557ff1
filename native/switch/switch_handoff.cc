#include "switch/switch_handoff.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

namespace vhostkit {
namespace {

uint32_t Align8(uint32_t v) { return (v + 7u) & ~7u; }

void PutU32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint32_t GetU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

HandoffRing::HandoffRing(size_t bytes) {
  size_t n = 4096;
  while (n < bytes) n <<= 1;
  buf_.assign(n, 0);
  mask_ = n - 1;
}

uint8_t* HandoffRing::Begin(uint32_t max_len) {
  const uint64_t size = buf_.size();
  const uint64_t need = Align8(kHeader + max_len);
  if (need > size / 2) return nullptr;
  const uint64_t pos = tail_local_ & mask_;
  // A record never wraps: the end left unused, with a zero length saying so.
  const uint64_t skip = pos + need > size ? size - pos : 0;
  if (tail_local_ + skip + need - head_cached_ > size) {
    head_cached_ = head_.load(std::memory_order_acquire);
    if (tail_local_ + skip + need - head_cached_ > size) return nullptr;
  }
  skip_ = skip;
  return buf_.data() + ((tail_local_ + skip) & mask_) + kHeader;
}

void HandoffRing::End(int32_t port, uint32_t len, const uint8_t* hdr10, int32_t vlan) {
  if (skip_ != 0) {
    PutU32(buf_.data() + (tail_local_ & mask_), 0);
    tail_local_ += skip_;
    skip_ = 0;
  }
  uint8_t* r = buf_.data() + (tail_local_ & mask_);
  const uint32_t rec = Align8(kHeader + len);
  PutU32(r, rec);
  PutU32(r + 4, static_cast<uint32_t>(port));
  PutU32(r + 8, len);
  PutU32(r + 12, static_cast<uint32_t>(vlan));
  if (hdr10 != nullptr) {
    std::memcpy(r + 16, hdr10, 10);
  } else {
    std::memset(r + 16, 0, 10);
  }
  tail_local_ += rec;
}

bool HandoffRing::Publish() {
  const uint64_t before = tail_.load(std::memory_order_relaxed);
  if (before == tail_local_) return false;
  tail_.store(tail_local_, std::memory_order_release);
  // Pairs with the consumer's fence after it releases: either it sees this tail, or this
  // sees that it had taken everything (and may sleep).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return head_.load(std::memory_order_relaxed) == before;
}

bool HandoffRing::Front(Record* r) {
  for (;;) {
    if (head_local_ == tail_cached_) {
      tail_cached_ = tail_.load(std::memory_order_acquire);
      if (head_local_ == tail_cached_) return false;
    }
    const uint8_t* p = buf_.data() + (head_local_ & mask_);
    const uint32_t rec = GetU32(p);
    if (rec == 0) {
      head_local_ += buf_.size() - (head_local_ & mask_);  // the producer went back to the start
      continue;
    }
    r->port = static_cast<int32_t>(GetU32(p + 4));
    r->len = GetU32(p + 8);
    r->vlan = static_cast<int32_t>(GetU32(p + 12));
    r->hdr10 = p + 16;
    r->frame = p + kHeader;
    return true;
  }
}

void HandoffRing::Take() { head_local_ += GetU32(buf_.data() + (head_local_ & mask_)); }

void HandoffRing::Release() {
  head_.store(head_local_, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool HandoffRing::Pending() const { return tail_.load(std::memory_order_acquire) != head_local_; }

SwitchShared::SwitchShared(uint32_t threads, uint32_t fdb_entries, size_t ring_bytes)
    : fdb_(fdb_entries), threads_(threads), wake_(new WakeState[threads]) {
  if (threads > 1) fdb_.SetMutex(&fdb_mu_);
  for (uint32_t from = 0; from < threads; from++) {
    for (uint32_t to = 0; to < threads; to++) rings_.push_back(from == to ? nullptr : std::make_unique<HandoffRing>(ring_bytes));
  }
  for (uint32_t t = 0; t < threads && threads > 1; t++) {
    wake_[t].fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_[t].fd < 0) {
      const int e = errno;
      for (uint32_t k = 0; k < t; k++) close(wake_[k].fd);
      throw std::runtime_error(std::string("eventfd: ") + std::strerror(e));
    }
  }
}

SwitchShared::~SwitchShared() {
  for (uint32_t t = 0; t < threads_; t++) {
    if (wake_[t].fd >= 0) close(wake_[t].fd);
  }
}

void SwitchShared::Wake(uint32_t t) {
  if (!wake_[t].want.load(std::memory_order_seq_cst)) return;
  const uint64_t one = 1;
  // EAGAIN (the counter is full) still leaves it readable: the owner wakes either way.
  while (write(wake_[t].fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

namespace {
std::mutex registry_mu;
std::unordered_map<uint32_t, std::shared_ptr<SwitchShared>>& Registry() {
  static auto* r = new std::unordered_map<uint32_t, std::shared_ptr<SwitchShared>>();
  return *r;
}
uint32_t next_token = 1;
}  // namespace

uint32_t RegisterSwitchShared(std::shared_ptr<SwitchShared> s) {
  const std::lock_guard<std::mutex> g(registry_mu);
  const uint32_t t = next_token++;
  Registry()[t] = std::move(s);
  return t;
}

std::shared_ptr<SwitchShared> FindSwitchShared(uint32_t token) {
  const std::lock_guard<std::mutex> g(registry_mu);
  const auto it = Registry().find(token);
  return it == Registry().end() ? nullptr : it->second;
}

void UnregisterSwitchShared(uint32_t token) {
  const std::lock_guard<std::mutex> g(registry_mu);
  Registry().erase(token);
}

}  // namespace vhostkit
