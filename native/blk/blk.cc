#include "blk/blk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include <endian.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "io/eventfd.h"

namespace vhostkit {

const char* BlkErrName(BlkErr e) {
  switch (e) {
    case BlkErr::kNoStatus: return "noStatus";
    case BlkErr::kShortHeader: return "shortHeader";
    case BlkErr::kRange: return "range";
    case BlkErr::kUnalignedLen: return "unalignedLen";
    case BlkErr::kReadOnly: return "readOnly";
    case BlkErr::kTooManySegs: return "tooManySegs";
    case BlkErr::kTooManySectors: return "tooManySectors";
    case BlkErr::kBadPayload: return "badPayload";
    case BlkErr::kBadFlags: return "badFlags";
    case BlkErr::kUnsupported: return "unsupported";
    case BlkErr::kIo: return "io";
    case BlkErr::kBadSegment: return "badSegment";
    case BlkErr::kGuestMemoryLost: return "guestMemoryLost";
    case BlkErr::kCount: break;
  }
  return "?";
}

const char* BlkEngineKindName(BlkEngineKind k) {
  switch (k) {
    case BlkEngineKind::kAuto: return "auto";
    case BlkEngineKind::kThreads: return "threads";
    case BlkEngineKind::kIoUring: return "io_uring";
  }
  return "?";
}

namespace {

constexpr size_t kPage = 4096;

uint32_t LoadLe32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return le32toh(v);
}
uint64_t LoadLe64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return le64toh(v);
}

// [sector, sector + count) inside [0, capacity), without overflow.
bool InRange(uint64_t sector, uint64_t count, uint64_t capacity) {
  return sector <= capacity && count <= capacity - sector;
}

// A position in an iovec list, for copies between it and a flat buffer.
struct IovCursor {
  const iovec* v;
  size_t n;
  size_t idx = 0;
  size_t pos = 0;  // inside v[idx]
  IovCursor(const iovec* v_, size_t n_) : v(v_), n(n_) {}
  // Copies up to len bytes from src into the iovecs; returns bytes copied.
  size_t From(const uint8_t* src, size_t len) {
    size_t done = 0;
    while (done < len && idx < n) {
      const size_t k = std::min(len - done, v[idx].iov_len - pos);
      memcpy(static_cast<uint8_t*>(v[idx].iov_base) + pos, src + done, k);
      Advance(k);
      done += k;
    }
    return done;
  }
  size_t To(uint8_t* dst, size_t len) {
    size_t done = 0;
    while (done < len && idx < n) {
      const size_t k = std::min(len - done, v[idx].iov_len - pos);
      memcpy(dst + done, static_cast<const uint8_t*>(v[idx].iov_base) + pos, k);
      Advance(k);
      done += k;
    }
    return done;
  }
  void Zero() {
    for (; idx < n; idx++, pos = 0) memset(static_cast<uint8_t*>(v[idx].iov_base) + pos, 0, v[idx].iov_len - pos);
  }
  void Advance(size_t k) {
    pos += k;
    if (pos == v[idx].iov_len) {
      idx++;
      pos = 0;
    }
  }
};

// Drops the first k bytes of iov[*idx..] (after a partial preadv / pwritev).
void Consume(std::vector<iovec>& iov, size_t* idx, size_t k) {
  while (k > 0 && *idx < iov.size()) {
    iovec& e = iov[*idx];
    if (k >= e.iov_len) {
      k -= e.iov_len;
      (*idx)++;
    } else {
      e.iov_base = static_cast<uint8_t*>(e.iov_base) + k;
      e.iov_len -= k;
      k = 0;
    }
  }
}

uint8_t* AlignedAlloc(size_t len, bool zero) {
  void* p = nullptr;
  if (posix_memalign(&p, kPage, len) != 0) return nullptr;
  if (zero) memset(p, 0, len);
  return static_cast<uint8_t*>(p);
}

}  // namespace

BlkEngine::Scratch::~Scratch() { free(bounce); }

BlkEngine::BlkEngine(const BlkOptions& opts) : opts_(opts) {}

