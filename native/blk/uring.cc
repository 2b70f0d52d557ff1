#include "blk/uring.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace vhostkit {

namespace {

int SysSetup(uint32_t entries, io_uring_params* p) { return static_cast<int>(syscall(__NR_io_uring_setup, entries, p)); }
int SysEnter(int fd, uint32_t to_submit, uint32_t min_complete, uint32_t flags, const void* arg, size_t argsz) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz));
}
int SysRegister(int fd, uint32_t op, const void* arg, uint32_t n) { return static_cast<int>(syscall(__NR_io_uring_register, fd, op, arg, n)); }

template <typename T>
T* At(void* base, uint32_t off) {
  return reinterpret_cast<T*>(static_cast<uint8_t*>(base) + off);
}

}  // namespace

std::unique_ptr<Uring> Uring::Create(uint32_t sq_entries, uint32_t cq_entries, bool defer_taskrun, std::string* err) {
  io_uring_params p;
  // SINGLE_ISSUER | DEFER_TASKRUN (6.1): the ring is one thread's, and io-wq completions
  // are posted by that thread's next Enter (announced by the eventfd) instead of by the
  // io-wq worker under the completion lock. A kernel without them says EINVAL: the ring
  // is made without.
  bool deferred = defer_taskrun;
  int fd = -1;
  for (;;) {
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | (deferred ? IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN : 0);
    p.cq_entries = cq_entries;
    fd = SysSetup(sq_entries, &p);
    if (fd >= 0 || errno != EINVAL || !deferred) break;
    deferred = false;
  }
  if (fd < 0) {
    const int e = errno;
    *err = std::string("io_uring_setup: ") + strerror(e) +
           (e == ENOSYS ? " (the kernel has no io_uring)" : e == EPERM ? " (kernel.io_uring_disabled or a seccomp filter forbids it)" : "");
    return nullptr;
  }
  std::unique_ptr<Uring> u(new Uring());
  u->fd_ = fd;
  u->deferred_ = deferred;
  // EXT_ARG (5.11): Enter's timed wait. NODROP (5.5): a full CQ never loses a completion.
  if ((p.features & IORING_FEAT_EXT_ARG) == 0 || (p.features & IORING_FEAT_NODROP) == 0) {
    *err = "io_uring lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP (Linux 5.11 or newer is needed)";
    return nullptr;
  }
  u->sq_entries_ = p.sq_entries;
  u->cq_entries_ = p.cq_entries;
  u->sq_map_len_ = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
  u->cq_map_len_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  const bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single) u->sq_map_len_ = u->cq_map_len_ = std::max(u->sq_map_len_, u->cq_map_len_);
  void* sq = mmap(nullptr, u->sq_map_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (sq == MAP_FAILED) {
    *err = std::string("mmap of the io_uring SQ: ") + strerror(errno);
    return nullptr;
  }
  u->sq_map_ = sq;
  if (single) {
    u->cq_map_ = sq;
  } else {
    void* cq = mmap(nullptr, u->cq_map_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (cq == MAP_FAILED) {
      *err = std::string("mmap of the io_uring CQ: ") + strerror(errno);
      return nullptr;
    }
    u->cq_map_ = cq;
  }
  u->sqes_len_ = p.sq_entries * sizeof(io_uring_sqe);
  void* sqes = mmap(nullptr, u->sqes_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) {
    *err = std::string("mmap of the io_uring SQEs: ") + strerror(errno);
    return nullptr;
  }
  u->sqes_ = static_cast<io_uring_sqe*>(sqes);
  u->sq_head_ = At<uint32_t>(sq, p.sq_off.head);
  u->sq_tail_ = At<uint32_t>(sq, p.sq_off.tail);
  u->sq_mask_ = *At<uint32_t>(sq, p.sq_off.ring_mask);
  u->sq_array_ = At<uint32_t>(sq, p.sq_off.array);
  u->cq_head_ = At<uint32_t>(u->cq_map_, p.cq_off.head);
  u->cq_tail_ = At<uint32_t>(u->cq_map_, p.cq_off.tail);
  u->cq_mask_ = *At<uint32_t>(u->cq_map_, p.cq_off.ring_mask);
  u->cqes_ = At<io_uring_cqe>(u->cq_map_, p.cq_off.cqes);
  u->sqe_head_ = u->sqe_tail_ = *u->sq_tail_;
  return u;
}

Uring::~Uring() {
  if (sqes_ != nullptr) munmap(sqes_, sqes_len_);
  if (cq_map_ != nullptr && cq_map_ != sq_map_) munmap(cq_map_, cq_map_len_);
  if (sq_map_ != nullptr) munmap(sq_map_, sq_map_len_);
  if (fd_ >= 0) close(fd_);  // the kernel cancels or waits for what is still in flight
}

io_uring_sqe* Uring::GetSqe() {
  const uint32_t head = __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
  if (sqe_tail_ - head >= sq_entries_) return nullptr;
  io_uring_sqe* s = &sqes_[sqe_tail_ & sq_mask_];
  sqe_tail_++;
  memset(s, 0, sizeof(*s));
  return s;
}

int Uring::Enter(uint32_t wait_nr, int64_t timeout_ms) {
  // Publish [sqe_head_, sqe_tail_): the array maps ring slots to SQE indexes one to one.
  uint32_t tail = *sq_tail_;
  for (; sqe_head_ != sqe_tail_; sqe_head_++, tail++) sq_array_[tail & sq_mask_] = sqe_head_ & sq_mask_;
  __atomic_store_n(sq_tail_, tail, __ATOMIC_RELEASE);
  // Everything published that the kernel has not taken, including SQEs an earlier Enter
  // left (EAGAIN, ENOMEM, a signal): they go now.
  const uint32_t n = tail - __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
  // Deferred task work runs only inside GETEVENTS: every Enter runs it (min_complete 0 does
  // not wait), so CQEs finished since the last one are posted before the caller harvests.
  uint32_t flags = deferred_ ? IORING_ENTER_GETEVENTS : 0;
  io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof(arg));
  __kernel_timespec ts{};
  if (wait_nr > 0) {
    flags |= IORING_ENTER_GETEVENTS;
    if (timeout_ms >= 0) {
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = (timeout_ms % 1000) * 1000000;
      arg.ts = reinterpret_cast<uint64_t>(&ts);
    }
    flags |= IORING_ENTER_EXT_ARG;
  }
  for (;;) {
    const int r = (flags & IORING_ENTER_EXT_ARG) != 0 ? SysEnter(fd_, n, wait_nr, flags, &arg, sizeof(arg)) : SysEnter(fd_, n, 0, flags, nullptr, 0);
    if (r >= 0) return r;
    if (errno == EINTR) {
      if (n == 0) continue;
      return 0;  // interrupted before taking anything: the SQEs stay published for the next Enter
    }
    return -errno;
  }
}

uint32_t Uring::Ready() const { return __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE) - *cq_head_; }

bool Uring::PopCqe(io_uring_cqe* out) {
  const uint32_t head = *cq_head_;
  if (head == __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE)) return false;
  *out = cqes_[head & cq_mask_];
  __atomic_store_n(cq_head_, head + 1, __ATOMIC_RELEASE);
  return true;
}

int Uring::RegisterEventFd(int efd) { return SysRegister(fd_, IORING_REGISTER_EVENTFD, &efd, 1) < 0 ? -errno : 0; }

int Uring::RegisterFiles(const int* fds, uint32_t n) { return SysRegister(fd_, IORING_REGISTER_FILES, fds, n) < 0 ? -errno : 0; }

int Uring::UnregisterFiles() { return SysRegister(fd_, IORING_UNREGISTER_FILES, nullptr, 0) < 0 ? -errno : 0; }

}  // namespace vhostkit
