// libFuzzer target: the SIGBUS guard over guest memory (native/memory/guest_fault.{h,cc})
// under a frontend that truncates the files behind its guest memory while the backend serves
// a split or packed ring in it.
//
// Guest memory here is what a frontend hands over: one or two regions mapped by
// Mapping::Map from unsealed memfds (one file per region, or both regions in one file at
// different mmap offsets), so the guard covers them and a truncated file raises real
// SIGBUS. The harness plays both sides: the driver writes rings and chains into the files
// with pwrite(2) (the frontend's own view of the file, which cannot fault), the device pops,
// copies segments through the engine's host pointers (memcpy), pushes; and the frontend
// truncates a file at a step the input picks: before a pop, between pop and push, in the
// middle of a copy, or of the dirty log's file. Input format: fuzz_guest_fault.h.
//
// Invariants (a failure aborts; the process dying of SIGBUS is one too, reported by ASan's
// handler, to which the guard chains a fault it does not recover):
//   - lost() is set only on a mapping whose file no longer covers it (a page of the
//     mapping wholly past the end of the file), never before; once set it stays set; after
//     every byte of a region was read (kVerify, and at the end of each input) it is set
//     exactly when the file no longer covers the mapping. The same for the dirty log's.
//   - each fault the guard recovered bumps guest_fault::Epoch() once and writes its eventfd
//     once (the eventfd's count equals the epoch's advance; a new lost flag comes with one).
//   - every byte read through a mapping is what the harness's model of the file says: the
//     byte the driver or the device wrote while it was inside the file, 0 once the file was
//     cut below it (the partial last page is zeroed by the kernel, the pages past it by the
//     guard's anonymous replacement). Inside the file the mapping is still the file (what
//     pread(2) reads). Bytes the engine writes (the rings' device areas) and bytes the device
//     wrote past the end of the file are not modelled. So a region whose file was not cut
//     stays intact, and no page inside the file was replaced.
//   - one page below and above each mapping, the harness maps read-only sentinel pages
//     (MapFenced makes room for them): still there, bytes unchanged, so the guard's
//     anonymous mappings never reach outside the mapping that faulted.
//   - the queue: while no region is lost, Pop / PopDirect never report GUEST_MEMORY_LOST;
//     once one is, Pop and PopDirect fail (GUEST_MEMORY_LOST, or an error the queue had
//     already) and Push latches it; Push of chains in flight still completes (0 or 1); the
//     queue's in-flight count is the harness's; segments lie inside their regions.
//   - no leak: after each input every mapping of its files is gone (mincore), and every
//     kCheckEvery inputs the number of open fds (pipes aside) is the one at the first input
//     and no mapping of a vk-fuzz-* memfd is left (/proc/self/maps).
//
// AddressSanitizer keeps SIGBUS for itself unless allow_user_segv_handler=1 (see
// __asan_default_options below); with it the guard's sigaction takes, and the handler it
// replaces (ASan's) is the one it chains to. LLVMFuzzerInitialize aborts if the guard
// could not be installed: a run without it would prove nothing.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "memory/guest_fault.h"
#include "fuzz_common.h"
#include "fuzz_guest_fault.h"

// The guard installs its SIGBUS handler over ASan's only with this (scripts/test.mjs sets
// the same for the addon's tests). ASAN_OPTIONS from the environment still override it.
extern "C" const char* __asan_default_options() { return "allow_user_segv_handler=1"; }

namespace {

using namespace fuzz;
using namespace fuzz::gf;

constexpr uint8_t kOwned = 1;  // the engine writes it: used ring (split), descriptors and device area (packed)
constexpr uint8_t kDirty = 2;  // the device wrote it while it was past the end of its file
constexpr uint8_t kSentinelByte = 0x5c;
constexpr uint32_t kBurstChains = 16, kBurstSegs = 64;
constexpr uint32_t kCheckEvery = 1000;  // inputs between the fd and mapping leak checks
constexpr uint32_t kMaxPlugs = 65536;   // holes MapFenced plugs in a run (each a few pages of address space)
constexpr const char* kGuestName = "vk-fuzz-guest";
constexpr const char* kLogName = "vk-fuzz-log";
constexpr uint16_t kFNext = 1, kFWrite = 2;
constexpr uint16_t kPAvail = 1 << 7, kPUsed = 1 << 15;

uint64_t RoundUp(uint64_t v) { return (v + kPage - 1) / kPage * kPage; }
unsigned long long U(uint64_t v) { return static_cast<unsigned long long>(v); }

// What a file holds before anyone writes it: never 0, so a byte read as 0 was cut.
uint8_t Pattern(int file, uint64_t x) { return static_cast<uint8_t>(1 + (x * 7 + (x >> 8) * 13 + static_cast<uint64_t>(file) * 101) % 255); }

// The lines of /proc/self/maps that contain `needle`.
std::vector<std::string> MapsLines(const char* needle) {
  std::vector<std::string> out;
  FILE* f = fopen("/proc/self/maps", "r");
  FUZZ_CHECK(f != nullptr, "/proc/self/maps: %s", strerror(errno));
  char line[512];
  while (fgets(line, sizeof line, f) != nullptr) {
    if (strstr(line, needle) != nullptr) out.emplace_back(line);
  }
  fclose(f);
  return out;
}

// The /proc/self/maps line of the mapping that holds p, or "" if none does.
std::string MapsLineAt(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (const std::string& l : MapsLines("")) {
    unsigned long lo = 0, hi = 0;
    if (sscanf(l.c_str(), "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi) return l;
  }
  return "";
}

// The open fds, each as "fd -> what" (the directory's own fd included, every time).
std::vector<std::string> OpenFds() {
  std::vector<std::string> out;
  DIR* d = opendir("/proc/self/fd");
  FUZZ_CHECK(d != nullptr, "/proc/self/fd: %s", strerror(errno));
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256] = "?";
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = readlink(path.c_str(), target, sizeof target - 1);
    if (n >= 0) target[n] = 0;
    out.push_back(std::string(e->d_name) + " -> " + target);
  }
  closedir(d);
  return out;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += "\n  " + x;
  return s;
}

// The guard's fault count the harness has accounted for (its eventfd drained to it).
uint32_t g_epoch_seen = 0;

// What the run did, printed at exit (libFuzzer exits through exit() after -runs / -max_total_time).
struct Stats {
  uint64_t inputs = 0, lost_inputs = 0, faults = 0, fences = 0, fenced_sides = 0;
} g_stats;
void PrintStats() {
  fprintf(stderr, "guest_fault: %llu inputs, %llu with a region or the dirty log lost, %llu faults recovered; sentinel pages on %llu of %llu mapping sides\n",
          U(g_stats.inputs), U(g_stats.lost_inputs), U(g_stats.faults), U(g_stats.fenced_sides), U(2 * g_stats.fences));
}

// One file as the frontend holds it: a region's memfd, or the dirty log's.
struct File {
  File() = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd >= 0) close(fd);
  }
  int fd = -1;
  uint64_t size = 0;  // now; it only shrinks
  bool sealed = false;
  // Each byte as every mapping of the file must read it (0 past `size`), unless mask says
  // kOwned or kDirty. Indexed by file offset, up to the file's first size.
  std::vector<uint8_t> model;
  std::vector<uint8_t> mask;
};