std::unique_ptr<BlkEngine> BlkEngine::Create(const BlkOptions& opts, std::string* err) {
  if (opts.threads < 1 || opts.threads > 64) {
    *err = "threads: " + std::to_string(opts.threads) + ", expected 1..64";
    return nullptr;
  }
  std::unique_ptr<BlkEngine> e(new BlkEngine(opts));
  e->read_only_ = opts.read_only;
  if (opts.ram) {
    if (opts.capacity_sectors == 0 || opts.capacity_sectors > (uint64_t{1} << 46)) {
      *err = "RAM disk of " + std::to_string(opts.capacity_sectors) + " sectors, expected 1..2^46";
      return nullptr;
    }
    e->ram_len_ = opts.capacity_sectors * blk::kSectorSize;
    void* p = mmap(nullptr, e->ram_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      *err = std::string("mmap of the RAM disk: ") + strerror(errno);
      return nullptr;
    }
    e->ram_ = static_cast<uint8_t*>(p);
    e->capacity_ = opts.capacity_sectors;
  } else {
    if (opts.fd < 0) {
      *err = "a backend is needed: an fd or ram";
      return nullptr;
    }
    e->fd_ = fcntl(opts.fd, F_DUPFD_CLOEXEC, 0);
    if (e->fd_ < 0) {
      *err = std::string("fd ") + std::to_string(opts.fd) + ": " + strerror(errno);
      return nullptr;
    }
    const int fl = fcntl(e->fd_, F_GETFL);
    if ((fl & O_ACCMODE) == O_RDONLY) e->read_only_ = true;
    e->direct_ = opts.direct || (fl & O_DIRECT) != 0;
    if (opts.capacity_from_fd) {
      struct stat sb;
      if (fstat(e->fd_, &sb) != 0) {
        *err = std::string("fstat: ") + strerror(errno);
        return nullptr;
      }
      uint64_t bytes = 0;
      if (S_ISBLK(sb.st_mode)) {
        if (ioctl(e->fd_, BLKGETSIZE64, &bytes) != 0) {
          *err = std::string("BLKGETSIZE64: ") + strerror(errno);
          return nullptr;
        }
      } else if (S_ISREG(sb.st_mode)) {
        bytes = static_cast<uint64_t>(sb.st_size);
      } else {
        *err = "fd is neither a regular file nor a block device";
        return nullptr;
      }
      e->capacity_ = bytes / blk::kSectorSize;
    } else {
      e->capacity_ = opts.capacity_sectors;
    }
    e->zeros_ = AlignedAlloc(kBounceLen, true);
    if (e->zeros_ == nullptr) {
      *err = "out of memory";
      return nullptr;
    }
  }
  if (const int r = io::EventFdCreate(0, false, &e->efd_); r != 0) {
    e->efd_ = -1;
    *err = std::string("eventfd: ") + strerror(r);
    return nullptr;
  }
  if (opts.engine != BlkEngineKind::kThreads) {
    std::string why;
    if (e->StartRing(&why)) {
      e->engine_ = BlkEngineKind::kIoUring;
    } else if (opts.engine == BlkEngineKind::kIoUring) {
      *err = "engine io_uring: " + why;
      return nullptr;
    } else {
      e->engine_note_ = why;  // auto: the thread pool, and the caller says why
    }
  }
  try {
    for (uint32_t t = 0; t < opts.threads; t++) {
      e->threads_.emplace_back([p = e.get()] { p->Worker(); });
      pthread_setname_np(e->threads_.back().native_handle(), "vhostkit-blk");  // named before Create returns
    }
  } catch (const std::system_error& x) {
    *err = std::string("starting a worker thread: ") + x.what();
    return nullptr;  // ~BlkEngine joins those started
  }
  return e;
}

