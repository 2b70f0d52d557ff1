// JavaScript surface of guest memory: memfd creation and the MemTable class.
//
// Region ArrayBuffers handed to JavaScript (buffer(i)) are external buffers over the
// mapping. Each keeps the mapping alive until it is collected, and close() detaches
// every buffer it handed out, so no JavaScript view can reach memory after close().
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "addon/bindings.h"
#include "memory/dirty_log.h"
#include "addon/handles.h"
#include "memory/memory.h"

namespace vhostkit {
namespace {

uint64_t ToU64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    const uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(v.Env(), std::string(what) + " does not fit in 64 bits");
    return r;
  }
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
      throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a non-negative integer");
    }
    return static_cast<uint64_t>(d);
  }
  throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a bigint or a number");
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const uint64_t size = ToU64(info[1], "size");
  // Third argument false: a memfd that cannot be sealed (as some frontends create them),
  // for tests of a frontend that truncates guest memory under the backend.
  const bool sealing = info.Length() < 3 || !info[2].IsBoolean() || info[2].As<Napi::Boolean>().Value();
  const int fd = memfd_create(name.c_str(), MFD_CLOEXEC | (sealing ? MFD_ALLOW_SEALING : 0u));
  if (fd < 0) throw Napi::Error::New(env, std::string("memfd_create: ") + strerror(errno));
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    close(fd);
    throw Napi::Error::New(env, std::string("ftruncate memfd: ") + strerror(e));
  }
  return Napi::Number::New(env, fd);
}