// A region's Mapping: [0, off + size) of file `file`, the region's bytes at off.
struct Watched {
  std::shared_ptr<Mapping> map;
  int file = 0;
  uint64_t off = 0, size = 0, gpa = 0;
  uint8_t* base = nullptr;  // the mmap's first byte
  uint64_t len = 0;         // off + size: the mmap's length
  bool lost = false;        // lost() seen set
};

// A ring area: where the harness put it, and whether it lies inside its region.
struct Area {
  bool fits = false;
  int region = 0;
  uint64_t gpa = 0, foff = 0, len = 0;  // foff: offset in the region's file
};

// A segment of a chain the device holds: region (index in the table, which is the
// harness's order), offset in the region, length.
struct Seg {
  uint32_t region;
  uint64_t off;
  uint32_t len;
  bool write;
};
struct Held {
  uint16_t id;
  std::vector<Seg> segs;
  uint32_t written = 0;  // device-written bytes so far: the used length Push reports
};

struct Trunc {
  uint8_t sel = 0;
  uint32_t v = 0;
};

class Harness {
 public:
  Harness() = default;
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  void Setup(Input& in);
  void Step(Input& in);
  void Finish();

 private:
  void CreateFile(int i, uint64_t size, bool sealable, const char* name, bool pattern);
  bool DriverWrite(int file, uint64_t x, const void* p, size_t n);
  void AddChain(Input& in);
  void DoPop(uint32_t max);
  void DoPopDirect(uint32_t max);
  void Copy(Input& in);
  void CopyRange(Held& h, const Seg& s, uint64_t a, uint64_t b);
  void DoPush(Input& in);
  static Trunc ReadTrunc(Input& in);
  void Truncate(const Trunc& t);
  void Verify(const char* when);
  void CheckFlags(const char* when);
  void CheckQueue(const char* what, int32_t r, bool lost_before, VqError err_before);
  void CheckByte(int file, uint64_t x, uint8_t v, const char* what);
  template <typename MapFn, typename UnmapFn>
  uint8_t* MapFenced(uint64_t len, MapFn map, UnmapFn unmap);
  static uint8_t* Hole(uint64_t len);
  bool Sentinel(uint8_t* at, bool fixed);
  void Fence(uint8_t* base, uint64_t len, uint8_t* hole);
  void Teardown();
  bool Cut(const Watched& w) const { return RoundUp(files_[w.file].size) < w.len; }
  bool LogCut() const { return log_ && RoundUp(files_[2].size) < log_->size(); }
  bool TableLost() const {
    for (const Watched& w : maps_) {
      if (w.map->lost()) return true;
    }
    return false;
  }

  uint8_t layout_ = 0;
  bool packed_ = false;
  uint32_t qsize_ = 1;
  File files_[3];               // region 0's, region 1's (when it has its own), the log's
  std::vector<Watched> maps_;   // the regions, in table order
  std::shared_ptr<MemTable> table_;
  std::shared_ptr<DirtyLog> log_;
  uint8_t* log_base_ = nullptr;
  bool log_lost_ = false;
  Area rings_[3];               // descriptors, driver area, device area
  bool ready_ = false;          // SetRings accepted them
  std::shared_ptr<Virtqueue> q_;
  Burst burst_{kBurstChains, kBurstSegs};
  std::vector<Held> held_;      // chains the device popped and has not pushed, in pop order
  std::vector<uint8_t*> sentinels_;
  uint32_t fences_ = 0, fenced_sides_ = 0;  // mappings fenced, and of their 2 sides those with a sentinel
  uint16_t avail_ = 0;          // split: the driver's next avail idx
  uint32_t next_ = 0;           // packed: the driver's next slot ...
  bool wrap_ = true;            // ... and wrap counter
  uint32_t copies_ = 0;         // varies what the device writes from copy to copy
};

void Harness::CreateFile(int i, uint64_t size, bool sealable, const char* name, bool pattern) {
  File& f = files_[i];
  f.fd = memfd_create(name, MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0u));
  FUZZ_CHECK(f.fd >= 0, "memfd_create: %s", strerror(errno));
  FUZZ_CHECK(ftruncate(f.fd, static_cast<off_t>(size)) == 0, "ftruncate(%llu): %s", U(size), strerror(errno));
  f.size = size;
  f.sealed = sealable;  // Mapping::Map adds F_SEAL_SHRINK to a sealable memfd
  f.model.assign(size, 0);
  f.mask.assign(size, 0);
  if (!pattern) return;
  for (uint64_t x = 0; x < size; x++) f.model[x] = Pattern(i, x);
  FUZZ_CHECK(pwrite(f.fd, f.model.data(), size, 0) == static_cast<ssize_t>(size), "pwrite: %s", strerror(errno));
}

