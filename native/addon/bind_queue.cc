// JavaScript surface of a virtqueue. A burst crosses into C++ once per pop() and once
// per push(); chains and used elements travel in typed arrays that JavaScript allocated
// once and handed over at construction (kept alive by references held here).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "addon/bindings.h"
#include "addon/handles.h"
#include "ring/virtqueue.h"

namespace vhostkit {
namespace {

template <typename T>
T* ArrayPtr(Napi::Object o, const char* key, napi_typedarray_type type, size_t min_len) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
    throw Napi::TypeError::New(o.Env(), std::string("burst array '") + key + "' has the wrong type");
  }
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  if (ta.ElementLength() < min_len) {
    throw Napi::RangeError::New(o.Env(), std::string("burst array '") + key + "' holds " + std::to_string(ta.ElementLength()) +
                                             " elements, at least " + std::to_string(min_len) + " needed");
  }
  return reinterpret_cast<T*>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
}

uint64_t BigU64(const Napi::Value& v, const char* what) {
  if (!v.IsBigInt()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a bigint");
  bool lossless = false;
  const uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(v.Env(), std::string(what) + " does not fit in 64 bits");
  return r;
}

class QueueWrap;

// This thread's live queue wrappers by slot: the per-burst native calls name a queue by its
// slot (a bounds-checked array lookup) instead of passing the object (an instanceof
// check and an unwrap cost more than delivering a small frame). JS objects live on the
// thread that made them, so the table is per thread; a wrapper frees its slot when it is
// finalized.
struct SlotTable {
  std::vector<QueueWrap*> live;
  std::vector<uint32_t> free;
};
SlotTable& Slots() {
  thread_local SlotTable t;
  return t;
}

class QueueWrap : public Napi::ObjectWrap<QueueWrap> {
 public:
  ~QueueWrap() override {
    SlotTable& t = Slots();
    if (slot_ < t.live.size() && t.live[slot_] == this) {
      t.live[slot_] = nullptr;
      t.free.push_back(slot_);
    }
  }

  QueueView View() { return {q_.get(), &out_, used_id_, used_len_, out_.max_chains}; }

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Virtqueue",
                       {InstanceMethod<&QueueWrap::SetFeatures>("setFeatures"),
                        InstanceMethod<&QueueWrap::SetMemory>("setMemory"),
                        InstanceMethod<&QueueWrap::SetRings>("setRings"),
                        InstanceMethod<&QueueWrap::Detach>("detach"),
                        InstanceMethod<&QueueWrap::SetDirtyLog>("setDirtyLog"),
                        InstanceMethod<&QueueWrap::SetKeepWritten>("setKeepWritten"),
                        InstanceMethod<&QueueWrap::SetInflight>("setInflight"),
                        InstanceMethod<&QueueWrap::ResubmitPending>("resubmitPending"),
                        InstanceMethod<&QueueWrap::SetRingRecord>("setRingRecord"),
                        InstanceMethod<&QueueWrap::ForgetRingRecord>("forgetRingRecord"),
                        InstanceMethod<&QueueWrap::RingRecordState>("ringRecordState"),
                        InstanceMethod<&QueueWrap::GetBase>("getBase"),
                        InstanceMethod<&QueueWrap::SetBase>("setBase"),
                        InstanceMethod<&QueueWrap::SyncUsed>("syncUsedFromRing"),
                        InstanceMethod<&QueueWrap::SetCallFd>("setCallFd"),
                        InstanceMethod<&QueueWrap::Pop>("pop"),
                        InstanceMethod<&QueueWrap::Push>("push"),
                        InstanceMethod<&QueueWrap::Unpop>("unpop"),
                        InstanceMethod<&QueueWrap::Signal>("signal"),
                        InstanceMethod<&QueueWrap::SetNotify>("setNotify"),
                        InstanceMethod<&QueueWrap::HasAvail>("hasAvail"),
                        InstanceMethod<&QueueWrap::AvailCount>("availCount"),
                        InstanceMethod<&QueueWrap::Error>("error"),
                        InstanceMethod<&QueueWrap::ErrorDetail>("errorDetail"),
                        InstanceMethod<&QueueWrap::InFlight>("inFlight"),
                        InstanceMethod<&QueueWrap::Park>("park"),
                        InstanceAccessor<&QueueWrap::Packed>("packed"),
                        InstanceAccessor<&QueueWrap::Size>("size")});
  }

  // new Virtqueue(packed, size, arrays, maxChains, maxSegs), or
  // new Virtqueue(token, 0, arrays, maxChains, maxSegs) to claim a queue parked by another thread.
  explicit QueueWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<QueueWrap>(info) {
    Napi::Env env = info.Env();
    const bool claim = info[0].IsNumber();
    const bool packed = claim ? false : info[0].As<Napi::Boolean>().Value();
    const uint32_t size = info[1].As<Napi::Number>().Uint32Value();
    Napi::Object arrays = info[2].As<Napi::Object>();
    const uint32_t max_chains = info[3].As<Napi::Number>().Uint32Value();
    const uint32_t max_segs = info[4].As<Napi::Number>().Uint32Value();
    if (max_chains == 0 || max_chains > 1024) throw Napi::RangeError::New(env, "burst of 1..1024 chains");
    if (max_segs < kMaxChainSegs) {
      throw Napi::RangeError::New(env, "burst segment capacity must be at least " + std::to_string(kMaxChainSegs));
    }
    if (claim) {
      q_ = std::static_pointer_cast<Virtqueue>(ClaimHandle(HandleKind::kQueue, info[0].As<Napi::Number>().Uint32Value()));
      if (!q_) throw Napi::Error::New(env, "no parked queue with that token");
    } else {
      std::string err;
      q_ = Virtqueue::Create(packed, size, &err);
      if (!q_) throw Napi::RangeError::New(env, err);
    }
    out_.max_chains = max_chains;
    out_.max_segs = max_segs;
    out_.head = ArrayPtr<uint16_t>(arrays, "head", napi_uint16_array, max_chains);
    out_.first_seg = ArrayPtr<uint32_t>(arrays, "firstSeg", napi_uint32_array, max_chains + 1);
    out_.read_len = ArrayPtr<uint32_t>(arrays, "readLen", napi_uint32_array, max_chains);
    out_.write_len = ArrayPtr<uint32_t>(arrays, "writeLen", napi_uint32_array, max_chains);
    out_.seg_region = ArrayPtr<uint32_t>(arrays, "segRegion", napi_uint32_array, max_segs);
    out_.seg_offset = ArrayPtr<double>(arrays, "segOffset", napi_float64_array, max_segs);
    out_.seg_len = ArrayPtr<uint32_t>(arrays, "segLen", napi_uint32_array, max_segs);
    out_.seg_flags = ArrayPtr<uint8_t>(arrays, "segFlags", napi_uint8_array, max_segs);
    used_id_ = ArrayPtr<uint16_t>(arrays, "usedId", napi_uint16_array, max_chains);
    used_len_ = ArrayPtr<uint32_t>(arrays, "usedLen", napi_uint32_array, max_chains);
    // The arrays stay alive as long as this object: a property of it, not an N-API
    // reference (references deleted by our destructor during environment teardown, when
    // Node has already freed them, corrupt the heap of a worker thread that exits).
    info.This().As<Napi::Object>().DefineProperty(Napi::PropertyDescriptor::Value("__arrays", arrays, napi_default));
    // The slot is published (read-only) before it is taken: nothing after this can throw
    // and leave the table pointing at a wrapper that was never constructed.
    SlotTable& t = Slots();
    const uint32_t slot = t.free.empty() ? static_cast<uint32_t>(t.live.size()) : t.free.back();
    info.This().As<Napi::Object>().DefineProperty(
        Napi::PropertyDescriptor::Value("slot", Napi::Number::New(env, slot), napi_enumerable));
    if (t.free.empty()) {
      t.live.push_back(this);
    } else {
      t.free.pop_back();
      t.live[slot] = this;
    }
    slot_ = slot;
  }

 private:
  void Throw(Napi::Env env, VqError e, const std::string& detail) {
    Napi::Error err = Napi::Error::New(env, std::string(VqErrorName(e)) + ": " + detail);
    err.Set("code", Napi::String::New(env, VqErrorName(e)));
    throw err;
  }

  Napi::Value SetFeatures(const Napi::CallbackInfo& info) {
    q_->SetFeatures(info[0].As<Napi::Boolean>().Value(), info[1].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  }

  Napi::Value SetMemory(const Napi::CallbackInfo& info) {
    if (info[0].IsNull() || info[0].IsUndefined()) {
      q_->SetMemory(nullptr);
    } else {
      q_->SetMemory(UnwrapMemTable(info[0]));
    }
    return info.Env().Undefined();
  }

  // setRings(desc, driver, device, guestPhysical): bigint addresses
  Napi::Value SetRings(const Napi::CallbackInfo& info) {
    std::string detail;
    const VqError e = q_->SetRings(BigU64(info[0], "desc"), BigU64(info[1], "driver"), BigU64(info[2], "device"),
                                   info[3].ToBoolean() ? AddrSpace::kGuestPhysical : AddrSpace::kFrontendVirtual, &detail);
    if (e != VqError::kOk) Throw(info.Env(), e, detail);
    return info.Env().Undefined();
  }

  // setKeepWritten(on): keep each chain's writable ranges from Pop on (Virtqueue::SetKeepWritten)
  Napi::Value SetKeepWritten(const Napi::CallbackInfo& info) {
    q_->SetKeepWritten(info[0].ToBoolean().Value());
    return info.Env().Undefined();
  }

  // setDirtyLog(log | null, usedGpa: bigint | null): usedGpa null = do not log ring writes
  Napi::Value SetDirtyLog(const Napi::CallbackInfo& info) {
    const bool rings = !(info[1].IsNull() || info[1].IsUndefined());
    q_->SetDirtyLog(UnwrapDirtyLog(info[0]), rings, rings ? BigU64(info[1], "usedGpa") : 0);
    return info.Env().Undefined();
  }

  // An area of region 0 of a memory table: (table, offset, len) arguments 0-2. False if
  // the table has no region; throws if the area is outside region 0.
  struct Area {
    std::shared_ptr<MemTable> table;
    uint8_t* host = nullptr;
    uint64_t len = 0;
  };
  static bool AreaArg(const Napi::CallbackInfo& info, const char* what, Area* a) {
    a->table = UnwrapMemTable(info[0]);
    const uint64_t off = BigU64(info[1], "offset");
    a->len = BigU64(info[2], "len");
    if (a->table->regions().empty()) return false;
    const Region& r = a->table->regions()[0];
    if (off > r.size || a->len > r.size - off) throw Napi::RangeError::New(info.Env(), std::string(what) + ": area outside its memory");
    a->host = r.host() + off;
    return true;
  }

  // setInflight(memTable | null, offset, len): this queue's area of the inflight memory
  // (region 0 of the table). Returns false if too small or not supported for the layout.
  Napi::Value SetInflight(const Napi::CallbackInfo& info) {
    if (info[0].IsNull() || info[0].IsUndefined()) {
      q_->SetInflight(nullptr, nullptr, 0);
      return Napi::Boolean::New(info.Env(), true);
    }
    Area a;
    if (!AreaArg(info, "setInflight", &a)) return Napi::Boolean::New(info.Env(), false);
    return Napi::Boolean::New(info.Env(), q_->SetInflight(std::move(a.table), a.host, a.len));
  }

  // setRingRecord(memTable | null, offset, len, frontendBase): this queue's ring position
  // record (region 0 of the table). Returns false if too small or the layout keeps none.
  Napi::Value SetRingRecord(const Napi::CallbackInfo& info) {
    if (info[0].IsNull() || info[0].IsUndefined()) {
      q_->SetRingRecord(nullptr, nullptr, 0, 0);
      return Napi::Boolean::New(info.Env(), true);
    }
    Area a;
    if (!AreaArg(info, "setRingRecord", &a)) return Napi::Boolean::New(info.Env(), false);
    return Napi::Boolean::New(info.Env(), q_->SetRingRecord(std::move(a.table), a.host, a.len, info[3].As<Napi::Number>().Uint32Value()));
  }

  Napi::Value ForgetRingRecord(const Napi::CallbackInfo& info) {
    q_->ForgetRingRecord();
    return info.Env().Undefined();
  }

  // 0 none, 1 fresh, 2 recovered, 3 out of order (Virtqueue::RecordState)
  Napi::Value RingRecordState(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<int32_t>(q_->record_state()));
  }

  Napi::Value ResubmitPending(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), q_->resubmit_pending());
  }

  Napi::Value Detach(const Napi::CallbackInfo& info) {
    q_->Detach();
    return info.Env().Undefined();
  }

  Napi::Value GetBase(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), q_->GetBase()); }

  Napi::Value SetBase(const Napi::CallbackInfo& info) {
    const VqError e = q_->SetBase(info[0].As<Napi::Number>().Uint32Value());
    if (e != VqError::kOk) Throw(info.Env(), e, q_->error_detail());
    return info.Env().Undefined();
  }

  Napi::Value SyncUsed(const Napi::CallbackInfo& info) {
    q_->SyncUsedFromRing();
    return info.Env().Undefined();
  }

  // setCallFd(fd | -1): where push() signals the driver. The queue keeps its own
  // non-blocking duplicate, so the caller may close fd; safe while another thread pushes.
  Napi::Value SetCallFd(const Napi::CallbackInfo& info) {
    const int fd = info[0].As<Napi::Number>().Int32Value();
    if (fd >= 0 && fcntl(fd, F_GETFL) < 0) throw Napi::Error::New(info.Env(), "setCallFd: not an open fd");
    q_->SetCallFd(fd);
    return info.Env().Undefined();
  }

  // park() -> token: hands the queue to another thread (new Virtqueue(token, ...) there).
  Napi::Value Park(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), ParkHandle(HandleKind::kQueue, q_));
  }
  Napi::Value Packed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), q_->packed()); }
  Napi::Value Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), q_->size()); }

  Napi::Value Pop(const Napi::CallbackInfo& info) {
    const uint32_t max = info.Length() > 0 ? info[0].As<Napi::Number>().Uint32Value() : out_.max_chains;
    return Napi::Number::New(info.Env(), q_->Pop(out_, max));
  }

  // push(n): used elements from usedId/usedLen. Returns 1 if the driver wanted a
  // notification (sent if a call fd is set), 0 if not, -1 if an id was not in flight.
  Napi::Value Push(const Napi::CallbackInfo& info) {
    const uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    if (n > out_.max_chains) throw Napi::RangeError::New(info.Env(), "push of more than the burst size");
    const int32_t r = q_->Push(used_id_, used_len_, n);
    if (r == 1) q_->Signal();
    return Napi::Number::New(info.Env(), r);
  }

  // unpop(ids: number[]): gives back the last chains popped (ids in pop order).
  Napi::Value Unpop(const Napi::CallbackInfo& info) {
    if (!info[0].IsArray()) throw Napi::TypeError::New(info.Env(), "unpop: an array of ids");
    const Napi::Array a = info[0].As<Napi::Array>();
    if (a.Length() > out_.max_chains) throw Napi::RangeError::New(info.Env(), "unpop of more than the burst size");
    std::vector<uint16_t> ids;
    for (uint32_t i = 0; i < a.Length(); i++) {
      const uint32_t id = a.Get(i).As<Napi::Number>().Uint32Value();
      if (id > 0xffff) throw Napi::RangeError::New(info.Env(), "unpop: id out of range");
      ids.push_back(static_cast<uint16_t>(id));
    }
    q_->Unpop(ids.data(), static_cast<uint32_t>(ids.size()));
    return info.Env().Undefined();
  }

  Napi::Value Signal(const Napi::CallbackInfo& info) {
    q_->Signal();
    return info.Env().Undefined();
  }

  Napi::Value SetNotify(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), q_->SetNotify(info[0].As<Napi::Boolean>().Value()));
  }
  Napi::Value HasAvail(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), q_->HasAvail()); }
  Napi::Value AvailCount(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), q_->AvailCount()); }
  Napi::Value Error(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<int32_t>(q_->error()));
  }
  Napi::Value ErrorDetail(const Napi::CallbackInfo& info) {
    if (q_->error() == VqError::kOk) return info.Env().Null();
    return Napi::String::New(info.Env(), std::string(VqErrorName(q_->error())) + ": " + q_->error_detail());
  }
  Napi::Value InFlight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), q_->in_flight()); }

  std::shared_ptr<Virtqueue> q_;
  BurstArrays out_;
  uint16_t* used_id_ = nullptr;
  uint32_t* used_len_ = nullptr;
  uint32_t slot_ = UINT32_MAX;  // in Slots(); set once the constructor can no longer throw
};

