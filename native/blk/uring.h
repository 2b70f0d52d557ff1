// A minimal io_uring (Linux 5.11+) over the raw syscalls: one submission and one
// completion ring, used from one thread. No liburing: the addon is prebuilt for x64 and
// arm64 and must load where liburing is not installed, and the three syscalls plus two
// mmaps are all the block engine needs (IORING_OP_READV / WRITEV / FSYNC, a registered
// file, an eventfd for completions).
//
// Memory ordering follows io_uring(7): the SQ tail is published with a release store after
// the SQEs are written; the CQ tail is read with an acquire load before the CQEs; the CQ
// head is released after they are copied out.
#pragma once
#include <linux/io_uring.h>

#include <cstdint>
#include <memory>
#include <string>

namespace vhostkit {

class Uring {
 public:
  // A ring of `sq_entries` submissions and `cq_entries` completions (powers of two are
  // chosen by the kernel). Returns nullptr and sets err (the reason io_uring cannot be
  // used here: ENOSYS, EPERM from kernel.io_uring_disabled or a seccomp filter, a kernel
  // older than 5.11) on failure. `defer_taskrun`: ask for SINGLE_ISSUER | DEFER_TASKRUN
  // (6.1), made without them where the kernel says EINVAL (see deferred()); the ring must
  // then be entered and registered from the thread that created it only.
  static std::unique_ptr<Uring> Create(uint32_t sq_entries, uint32_t cq_entries, bool defer_taskrun, std::string* err);
  ~Uring();
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;

  // The next free SQE (zeroed), or nullptr if the submission ring is full (Submit first).
  io_uring_sqe* GetSqe();
  // SQEs filled or published and not yet taken by the kernel.
  uint32_t Pending() const { return sqe_tail_ - __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE); }
  // Hands the pending SQEs to the kernel; with wait_nr > 0 also waits until that many
  // completions are posted, at most timeout_ms (< 0: no limit). Returns the number of SQEs
  // the kernel took, or -errno (-ETIME: the wait timed out; the SQEs were taken).
  int Enter(uint32_t wait_nr, int64_t timeout_ms);
  // Copies out the next completion; false if there is none.
  bool PopCqe(io_uring_cqe* out);
  // Completions posted and not yet popped.
  uint32_t Ready() const;

  // eventfd written by the kernel for every posted completion.
  int RegisterEventFd(int efd);
  // fds usable as IOSQE_FIXED_FILE index 0..n-1.
  int RegisterFiles(const int* fds, uint32_t n);
  // Drops the registered files now. Closing the ring drops them too, but later (the
  // kernel tears a ring down in a workqueue), and a file lock would outlive Close().
  int UnregisterFiles();
  uint32_t sq_entries() const { return sq_entries_; }
  // Made with SINGLE_ISSUER | DEFER_TASKRUN: CQEs of async completions appear only after an
  // Enter (on the ring's thread), which the eventfd announces.
  bool deferred() const { return deferred_; }
  uint32_t cq_entries() const { return cq_entries_; }

 private:
  Uring() = default;
  int fd_ = -1;
  bool deferred_ = false;
  void* sq_map_ = nullptr;
  size_t sq_map_len_ = 0;
  void* cq_map_ = nullptr;  // == sq_map_ with IORING_FEAT_SINGLE_MMAP
  size_t cq_map_len_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  size_t sqes_len_ = 0;
  uint32_t sq_entries_ = 0, cq_entries_ = 0;
  // Submission ring (shared with the kernel).
  uint32_t* sq_head_ = nullptr;
  uint32_t* sq_tail_ = nullptr;
  uint32_t sq_mask_ = 0;
  uint32_t* sq_array_ = nullptr;
  // SQEs handed out by GetSqe ([sqe_head_, sqe_tail_) not yet published).
  uint32_t sqe_head_ = 0, sqe_tail_ = 0;
  // Completion ring.
  uint32_t* cq_head_ = nullptr;
  uint32_t* cq_tail_ = nullptr;
  uint32_t cq_mask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
};

}  // namespace vhostkit
