// The virtio-blk request engine (virtio 1.2 §5.2.6), off the JavaScript thread.
//
// Submit() parses the chains of a popped burst on the calling (JavaScript) thread: it
// makes no assumption about how the driver framed a request (§2.6.4 "Message Framing":
// the 16-byte header may be split over descriptors, the status byte may share a
// descriptor with data), copies out what it must read once (header, discard / write
// zeroes segments), validates, and either completes the request at once (errors, GET_ID,
// zero-length I/O) or hands it to a pool of worker threads. Data moves straight between
// the backend and guest memory: preadv / pwritev over iovecs built on the chain's
// segments (a bounce buffer only when an O_DIRECT fd meets unaligned guest buffers).
//
// Workers write the status byte themselves and queue the request as completed; the first
// completion after a Reap() writes the completion eventfd (coalesced). Reap(), on the
// JavaScript thread (the only thread that pushes to the queue), pushes every completed
// request of that queue in one Push and signals the driver once.
//
// The io_uring engine (BlkEngineKind::kIoUring) keeps that shape but executes IN, OUT and
// FLUSH on a file through an io_uring (uring.h) owned by the submitting thread: Submit
// fills one SQE per request of the burst and enters the kernel once; what completes inside
// that call (buffered I/O on cached pages) is harvested at once, so a caller that reaps
// right after Submit serves a QD 1 request with no thread hop and no second wakeup. Later
// completions post CQEs and write the completion eventfd (registered with the ring);
// Reap() and WaitIdle() harvest them. A RAM disk needs no kernel: a lone request (QD 1) of
// up to BlkOptions::inline_max bytes is copied on the submitting thread; deeper queues go to
// the pool, which overlaps the copies with the next pops. So are those of a file on tmpfs:
// shmem has no FMODE_NOWAIT, so io_uring would hand its reads to an io-wq thread (a thread
// hop), while a pread there is a copy from memory that waits for no device. The worker pool stays for what the
// ring does not take: DISCARD / WRITE_ZEROES, O_DIRECT bounces, large RAM copies, the rest
// of a short transfer or an EFAULT (guest memory lost), a full ring.
//
// A request holds the queue's MemTable (shared_ptr), so guest memory stays mapped under an
// in-flight I/O even if the frontend replaces the table. The Virtqueue itself is only
// remembered as an identity for Reap(): the caller drains (WaitIdle + Reap) before it
// detaches or destroys a queue the engine serves.
#pragma once
#include <sys/uio.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "memory/memory.h"
#include "blk/uring.h"
#include "ring/virtqueue.h"