Napi::Value ErrorNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  for (int32_t i = 0; i <= static_cast<int32_t>(VqError::kGuestMemoryLost); i++) {
    o.Set(static_cast<uint32_t>(i), Napi::String::New(env, VqErrorName(static_cast<VqError>(i))));
  }
  return o;
}

}  // namespace

bool QueueBySlot(uint32_t slot, QueueView* v) {
  const SlotTable& t = Slots();
  if (slot >= t.live.size() || t.live[slot] == nullptr) return false;
  *v = t.live[slot]->View();
  return true;
}

QueueView UnwrapQueue(Napi::Value v) {
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    const SlotTable& t = Slots();
    if (d >= 0 && d < static_cast<double>(t.live.size())) {
      QueueWrap* w = t.live[static_cast<size_t>(d)];
      if (w != nullptr && static_cast<double>(static_cast<size_t>(d)) == d) return w->View();
    }
    throw Napi::TypeError::New(v.Env(), "expected a native Virtqueue slot; no live queue has slot " + std::to_string(d));
  }
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(GetAddonData(v.Env()).queue_ctor.Value())) {
    throw Napi::TypeError::New(v.Env(), "expected a native Virtqueue");
  }
  return QueueWrap::Unwrap(v.As<Napi::Object>())->View();
}

void BindQueue(Napi::Env env, Napi::Object exports) {
  Napi::Function f = QueueWrap::Define(env);
  GetAddonData(env).queue_ctor = Napi::Persistent(f);
  exports.Set("Virtqueue", f);
  exports.Set("vqErrorNames", Napi::Function::New(env, ErrorNames));
  exports.Set("maxChainSegs", Napi::Number::New(env, kMaxChainSegs));
  // A driver written in JavaScript publishes avail idx (or descriptor flags) with plain
  // stores and must not read the device's kick threshold before they are visible: the
  // store-load barrier of Linux's virtio_mb() / the spec's "full memory barrier" (x86
  // mfence or a locked op, arm64 dmb ish). The call itself also keeps the JIT from moving
  // guest-memory accesses across it.
  exports.Set("fullFence", Napi::Function::New(env, [](const Napi::CallbackInfo&) { FullFence(); }));
}

}  // namespace vhostkit
