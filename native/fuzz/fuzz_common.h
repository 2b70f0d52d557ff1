// Shared pieces of the libFuzzer harnesses (native/fuzz/README.md): an input reader, guest
// memory the harness owns (heap buffers, so AddressSanitizer sees every byte outside them,
// with canary bytes around and between the regions), a driver that lays out split and
// packed rings in it from fuzz input, and the invariant checks every target shares.
//
// A failed invariant calls Die(), which prints why and aborts: libFuzzer saves the input
// as crash-<sha1>.
#pragma once
#include <sanitizer/asan_interface.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "memory/dirty_log.h"
#include "memory/memory.h"
#include "ring/virtqueue.h"

namespace fuzz {

using namespace vhostkit;

[[noreturn]] inline void Die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "\nINVARIANT FAILED: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  abort();
}
#define FUZZ_CHECK(cond, ...) \
  do {                        \
    if (!(cond)) ::fuzz::Die(__VA_ARGS__); \
  } while (0)

// FUZZ_TRACE=1 in the environment: the harnesses print each call and its result (to check
// what a seed or a crash input does: ./build-fuzz/fuzz_x input).
inline bool Tracing() {
  static const bool on = getenv("FUZZ_TRACE") != nullptr;
  return on;
}
#define FUZZ_TRACE(...)                                     \
  do {                                                      \
    if (::fuzz::Tracing()) fprintf(stderr, __VA_ARGS__); \
  } while (0)

// Little-endian values read front to back; past the end every value is 0.
class Input {
 public:
  Input(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  uint8_t U8() { return pos_ < n_ ? d_[pos_++] : 0; }
  // (Each part read in its own statement: the operands of | are unsequenced.)
  uint16_t U16() {
    const uint16_t lo = U8();
    return static_cast<uint16_t>(lo | (U8() << 8));
  }
  uint32_t U32() {
    const uint32_t lo = U16();
    return lo | (static_cast<uint32_t>(U16()) << 16);
  }
  uint64_t U64() {
    const uint64_t lo = U32();
    return lo | (static_cast<uint64_t>(U32()) << 32);
  }
  // Copies min(n, left) bytes; zero-fills the rest of out.
  void Bytes(uint8_t* out, size_t n) {
    const size_t k = n < left() ? n : left();
    if (k) memcpy(out, d_ + pos_, k);
    if (k < n) memset(out + k, 0, n - k);
    pos_ += k;
  }
  size_t left() const { return n_ - pos_; }
  bool done() const { return pos_ >= n_; }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
};

// The writer of seeds (gen_seeds.cc) mirrors Input.
class Output {
 public:
  void U8(uint32_t v) { b.push_back(static_cast<uint8_t>(v)); }
  void U16(uint32_t v) { U8(v & 0xff); U8((v >> 8) & 0xff); }
  void U32(uint32_t v) { U16(v & 0xffff); U16(v >> 16); }
  void U64(uint64_t v) { U32(static_cast<uint32_t>(v)); U32(static_cast<uint32_t>(v >> 32)); }
  void Bytes(const uint8_t* p, size_t n) { b.insert(b.end(), p, p + n); }
  std::vector<uint8_t> b;
};

constexpr uint8_t kCanary = 0xa5;
constexpr uint32_t kGuard = 64;             // canary bytes before the first and after the last region
constexpr uint32_t kMaxRegionBytes = 16384;  // each region (keeps snapshots cheap)
constexpr uint64_t kBaseGpa = 0x100000;
constexpr uint64_t kBaseUva = 0x7f0000000000;

// A heap buffer of exactly n bytes (64-aligned): ASan reports any access outside it.
struct HeapBuf {
  explicit HeapBuf(size_t n) : len(n) {
    void* q = nullptr;
    if (posix_memalign(&q, 64, n == 0 ? 1 : n) != 0) abort();
    p = static_cast<uint8_t*>(q);
  }
  ~HeapBuf() { free(p); }
  HeapBuf(const HeapBuf&) = delete;
  HeapBuf& operator=(const HeapBuf&) = delete;
  uint8_t* p;
  size_t len;
};

// Guest memory: one or two regions inside one heap buffer,
//   [canary kGuard][region 0][canary gap][region 1][canary kGuard]
// Input (GuestMem::Read):
//   u8 mode: bit 0 two regions; bits 1-2 gpa of region 1: 0 right after region 0,
//            1 after a u16 gap, 2 right below region 0, 3 raw u64; bit 3 region 0 gpa raw
//            u64 (else kBaseGpa); bit 4 uvas raw (else kBaseUva, + 4 GiB for region 1)
//   u16 size0, u16 size1 (1..kMaxRegionBytes), u8 host gap (canary bytes between them)
//   then the raw / gap values the mode asks for, in the order gpa0, gpa1, uva0, uva1
class GuestMem {
 public:
  struct Reg {
    uint64_t gpa, uva;
    uint32_t size;
    uint32_t host_off;  // in buf
  };

