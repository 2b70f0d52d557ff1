// libFuzzer target: the guest memory table (memory.cc) and the dirty log (dirty_log.cc)
// against a reference model written here with 128-bit arithmetic.
//
// Input: u8 region count (v % 67: up to past kMaxRegions), per region u8 size mode, gpa, size,
// uva (MemTable::Build, compared with the model's verdict), then operations:
//   0 TranslateGpa(u64, u64)          4 ADD_MEM_REG (table + one region, as bind_memory.cc)
//   1 TranslateGpaContiguous          5 REM_MEM_REG (table - the region at index u8)
//   2 TranslateUvaContiguous          6 DirtyLog::Mark(u64, u64), bits compared
//   3 UvaToGpa, TranslateHinted       7 Mapping::Map(memfd, u64 size, u64 offset)
// Host addresses are fake (regions are never dereferenced): region i starts at
// kFakeBase + i * 2^40 and sizes stay below 2^40 when the table is queried.
// (ADD/REM_MEM_REG live in the N-API binding, bind_memory.cc WithRegion / WithoutRegion:
// the seam here is the same vector edit followed by MemTable::Build.)
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "fuzz_common.h"

namespace {

using namespace fuzz;
using u128 = unsigned __int128;

constexpr uintptr_t kFakeBase = uintptr_t{1} << 44;
constexpr uint64_t kFakeSpan = uint64_t{1} << 40;

struct Ref {
  uint64_t gpa, size, uva;
  uint8_t* host;
};

uint64_t Size(Input& in) {
  const uint8_t m = in.U8();
  switch (m & 3) {
    case 0: return in.U16();
    case 1: return uint64_t{in.U32()} << 12;
    case 2: return in.U64();
    default: return (m >> 2) * 4096ull;
  }
}

// MemTable::Build's documented contract.
bool RefBuildOk(const std::vector<Ref>& v) {
  if (v.size() > kMaxRegions) return false;
  for (const Ref& r : v) {
    if (r.size == 0) return false;
    // gpa + size and uva + size must not wrap u64 (the end itself may be 2^64 - 1)
    if (u128{r.gpa} + r.size > ~uint64_t{0} || u128{r.uva} + r.size > ~uint64_t{0}) return false;
  }
  for (size_t i = 0; i < v.size(); i++) {
    for (size_t j = i + 1; j < v.size(); j++) {
      const Ref& a = v[i];
      const Ref& b = v[j];
      if (u128{a.gpa} < u128{b.gpa} + b.size && u128{b.gpa} < u128{a.gpa} + a.size) return false;
      if (u128{a.uva} < u128{b.uva} + b.size && u128{b.uva} < u128{a.uva} + a.size) return false;
    }
  }
  return true;
}

std::shared_ptr<MemTable> Build(const std::vector<Ref>& v) {
  std::vector<Region> regions;
  for (const Ref& r : v) {
    Region x;
    x.gpa = r.gpa;
    x.size = r.size;
    x.uva = r.uva;
    x.map = Mapping::Borrow(r.host, r.size);
    regions.push_back(std::move(x));
  }
  std::string err;
  auto t = MemTable::Build(std::move(regions), &err);
  FUZZ_CHECK(t || !err.empty(), "Build refused without saying why");
  return t;
}

// The model of a built table: regions sorted by gpa.
struct Model {
  std::vector<Ref> r;