// Room for a mapping of len bytes with a page free on each side: reserves len + 2 pages and
// frees the middle, so that the kernel's next mapping of that size usually lands there (it
// takes the highest hole that fits). Fence then makes the two pages sentinels.
uint8_t* Harness::Hole(uint64_t len) {
  void* w = mmap(nullptr, RoundUp(len) + 2 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  FUZZ_CHECK(w != MAP_FAILED, "mmap of a reservation: %s", strerror(errno));
  uint8_t* hole = static_cast<uint8_t*>(w) + kPage;
  FUZZ_CHECK(munmap(hole, RoundUp(len)) == 0, "munmap: %s", strerror(errno));
  return hole;
}

// A read-only page of kSentinelByte at `at`, over what is there (`fixed`: the harness's own
// reservation) or only where nothing is mapped; false if it could not be placed.
bool Harness::Sentinel(uint8_t* at, bool fixed) {
  const int how = fixed ? MAP_FIXED : MAP_FIXED_NOREPLACE;
  void* p = mmap(at, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | how, -1, 0);
  if (p == MAP_FAILED) return false;  // taken: the neighbour is mapped
  if (p != at) {                      // a kernel that took the flag as a hint
    munmap(p, kPage);
    return false;
  }
  memset(p, kSentinelByte, kPage);
  FUZZ_CHECK(mprotect(p, kPage, PROT_READ) == 0, "mprotect: %s", strerror(errno));
  sentinels_.push_back(static_cast<uint8_t*>(p));
  return true;
}

// Sentinels on both sides of the mapping [base, base + len), which was made after Hole
// returned `hole`: in the reservation's pages if it landed there, else where they are free.
void Harness::Fence(uint8_t* base, uint64_t len, uint8_t* hole) {
  uint8_t* const below = hole - kPage;
  uint8_t* const above = hole + RoundUp(len);
  const bool in_hole = base == hole;
  if (!in_hole) {
    munmap(below, kPage);
    munmap(above, kPage);
  }
  fences_++;
  fenced_sides_ += Sentinel(base - kPage, in_hole) ? 1 : 0;
  fenced_sides_ += Sentinel(base + RoundUp(len), in_hole) ? 1 : 0;
}

// Maps with `map` (which returns the mapping's first byte) and fences the mapping. A
// mapping that did not land in the hole Hole made went into a smaller hole higher up, which
// earlier inputs left (their mappings and sentinels are gone): that hole is plugged for the
// rest of the run (PROT_NONE, no memory behind it), `unmap` undoes the try, and the next
// try usually lands where it should. At most 4 tries: then it is fenced where it is.
template <typename MapFn, typename UnmapFn>
uint8_t* Harness::MapFenced(uint64_t len, MapFn map, UnmapFn unmap) {
  static uint32_t plugs = 0;
  for (int tries = 1;; tries++) {
    uint8_t* const hole = Hole(len);
    uint8_t* const base = map();
    if (base == hole || tries == 4 || plugs >= kMaxPlugs) {
      Fence(base, len, hole);
      return base;
    }
    unmap();
    munmap(hole - kPage, kPage);
    munmap(hole + RoundUp(len), kPage);
    void* p = mmap(base, RoundUp(len), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != MAP_FAILED && p != base) munmap(p, RoundUp(len));
    if (p == base) plugs++;
  }
}

void Harness::Setup(Input& in) {
  layout_ = in.U8();
  packed_ = (layout_ & kPacked) != 0;
  const bool two = (layout_ & kTwoRegions) != 0;
  const bool same = two && (layout_ & kSameFile) != 0;
  Watched r[2];
  r[0].size = 1 + in.U16() % (kMaxRegionPages * kPage);
  r[0].off = in.U16() % (2 * kPage);
  uint8_t gmode = 0;
  if (two) {
    r[1].size = 1 + in.U16() % (kMaxRegionPages * kPage);
    const uint16_t o = in.U16();
    if (same) {
      r[1].off = (o & 0x8000) ? (o & 0x7fff) % (2 * kPage) : RoundUp(r[0].off + r[0].size) + (o & 1) * kPage;
    } else {
      r[1].file = 1;
      r[1].off = o % (2 * kPage);
    }
    gmode = in.U8();
  }
  const uint8_t slack = in.U8();
  r[0].gpa = (layout_ & kHigh) ? kHighGpa : kLowGpa;
  r[1].gpa = r[0].gpa + r[0].size + ((gmode & 1) ? kRegion1Gap : 0);
  const size_t n = two ? 2 : 1;
  for (int f = 0; f < (two && !same ? 2 : 1); f++) {
    uint64_t end = 0;
    for (size_t i = 0; i < n; i++) {
      if (r[i].file == f) end = std::max(end, r[i].off + r[i].size);
    }
    CreateFile(f, end + ((slack >> (2 * f)) & 3) * uint64_t{kPage}, f == 0 && (layout_ & kSealed) != 0, kGuestName, true);
  }
  std::vector<Region> regions;
  for (size_t i = 0; i < n; i++) {
    Watched& w = r[i];
    w.len = w.off + w.size;
    w.base = MapFenced(
        w.len,
        [&] {
          std::string err;
          w.map = Mapping::Map(files_[w.file].fd, w.size, w.off, &err);
          FUZZ_CHECK(w.map != nullptr, "Mapping::Map(size %llu, offset %llu): %s", U(w.size), U(w.off), err.c_str());
          return w.map->host() - w.off;
        },
        [&] { w.map.reset(); });
    FUZZ_CHECK(w.map->sealed() == files_[w.file].sealed && w.map->guarded() == !w.map->sealed(),
               "region %zu: sealed %d guarded %d, the file is %s", i, w.map->sealed(), w.map->guarded(),
               files_[w.file].sealed ? "sealable" : "not sealable");
    FUZZ_CHECK((reinterpret_cast<uintptr_t>(w.base) & (kPage - 1)) == 0, "mapping not page-aligned");
    Region x;
    x.gpa = w.gpa;
    x.size = w.size;
    x.uva = kBaseUva + (uint64_t{i} << 32);
    x.mmap_offset = w.off;
    x.map = w.map;
    regions.push_back(std::move(x));
    maps_.push_back(std::move(w));
  }
  std::string err;
  table_ = MemTable::Build(std::move(regions), &err);
  FUZZ_CHECK(table_ != nullptr, "MemTable::Build: %s", err.c_str());
  for (size_t i = 0; i < n; i++) FUZZ_CHECK(table_->regions()[i].map == maps_[i].map, "table order is not the harness's");
  FUZZ_CHECK(table_->LostRegion() == -1, "a new table reports region %d lost", table_->LostRegion());

  const uint8_t qs = in.U8();
  qsize_ = packed_ ? 1u + qs % 16 : 1u << (qs % 5);
  const uint64_t lens[3] = {16 * uint64_t{qsize_}, packed_ ? 4 : 6 + 2 * uint64_t{qsize_}, packed_ ? 4 : 6 + 8 * uint64_t{qsize_}};
  for (int k = 0; k < 3; k++) {
    const uint8_t sel = in.U8();
    const uint16_t off = in.U16();
    Area& a = rings_[k];
    const Watched& sw = maps_[(sel & 1) && n == 2 ? 1 : 0];
    uint64_t o = off % sw.size;
    if ((sw.off + o) % 16 != 0) o += 16 - (sw.off + o) % 16;  // the host address 16-aligned
    a.gpa = sw.gpa + o;  // (alignment may move it past the region: into the next one, or nowhere)
    a.len = lens[k];
    for (size_t i = 0; i < n && !a.fits; i++) {
      const Watched& w = maps_[i];
      // (SetRings also wants the host address aligned: 16, 2 or 4 (packed: 4) bytes)
      const uint64_t align = k == 0 ? 16 : k == 1 && !packed_ ? 2 : 4;
      if (a.gpa >= w.gpa && a.gpa - w.gpa + a.len <= w.size && (w.off + (a.gpa - w.gpa)) % align == 0) {
        a.fits = true;
        a.region = static_cast<int>(i);
        a.foff = w.off + (a.gpa - w.gpa);
      }
    }
    // The frontend starts the rings zeroed (avail / used idx 0, no descriptor available).
    if (a.fits) {
      const std::vector<uint8_t> zero(a.len, 0);
      FUZZ_CHECK(DriverWrite(maps_[a.region].file, a.foff, zero.data(), zero.size()), "ring area outside its file");
    }
  }
  // What the engine writes, unmodelled: the used ring (split); the descriptors and the
  // device event area (packed).
  for (int k : {0, 2}) {
    const Area& a = rings_[k];
    if (!a.fits || (k == 0 && !packed_)) continue;
    File& f = files_[maps_[a.region].file];
    for (uint64_t x = a.foff; x < a.foff + a.len; x++) f.mask[x] |= kOwned;
  }

  q_ = Virtqueue::Create(packed_, qsize_, &err);
  FUZZ_CHECK(q_ != nullptr, "Virtqueue::Create(%s, %u): %s", packed_ ? "packed" : "split", qsize_, err.c_str());
  q_->SetFeatures((layout_ & kEventIdx) != 0, false);
  q_->SetMemory(table_);
  std::string detail;
  const VqError e = q_->SetRings(rings_[0].gpa, rings_[1].gpa, rings_[2].gpa, AddrSpace::kGuestPhysical, &detail);
  const bool fits = rings_[0].fits && rings_[1].fits && rings_[2].fits;
  FUZZ_CHECK((e == VqError::kOk) == fits, "SetRings: %s (%s); the harness finds the rings %s", VqErrorName(e), detail.c_str(),
             fits ? "inside their regions" : "not inside their regions");
  ready_ = e == VqError::kOk;
  FUZZ_CHECK(q_->SetBase(packed_ ? 1u << 15 : 0) == VqError::kOk, "SetBase");
  q_->SyncUsedFromRing();

  if (layout_ & kLog) {
    const uint64_t bytes = (1 + in.U8() % 2) * uint64_t{kPage};
    CreateFile(2, bytes, false, kLogName, false);
    log_base_ = MapFenced(
        bytes,
        [&] {
          log_ = DirtyLog::Map(files_[2].fd, bytes, 0, &err);
          FUZZ_CHECK(log_ != nullptr, "DirtyLog::Map: %s", err.c_str());
          // DirtyLog keeps its Mapping to itself: find it by the memfd's name (one, or the
          // mapping of an earlier input leaked).
          const std::vector<std::string> lines = MapsLines(kLogName);
          FUZZ_CHECK(lines.size() == 1, "%zu mappings of the dirty log's memfd, expected 1:%s", lines.size(), Join(lines).c_str());
          unsigned long lo = 0, hi = 0;
          FUZZ_CHECK(sscanf(lines[0].c_str(), "%lx-%lx", &lo, &hi) == 2 && hi - lo == RoundUp(bytes), "dirty log mapping: %s",
                     lines[0].c_str());
          return reinterpret_cast<uint8_t*>(lo);
        },
        [&] { log_.reset(); });
    q_->SetDirtyLog(log_, (layout_ & kLogRings) != 0, rings_[2].gpa);
  }
  FUZZ_TRACE("guest_fault: %s queue size %u, %zu region(s)%s%s, rings %s\n", packed_ ? "packed" : "split", qsize_, n,
             same ? " in one file" : "", files_[0].sealed ? ", file 0 sealed" : "", ready_ ? "set" : detail.c_str());
  for (size_t i = 0; i < n; i++) {
    FUZZ_TRACE("  region %zu: gpa 0x%llx size %llu, file %d offset %llu (file size %llu)\n", i, U(maps_[i].gpa), U(maps_[i].size),
               maps_[i].file, U(maps_[i].off), U(files_[maps_[i].file].size));
  }
  FUZZ_TRACE("  sentinel pages on %u of the %u sides of the mappings\n", fenced_sides_, 2 * fences_);
  CheckFlags("setup");
}

// The driver writes guest memory through the file, as the frontend's own mapping would
// without faulting: nothing past the end of the file (there is no guest memory there).
bool Harness::DriverWrite(int file, uint64_t x, const void* p, size_t n) {
  File& f = files_[file];
  if (x > f.size || n > f.size - x) return false;
  FUZZ_CHECK(pwrite(f.fd, p, n, static_cast<off_t>(x)) == static_cast<ssize_t>(n), "pwrite: %s", strerror(errno));
  memcpy(f.model.data() + x, p, n);
  return true;
}

void Harness::AddChain(Input& in) {
  const uint32_t n = 1 + in.U8() % 4;
  const uint16_t head = static_cast<uint16_t>(in.U8() % qsize_);
  struct D {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
  } d[4];
  for (uint32_t k = 0; k < n; k++) {
    const uint8_t f = in.U8();
    const Watched& w = maps_[(f & 2) && maps_.size() == 2 ? 1 : 0];
    d[k].addr = (f & 4) ? in.U64() : w.gpa + in.U16() % w.size;
    d[k].len = in.U16() % (2 * kPage + 1);
    d[k].flags = static_cast<uint16_t>(((f & 1) ? kFWrite : 0) | (k + 1 < n ? kFNext : 0));
  }
  if (!ready_) return;
  const Area& desc = rings_[0];
  const Area& drv = rings_[1];
  const int df = maps_[desc.region].file, vf = maps_[drv.region].file;
  uint8_t b[16];
  if (!packed_) {
    for (uint32_t k = 0; k < n; k++) {
      const uint16_t next = static_cast<uint16_t>((head + k + 1) % qsize_);
      memcpy(b, &d[k].addr, 8);
      memcpy(b + 8, &d[k].len, 4);
      memcpy(b + 12, &d[k].flags, 2);
      memcpy(b + 14, &next, 2);
      DriverWrite(df, desc.foff + 16 * ((head + k) % qsize_), b, 16);
    }
    DriverWrite(vf, drv.foff + 4 + 2 * (avail_ % qsize_), &head, 2);
    avail_++;
    DriverWrite(vf, drv.foff + 2, &avail_, 2);
    return;
  }
  // Packed: the chain's descriptors from the driver's position, the head's flags last.
  const uint32_t first = next_;
  uint16_t head_flags = 0;
  for (uint32_t k = 0; k < n; k++) {
    const uint16_t flags = static_cast<uint16_t>(d[k].flags | (wrap_ ? kPAvail : kPUsed));
    const uint16_t written = k == 0 ? 0 : flags;
    memcpy(b, &d[k].addr, 8);
    memcpy(b + 8, &d[k].len, 4);
    memcpy(b + 12, &head, 2);
    memcpy(b + 14, &written, 2);
    DriverWrite(df, desc.foff + 16 * uint64_t{next_}, b, 16);
    if (k == 0) head_flags = flags;
    if (++next_ == qsize_) {
      next_ = 0;
      wrap_ = !wrap_;
    }
  }
  DriverWrite(df, desc.foff + 16 * uint64_t{first} + 14, &head_flags, 2);
}

void Harness::CheckQueue(const char* what, int32_t r, bool lost_before, VqError err_before) {
  const int32_t lost_code = static_cast<int32_t>(VqError::kGuestMemoryLost);
  if (r < 0) FUZZ_CHECK(KnownVqError(-r), "%s returned %d, not an engine error", what, r);
  if (lost_before) {
    FUZZ_CHECK(r < 0 && (q_->error() == VqError::kGuestMemoryLost || err_before != VqError::kOk),
               "%s on a table with a lost region returned %d (error %s, before %s)", what, r, VqErrorName(q_->error()),
               VqErrorName(err_before));
  }
  FUZZ_CHECK(r != -lost_code || TableLost(), "%s returned GUEST_MEMORY_LOST with no region lost", what);
  FUZZ_CHECK(q_->error() != VqError::kGuestMemoryLost || TableLost(), "%s: the queue says GUEST_MEMORY_LOST with no region lost", what);
}

void Harness::DoPop(uint32_t max) {
  const bool lost_before = TableLost();
  const VqError err_before = q_->error();
  const int32_t r = q_->Pop(burst_.a, max);
  FUZZ_TRACE("guest_fault: Pop(%u) -> %d %s\n", max, r, r < 0 ? q_->error_detail().c_str() : "");
  CheckQueue("Pop", r, lost_before, err_before);
  const BurstArrays& b = burst_.a;
  for (int32_t i = 0; i < r; i++) {
    const uint32_t s0 = b.first_seg[i], s1 = b.first_seg[i + 1];
    FUZZ_CHECK(s0 <= s1 && s1 <= b.max_segs, "chain %d: segments [%u, %u) of %u", i, s0, s1, b.max_segs);
    FUZZ_CHECK(b.head[i] < qsize_, "chain %d: id %u >= queue size %u", i, b.head[i], qsize_);
    Held h;
    h.id = b.head[i];
    uint64_t rl = 0, wl = 0;
    for (uint32_t s = s0; s < s1; s++) {
      FUZZ_CHECK(b.seg_region[s] < maps_.size(), "segment %u: region %u", s, b.seg_region[s]);
      const double off = b.seg_offset[s];
      FUZZ_CHECK(off >= 0 && off == static_cast<double>(static_cast<uint64_t>(off)), "segment %u: offset %f", s, off);
      const uint64_t o = static_cast<uint64_t>(off);
      const uint32_t len = b.seg_len[s];
      const Watched& w = maps_[b.seg_region[s]];
      FUZZ_CHECK(len > 0 && o < w.size && len <= w.size - o, "segment %u [%llu, +%u) outside region of %llu bytes", s, U(o), len, U(w.size));
      FUZZ_CHECK(b.seg_flags[s] <= 1, "segment %u: flags %u", s, b.seg_flags[s]);
      const bool write = b.seg_flags[s] & 1;
      (write ? wl : rl) += len;
      h.segs.push_back(Seg{b.seg_region[s], o, len, write});
    }
    FUZZ_CHECK(rl == b.read_len[i] && wl == b.write_len[i], "chain %d: read/write len %u/%u, segments add up to %llu/%llu", i,
               b.read_len[i], b.write_len[i], U(rl), U(wl));
    held_.push_back(std::move(h));
  }
  FUZZ_CHECK(q_->in_flight() == held_.size(), "after Pop: %u chains in flight, the device holds %zu", q_->in_flight(), held_.size());
}

void Harness::DoPopDirect(uint32_t max) {
  const bool lost_before = TableLost();
  const VqError err_before = q_->error();
  std::vector<DirectBuf> out(max);
  const int32_t r = q_->PopDirect(out.data(), max);
  FUZZ_TRACE("guest_fault: PopDirect(%u) -> %d\n", max, r);
  CheckQueue("PopDirect", r, lost_before, err_before);
  FUZZ_CHECK(r <= static_cast<int32_t>(max), "PopDirect returned %d of %u", r, max);
  for (int32_t i = 0; i < r; i++) {
    const DirectBuf& d = out[i];
    FUZZ_CHECK(d.id < qsize_ && d.cap > 0, "PopDirect buffer %d: id %u, %u bytes", i, d.id, d.cap);
    bool found = false;
    for (uint32_t t = 0; t < maps_.size() && !found; t++) {
      const uint8_t* h = table_->host(t);
      if (d.p >= h && d.p < h + maps_[t].size && d.cap <= maps_[t].size - static_cast<uint64_t>(d.p - h)) {
        held_.push_back(Held{d.id, {Seg{t, static_cast<uint64_t>(d.p - h), d.cap, true}}, 0});
        found = true;
      }
    }
    FUZZ_CHECK(found, "PopDirect buffer %d (%u bytes) is not inside one region", i, d.cap);
  }
  FUZZ_CHECK(q_->in_flight() == held_.size(), "after PopDirect: %u chains in flight, the device holds %zu", q_->in_flight(),
             held_.size());
}

// Byte x of file `file` as read through a mapping: the model's, unless unmodelled.
void Harness::CheckByte(int file, uint64_t x, uint8_t v, const char* what) {
  const File& f = files_[file];
  if (f.mask[x] != 0 || v == f.model[x]) return;
  Die("%s: file %d offset %llu reads 0x%02x, expected 0x%02x (the file is %llu bytes now: the byte is %s)", what, file, U(x), v,
      f.model[x], U(f.size), x < f.size ? "inside it" : x < RoundUp(f.size) ? "in its zeroed last page" : "in a lost page");
}

// The device's copy of bytes [a, b) of segment s, through the engine's host pointer.
void Harness::CopyRange(Held& h, const Seg& s, uint64_t a, uint64_t b) {
  if (b <= a) return;
  const Watched& w = maps_[s.region];
  File& f = files_[w.file];
  uint8_t* p = table_->host(s.region) + s.off + a;
  const uint64_t x = w.off + s.off + a;
  const size_t n = b - a;
  std::vector<uint8_t> buf(n);
  if (s.write) {
    for (size_t k = 0; k < n; k++) buf[k] = static_cast<uint8_t>(0x80 | ((x + k + copies_) & 0x7f));
    memcpy(p, buf.data(), n);  // may fault: the guard recovers it, the bytes go to anonymous memory
    for (size_t k = 0; k < n; k++) {
      if (x + k < f.size) {
        f.model[x + k] = buf[k];
      } else {
        f.mask[x + k] |= kDirty;
      }
    }
    h.written += static_cast<uint32_t>(n);
  } else {
    memcpy(buf.data(), p, n);  // may fault: past the end of the file it must read zeros
    for (size_t k = 0; k < n; k++) CheckByte(w.file, x + k, buf[k], "the device's read of a segment");
  }
}

void Harness::Copy(Input& in) {
  const uint8_t sel = in.U8(), t = in.U8();
  const uint16_t at = in.U16();
  const bool truncate = (t & 1) != 0;
  Trunc spec;
  if (truncate) spec = ReadTrunc(in);
  copies_++;
  if (held_.empty()) {
    if (truncate) Truncate(spec);
    return;
  }
  Held& h = held_[sel % held_.size()];
  uint64_t total = 0;
  for (const Seg& s : h.segs) total += s.len;
  const uint64_t cut = at % (total + 1);
  FUZZ_TRACE("guest_fault: copy of chain %u (%llu bytes)%s at byte %llu\n", h.id, U(total), truncate ? ", truncation" : "", U(cut));
  bool pending = truncate;
  uint64_t done = 0;
  for (const Seg& s : h.segs) {
    uint64_t a = 0;
    if (pending && cut < done + s.len) {  // the frontend truncates in the middle of this segment's copy
      CopyRange(h, s, 0, cut - done);
      Truncate(spec);
      pending = false;
      a = cut - done;
    }
    CopyRange(h, s, a, s.len);
    done += s.len;
  }
  if (pending) Truncate(spec);  // after the last byte
}

void Harness::DoPush(Input& in) {
  const uint8_t v = in.U8();
  const size_t n = held_.empty() ? 0 : 1 + v % held_.size();
  std::vector<uint16_t> ids(n);
  std::vector<uint32_t> lens(n);
  for (size_t i = 0; i < n; i++) {
    ids[i] = held_[i].id;
    lens[i] = held_[i].written;
  }
  const bool lost_before = TableLost();
  const VqError err_before = q_->error();
  const int32_t r = q_->Push(ids.data(), lens.data(), static_cast<uint32_t>(n));
  FUZZ_TRACE("guest_fault: Push(%zu) -> %d\n", n, r);
  if (n == 0) {
    FUZZ_CHECK(r == 0, "Push of nothing returned %d", r);
  } else {
    FUZZ_CHECK(r == 0 || r == 1, "Push of %zu chains in flight returned %d", n, r);
    if (lost_before) {
      FUZZ_CHECK(q_->error() == VqError::kGuestMemoryLost || err_before != VqError::kOk,
                 "Push on a table with a lost region left the queue's error at %s", VqErrorName(q_->error()));
    }
  }
  FUZZ_CHECK(q_->error() != VqError::kGuestMemoryLost || TableLost(), "Push: GUEST_MEMORY_LOST with no region lost");
  held_.erase(held_.begin(), held_.begin() + static_cast<long>(n));
  FUZZ_CHECK(q_->in_flight() == held_.size(), "after Push: %u chains in flight, the device holds %zu", q_->in_flight(), held_.size());
}

Trunc Harness::ReadTrunc(Input& in) {
  Trunc t;
  t.sel = in.U8();
  switch (t.sel & 0xc) {
    case kSizeRaw: t.v = in.U16(); break;
    case kSizePages: t.v = in.U8(); break;
    case kSizeZero: break;
    default: t.v = in.U8(); break;
  }
  return t;
}

// The frontend shrinks a file (ftruncate on its fd): the mappings keep their length.
void Harness::Truncate(const Trunc& t) {
  int fi = t.sel & 3;
  if (fi == 3 || (fi == 1 && files_[1].fd < 0) || (fi == 2 && !log_)) fi = 0;
  File& f = files_[fi];
  const uint64_t cur = f.size;
  uint64_t s = 0;
  switch (t.sel & 0xc) {
    case kSizeRaw: s = t.v % (cur + 1); break;
    case kSizePages: s = std::min<uint64_t>(cur, (t.v % (RoundUp(cur) / kPage + 1)) * kPage); break;
    case kSizeZero: s = 0; break;
    default: s = cur == 0 ? 0 : cur - 1 - t.v % cur; break;
  }
  const int r = ftruncate(f.fd, static_cast<off_t>(s));
  FUZZ_TRACE("guest_fault: truncate file %d from %llu to %llu bytes -> %d\n", fi, U(cur), U(s), r);
  if (f.sealed && s < cur) {
    FUZZ_CHECK(r == -1 && errno == EPERM, "a sealed file shrank (ftruncate -> %d, %s)", r, strerror(errno));
    return;
  }
  FUZZ_CHECK(r == 0, "ftruncate(%llu): %s", U(s), strerror(errno));
  std::fill(f.model.begin() + static_cast<long>(s), f.model.end(), 0);
  f.size = s;
}

void Harness::CheckFlags(const char* when) {
  bool fresh = false;
  for (size_t i = 0; i < maps_.size(); i++) {
    Watched& w = maps_[i];
    const bool l = w.map->lost();
    FUZZ_CHECK(l || !w.lost, "after %s: region %zu's lost flag was cleared", when, i);
    if (l && !w.lost) {
      FUZZ_CHECK(Cut(w), "after %s: region %zu is marked lost, but its file (%llu bytes) still covers its mapping (%llu bytes)", when,
                 i, U(files_[w.file].size), U(w.len));
      w.lost = true;
      fresh = true;
    }
  }
  if (log_) {
    const bool l = log_->lost();
    FUZZ_CHECK(l || !log_lost_, "after %s: the dirty log's lost flag was cleared", when);
    if (l && !log_lost_) {
      FUZZ_CHECK(LogCut(), "after %s: the dirty log is marked lost, but its file (%llu bytes) still covers it", when, U(files_[2].size));
      log_lost_ = true;
      fresh = true;
    }
  }
  // Every recovered fault: one epoch step, one eventfd write.
  const uint32_t e = guest_fault::Epoch();
  const uint32_t d = e - g_epoch_seen;
  uint64_t c = 0;
  if (read(guest_fault::EventFd(), &c, sizeof c) != static_cast<ssize_t>(sizeof c)) {
    FUZZ_CHECK(errno == EAGAIN, "read of the guard's eventfd: %s", strerror(errno));
    c = 0;
  }
  FUZZ_CHECK(c == d, "after %s: the guard's epoch moved by %u, its eventfd counted %llu", when, d, U(c));
  FUZZ_CHECK(!fresh || d > 0, "after %s: a mapping was marked lost without an epoch step", when);
  g_stats.faults += d;
  if (d > 0) {
    bool any = LogCut();
    for (const Watched& w : maps_) any = any || Cut(w);
    FUZZ_CHECK(any, "after %s: the guard recovered %u fault(s), but no file was cut under a mapping", when, d);
  }
  g_epoch_seen = e;
}

void Harness::Verify(const char* when) {
  int first_lost = -1;
  for (size_t i = 0; i < maps_.size(); i++) {
    const Watched& w = maps_[i];
    const File& f = files_[w.file];
    std::vector<uint8_t> now(w.size);
    memcpy(now.data(), w.map->host(), w.size);  // every byte: lost pages fault here and are recovered
    for (uint64_t k = 0; k < w.size; k++) CheckByte(w.file, w.off + k, now[k], when);
    // Inside the file the mapping must still be the file: no page there was replaced.
    if (w.off < f.size) {
      const uint64_t in = std::min<uint64_t>(w.size, f.size - w.off);
      std::vector<uint8_t> disk(in);
      FUZZ_CHECK(pread(f.fd, disk.data(), in, static_cast<off_t>(w.off)) == static_cast<ssize_t>(in), "pread: %s", strerror(errno));
      for (uint64_t k = 0; k < in; k++) {
        FUZZ_CHECK(now[k] == disk[k], "%s: region %zu byte %llu reads 0x%02x through the mapping, 0x%02x in the file (%llu bytes)", when,
                   i, U(k), now[k], disk[k], U(f.size));
      }
    }
    FUZZ_CHECK(w.map->lost() == Cut(w), "%s: every byte of region %zu read, lost() is %d; its file (%llu bytes) %s its mapping (%llu bytes)",
               when, i, w.map->lost(), U(f.size), Cut(w) ? "no longer covers" : "covers", U(w.len));
    if (Cut(w) && first_lost < 0) first_lost = static_cast<int>(i);
  }
  FUZZ_CHECK(table_->LostRegion() == first_lost, "%s: LostRegion() is %d, expected %d", when, table_->LostRegion(), first_lost);
  if (log_) {
    // The bit of the log's last page: Mark touches its last byte.
    log_->Mark(((log_->size() * 8) - 1) << DirtyLog::kPageShift, 1);
    FUZZ_CHECK(log_->lost() == LogCut(), "%s: the dirty log's last byte written, lost() is %d; its file is %llu of %llu bytes", when,
               log_->lost(), U(files_[2].size), U(log_->size()));
  }
  std::vector<uint8_t> want(kPage, kSentinelByte);
  for (const uint8_t* s : sentinels_) {
    FUZZ_CHECK(memcmp(s, want.data(), kPage) == 0, "%s: the sentinel page at %p next to a mapping was overwritten (%s)", when,
               static_cast<const void*>(s), MapsLineAt(s).c_str());
  }
  CheckFlags(when);
}

void Harness::Step(Input& in) {
  const uint8_t op = in.U8() % kOpCount;
  switch (op) {
    case kAddChain: AddChain(in); break;
    case kPop: DoPop(1 + in.U8() % 16); break;
    case kPopDirect: DoPopDirect(1 + in.U8() % 16); break;
    case kCopy: Copy(in); break;
    case kPush: DoPush(in); break;
    case kTruncate: Truncate(ReadTrunc(in)); break;
    case kVerify: Verify("kVerify"); break;
    case kNotify: {
      const bool on = in.U8() & 1;
      (void)q_->SetNotify(on);
      break;
    }
    default: {
      const uint32_t n = q_->AvailCount();
      FUZZ_CHECK(n <= qsize_, "AvailCount %u > queue size %u", n, qsize_);
      (void)q_->HasAvail();
      break;
    }
  }
  static const char* const kNames[kOpCount] = {"AddChain", "Pop", "PopDirect", "Copy", "Push", "Truncate", "Verify", "Notify", "Query"};
  CheckFlags(kNames[op]);
}

void Harness::Finish() {
  Verify("the end of the input");
  if (TableLost()) {
    // The session ends here; whatever the queue is asked now, it takes nothing more.
    DoPop(kBurstChains);
    DoPopDirect(kBurstChains);
    FUZZ_CHECK(q_->error() != VqError::kOk, "a table with a lost region left the queue without an error");
  }
  Teardown();
}

void Harness::Teardown() {
  g_stats.inputs++;
  g_stats.lost_inputs += (TableLost() || log_lost_) ? 1 : 0;
  g_stats.fences += fences_;
  g_stats.fenced_sides += fenced_sides_;
  struct Range {
    uint8_t* base;
    uint64_t len;
    const char* what;
  };
  std::vector<Range> ranges;
  for (const Watched& w : maps_) ranges.push_back(Range{w.base, RoundUp(w.len), "a region's mapping"});
  if (log_) ranges.push_back(Range{log_base_, RoundUp(log_->size()), "the dirty log's mapping"});
  held_.clear();
  q_.reset();
  table_.reset();
  log_.reset();
  maps_.clear();  // the last references: each Mapping leaves the guard's registry and is unmapped
  for (const Range& r : ranges) {
    unsigned char v = 0;
    for (uint64_t o = 0; o < r.len; o += kPage) {
      if (mincore(r.base + o, kPage, &v) == 0) {
        Die("%s is still mapped at %p after its last holder let go: %s", r.what, static_cast<void*>(r.base + o),
            MapsLineAt(r.base + o).c_str());
      }
      FUZZ_CHECK(errno == ENOMEM, "mincore: %s", strerror(errno));
    }
  }
  for (uint8_t* s : sentinels_) FUZZ_CHECK(munmap(s, kPage) == 0, "munmap of a sentinel: %s", strerror(errno));
  sentinels_.clear();
}

// Every kCheckEvery inputs (between two of them): the open fds are those of the first
// input, and no mapping of the harness's memfds is left.
void LeakCheck() {
  static uint64_t inputs = 0;
  static std::vector<std::string> fds0;
  if (inputs++ % kCheckEvery != 0) return;
  // Pipes do not count: the sanitizer runtime starts llvm-symbolizer (two pipes) the first
  // time libFuzzer prints a NEW_FUNC line. Everything this harness and the code under test
  // open (memfds, the guard's eventfd) does.
  std::vector<std::string> fds;
  for (const std::string& f : OpenFds()) {
    if (f.find("-> pipe:") == std::string::npos) fds.push_back(f);
  }
  if (fds0.empty()) fds0 = fds;
  FUZZ_CHECK(fds.size() == fds0.size(), "%zu fds open, %zu at the first input: an fd leaked in the last %u inputs; now:%s\nat the first input:%s",
             fds.size(), fds0.size(), kCheckEvery, Join(fds).c_str(), Join(fds0).c_str());
  const std::vector<std::string> left = MapsLines("vk-fuzz-");
  FUZZ_CHECK(left.empty(), "%zu mapping(s) of the harness's memfds outlived their input:%s", left.size(), Join(left).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)argc;
  (void)argv;
  FUZZ_CHECK(sysconf(_SC_PAGESIZE) == kPage, "the harness assumes %u-byte pages, the system has %ld", kPage, sysconf(_SC_PAGESIZE));
  std::string err;
  if (!guest_fault::Install(&err)) Die("the SIGBUS guard is not installed, nothing to fuzz: %s", err.c_str());
  uint64_t c = 0;
  while (read(guest_fault::EventFd(), &c, sizeof c) == static_cast<ssize_t>(sizeof c)) {
  }
  g_epoch_seen = guest_fault::Epoch();
  atexit(PrintStats);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  LeakCheck();
  Input in(data, size);
  Harness h;
  h.Setup(in);
  for (uint32_t ops = 0; ops < kMaxOps && !in.done(); ops++) h.Step(in);
  h.Finish();
  return 0;
}
