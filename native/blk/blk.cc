#include "blk/blk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

BlkEngine::~BlkEngine() {
  Close();
  free(zeros_);
}

void BlkEngine::Close() {
  if (closed_) return;
  closed_ = true;
  {
    std::lock_guard<std::mutex> lk(jmu_);
    stop_ = true;
  }
  jcv_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
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

bool BlkEngine::Submit(Virtqueue& q, const BurstArrays& b, uint32_t n) {
  if (closed_) return false;
  const std::shared_ptr<MemTable> mem = q.memory();
  if (!mem) return false;
  n = std::min(n, b.max_chains);
  if (n == 0) return true;
  const auto now = std::chrono::steady_clock::now();
  batch_.clear();
  inline_.clear();
  for (uint32_t i = 0; i < n; i++) {
    Request* r = Alloc();
    r->owner = &q;
    r->id = b.head[i];
    r->start = now;
    if (Parse(r, b, i, *mem)) {
      r->mem = mem;
      batch_.push_back(r);
    } else {
      Finish(r);
      inline_.push_back(r);
    }
  }
  js_.submitted += n;
  in_flight_[&q] += n;
  in_flight_total_ += n;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(cmu_);
    executing_ += batch_.size();
    for (Request* r : inline_) {
      Account(r);
      done_.push_back(r);
    }
    if (!inline_.empty() && !notified_) wake = notified_ = true;
  }
  if (wake && efd_ >= 0) io::EventFdWrite(efd_, 1);
  if (!batch_.empty()) {
    {
      std::lock_guard<std::mutex> lk(jmu_);
      jobs_.insert(jobs_.end(), batch_.begin(), batch_.end());
    }
    if (batch_.size() == 1) {
      jcv_.notify_one();
    } else {
      jcv_.notify_all();
    }
  }
  return true;
}

int32_t BlkEngine::Reap(Virtqueue& q) {
  reaped_.clear();
  {
    std::lock_guard<std::mutex> lk(cmu_);
    // Reset the eventfd (always: a level-triggered watcher must not see it readable
    // forever after a spurious wakeup) before taking the list. A completion queued after
    // this point finds notified_ false and writes it again: no lost wakeup.
    uint64_t v;
    if (efd_ >= 0) io::EventFdRead(efd_, &v);
    notified_ = false;
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
  std::unique_lock<std::mutex> lk(cmu_);
  if (timeout_ms < 0) {
    idle_cv_.wait(lk, [this] { return executing_ == 0; });
    return true;
  }
  return idle_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [this] { return executing_ == 0; });
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
      if (r->type == blk::kTypeIn) st_.bytes_read += r->len;
      if (r->type == blk::kTypeOut) st_.bytes_written += r->len;
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
  s.in_flight = in_flight_total_;
  return s;
}

}  // namespace vhostkit