namespace vhostkit {

// virtio 1.2 §5.2.6
namespace blk {
inline constexpr uint32_t kTypeIn = 0;
inline constexpr uint32_t kTypeOut = 1;
inline constexpr uint32_t kTypeFlush = 4;
inline constexpr uint32_t kTypeGetId = 8;
inline constexpr uint32_t kTypeGetLifetime = 10;
inline constexpr uint32_t kTypeDiscard = 11;
inline constexpr uint32_t kTypeWriteZeroes = 13;
inline constexpr uint32_t kTypeSecureErase = 14;
inline constexpr uint8_t kStatusOk = 0;
inline constexpr uint8_t kStatusIoErr = 1;
inline constexpr uint8_t kStatusUnsupp = 2;
inline constexpr uint32_t kSectorSize = 512;
inline constexpr uint32_t kHeaderLen = 16;   // { le32 type; le32 reserved; le64 sector }
inline constexpr uint32_t kDwzSegLen = 16;   // { le64 sector; le32 num_sectors; le32 flags }
inline constexpr uint32_t kDwzFlagUnmap = 1;
inline constexpr uint32_t kIdBytes = 20;     // VIRTIO_BLK_ID_BYTES
}  // namespace blk

// How requests execute (see above). kAuto: io_uring if the kernel allows it, else threads.
enum class BlkEngineKind : uint32_t { kAuto = 0, kThreads, kIoUring };
const char* BlkEngineKindName(BlkEngineKind k);

struct BlkOptions {
  int fd = -1;                          // file or block device (duplicated; caller keeps its own)
  bool ram = false;                     // RAM disk instead of fd
  uint64_t capacity_sectors = 0;        // 512-byte sectors
  bool capacity_from_fd = true;         // fd: capacity = file / device size (floor to a sector)
  bool read_only = false;               // also set when fd is open O_RDONLY
  std::array<uint8_t, blk::kIdBytes> serial{};  // GET_ID bytes (NUL-padded)
  uint32_t threads = 2;
  BlkEngineKind engine = BlkEngineKind::kThreads;
  // io_uring engine: RAM disk and tmpfs requests of at most this many bytes are copied on
  // the submitting thread (0: a tmpfs file sends everything through the ring; the fuzzer).
  uint64_t inline_max = 64 << 10;
  bool direct = false;                  // alignment discipline even if fd lacks O_DIRECT
  // DISCARD / WRITE_ZEROES limits (config space max_*). A segment limit of 0 turns the
  // command off: requests get UNSUPP.
  uint32_t max_discard_sectors = 4194303;
  uint32_t max_discard_seg = 1;
  uint32_t max_write_zeroes_sectors = 4194303;
  uint32_t max_write_zeroes_seg = 1;
};

// Why a request failed (counters; the status byte says IOERR / UNSUPP).
enum class BlkErr : uint32_t {
  kNoStatus = 0,      // no device-writable byte: completed with used len 0, no status
  kShortHeader,       // fewer than 16 readable bytes
  kRange,             // sectors beyond the capacity (or an overflowing range)
  kUnalignedLen,      // IN / OUT data not a multiple of 512
  kReadOnly,          // OUT / DISCARD / WRITE_ZEROES on a read-only disk
  kTooManySegs,       // DISCARD / WRITE_ZEROES: more segments than max_*_seg
  kTooManySectors,    // a segment with more sectors than max_*_sectors
  kBadPayload,        // DISCARD / WRITE_ZEROES payload empty or not a multiple of 16
  kBadFlags,          // unknown flag bits, or UNMAP on DISCARD (§5.2.6.2: UNSUPP)
  kUnsupported,       // unknown or unsupported request type (UNSUPP)
  kIo,                // the backend syscall failed
  kBadSegment,        // a segment outside the memory table (memory changed under a burst)
  kGuestMemoryLost,   // the frontend truncated guest memory's file under the request (guest_fault.h)
  kCount
};
const char* BlkErrName(BlkErr e);

inline constexpr uint32_t kBlkLatencyBuckets = 32;  // bucket k: [2^k, 2^(k+1)) µs; bucket 0 also < 1 µs

struct BlkStats {
  // requests by type (submitted, with a readable header)
  uint64_t in = 0, out = 0, flush = 0, get_id = 0, discard = 0, write_zeroes = 0, other = 0;
  uint64_t submitted = 0;   // chains submitted (every kind)
  uint64_t completed = 0;   // requests completed (status written, awaiting or done with reap)
  uint64_t reaped = 0;      // requests pushed back to the driver
  uint64_t bytes_read = 0;  // IN data bytes
  uint64_t bytes_written = 0;  // OUT data bytes
  uint64_t ok = 0, ioerr = 0, unsupp = 0;
  std::array<uint64_t, static_cast<size_t>(BlkErr::kCount)> errors{};
  uint64_t bounced = 0;       // O_DIRECT requests that went through an aligned bounce buffer
  uint64_t fdatasyncs = 0;    // fdatasync calls (FLUSH on a file)
  uint64_t holes_punched = 0; // fallocate PUNCH_HOLE ranges
  uint64_t zero_ranges = 0;   // fallocate ZERO_RANGE ranges
  uint64_t zero_writes = 0;   // ranges zeroed by writing zeros
  uint64_t in_flight = 0;     // submitted and not yet reaped
  uint64_t executing = 0;     // submitted and not yet completed
  std::array<uint64_t, kBlkLatencyBuckets> latency_us{};  // submit -> completion
  // io_uring engine
  uint64_t uring_sqes = 0;      // SQEs submitted
  uint64_t uring_inline = 0;    // completions harvested inside the Submit that issued them
  uint64_t uring_later = 0;     // completions harvested by Reap / WaitIdle
  uint64_t uring_to_pool = 0;   // requests (or their rest) handed to the worker pool
  uint64_t copied_inline = 0;   // RAM disk or tmpfs file requests copied on the submitting thread
  bool uring_deferred = false;  // the ring runs with SINGLE_ISSUER | DEFER_TASKRUN
};

class BlkEngine {
 public:
  // Opens the backend and starts the worker threads. Returns nullptr and sets err on failure.
  static std::unique_ptr<BlkEngine> Create(const BlkOptions& opts, std::string* err);
  ~BlkEngine();
  BlkEngine(const BlkEngine&) = delete;
  BlkEngine& operator=(const BlkEngine&) = delete;