// The ring of a file engine (its fd registered as fixed file 0, the completion eventfd
// registered for CQEs). A RAM disk needs no ring: its small requests are copied inline.
bool BlkEngine::StartRing(std::string* err) {
  struct statfs sf;
  shmem_ = ram_ == nullptr && fstatfs(fd_, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
  // Deferred task work where it measured better (bench/results/2026-12-06-blk-defer-taskrun.md):
  // a buffered tmpfs file, whose ring requests (those the engine neither copies inline nor
  // gives the pool) all complete on io-wq: randread 128 KiB at QD 8 and 32 went 1.16-1.61x
  // in every one of 20 rounds. Not on other file systems, where it did not help (ext4,
  // 4 KiB: round ratios about 1.0 at QD 1 and 32, and more of randread QD 32's runs with
  // 4 ms stalls: 7 of 10 against 3 of 10).
  std::unique_ptr<Uring> u = Uring::Create(kRingEntries, kRingEntries * 16, shmem_ && !direct_, err);
  if (!u) return false;
  if (ram_ != nullptr) return true;  // the kernel allows io_uring; the RAM disk copies inline
  if (const int r = u->RegisterEventFd(efd_); r < 0) {
    *err = std::string("IORING_REGISTER_EVENTFD: ") + strerror(-r);
    return false;
  }
  if (const int r = u->RegisterFiles(&fd_, 1); r < 0) {
    *err = std::string("IORING_REGISTER_FILES: ") + strerror(-r);
    return false;
  }
  ring_cap_ = u->cq_entries();
  ring_ = std::move(u);
  return true;
}

BlkEngine::~BlkEngine() {
  Close();
  free(zeros_);
}

void BlkEngine::Close() {
  if (closed_) return;
  closed_ = true;
  // Ring I/O still running completes (into done_: it can still be reaped) before the
  // backend and the ring go; what it hands to the pool runs before the workers stop.
  if (ring_) WaitIdle(-1);
  {
    std::lock_guard<std::mutex> lk(jmu_);
    stop_ = true;
  }
  jcv_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  if (ring_) ring_->UnregisterFiles();  // the image's lock goes with fd_, not later
  ring_.reset();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (ram_ != nullptr) munmap(ram_, ram_len_);
  ram_ = nullptr;
  std::lock_guard<std::mutex> lk(cmu_);
  if (efd_ >= 0) close(efd_);
  efd_ = -1;
}

BlkEngine::Request* BlkEngine::Alloc() {
  if (free_.empty()) {
    owned_.push_back(std::make_unique<Request>());
    return owned_.back().get();
  }
  Request* r = free_.back();
  free_.pop_back();
  return r;
}

bool BlkEngine::Fail(Request* r, uint8_t status, BlkErr why) {
  r->status = status;
  r->why = why;
  return false;
}

bool BlkEngine::Aligned(const std::vector<iovec>& iov) const {
  for (const iovec& v : iov) {
    if ((reinterpret_cast<uintptr_t>(v.iov_base) | v.iov_len) % blk::kSectorSize != 0) return false;
  }
  return true;
}

bool BlkEngine::Parse(Request* r, const BurstArrays& b, uint32_t i, const MemTable& mem) {
  r->type = UINT32_MAX;
  r->status = blk::kStatusOk;
  r->why = BlkErr::kCount;
  r->bounced = false;
  r->status_ptr = nullptr;
  r->used_len = 0;
  r->offset = r->len = 0;
  r->iov.clear();
  r->ranges.clear();
  // The segments, resolved to host pointers. The ring engine checked them against this
  // table when it popped them; check again (cheap) in case the table changed in between.
  const uint32_t first = b.first_seg[i];
  const uint32_t end = b.first_seg[i + 1];
  if (end < first || end > b.max_segs) return Fail(r, 0, BlkErr::kBadSegment);
  const std::vector<Region>& regions = mem.regions();
  segs_.clear();
  uint64_t rlen = 0;
  uint64_t wlen = 0;
  for (uint32_t s = first; s < end; s++) {
    const uint32_t reg = b.seg_region[s];
    const double offd = b.seg_offset[s];
    const uint32_t len = b.seg_len[s];
    if (len == 0) continue;
    if (reg >= regions.size() || !(offd >= 0) || offd >= 9007199254740992.0) return Fail(r, 0, BlkErr::kBadSegment);
    const uint64_t off = static_cast<uint64_t>(offd);
    if (off > regions[reg].size || len > regions[reg].size - off) return Fail(r, 0, BlkErr::kBadSegment);
    const bool w = (b.seg_flags[s] & 1) != 0;
    segs_.push_back({regions[reg].host() + off, len, w});
    (w ? wlen : rlen) += len;
  }
  // The status byte: the last device-writable byte (§5.2.6: "u8 status" ends the request).
  if (wlen == 0) return Fail(r, 0, BlkErr::kNoStatus);
  // Used length: the whole writable part, as QEMU reports it. Dirty logging (migration)
  // marks the first `len` writable bytes, and the status byte is the last of them, whatever
  // the request wrote before it. (The chain's writable part is < 4 GiB: Pop checks.)
  r->used_len = static_cast<uint32_t>(wlen);
  for (size_t k = segs_.size(); k-- > 0;) {
    if (segs_[k].writable) {
      r->status_ptr = segs_[k].p + segs_[k].len - 1;
      break;
    }
  }
  if (rlen < blk::kHeaderLen) return Fail(r, blk::kStatusIoErr, BlkErr::kShortHeader);

  // iovecs over the segments of one direction, after `skip` bytes, at most `limit` bytes.
  auto build = [&](bool writable, uint64_t skip, uint64_t limit) {
    for (const Seg& s : segs_) {
      if (s.writable != writable) continue;
      if (limit == 0) break;
      if (skip >= s.len) {
        skip -= s.len;
        continue;
      }
      const uint64_t k = std::min<uint64_t>(s.len - skip, limit);
      r->iov.push_back({s.p + skip, static_cast<size_t>(k)});
      limit -= k;
      skip = 0;
    }
  };
  // The header: the first 16 readable bytes, wherever they are (§2.6.4).
  uint8_t hdr[blk::kHeaderLen];
  build(false, 0, blk::kHeaderLen);
  IovCursor(r->iov.data(), r->iov.size()).To(hdr, sizeof(hdr));
  r->iov.clear();
  r->type = LoadLe32(hdr);
  const uint64_t sector = LoadLe64(hdr + 8);

  switch (r->type) {
    case blk::kTypeIn: {
      js_.in++;
      const uint64_t len = wlen - 1;
      if (len % blk::kSectorSize != 0) return Fail(r, blk::kStatusIoErr, BlkErr::kUnalignedLen);
      if (!InRange(sector, len / blk::kSectorSize, capacity_)) return Fail(r, blk::kStatusIoErr, BlkErr::kRange);
      r->offset = sector * blk::kSectorSize;
      r->len = len;
      if (len == 0) {
        return false;
      }
      build(true, 0, len);
      return true;
    }
    case blk::kTypeOut: {
      js_.out++;
      if (read_only_) return Fail(r, blk::kStatusIoErr, BlkErr::kReadOnly);
      const uint64_t len = rlen - blk::kHeaderLen;
      if (len % blk::kSectorSize != 0) return Fail(r, blk::kStatusIoErr, BlkErr::kUnalignedLen);
      if (!InRange(sector, len / blk::kSectorSize, capacity_)) return Fail(r, blk::kStatusIoErr, BlkErr::kRange);
      r->offset = sector * blk::kSectorSize;
      r->len = len;
      if (len == 0) return false;
      build(false, blk::kHeaderLen, len);
      return true;
    }
    case blk::kTypeFlush:
      js_.flush++;
      return ram_ == nullptr;  // a RAM disk is always stable
    case blk::kTypeGetId: {
      js_.get_id++;
      // At most VIRTIO_BLK_ID_BYTES bytes of serial, NUL-padded (§5.2.6: GET_ID).
      const uint64_t len = std::min<uint64_t>(wlen - 1, blk::kIdBytes);
      build(true, 0, len);
      IovCursor(r->iov.data(), r->iov.size()).From(opts_.serial.data(), len);
      r->iov.clear();
      r->len = len;
      return false;
    }
    case blk::kTypeDiscard:
    case blk::kTypeWriteZeroes: {
      const bool discard = r->type == blk::kTypeDiscard;
      (discard ? js_.discard : js_.write_zeroes)++;
      const uint32_t max_seg = discard ? opts_.max_discard_seg : opts_.max_write_zeroes_seg;
      const uint32_t max_sectors = discard ? opts_.max_discard_sectors : opts_.max_write_zeroes_sectors;
      if (max_seg == 0) return Fail(r, blk::kStatusUnsupp, BlkErr::kUnsupported);
      if (read_only_) return Fail(r, blk::kStatusIoErr, BlkErr::kReadOnly);
      const uint64_t payload = rlen - blk::kHeaderLen;
      if (payload == 0 || payload % blk::kDwzSegLen != 0) return Fail(r, blk::kStatusIoErr, BlkErr::kBadPayload);
      if (payload / blk::kDwzSegLen > max_seg) return Fail(r, blk::kStatusIoErr, BlkErr::kTooManySegs);
      build(false, blk::kHeaderLen, payload);
      IovCursor cur(r->iov.data(), r->iov.size());
      uint8_t seg[blk::kDwzSegLen];
      BlkErr why = BlkErr::kCount;
      for (uint64_t k = 0; k < payload / blk::kDwzSegLen; k++) {
        cur.To(seg, sizeof(seg));
        const DwzRange d{LoadLe64(seg), LoadLe32(seg + 8), LoadLe32(seg + 12)};
        // §5.2.6.2: unknown flags, and UNMAP on a discard, are UNSUPP.
        if ((d.flags & ~blk::kDwzFlagUnmap) != 0 || (discard && d.flags != 0)) {
          r->iov.clear();
          return Fail(r, blk::kStatusUnsupp, BlkErr::kBadFlags);
        }
        if (why == BlkErr::kCount && d.num > max_sectors) why = BlkErr::kTooManySectors;
        if (why == BlkErr::kCount && !InRange(d.sector, d.num, capacity_)) why = BlkErr::kRange;
        if (d.num != 0) r->ranges.push_back(d);
      }
      r->iov.clear();
      if (why != BlkErr::kCount) return Fail(r, blk::kStatusIoErr, why);
      return !r->ranges.empty();
    }
    default:
      js_.other++;
      return Fail(r, blk::kStatusUnsupp, BlkErr::kUnsupported);
  }
}

int32_t BlkEngine::SubmitReap(Virtqueue& q, const BurstArrays& b, uint32_t n) {
  if (!Submit(q, b, n, true)) return -2;
  return Reap(q);
}

bool BlkEngine::Submit(Virtqueue& q, const BurstArrays& b, uint32_t n, bool reap_next) {
  if (closed_) return false;
  const std::shared_ptr<MemTable> mem = q.memory();
  if (!mem) return false;
  n = std::min(n, b.max_chains);
  if (n == 0) return true;
  const auto now = std::chrono::steady_clock::now();
  batch_.clear();
  inline_.clear();
  uint32_t to_ring = 0;
  for (uint32_t i = 0; i < n; i++) {
    Request* r = Alloc();
    r->owner = &q;
    r->id = b.head[i];
    r->start = now;
    const bool work = Parse(r, b, i, *mem);
    r->bytes = r->len;
    if (!work) {
      Finish(r);
      inline_.push_back(r);
      continue;
    }
    r->mem = mem;
    if (engine_ != BlkEngineKind::kIoUring || !Route(r, n == 1 && in_flight_total_ == 0)) {
      batch_.push_back(r);
    } else if (r->mem) {
      to_ring++;  // in the ring (Route released mem of what it ran inline)
    } else {
      inline_.push_back(r);
    }
  }
  // One entry into the kernel for the whole burst; buffered I/O on cached pages completes
  // inside it. SQEs it does not take stay published in the SQ for the next Enter.
  if (to_ring > 0) ring_->Enter(0, 0);
  js_.submitted += n;
  in_flight_[&q] += n;
  in_flight_total_ += n;
  bool wake = false;
  to_pool_.clear();
  {
    std::lock_guard<std::mutex> lk(cmu_);
    executing_ += batch_.size() + to_ring;
    for (Request* r : inline_) {
      Account(r);
      done_.push_back(r);
    }
    if (ring_in_flight_ > 0) HarvestLocked(&to_pool_, true);
    // With reap_next, q's completions here are reaped on this wakeup; any other queue's
    // (CQEs harvested above) wrote the eventfd from the kernel, and Reap passes them on.
    if (!done_.empty() && !notified_ && !reap_next) wake = notified_ = true;
  }
  if (wake && efd_ >= 0) io::EventFdWrite(efd_, 1);
  batch_.insert(batch_.end(), to_pool_.begin(), to_pool_.end());
  QueueJobs(batch_);
  return true;
}

void BlkEngine::QueueJobs(const std::vector<Request*>& rs) {
  if (rs.empty()) return;
  {
    std::lock_guard<std::mutex> lk(jmu_);
    jobs_.insert(jobs_.end(), rs.begin(), rs.end());
  }
  if (rs.size() == 1) {
    jcv_.notify_one();
  } else {
    jcv_.notify_all();
  }
}

bool BlkEngine::Route(Request* r, bool lone) {
  const bool small = (r->type == blk::kTypeIn || r->type == blk::kTypeOut) && r->len <= opts_.inline_max;
  if (ram_ != nullptr || (shmem_ && !direct_)) {
    // Deeper queues: the pool copies while this thread pops (bench run 1 and 2: the pool beat
    // inline copies at QD 32 in every row); tmpfs reads would go to io-wq from the ring anyway.
    if (small && !lone) return false;
    if (!small) return ram_ == nullptr && ring_ ? RouteRing(r) : false;
    Execute(r, js_scratch_);  // a copy from or into memory, as the worker would do it
    Finish(r);
    r->mem.reset();
    js_.copied_inline++;
    return true;
  }
  return RouteRing(r);
}

bool BlkEngine::RouteRing(Request* r) {
  if (!ring_ || ring_in_flight_ >= ring_cap_) return false;
  if (r->type == blk::kTypeIn || r->type == blk::kTypeOut) {
    if (r->iov.size() > IOV_MAX) return false;         // readv / writev refuse more
    if (direct_ && !Aligned(r->iov)) return false;     // the pool bounces it
  } else if (r->type != blk::kTypeFlush) {
    return false;  // DISCARD / WRITE_ZEROES: fallocate, on the pool
  }
  return PrepSqe(r);
}

bool BlkEngine::PrepSqe(Request* r) {
  io_uring_sqe* sqe = ring_->GetSqe();
  if (sqe == nullptr) {
    ring_->Enter(0, 0);  // a burst larger than the SQ: hand over what is there
    sqe = ring_->GetSqe();
    if (sqe == nullptr) return false;
  }
  sqe->fd = 0;  // registered file 0: fd_
  sqe->flags = IOSQE_FIXED_FILE;
  sqe->user_data = reinterpret_cast<uint64_t>(r);
  if (r->type == blk::kTypeFlush) {
    sqe->opcode = IORING_OP_FSYNC;
    sqe->fsync_flags = IORING_FSYNC_DATASYNC;
  } else {
    const bool in = r->type == blk::kTypeIn;
    sqe->off = r->offset;
    if (r->iov.size() == 1) {  // one buffer: no iovec to import
      sqe->opcode = in ? IORING_OP_READ : IORING_OP_WRITE;
      sqe->addr = reinterpret_cast<uint64_t>(r->iov[0].iov_base);
      sqe->len = static_cast<uint32_t>(r->iov[0].iov_len);
    } else {
      sqe->opcode = in ? IORING_OP_READV : IORING_OP_WRITEV;
      sqe->addr = reinterpret_cast<uint64_t>(r->iov.data());
      sqe->len = static_cast<uint32_t>(r->iov.size());
    }
  }
  ring_in_flight_++;
  sqes_since_reset_ = true;
  js_.uring_sqes++;
  return true;
}

void BlkEngine::HarvestLocked(std::vector<Request*>* to_pool, bool inline_harvest) {
  io_uring_cqe c;
  bool any = false;
  while (ring_->PopCqe(&c)) {
    ring_in_flight_--;
    Request* r = reinterpret_cast<Request*>(c.user_data);
    if (r->type == blk::kTypeFlush) {
      st_.fdatasyncs++;
      if (c.res < 0) Fail(r, blk::kStatusIoErr, BlkErr::kIo);
    } else if (c.res == -EFAULT || (c.res >= 0 && static_cast<uint64_t>(c.res) < r->len)) {
      // EFAULT (guest memory lost: the pool probes it and fails the request as the thread
      // engine does) or a short transfer (end of file: the pool zero-fills a read, retries
      // a write): the pool finishes what is left, after the part already moved.
      if (c.res > 0) {
        size_t idx = 0;
        Consume(r->iov, &idx, static_cast<size_t>(c.res));
        r->iov.erase(r->iov.begin(), r->iov.begin() + static_cast<std::ptrdiff_t>(idx));
        r->offset += static_cast<uint64_t>(c.res);
        r->len -= static_cast<uint64_t>(c.res);
      }
      st_.uring_to_pool++;
      to_pool->push_back(r);  // still executing
      continue;
    } else if (c.res < 0) {
      Fail(r, blk::kStatusIoErr, BlkErr::kIo);
    }
    if (r->mem && r->mem->LostRegion() >= 0) Fail(r, blk::kStatusIoErr, BlkErr::kGuestMemoryLost);
    Finish(r);
    r->mem.reset();
    Account(r);
    done_.push_back(r);
    (inline_harvest ? st_.uring_inline : st_.uring_later)++;
    executing_--;
    any = true;
  }
  if (any && executing_ == 0) idle_cv_.notify_all();
}

int32_t BlkEngine::Reap(Virtqueue& q) {
  reaped_.clear();
  {
    std::lock_guard<std::mutex> lk(cmu_);
    // Reset the eventfd before taking the list. A completion queued after this point
    // finds notified_ false and writes it again: no lost wakeup. It is reset whenever
    // something may have written it: a worker or an earlier Reap (notified_), the ring's
    // CQEs (SQEs since the last reset, until a reset with none in flight), or anything the
    // watcher found (NoteWake: also a CQE's write that landed after its harvest), so a
    // level-triggered watcher never sees it readable for good. Completions made inside a
    // SubmitReap write nothing, and their reap saves the read.
    const bool ring_quiet = ring_in_flight_ == 0;
    if (efd_ >= 0 && (notified_ || sqes_since_reset_ || wake_seen_)) {
      uint64_t v;
      io::EventFdRead(efd_, &v);
      wake_seen_ = false;
      if (ring_quiet) sqes_since_reset_ = false;
    }
    notified_ = false;
    // The ring's CQEs, after the reset: one posted later writes the eventfd again.
    to_pool_.clear();
    // What an earlier Enter could not hand over; with deferred task work, the Enter that
    // posts the CQEs the eventfd announced.
    if (ring_ && (ring_->Pending() > 0 || (ring_->deferred() && ring_in_flight_ > 0))) ring_->Enter(0, 0);
    if (ring_ && ring_in_flight_ > 0) HarvestLocked(&to_pool_, false);
    size_t keep = 0;
    for (Request* r : done_) {
      if (r->owner == &q) {
        reaped_.push_back(r);
      } else {
        done_[keep++] = r;  // another queue's: its own reap takes it
      }
    }
    done_.resize(keep);
    // Completions of other queues still wait: stay readable until they are reaped too.
    if (keep > 0 && efd_ >= 0) {
      notified_ = true;
      io::EventFdWrite(efd_, 1);
    }
  }
  QueueJobs(to_pool_);
  const uint32_t k = static_cast<uint32_t>(reaped_.size());
  if (k == 0) return 0;
  ids_.resize(k);
  lens_.resize(k);
  for (uint32_t i = 0; i < k; i++) {
    ids_[i] = reaped_[i]->id;
    lens_[i] = reaped_[i]->used_len;
  }
  const int32_t pr = q.Push(ids_.data(), lens_.data(), k);
  if (pr == 1) q.Signal();
  for (Request* r : reaped_) {
    r->mem.reset();
    r->iov.clear();
    r->ranges.clear();
    free_.push_back(r);
  }
  auto it = in_flight_.find(&q);
  if (it != in_flight_.end()) {
    it->second -= std::min(it->second, k);
    if (it->second == 0) in_flight_.erase(it);
  }
  in_flight_total_ -= std::min(in_flight_total_, k);
  js_.reaped += k;
  return pr < 0 ? -1 : static_cast<int32_t>(k);
}

bool BlkEngine::Resize(uint64_t sectors, std::string* err) {
  if (closed_) {
    *err = "the engine is closed";
    return false;
  }
  if (sectors > (uint64_t{1} << 46)) {
    *err = std::to_string(sectors) + " sectors: at most 2^46";
    return false;
  }
  if (ram_ != nullptr) {
    if (sectors == 0) {
      *err = "a RAM disk needs a size";
      return false;
    }
    if (sectors < capacity_) {
      *err = "shrinking from " + std::to_string(capacity_) + " to " + std::to_string(sectors) + " sectors is refused";
      return false;
    }
    const uint64_t len = sectors * blk::kSectorSize;
    if (len > ram_len_) {
      void* p = mremap(ram_, ram_len_, len, 0);  // in place: requests may keep running
      if (p == MAP_FAILED) {
        WaitIdle(-1);  // nothing is submitted meanwhile: this is the submitting thread
        p = mremap(ram_, ram_len_, len, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
          *err = std::string("mremap of the RAM disk: ") + strerror(errno);
          return false;
        }
      }
      {
        std::lock_guard<std::mutex> lk(jmu_);  // workers read ram_ after taking a job under jmu_
        ram_ = static_cast<uint8_t*>(p);
        ram_len_ = len;
      }
    }
    capacity_ = sectors;
    return true;
  }
  struct stat sb;
  if (fstat(fd_, &sb) != 0) {
    *err = std::string("fstat: ") + strerror(errno);
    return false;
  }
  uint64_t bytes = 0;
  if (S_ISBLK(sb.st_mode)) {
    if (ioctl(fd_, BLKGETSIZE64, &bytes) != 0) {
      *err = std::string("BLKGETSIZE64: ") + strerror(errno);
      return false;
    }
    if (sectors != 0 && sectors * blk::kSectorSize != bytes / blk::kSectorSize * blk::kSectorSize) {
      *err = "a block device cannot be given a size (it has " + std::to_string(bytes) + " bytes): resize the device, then re-read it";
      return false;
    }
  } else if (S_ISREG(sb.st_mode)) {
    bytes = static_cast<uint64_t>(sb.st_size);
  } else {
    *err = "fd is neither a regular file nor a block device";
    return false;
  }
  const uint64_t now = sectors != 0 ? sectors : bytes / blk::kSectorSize;
  if (now < capacity_) {
    *err = (sectors != 0 ? "shrinking from " : "the file is now smaller than the disk: shrinking from ") + std::to_string(capacity_) + " to " +
           std::to_string(now) + " sectors is refused";
    return false;
  }
  if (sectors != 0 && S_ISREG(sb.st_mode) && sectors * blk::kSectorSize > bytes) {
    if (read_only_) {
      *err = "the disk is read-only: grow the file yourself, then re-read it";
      return false;
    }
    if (ftruncate(fd_, static_cast<off_t>(sectors * blk::kSectorSize)) != 0) {
      *err = std::string("ftruncate: ") + strerror(errno);
      return false;
    }
  }
  capacity_ = now;
  return true;
}

bool BlkEngine::WaitIdle(int64_t timeout_ms) {
  if (!ring_) {
    std::unique_lock<std::mutex> lk(cmu_);
    if (timeout_ms < 0) {
      idle_cv_.wait(lk, [this] { return executing_ == 0; });
      return true;
    }
    return idle_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [this] { return executing_ == 0; });
  }
  // io_uring: this is the ring's thread. Harvest, then wait on the ring while it has I/O
  // (or on the pool), in slices so that both are watched.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
  for (;;) {
    bool wake = false;
    bool idle = false;
    to_pool_.clear();
    {
      std::lock_guard<std::mutex> lk(cmu_);
      if (ring_in_flight_ > 0) HarvestLocked(&to_pool_, false);
      if (!done_.empty() && !notified_) wake = notified_ = true;
      idle = executing_ == 0;
    }
    if (wake && efd_ >= 0) io::EventFdWrite(efd_, 1);
    QueueJobs(to_pool_);
    if (idle) return true;
    int64_t slice = 10;
    if (timeout_ms >= 0) {
      const int64_t left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return false;
      slice = std::min<int64_t>(slice, left);
    }
    if (ring_in_flight_ > 0) {
      ring_->Enter(1, slice);
    } else {
      std::unique_lock<std::mutex> lk(cmu_);
      idle_cv_.wait_for(lk, std::chrono::milliseconds(slice), [this] { return executing_ == 0; });
    }
  }
}