  // Returns false if MemTable::Build refused the layout (a finding of nothing: the
  // frontend would get an error).
  bool Read(Input& in) {
    const uint8_t mode = in.U8();
    const uint32_t n = (mode & 1) ? 2 : 1;
    uint32_t sz[2];
    sz[0] = 1 + in.U16() % kMaxRegionBytes;
    sz[1] = 1 + in.U16() % kMaxRegionBytes;
    const uint32_t gap = in.U8();
    const uint64_t gpa0 = (mode & 8) ? in.U64() : kBaseGpa;
    uint64_t gpa1 = 0;
    switch ((mode >> 1) & 3) {
      case 0: gpa1 = gpa0 + sz[0]; break;
      case 1: gpa1 = gpa0 + sz[0] + in.U16(); break;
      case 2: gpa1 = gpa0 - sz[1]; break;
      default: gpa1 = in.U64(); break;
    }
    uint64_t uva0 = kBaseUva, uva1 = kBaseUva + (uint64_t{1} << 32);
    if (mode & 16) {
      uva0 = in.U64();
      uva1 = in.U64();
    }
    regs_.clear();
    regs_.push_back({gpa0, uva0, sz[0], kGuard});
    if (n == 2) regs_.push_back({gpa1, uva1, sz[1], kGuard + sz[0] + gap});
    const uint32_t total = regs_.back().host_off + regs_.back().size + kGuard;
    buf_ = std::make_unique<HeapBuf>(total);
    memset(buf_->p, kCanary, total);
    for (const Reg& r : regs_) memset(buf_->p + r.host_off, 0, r.size);
    std::vector<Region> v;
    for (const Reg& r : regs_) {
      Region x;
      x.gpa = r.gpa;
      x.size = r.size;
      x.uva = r.uva;
      x.map = Mapping::Borrow(buf_->p + r.host_off, r.size);
      v.push_back(std::move(x));
    }
    std::string err;
    table_ = MemTable::Build(std::move(v), &err);
    return table_ != nullptr;
  }

  const std::shared_ptr<MemTable>& table() const { return table_; }
  const std::vector<Reg>& regs() const { return regs_; }
  uint8_t* buf() const { return buf_->p; }
  size_t buf_len() const { return buf_->len; }

  // The harness's own translation (independent of MemTable): host pointer of [gpa, gpa+len)
  // if it lies inside one region, else null.
  uint8_t* Gpa(uint64_t gpa, uint64_t len) const { return Find(gpa, len, false); }
  uint8_t* Uva(uint64_t uva, uint64_t len) const { return Find(uva, len, true); }

  // Is [p, p+len) inside one region (host side)? Sets *which.
  bool HostInRegion(const uint8_t* p, uint64_t len, uint32_t* which = nullptr) const {
    for (uint32_t i = 0; i < regs_.size(); i++) {
      const uint8_t* b = buf_->p + regs_[i].host_off;
      if (p >= b && p <= b + regs_[i].size && len <= static_cast<uint64_t>(b + regs_[i].size - p)) {
        if (which) *which = i;
        return true;
      }
    }
    return false;
  }