  // Takes chains [0, n) of the burst `b` that q.Pop() just filled. Every chain is
  // accepted: it completes later (Reap) with a status, or with used len 0 if it has no
  // writable byte. Returns false (nothing taken) if the engine is closed or q has no memory.
  // reap_next: the caller reaps q right after, on the same wakeup (SubmitReap), so the
  // completions made inside this call need no write of the completion eventfd.
  bool Submit(Virtqueue& q, const BurstArrays& b, uint32_t n, bool reap_next = false);
  // Submit, then Reap of the same queue: what completed inside the submit (cached pages,
  // RAM, inline copies) is pushed at once, with no eventfd write and read for it. Returns
  // Reap's result, or -2 if nothing was taken (engine closed, q without memory).
  int32_t SubmitReap(Virtqueue& q, const BurstArrays& b, uint32_t n);
  // The completion fd was found readable: the next Reap resets it whatever else it knows.
  void NoteWake() { wake_seen_ = true; }
  // Pushes every completed request of q (one Push, one Signal if the driver asked).
  // Returns the number pushed, or -1 if q refused the push (ids not in flight: the queue
  // was reset under in-flight requests; they are dropped).
  int32_t Reap(Virtqueue& q);
  // Blocks until no submitted request is still executing (they may await Reap).
  // timeout_ms < 0: no limit. Returns true if idle.
  bool WaitIdle(int64_t timeout_ms);
  // Grows the disk to `sectors` (0 with a file or block device: take its current size), on
  // the JavaScript thread (the one that submits: Parse checks ranges against the new
  // capacity from the next Submit on). A regular file is extended with ftruncate (sparse);
  // a block device cannot be given a size, only re-read. A RAM disk keeps its contents: its
  // mapping grows in place, or moves once every executing request has finished (the
  // workers only touch ram_ while executing one). Shrinking is refused (the guest may still
  // address what would go). Returns false and sets err on failure; the capacity is then
  // unchanged.
  bool Resize(uint64_t sectors, std::string* err);
  // Requests of q submitted and not yet reaped (all queues for nullptr).
  uint32_t InFlight(const Virtqueue* q) const;
  // Stops the workers once every queued request has executed, and releases the backend
  // (fd, RAM) and the eventfd. Completed requests can still be reaped. Idempotent.
  void Close();
  bool closed() const { return closed_; }

  int completion_fd() const { return efd_; }
  // The engine in use (never kAuto), and why it is threads when kAuto was asked.
  BlkEngineKind engine() const { return engine_; }
  const std::string& engine_note() const { return engine_note_; }
  uint64_t capacity_sectors() const { return capacity_; }
  bool read_only() const { return read_only_; }
  bool direct() const { return direct_; }
  BlkStats Stats() const;

 private:
  struct DwzRange {
    uint64_t sector;
    uint32_t num;
    uint32_t flags;
  };
  struct Request {
    const Virtqueue* owner = nullptr;
    uint16_t id = 0;
    uint32_t type = 0;
    uint8_t status = blk::kStatusOk;
    uint8_t* status_ptr = nullptr;  // null: the chain has no writable byte
    uint64_t offset = 0;            // byte offset in the disk
    uint64_t len = 0;               // data bytes (IN / OUT / GET_ID) still to move
    uint64_t bytes = 0;             // data bytes of the request (counters)
    uint32_t used_len = 0;
    BlkErr why = BlkErr::kCount;    // kCount: no error
    bool bounced = false;
    std::vector<iovec> iov;         // data, in guest memory
    std::vector<DwzRange> ranges;   // DISCARD / WRITE_ZEROES
    std::shared_ptr<MemTable> mem;  // keeps the mapping alive while the I/O runs
    std::chrono::steady_clock::time_point start;
  };
  // Per worker thread scratch.
  struct Scratch {
    uint8_t* bounce = nullptr;  // kBounceLen bytes, page-aligned
    ~Scratch();
  };
  static constexpr size_t kBounceLen = 1 << 20;
  static constexpr uint32_t kRingEntries = 256;      // SQ size; the CQ has 16x