uint32_t BlkEngine::InFlight(const Virtqueue* q) const {
  if (q == nullptr) return in_flight_total_;
  auto it = in_flight_.find(q);
  return it == in_flight_.end() ? 0 : it->second;
}

void BlkEngine::Worker() {
  Scratch s;
  for (;;) {
    Request* r;
    {
      std::unique_lock<std::mutex> lk(jmu_);
      jcv_.wait(lk, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and every queued request has run
      r = jobs_.front();
      jobs_.pop_front();
    }
    Execute(r, s);
    Complete(r);
  }
}

void BlkEngine::Execute(Request* r, Scratch& s) {
  // Guest memory the frontend truncated is not the guest's any more (guest_fault.h): no
  // I/O from or into it (a write would store zeros), and the request fails.
  if (r->mem && r->mem->LostRegion() >= 0) {
    Fail(r, blk::kStatusIoErr, BlkErr::kGuestMemoryLost);
    return;
  }
  int e = 0;
  switch (r->type) {
    case blk::kTypeIn: e = DoRead(r, s); break;
    case blk::kTypeOut: e = DoWrite(r, s); break;
    case blk::kTypeFlush: e = DoFlush(); break;
    default: e = DoDwz(r); break;
  }
  // EFAULT: DoRead / DoWrite probed the buffers, so a truncated file shows as a lost region.
  if (r->mem && r->mem->LostRegion() >= 0) {
    Fail(r, blk::kStatusIoErr, BlkErr::kGuestMemoryLost);
  } else if (e != 0) {
    Fail(r, blk::kStatusIoErr, BlkErr::kIo);
  }
}

void BlkEngine::Finish(Request* r) {
  if (r->status_ptr != nullptr) __atomic_store_n(r->status_ptr, r->status, __ATOMIC_RELAXED);
}

void BlkEngine::Account(const Request* r) {
  st_.completed++;
  if (r->status_ptr != nullptr) {
    if (r->status == blk::kStatusOk) {
      st_.ok++;
      if (r->type == blk::kTypeIn) st_.bytes_read += r->bytes;
      if (r->type == blk::kTypeOut) st_.bytes_written += r->bytes;
    } else if (r->status == blk::kStatusUnsupp) {
      st_.unsupp++;
    } else {
      st_.ioerr++;
    }
  }
  if (r->why != BlkErr::kCount) st_.errors[static_cast<size_t>(r->why)]++;
  if (r->bounced) st_.bounced++;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - r->start).count();
  const uint64_t u = us > 0 ? static_cast<uint64_t>(us) : 0;
  const uint32_t bucket = u < 2 ? 0 : std::min<uint32_t>(63 - __builtin_clzll(u), kBlkLatencyBuckets - 1);
  st_.latency_us[bucket]++;
}