class MemTableWrap : public Napi::ObjectWrap<MemTableWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "MemTable",
                       {InstanceMethod<&MemTableWrap::Regions>("regions"),
                        InstanceMethod<&MemTableWrap::Buffer>("buffer"),
                        InstanceMethod<&MemTableWrap::Translate>("translate"),
                        InstanceMethod<&MemTableWrap::TranslateUva>("translateUva"),
                        InstanceMethod<&MemTableWrap::WithRegion>("withRegion"),
                        InstanceMethod<&MemTableWrap::WithoutRegion>("withoutRegion"),
                        InstanceMethod<&MemTableWrap::Park>("park"),
                        InstanceMethod<&MemTableWrap::LostRegions>("lostRegions"),
                        InstanceMethod<&MemTableWrap::Close>("close")});
  }

  // new MemTable([{ fd, gpa, size, uva, mmapOffset }, ...]) maps every region (the fds
  // stay owned by the caller). new MemTable(external) wraps an already built table.
  explicit MemTableWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MemTableWrap>(info) {
    Napi::Env env = info.Env();
    if (info[0].IsExternal()) {
      // Take the table out of the External: a copy left there would keep the mappings alive
      // after close() until the External is garbage-collected.
      table_ = std::move(*info[0].As<Napi::External<std::shared_ptr<MemTable>>>().Data());
      return;
    }
    if (info[0].IsNumber()) {  // a table parked by another thread
      table_ = std::static_pointer_cast<MemTable>(ClaimHandle(HandleKind::kMemTable, info[0].As<Napi::Number>().Uint32Value()));
      if (!table_) throw Napi::Error::New(env, "no parked memory table with that token");
      return;
    }
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, "MemTable: expected an array of regions");
    Napi::Array arr = info[0].As<Napi::Array>();
    if (arr.Length() > kMaxRegions) {
      throw Napi::RangeError::New(env, "MemTable: " + std::to_string(arr.Length()) + " regions, at most " + std::to_string(kMaxRegions));
    }
    std::vector<Region> regions;
    for (uint32_t i = 0; i < arr.Length(); i++) regions.push_back(MapRegion(env, arr.Get(i).As<Napi::Object>()));
    table_ = BuildOrThrow(env, std::move(regions));
  }

  std::shared_ptr<MemTable> table() const { return table_; }

 private:
  static Region MapRegion(Napi::Env env, Napi::Object o) {
    Region r;
    const int fd = o.Get("fd").As<Napi::Number>().Int32Value();
    r.gpa = ToU64(o.Get("gpa"), "gpa");
    r.size = ToU64(o.Get("size"), "size");
    r.uva = ToU64(o.Get("uva"), "uva");
    r.mmap_offset = ToU64(o.Get("mmapOffset"), "mmapOffset");
    std::string err;
    r.map = Mapping::Map(fd, r.size, r.mmap_offset, &err);
    if (!r.map) {
      Napi::Error e = Napi::Error::New(env, "region gpa 0x" + Hex(r.gpa) + ": " + err);
      e.Set("code", Napi::String::New(env, "REGION_MAP"));
      throw e;
    }
    return r;
  }

  static std::string Hex(uint64_t v) {
    char b[24];
    snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(v));
    return b;
  }

  static std::shared_ptr<MemTable> BuildOrThrow(Napi::Env env, std::vector<Region> regions) {
    std::string err;
    auto t = MemTable::Build(std::move(regions), &err);
    if (!t) {
      Napi::Error e = Napi::Error::New(env, "memory table: " + err);
      e.Set("code", Napi::String::New(env, "MEM_TABLE"));
      throw e;
    }
    return t;
  }

  static Napi::Value Wrap(Napi::Env env, std::shared_ptr<MemTable> t) {
    auto* holder = new std::shared_ptr<MemTable>(std::move(t));
    auto ext = Napi::External<std::shared_ptr<MemTable>>::New(env, holder, [](Napi::Env, std::shared_ptr<MemTable>* h) { delete h; });
    return GetAddonData(env).mem_table_ctor.New({ext});
  }

  void Check(Napi::Env env) const {
    if (!table_) throw Napi::Error::New(env, "MemTable is closed");
  }

  static Napi::Object Describe(Napi::Env env, const Region& r) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("gpa", Napi::BigInt::New(env, r.gpa));
    o.Set("size", Napi::BigInt::New(env, r.size));
    o.Set("uva", Napi::BigInt::New(env, r.uva));
    o.Set("mmapOffset", Napi::BigInt::New(env, r.mmap_offset));
    o.Set("sealed", Napi::Boolean::New(env, r.map->sealed()));
  o.Set("guarded", Napi::Boolean::New(env, r.map->guarded()));
    return o;
  }

  Napi::Value Regions(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Check(env);
    Napi::Array a = Napi::Array::New(env, table_->regions().size());
    for (uint32_t i = 0; i < table_->regions().size(); i++) a.Set(i, Describe(env, table_->regions()[i]));
    return a;
  }

  Napi::Value Buffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Check(env);
    const uint32_t i = info[0].As<Napi::Number>().Uint32Value();
    if (i >= table_->regions().size()) throw Napi::RangeError::New(env, "no region " + std::to_string(i));
    const Region& r = table_->regions()[i];
    if (r.size > (uint64_t{1} << 32) * 4) throw Napi::RangeError::New(env, "region too large for an ArrayBuffer");
    // The buffer holds the mapping through a ViewHold, shared by its finalizer hint and by
    // this table: close() detaches the buffer and drops the mapping at once, without
    // waiting for the collector to run the finalizer (which only frees the hold).
    auto hold = std::make_shared<ViewHold>(ViewHold{r.map});
    holds_.push_back(hold);
    auto* hint = new std::shared_ptr<ViewHold>(std::move(hold));
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, r.host(), r.size,
                                                  [](Napi::Env, void*, std::shared_ptr<ViewHold>* h) { delete h; }, hint);
    // Remember the buffer as a property of this object (not an N-API reference: see
    // bind_queue.cc), so close() can detach it.
    Napi::Object self = Value();
    Napi::Value list = self.Get("__views");
    if (!list.IsArray()) {
      list = Napi::Array::New(env);
      self.DefineProperty(Napi::PropertyDescriptor::Value("__views", list, napi_writable));
    }
    Napi::Array arr = list.As<Napi::Array>();
    arr.Set(arr.Length(), ab);
    return ab;
  }

  // translate(gpa, len) -> { region, offset, contiguous } or null
  Napi::Value Translate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Check(env);
    const uint64_t gpa = ToU64(info[0], "gpa");
    const uint64_t len = ToU64(info[1], "len");
    uint64_t here = 0;
    uint32_t region = 0;
    const uint8_t* p = table_->TranslateGpa(gpa, len == 0 ? 1 : len, &here, &region);
    if (p == nullptr) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("region", region);
    o.Set("offset", static_cast<double>(p - table_->regions()[region].host()));
    o.Set("contiguous", static_cast<double>(here));
    return o;
  }

  // translateUva(uva, len) -> { region, offset } or null (range must lie in one region)
  Napi::Value TranslateUva(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Check(env);
    const uint64_t uva = ToU64(info[0], "uva");
    const uint64_t len = ToU64(info[1], "len");
    const uint8_t* p = table_->TranslateUvaContiguous(uva, len);
    if (p == nullptr) return env.Null();
    for (uint32_t i = 0; i < table_->regions().size(); i++) {
      const Region& r = table_->regions()[i];
      if (p >= r.host() && p < r.host() + r.size) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("region", i);
        o.Set("offset", static_cast<double>(p - r.host()));
        return o;
      }
    }
    return env.Null();
  }

  // withRegion({fd, gpa, size, uva, mmapOffset}) -> a new table: these regions plus one.
  Napi::Value WithRegion(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Check(env);
    std::vector<Region> regions = table_->regions();
    if (regions.size() >= kMaxRegions) {
      throw Napi::RangeError::New(env, "memory table: already " + std::to_string(regions.size()) + " regions, at most " + std::to_string(kMaxRegions));
    }
    regions.push_back(MapRegion(env, info[0].As<Napi::Object>()));
    return Wrap(env, BuildOrThrow(env, std::move(regions)));
  }

  // withoutRegion(gpa, size, uva) -> a new table without the region that matches exactly.
  Napi::Value WithoutRegion(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Check(env);
    const uint64_t gpa = ToU64(info[0], "gpa");
    const uint64_t size = ToU64(info[1], "size");
    const uint64_t uva = ToU64(info[2], "uva");
    std::vector<Region> regions;
    bool found = false;
    for (const Region& r : table_->regions()) {
      if (!found && r.gpa == gpa && r.size == size && r.uva == uva) {
        found = true;
        continue;
      }
      regions.push_back(r);
    }
    if (!found) {
      Napi::Error e = Napi::Error::New(env, "memory table: no region at gpa 0x" + Hex(gpa) + " of size 0x" + Hex(size));
      e.Set("code", Napi::String::New(env, "MEM_TABLE"));
      throw e;
    }
    return Wrap(env, BuildOrThrow(env, std::move(regions)));
  }

  // lostRegions() -> indices of the regions whose file was truncated under the mapping
  // (guest_fault.h); [] once closed.
  Napi::Value LostRegions(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env);
    if (!table_) return a;
    for (uint32_t i = 0; i < table_->regions().size(); i++) {
      if (table_->regions()[i].map->lost()) a.Set(a.Length(), i);
    }
    return a;
  }

  // park() -> token: another thread builds new MemTable(token) over the same mappings.
  Napi::Value Park(const Napi::CallbackInfo& info) {
    Check(info.Env());
    return Napi::Number::New(info.Env(), ParkHandle(HandleKind::kMemTable, table_));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Object self = Value();
    Napi::Value list = self.Get("__views");
    if (list.IsArray()) {
      Napi::Array arr = list.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value v = arr.Get(i);
        if (v.IsArrayBuffer() && !v.As<Napi::ArrayBuffer>().IsDetached()) v.As<Napi::ArrayBuffer>().Detach();
      }
      self.Set("__views", info.Env().Undefined());
    }
    for (auto& h : holds_) h->map.reset();
    holds_.clear();
    table_.reset();
    return info.Env().Undefined();
  }

  // What a region buffer handed out keeps alive (see Buffer).
  struct ViewHold {
    std::shared_ptr<Mapping> map;
  };
  std::shared_ptr<MemTable> table_;
  std::vector<std::shared_ptr<ViewHold>> holds_;
};