  void CheckCanaries(const char* after) const {
    size_t at = 0;
    for (const Reg& r : regs_) {
      for (; at < r.host_off; at++) FUZZ_CHECK(buf_->p[at] == kCanary, "canary at buffer byte %zu overwritten (after %s)", at, after);
      at = r.host_off + r.size;
    }
    for (; at < buf_->len; at++) FUZZ_CHECK(buf_->p[at] == kCanary, "canary at buffer byte %zu overwritten (after %s)", at, after);
  }

  // The driver's writes: [off, off+n) of the concatenated region bytes (region 0 then 1).
  uint8_t* RegionByte(uint32_t off) const {
    for (const Reg& r : regs_) {
      if (off < r.size) return buf_->p + r.host_off + off;
      off -= r.size;
    }
    return nullptr;
  }
  uint32_t total_region_bytes() const {
    uint32_t t = 0;
    for (const Reg& r : regs_) t += r.size;
    return t;
  }

 private:
  uint8_t* Find(uint64_t a, uint64_t len, bool uva) const {
    for (const Reg& r : regs_) {
      const uint64_t base = uva ? r.uva : r.gpa;
      if (a < base) continue;
      const uint64_t off = a - base;
      if (off < r.size && len <= r.size - off) return buf_->p + r.host_off + off;
      if (off == r.size && len == 0) return nullptr;
    }
    return nullptr;
  }
  std::vector<Reg> regs_;
  std::unique_ptr<HeapBuf> buf_;
  std::shared_ptr<MemTable> table_;
};

// Burst arrays in exact-size heap vectors (an overrun is an ASan report), zero-filled as
// JavaScript's typed arrays are.
struct Burst {
  Burst(uint32_t chains, uint32_t segs)
      : head(chains), first_seg(chains + 1), read_len(chains), write_len(chains), seg_region(segs), seg_offset(segs),
        seg_len(segs), seg_flags(segs), used_id(chains), used_len(chains) {
    a.max_chains = chains;
    a.max_segs = segs;
    a.head = head.data();
    a.first_seg = first_seg.data();
    a.read_len = read_len.data();
    a.write_len = write_len.data();
    a.seg_region = seg_region.data();
    a.seg_offset = seg_offset.data();
    a.seg_len = seg_len.data();
    a.seg_flags = seg_flags.data();
  }
  BurstArrays a;
  std::vector<uint16_t> head;
  std::vector<uint32_t> first_seg, read_len, write_len, seg_region;
  std::vector<double> seg_offset;
  std::vector<uint32_t> seg_len;
  std::vector<uint8_t> seg_flags;
  std::vector<uint16_t> used_id;
  std::vector<uint32_t> used_len;
};

// Every error code the engine may return.
inline bool KnownVqError(int32_t code) {
  return code >= static_cast<int32_t>(VqError::kNotReady) && code <= static_cast<int32_t>(VqError::kGuestMemoryLost);
}

// Checks chains [0, n) of a burst Pop just filled: segments inside the memory table's
// regions (and inside the harness's buffer: ASan's view), lengths adding up, readable
// before writable.
inline void CheckBurst(const GuestMem& g, const MemTable& mem, const BurstArrays& b, uint32_t n, uint32_t qsize) {
  FUZZ_CHECK(b.first_seg[0] == 0, "first_seg[0] = %u", b.first_seg[0]);
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t s0 = b.first_seg[i], s1 = b.first_seg[i + 1];
    FUZZ_CHECK(s0 <= s1 && s1 <= b.max_segs, "chain %u: segments [%u, %u) of %u", i, s0, s1, b.max_segs);
    FUZZ_CHECK(b.head[i] < qsize, "chain %u: head/id %u >= queue size %u", i, b.head[i], qsize);
    uint64_t rl = 0, wl = 0;
    bool seen_w = false;
    for (uint32_t s = s0; s < s1; s++) {
      FUZZ_CHECK(b.seg_region[s] < mem.regions().size(), "segment %u: region %u of %zu", s, b.seg_region[s], mem.regions().size());
      const Region& r = mem.regions()[b.seg_region[s]];
      const double off = b.seg_offset[s];
      FUZZ_CHECK(off >= 0 && off == static_cast<double>(static_cast<uint64_t>(off)), "segment %u: offset %f", s, off);
      const uint64_t o = static_cast<uint64_t>(off);
      const uint32_t len = b.seg_len[s];
      FUZZ_CHECK(len > 0, "segment %u is empty", s);
      FUZZ_CHECK(o < r.size && len <= r.size - o, "segment %u [%llu, +%u) outside region of %llu bytes", s,
                 static_cast<unsigned long long>(o), len, static_cast<unsigned long long>(r.size));
      const uint8_t* p = r.host() + o;
      FUZZ_CHECK(g.HostInRegion(p, len), "segment %u is not inside the harness's guest memory", s);
      FUZZ_CHECK(__asan_region_is_poisoned(const_cast<uint8_t*>(p), len) == nullptr, "segment %u touches poisoned memory", s);
      const bool w = (b.seg_flags[s] & 1) != 0;
      FUZZ_CHECK(b.seg_flags[s] <= 1, "segment %u flags %u", s, b.seg_flags[s]);
      FUZZ_CHECK(!(seen_w && !w), "chain %u: readable segment %u after a writable one", i, s);
      seen_w |= w;
      (w ? wl : rl) += len;
    }
    FUZZ_CHECK(rl == b.read_len[i] && wl == b.write_len[i], "chain %u: read/write len %u/%u, segments add up to %llu/%llu", i,
               b.read_len[i], b.write_len[i], static_cast<unsigned long long>(rl), static_cast<unsigned long long>(wl));
  }
}