  struct Seg {
    uint8_t* p;
    uint32_t len;
    bool writable;
  };
  // Counters only the JavaScript thread touches (no lock).
  struct JsStats {
    uint64_t in = 0, out = 0, flush = 0, get_id = 0, discard = 0, write_zeroes = 0, other = 0;
    uint64_t submitted = 0, reaped = 0;
    uint64_t uring_sqes = 0, copied_inline = 0;
  };

  explicit BlkEngine(const BlkOptions& opts);
  Request* Alloc();
  // Fills r from chain i; true if it needs a worker, false if it is complete already.
  bool Parse(Request* r, const BurstArrays& b, uint32_t i, const MemTable& mem);
  bool Fail(Request* r, uint8_t status, BlkErr why);
  void Worker();
  void Execute(Request* r, Scratch& s);
  void Finish(Request* r);    // writes the status byte, records the latency
  void Complete(Request* r);  // worker: Finish + queue for Reap
  int DoRead(Request* r, Scratch& s);
  int DoWrite(Request* r, Scratch& s);
  int DoFlush();
  int DoDwz(Request* r);
  int ZeroRange(uint64_t off, uint64_t len, bool unmap, bool discard);
  int WriteZeros(uint64_t off, uint64_t len);
  bool Aligned(const std::vector<iovec>& iov) const;
  void Account(const Request* r);  // completion counters; cmu_ held
  // io_uring engine.
  bool StartRing(std::string* err);
  // Takes r into the ring or runs it inline; false: the worker pool must take it. lone: r is
  // the only request of its burst and nothing else is in flight (QD 1).
  bool Route(Request* r, bool lone);
  bool RouteRing(Request* r);  // into the ring; false: the pool
  bool PrepSqe(Request* r);
  // Pops every posted CQE: completed requests go to done_ (cmu_ held), the rest of short or
  // faulted transfers to *to_pool. inline_harvest: counted as completed within Submit.
  void HarvestLocked(std::vector<Request*>* to_pool, bool inline_harvest);
  void QueueJobs(const std::vector<Request*>& rs);

  BlkOptions opts_;
  int fd_ = -1;
  uint8_t* ram_ = nullptr;
  uint64_t ram_len_ = 0;
  uint64_t capacity_ = 0;
  bool read_only_ = false;
  bool direct_ = false;
  int efd_ = -1;
  bool closed_ = false;
  BlkEngineKind engine_ = BlkEngineKind::kThreads;
  std::string engine_note_;
  std::unique_ptr<Uring> ring_;  // JavaScript thread only
  uint32_t ring_in_flight_ = 0;  // SQEs not yet completed
  // SQEs prepared since the last reset of the completion eventfd: their CQEs write it.
  bool sqes_since_reset_ = false;
  bool wake_seen_ = false;  // NoteWake() since the last reset
  uint32_t ring_cap_ = 0;        // at most this many (the CQ's size: no overflow)
  bool shmem_ = false;           // the file is on tmpfs: small requests are copied inline
  std::vector<Request*> to_pool_;
  Scratch js_scratch_;           // Execute's scratch for inline RAM copies (which never bounce)
  uint8_t* zeros_ = nullptr;  // kBounceLen aligned zero bytes (WriteZeros)
  std::atomic<bool> punch_ok_{true};       // fallocate PUNCH_HOLE not refused yet
  std::atomic<bool> zero_range_ok_{true};  // fallocate ZERO_RANGE not refused yet

  // JavaScript thread only.
  std::vector<std::unique_ptr<Request>> owned_;
  std::vector<Request*> free_;
  std::vector<Request*> batch_;
  std::vector<Request*> inline_;
  std::vector<Request*> reaped_;
  std::vector<Seg> segs_;
  JsStats js_;
  std::vector<uint16_t> ids_;
  std::vector<uint32_t> lens_;
  std::unordered_map<const Virtqueue*, uint32_t> in_flight_;
  uint32_t in_flight_total_ = 0;

  // Job queue (workers).
  std::mutex jmu_;
  std::condition_variable jcv_;
  std::deque<Request*> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;

  // Completions and counters.
  mutable std::mutex cmu_;
  std::condition_variable idle_cv_;
  std::vector<Request*> done_;
  bool notified_ = false;
  uint64_t executing_ = 0;
  BlkStats st_;
};

}  // namespace vhostkit
