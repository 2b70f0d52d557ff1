#include "memory/memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vhostkit {

namespace {
// a + b without wrapping; false if it would wrap.
inline bool AddNoWrap(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

// Is [addr, addr+len) inside [start, start+size)? No arithmetic can wrap.
inline bool Inside(uint64_t addr, uint64_t len, uint64_t start, uint64_t size) {
  if (addr < start) return false;
  const uint64_t off = addr - start;
  return off <= size && len <= size - off;
}
}  // namespace

std::shared_ptr<Mapping> Mapping::Map(int fd, uint64_t size, uint64_t mmap_offset, std::string* err) {
  uint64_t end;
  if (size == 0 || !AddNoWrap(mmap_offset, size, &end) || end > (uint64_t{1} << 47)) {
    *err = "region size " + std::to_string(size) + " at mmap offset " + std::to_string(mmap_offset) +
           " is empty or too large";
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    *err = std::string("fstat of region fd: ") + strerror(errno);
    return nullptr;
  }
  // A mapping that reaches past the end of a regular file (memfd, tmpfs, hugetlbfs file)
  // raises SIGBUS on access: refuse it here instead of dying later.
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < end) {
    *err = "region needs " + std::to_string(end) + " bytes of its fd, the file has " + std::to_string(st.st_size);
    return nullptr;
  }
  if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
    *err = "region fd is not a file or device";
    return nullptr;
  }
  // Ask the kernel to forbid shrinking the file under us (only works on memfds created
  // with sealing allowed); remember whether it is sealed.
  bool sealed = false;
  if (S_ISREG(st.st_mode)) {
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    const int seals = fcntl(fd, F_GET_SEALS);
    sealed = seals >= 0 && (seals & F_SEAL_SHRINK) != 0;
  }
  void* base = mmap(nullptr, end, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    *err = std::string("mmap of ") + std::to_string(end) + " bytes: " + strerror(errno);
    return nullptr;
  }
  std::shared_ptr<Mapping> m(new Mapping());
  // Under the SIGBUS guard before anyone can touch it: a frontend may truncate the file
  // at any time (sealing is refused by plain files and by memfds without ALLOW_SEALING).
  std::string gerr;
  if (!sealed && guest_fault::Install(&gerr)) {
    // hugetlbfs (QEMU's memory-backend-file on /dev/hugepages): pages of f_bsize bytes.
    struct statfs fs;
    const size_t page = fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC ? static_cast<size_t>(fs.f_bsize) : 0;
    m->fault_slot_ = guest_fault::Register(base, end, &m->lost_, page);
    if (m->fault_slot_ < 0) {
      munmap(base, end);
      *err = "too many guest memory mappings for the SIGBUS guard (" + std::to_string(guest_fault::kSlots) + ")";
      return nullptr;
    }
  }
  m->base_ = base;
  m->map_len_ = end;
  m->host_ = static_cast<uint8_t*>(base) + mmap_offset;
  m->size_ = size;
  m->sealed_ = sealed;
  return m;
}

std::shared_ptr<Mapping> Mapping::Borrow(uint8_t* host, uint64_t size) {
  std::shared_ptr<Mapping> m(new Mapping());
  m->host_ = host;
  m->size_ = size;
  return m;  // base_ stays null: the destructor unmaps nothing
}

Mapping::~Mapping() {
  // Out of the SIGBUS guard's registry first: the range may be mapped again by anyone.
  guest_fault::Unregister(fault_slot_);
  if (base_ != nullptr) munmap(base_, map_len_);
}