// new DirtyLog(fd, size, offset): maps the frontend's dirty page bitmap (SET_LOG_BASE).
class DirtyLogWrap : public Napi::ObjectWrap<DirtyLogWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DirtyLog",
                       {InstanceMethod<&DirtyLogWrap::Close>("close"), InstanceMethod<&DirtyLogWrap::Mark>("mark"),
                        InstanceMethod<&DirtyLogWrap::Lost>("lost")});
  }
  explicit DirtyLogWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DirtyLogWrap>(info) {
    Napi::Env env = info.Env();
    const int fd = info[0].As<Napi::Number>().Int32Value();
    std::string err;
    log_ = DirtyLog::Map(fd, ToU64(info[1], "size"), ToU64(info[2], "offset"), &err);
    if (!log_) throw Napi::Error::New(env, "dirty log: " + err);
  }
  std::shared_ptr<DirtyLog> log() const { return log_; }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info) {
    log_.reset();
    return info.Env().Undefined();
  }
  // mark(gpa, len): for writes the device makes outside the rings' own bookkeeping.
  Napi::Value Mark(const Napi::CallbackInfo& info) {
    if (log_) log_->Mark(ToU64(info[0], "gpa"), ToU64(info[1], "len"));
    return info.Env().Undefined();
  }
  // lost(): the frontend truncated the log's file under the mapping (false once closed).
  Napi::Value Lost(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), log_ && log_->lost()); }
  std::shared_ptr<DirtyLog> log_;
};