  int Find(uint64_t a) const {
    for (size_t i = 0; i < r.size(); i++) {
      if (a >= r[i].gpa && u128{a} < u128{r[i].gpa} + r[i].size) return static_cast<int>(i);
    }
    return -1;
  }
  // TranslateGpa: covered in full by adjacent regions?
  const uint8_t* Gpa(uint64_t a, uint64_t len, uint64_t* here, uint32_t* region) const {
    const int i = Find(a);
    if (i < 0) return nullptr;
    const uint64_t off = a - r[i].gpa;
    const uint64_t h = std::min<uint64_t>(len, r[i].size - off);
    u128 covered_to = u128{r[i].gpa} + r[i].size;
    const u128 want = u128{a} + len;
    for (size_t j = static_cast<size_t>(i) + 1; covered_to < want; j++) {
      if (j >= r.size() || r[j].gpa != covered_to) return nullptr;
      covered_to += r[j].size;
    }
    *here = h;
    *region = static_cast<uint32_t>(i);
    return r[i].host + off;
  }
  const uint8_t* GpaContiguous(uint64_t a, uint64_t len) const {
    const int i = Find(a);
    if (i < 0) return nullptr;
    if (u128{a} + len > u128{r[i].gpa} + r[i].size) return nullptr;
    return r[i].host + (a - r[i].gpa);
  }
  const uint8_t* UvaContiguous(uint64_t a, uint64_t len) const {
    for (const Ref& x : r) {
      if (a >= x.uva && u128{a} + len <= u128{x.uva} + x.size && (len > 0 || u128{a} < u128{x.uva} + x.size)) {
        return x.host + (a - x.uva);
      }
    }
    return nullptr;
  }
  bool UvaToGpa(uint64_t a, uint64_t* gpa) const {
    for (const Ref& x : r) {
      if (a >= x.uva && u128{a} < u128{x.uva} + x.size) {
        *gpa = x.gpa + (a - x.uva);
        return true;
      }
    }
    return false;
  }
};

Model ModelOf(std::vector<Ref> v) {
  std::sort(v.begin(), v.end(), [](const Ref& a, const Ref& b) { return a.gpa < b.gpa; });
  return Model{std::move(v)};
}

// The table's regions in its order are the model's.
void CheckTable(const MemTable& t, const Model& m) {
  FUZZ_CHECK(t.regions().size() == m.r.size(), "table has %zu regions, model %zu", t.regions().size(), m.r.size());
  for (size_t i = 0; i < m.r.size(); i++) {
    const Region& x = t.regions()[i];
    FUZZ_CHECK(x.gpa == m.r[i].gpa && x.size == m.r[i].size && x.host() == m.r[i].host, "region %zu differs from the model", i);
  }
}

uint64_t Addr(Input& in, const Model& m) {
  const uint8_t s = in.U8();
  if (m.r.empty() || (s & 3) == 0) return in.U64();
  const Ref& r = m.r[(s >> 2) % m.r.size()];
  switch (s & 3) {
    case 1: return r.gpa + in.U32();
    case 2: return r.gpa + r.size - in.U16();
    default: {
      const uint64_t up = in.U32();
      return r.uva + up - in.U16();
    }
  }
}

uint64_t Length(Input& in) {
  const uint8_t s = in.U8();
  switch (s & 3) {
    case 0: return s >> 2;
    case 1: return in.U16();
    case 2: return in.U32();
    default: return in.U64();
  }
}

struct LogFile {
  int fd = -1;
  uint8_t* view = nullptr;
  std::shared_ptr<DirtyLog> log;
  LogFile() {
    fd = memfd_create("fuzz-memory", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, 8192) != 0) Die("memfd");
    view = static_cast<uint8_t*>(mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (view == MAP_FAILED) Die("mmap");
    std::string err;
    log = DirtyLog::Map(fd, 4096, 0, &err);
    if (!log) Die("dirty log: %s", err.c_str());
  }
};

LogFile& Log() {
  static LogFile f;
  return f;
}

void CheckMark(uint64_t gpa, uint64_t len) {
  LogFile& f = Log();
  memset(f.view, 0, 8192);
  f.log->Mark(gpa, len);
  // Reference: pages [gpa >> 12, (gpa + len - 1) >> 12] (to the end of u64), those < 32768.
  uint64_t first = gpa >> 12, last = 0;
  if (len > 0) {
    const u128 end = u128{gpa} + len - 1;
    last = end > ~uint64_t{0} ? (~uint64_t{0} >> 12) : static_cast<uint64_t>(end >> 12);
  }
  for (uint64_t page = 0; page < 8192 * 8; page++) {
    const bool set = (f.view[page >> 3] >> (page & 7)) & 1;
    const bool want = len > 0 && page < 4096 * 8 && page >= first && page <= last;
    FUZZ_CHECK(set == want, "Mark(0x%llx, %llu): page %llu is %s", static_cast<unsigned long long>(gpa),
               static_cast<unsigned long long>(len), static_cast<unsigned long long>(page), set ? "set" : "clear");
  }
}

void CheckMap(uint64_t size, uint64_t off) {
  LogFile& f = Log();  // its memfd is 8192 bytes
  std::string err;
  auto m = Mapping::Map(f.fd, size, off, &err);
  const bool want = size > 0 && u128{off} + size <= 8192;
  FUZZ_CHECK((m != nullptr) == want, "Mapping::Map(size %llu, offset %llu): %s", static_cast<unsigned long long>(size),
             static_cast<unsigned long long>(off), m ? "mapped" : err.c_str());
  if (m) {
    FUZZ_CHECK(m->size() == size, "mapping size");
    volatile uint8_t x = m->host()[size - 1];  // readable to its last byte
    (void)x;
  }
}

bool Queryable(const std::vector<Ref>& v) {
  for (const Ref& r : v) {
    if (r.size >= kFakeSpan) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint32_t n = in.U8() % 67;
  std::vector<Ref> v;
  uint32_t next_host = 0;
  auto fake = [&]() { return reinterpret_cast<uint8_t*>(kFakeBase + kFakeSpan * (next_host++ % 64)); };
  for (uint32_t i = 0; i < n; i++) {
    Ref r;
    r.gpa = in.U64();
    r.size = Size(in);
    r.uva = in.U64();
    r.host = fake();
    v.push_back(r);
  }
  auto t = Build(v);
  FUZZ_CHECK((t != nullptr) == RefBuildOk(v), "Build %s a table the model %s", t ? "accepted" : "refused", t ? "refuses" : "accepts");
  if (!t) return 0;
  Model m = ModelOf(v);
  CheckTable(*t, m);
  for (int ops = 0; ops < 256 && !in.done(); ops++) {
    const uint8_t op = in.U8() % 8;
    const bool q = Queryable(m.r);
    switch (op) {
      case 0: {
        const uint64_t a = Addr(in, m), len = Length(in);
        if (!q) break;
        uint64_t h1 = 0, h2 = 0;
        uint32_t r1 = 0, r2 = 0;
        const uint8_t* p1 = t->TranslateGpa(a, len, &h1, &r1);
        const uint8_t* p2 = m.Gpa(a, len, &h2, &r2);
        FUZZ_CHECK(p1 == p2, "TranslateGpa(0x%llx, %llu): %p, model %p", static_cast<unsigned long long>(a),
                   static_cast<unsigned long long>(len), static_cast<const void*>(p1), static_cast<const void*>(p2));
        if (p1) FUZZ_CHECK(h1 == h2 && r1 == r2, "TranslateGpa: contiguous %llu region %u, model %llu %u",
                           static_cast<unsigned long long>(h1), r1, static_cast<unsigned long long>(h2), r2);
        break;
      }
      case 1: {
        const uint64_t a = Addr(in, m), len = Length(in);
        if (!q) break;
        FUZZ_CHECK(t->TranslateGpaContiguous(a, len) == m.GpaContiguous(a, len), "TranslateGpaContiguous(0x%llx, %llu)",
                   static_cast<unsigned long long>(a), static_cast<unsigned long long>(len));
        break;
      }
      case 2: {
        const uint64_t a = Addr(in, m), len = Length(in);
        if (!q) break;
        FUZZ_CHECK(t->TranslateUvaContiguous(a, len) == m.UvaContiguous(a, len), "TranslateUvaContiguous(0x%llx, %llu)",
                   static_cast<unsigned long long>(a), static_cast<unsigned long long>(len));
        break;
      }
      case 3: {
        const uint64_t a = Addr(in, m);
        const uint32_t len = in.U32();
        if (!q) break;
        uint64_t g1 = 0, g2 = 0;
        const bool b1 = t->UvaToGpa(a, &g1), b2 = m.UvaToGpa(a, &g2);
        FUZZ_CHECK(b1 == b2 && (!b1 || g1 == g2), "UvaToGpa(0x%llx)", static_cast<unsigned long long>(a));
        if (len == 0) break;
        uint32_t region = 0;
        const uint8_t* p = t->TranslateHinted(a, len, &region);
        if (p) {
          // A hit is the one-region translation.
          FUZZ_CHECK(p == m.GpaContiguous(a, len) && region < m.r.size() && a >= m.r[region].gpa,
                     "TranslateHinted(0x%llx, %u) = %p", static_cast<unsigned long long>(a), len, static_cast<const void*>(p));
        }
        break;
      }
      case 4: {  // ADD_MEM_REG
        Ref r;
        r.gpa = in.U64();
        r.size = Size(in);
        r.uva = in.U64();
        r.host = fake();
        if (m.r.size() >= kMaxRegions) break;  // the binding refuses before building
        std::vector<Ref> nv = m.r;
        nv.push_back(r);
        auto nt = Build(nv);
        FUZZ_CHECK((nt != nullptr) == RefBuildOk(nv), "ADD_MEM_REG: Build disagrees with the model");
        if (nt) {
          t = nt;
          m = ModelOf(nv);
          CheckTable(*t, m);
        }
        break;
      }
      case 5: {  // REM_MEM_REG
        const uint8_t k = in.U8();
        if (m.r.empty()) break;
        std::vector<Ref> nv = m.r;
        nv.erase(nv.begin() + (k % nv.size()));
        auto nt = Build(nv);
        FUZZ_CHECK(nt != nullptr, "REM_MEM_REG: a subset of a valid table refused");
        t = nt;
        m = ModelOf(nv);
        CheckTable(*t, m);
        break;
      }
      case 6: {
        const uint64_t a = Addr(in, m), len = Length(in);
        CheckMark(a, len);
        break;
      }
      default: {
        const uint64_t s = Length(in), off = Length(in);
        CheckMap(s, off);
        break;
      }
    }
  }
  return 0;
}