// What the device may write in guest memory: host ranges. A snapshot of the regions
// before an engine call, compared after it, allows changes only there.
struct Ranges {
  std::vector<std::pair<const uint8_t*, size_t>> v;
  void Add(const uint8_t* p, size_t n) {
    if (p != nullptr && n > 0) v.emplace_back(p, n);
  }
  bool Has(const uint8_t* p) const {
    for (const auto& r : v) {
      if (p >= r.first && p < r.first + r.second) return true;
    }
    return false;
  }
};

class Snapshot {
 public:
  void Take(const GuestMem& g) { bytes_.assign(g.buf(), g.buf() + g.buf_len()); }
  // Every byte of the buffer that changed must be inside `owned`.
  void Compare(const GuestMem& g, const Ranges& owned, const char* what) const {
    const uint8_t* now = g.buf();
    const size_t n = g.buf_len();
    for (size_t i = 0; i < n;) {
      // memcmp in blocks, then bytes only where a block differs
      const size_t blk = n - i < 64 ? n - i : 64;
      if (memcmp(now + i, bytes_.data() + i, blk) == 0) {
        i += blk;
        continue;
      }
      for (size_t k = i; k < i + blk; k++) {
        if (now[k] != bytes_[k]) FUZZ_CHECK(owned.Has(now + k), "%s wrote buffer byte %zu, outside what the device may write", what, k);
      }
      i += blk;
    }
    g.CheckCanaries(what);
  }

 private:
  std::vector<uint8_t> bytes_;
};

// A dirty log (SET_LOG_BASE) over a memfd: 4 KiB of bitmap, 128 MiB of guest memory (Mark
// ignores pages past it). One per process, cleared by the caller when it wants.
inline std::shared_ptr<DirtyLog> SharedDirtyLog() {
  static std::shared_ptr<DirtyLog> log = [] {
    const int fd = memfd_create("fuzz-dirty-log", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, 4096) != 0) Die("memfd for the dirty log");
    std::string err;
    auto l = DirtyLog::Map(fd, 4096, 0, &err);
    close(fd);
    if (!l) Die("dirty log: %s", err.c_str());
    return l;
  }();
  return log;
}

}  // namespace fuzz