void BlkEngine::Complete(Request* r) {
  Finish(r);
  r->mem.reset();  // the I/O is over: the mapping may go (Reap needs only id and len)
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(cmu_);
    Account(r);
    done_.push_back(r);
    if (--executing_ == 0) idle_cv_.notify_all();
    if (!notified_) wake = notified_ = true;
  }
  // The eventfd lives until Close(), which joins this thread first.
  if (wake) io::EventFdWrite(efd_, 1);
}

int BlkEngine::DoRead(Request* r, Scratch& s) {
  if (ram_ != nullptr) {
    IovCursor(r->iov.data(), r->iov.size()).From(ram_ + r->offset, r->len);
    return 0;
  }
  if (direct_ && !Aligned(r->iov)) {
    // O_DIRECT wants aligned buffers: read into an aligned bounce buffer, chunk by chunk.
    r->bounced = true;
    if (s.bounce == nullptr && (s.bounce = AlignedAlloc(kBounceLen, false)) == nullptr) return ENOMEM;
    IovCursor cur(r->iov.data(), r->iov.size());
    uint64_t done = 0;
    while (done < r->len) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(r->len - done, kBounceLen));
      size_t got = 0;
      while (got < want) {
        const ssize_t k = pread(fd_, s.bounce + got, want - got, static_cast<off_t>(r->offset + done + got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return errno;
        if (k == 0) break;  // end of file: the rest reads as zeros
        got += static_cast<size_t>(k);
      }
      memset(s.bounce + got, 0, want - got);
      cur.From(s.bounce, want);
      done += want;
    }
    return 0;
  }
  size_t idx = 0;
  uint64_t off = r->offset;
  while (idx < r->iov.size()) {
    const int cnt = static_cast<int>(std::min<size_t>(r->iov.size() - idx, IOV_MAX));
    const ssize_t k = preadv(fd_, r->iov.data() + idx, cnt, static_cast<off_t>(off));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EFAULT) {
      // Guest memory the kernel could not write: a file truncated under its mapping
      // raises no SIGBUS inside a syscall. Touch the pages so the guard sees it.
      guest_fault::Probe(r->iov.data() + idx, r->iov.size() - idx);
      return EFAULT;
    }
    if (k < 0) return errno;
    if (k == 0) {  // end of file (a sparse image shorter than its capacity): zeros
      IovCursor(r->iov.data() + idx, r->iov.size() - idx).Zero();
      break;
    }
    off += static_cast<uint64_t>(k);
    Consume(r->iov, &idx, static_cast<size_t>(k));
  }
  return 0;
}