std::shared_ptr<MemTable> MemTable::Build(std::vector<Region> regions, std::string* err) {
  if (regions.size() > kMaxRegions) {
    *err = std::to_string(regions.size()) + " regions, at most " + std::to_string(kMaxRegions);
    return nullptr;
  }
  for (const Region& r : regions) {
    uint64_t end;
    if (r.size == 0 || !r.map || r.map->size() != r.size) {
      *err = "region at gpa " + std::to_string(r.gpa) + " is empty or not mapped";
      return nullptr;
    }
    if (!AddNoWrap(r.gpa, r.size, &end) || !AddNoWrap(r.uva, r.size, &end)) {
      *err = "region at gpa " + std::to_string(r.gpa) + " wraps the address space";
      return nullptr;
    }
  }
  std::sort(regions.begin(), regions.end(), [](const Region& a, const Region& b) { return a.gpa < b.gpa; });
  for (size_t i = 0; i < regions.size(); i++) {
    for (size_t j = i + 1; j < regions.size(); j++) {
      const Region& a = regions[i];
      const Region& b = regions[j];
      const bool gpa_overlap = a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size;
      const bool uva_overlap = a.uva < b.uva + b.size && b.uva < a.uva + a.size;
      if (gpa_overlap || uva_overlap) {
        *err = std::string("regions overlap in ") + (gpa_overlap ? "guest-physical" : "frontend-virtual") +
               " space (gpa " + std::to_string(a.gpa) + " and gpa " + std::to_string(b.gpa) + ")";
        return nullptr;
      }
    }
  }
  auto t = std::make_shared<MemTable>();
  t->regions_ = std::move(regions);
  for (const Region& r : t->regions_) t->spans_.push_back(Span{r.gpa, r.size, r.host()});
  return t;
}

int MemTable::FindGpa(uint64_t addr) const {
  const uint32_t n = static_cast<uint32_t>(regions_.size());
  const uint32_t hint = last_hit_.load(std::memory_order_relaxed);
  if (hint < n && Inside(addr, 1, regions_[hint].gpa, regions_[hint].size)) return static_cast<int>(hint);
  for (uint32_t i = 0; i < n; i++) {
    if (Inside(addr, 1, regions_[i].gpa, regions_[i].size)) {
      last_hit_.store(i, std::memory_order_relaxed);
      return static_cast<int>(i);
    }
  }
  return -1;
}

uint8_t* MemTable::TranslateGpa(uint64_t addr, uint64_t len, uint64_t* contiguous, uint32_t* region) const {
  const int i = FindGpa(addr);
  if (i < 0) return nullptr;
  const Region& r = regions_[static_cast<size_t>(i)];
  const uint64_t off = addr - r.gpa;
  const uint64_t here = std::min(len, r.size - off);
  if (here < len) {
    // The range continues past this region: accept only if the following regions cover
    // the rest with no hole (regions are sorted by gpa and do not overlap).
    uint64_t next = r.gpa + r.size;  // cannot wrap: checked at Build
    uint64_t rest = len - here;
    for (size_t j = static_cast<size_t>(i) + 1; rest > 0; j++) {
      if (j >= regions_.size() || regions_[j].gpa != next) return nullptr;
      const uint64_t take = std::min(rest, regions_[j].size);
      rest -= take;
      next += regions_[j].size;
    }
  }
  *contiguous = here;
  *region = static_cast<uint32_t>(i);
  return r.host() + off;
}

uint8_t* MemTable::TranslateGpaContiguous(uint64_t addr, uint64_t len) const {
  const int i = FindGpa(addr);
  if (i < 0) return nullptr;
  const Region& r = regions_[static_cast<size_t>(i)];
  if (!Inside(addr, len, r.gpa, r.size)) return nullptr;
  return r.host() + (addr - r.gpa);
}

uint8_t* MemTable::TranslateUvaContiguous(uint64_t addr, uint64_t len) const {
  for (const Region& r : regions_) {
    if (Inside(addr, len, r.uva, r.size) && (len > 0 || addr < r.uva + r.size)) return r.host() + (addr - r.uva);
  }
  return nullptr;
}

bool MemTable::UvaToGpa(uint64_t uva, uint64_t* gpa) const {
  for (const Region& r : regions_) {
    if (Inside(uva, 1, r.uva, r.size)) {
      *gpa = r.gpa + (uva - r.uva);
      return true;
    }
  }
  return false;
}

}  // namespace vhostkit