// guestFaultGuard() -> { installed, error, fd, epoch }: the SIGBUS guard of guest memory
// (guest_fault.h); fd is the eventfd written after each recovered fault.
Napi::Value GuestFaultGuard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string err;
  const bool ok = guest_fault::Install(&err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("installed", Napi::Boolean::New(env, ok));
  o.Set("error", ok ? env.Null() : Napi::String::New(env, err));
  o.Set("fd", Napi::Number::New(env, guest_fault::EventFd()));
  o.Set("epoch", Napi::Number::New(env, guest_fault::Epoch()));
  return o;
}

// dropParked(token): forgets a parked table or queue that no thread will claim (the call
// that carried its token failed), releasing what it holds. A token already claimed, or
// unknown, is left alone.
Napi::Value DropParked(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "dropParked(token): token must be a number");
  DropHandle(info[0].As<Napi::Number>().Uint32Value());
  return info.Env().Undefined();
}

}  // namespace

std::shared_ptr<DirtyLog> UnwrapDirtyLog(Napi::Value v) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(GetAddonData(v.Env()).dirty_log_ctor.Value())) {
    throw Napi::TypeError::New(v.Env(), "expected a DirtyLog");
  }
  return DirtyLogWrap::Unwrap(v.As<Napi::Object>())->log();
}

std::shared_ptr<MemTable> UnwrapMemTable(Napi::Value v) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(GetAddonData(v.Env()).mem_table_ctor.Value())) {
    throw Napi::TypeError::New(v.Env(), "expected a MemTable");
  }
  auto t = MemTableWrap::Unwrap(v.As<Napi::Object>())->table();
  if (!t) throw Napi::Error::New(v.Env(), "MemTable is closed");
  return t;
}

void BindMemory(Napi::Env env, Napi::Object exports) {
  Napi::Function f = MemTableWrap::Define(env);
  GetAddonData(env).mem_table_ctor = Napi::Persistent(f);
  exports.Set("MemTable", f);
  Napi::Function dl = DirtyLogWrap::Define(env);
  GetAddonData(env).dirty_log_ctor = Napi::Persistent(dl);
  exports.Set("DirtyLog", dl);
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("dropParked", Napi::Function::New(env, DropParked, "dropParked"));
  exports.Set("maxRegions", Napi::Number::New(env, kMaxRegions));
  // The SIGBUS guard and its eventfd exist from the first load on, before any region is
  // mapped (and before a test counts its fds).
  guest_fault::Install(nullptr);
  exports.Set("guestFaultGuard", Napi::Function::New(env, GuestFaultGuard));
}

}  // namespace vhostkit