int BlkEngine::DoWrite(Request* r, Scratch& s) {
  if (ram_ != nullptr) {
    IovCursor(r->iov.data(), r->iov.size()).To(ram_ + r->offset, r->len);
    return 0;
  }
  if (direct_ && !Aligned(r->iov)) {
    r->bounced = true;
    if (s.bounce == nullptr && (s.bounce = AlignedAlloc(kBounceLen, false)) == nullptr) return ENOMEM;
    IovCursor cur(r->iov.data(), r->iov.size());
    uint64_t done = 0;
    while (done < r->len) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(r->len - done, kBounceLen));
      cur.To(s.bounce, want);
      size_t put = 0;
      while (put < want) {
        const ssize_t k = pwrite(fd_, s.bounce + put, want - put, static_cast<off_t>(r->offset + done + put));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return errno;
        if (k == 0) return EIO;
        put += static_cast<size_t>(k);
      }
      done += want;
    }
    return 0;
  }
  size_t idx = 0;
  uint64_t off = r->offset;
  while (idx < r->iov.size()) {
    const int cnt = static_cast<int>(std::min<size_t>(r->iov.size() - idx, IOV_MAX));
    const ssize_t k = pwritev(fd_, r->iov.data() + idx, cnt, static_cast<off_t>(off));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EFAULT) {
      guest_fault::Probe(r->iov.data() + idx, r->iov.size() - idx);  // as in DoRead
      return EFAULT;
    }
    if (k < 0) return errno;
    if (k == 0) return EIO;
    off += static_cast<uint64_t>(k);
    Consume(r->iov, &idx, static_cast<size_t>(k));
  }
  return 0;
}

int BlkEngine::DoFlush() {
  int e = 0;
  while (fdatasync(fd_) != 0) {
    if (errno != EINTR) {
      e = errno;
      break;
    }
  }
  std::lock_guard<std::mutex> lk(cmu_);
  st_.fdatasyncs++;
  return e;
}

int BlkEngine::DoDwz(Request* r) {
  const bool discard = r->type == blk::kTypeDiscard;
  for (const DwzRange& d : r->ranges) {
    const uint64_t off = d.sector * blk::kSectorSize;
    const uint64_t len = uint64_t{d.num} * blk::kSectorSize;
    if (const int e = ZeroRange(off, len, discard || (d.flags & blk::kDwzFlagUnmap) != 0, discard); e != 0) return e;
  }
  return 0;
}

// Zeroes (or, for a discard, deallocates) [off, off + len) of the disk. unmap: the
// driver allows deallocation (§5.2.6.2), so a hole is the first choice.
int BlkEngine::ZeroRange(uint64_t off, uint64_t len, bool unmap, bool discard) {
  if (ram_ != nullptr) {
    uint8_t* p = ram_ + off;
    if (unmap) {
      // Whole pages inside the range go back to the kernel (they read as zeros after
      // MADV_DONTNEED on a private anonymous mapping); the edges are cleared.
      const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1);
      const uintptr_t z = (reinterpret_cast<uintptr_t>(p) + len) & ~(kPage - 1);
      if (z > a && madvise(reinterpret_cast<void*>(a), z - a, MADV_DONTNEED) == 0) {
        memset(p, 0, a - reinterpret_cast<uintptr_t>(p));
        memset(reinterpret_cast<uint8_t*>(z), 0, reinterpret_cast<uintptr_t>(p) + len - z);
        std::lock_guard<std::mutex> lk(cmu_);
        st_.holes_punched++;
        return 0;
      }
    }
    memset(p, 0, len);
    std::lock_guard<std::mutex> lk(cmu_);
    st_.zero_writes++;
    return 0;
  }
  if (unmap && punch_ok_.load(std::memory_order_relaxed)) {
    if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) {
      std::lock_guard<std::mutex> lk(cmu_);
      st_.holes_punched++;
      return 0;
    }
    if (errno != EOPNOTSUPP && errno != ENOSYS) return errno;
    punch_ok_.store(false, std::memory_order_relaxed);
  }
  // A discard that cannot deallocate does nothing: it only allows deallocation.
  if (discard) return 0;
  if (zero_range_ok_.load(std::memory_order_relaxed)) {
    if (fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) {
      std::lock_guard<std::mutex> lk(cmu_);
      st_.zero_ranges++;
      return 0;
    }
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) return errno;
    zero_range_ok_.store(false, std::memory_order_relaxed);
  }
  return WriteZeros(off, len);
}

int BlkEngine::WriteZeros(uint64_t off, uint64_t len) {
  uint64_t done = 0;
  while (done < len) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(len - done, kBounceLen));
    const ssize_t k = pwrite(fd_, zeros_, want, static_cast<off_t>(off + done));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return errno;
    if (k == 0) return EIO;
    done += static_cast<uint64_t>(k);
  }
  std::lock_guard<std::mutex> lk(cmu_);
  st_.zero_writes++;
  return 0;
}

BlkStats BlkEngine::Stats() const {
  BlkStats s;
  {
    std::lock_guard<std::mutex> lk(cmu_);
    s = st_;
    s.executing = executing_;
  }
  s.in = js_.in;
  s.out = js_.out;
  s.flush = js_.flush;
  s.get_id = js_.get_id;
  s.discard = js_.discard;
  s.write_zeroes = js_.write_zeroes;
  s.other = js_.other;
  s.submitted = js_.submitted;
  s.reaped = js_.reaped;
  s.uring_sqes = js_.uring_sqes;
  s.copied_inline = js_.copied_inline;
  s.uring_deferred = ring_ && ring_->deferred();
  s.in_flight = in_flight_total_;
  return s;
}

}  // namespace vhostkit
