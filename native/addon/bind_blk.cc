// JavaScript surface of the virtio-blk request engine (blk.cc): a BlkEngine class. The
// engine keeps no N-API reference; queues are passed to each call.
#include <cmath>
#include <cstring>

#include "addon/bindings.h"
#include "blk/blk.h"

namespace vhostkit {
namespace {

uint64_t U64Opt(Napi::Object o, const char* key, uint64_t def, uint64_t max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  uint64_t r = 0;
  if (v.IsBigInt()) {
    bool lossless = false;
    r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(o.Env(), std::string(key) + " does not fit in 64 bits");
  } else if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) {
      throw Napi::RangeError::New(o.Env(), std::string(key) + " must be a non-negative integer");
    }
    r = static_cast<uint64_t>(d);
  } else {
    throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number or a bigint");
  }
  if (r > max) throw Napi::RangeError::New(o.Env(), std::string(key) + " is " + std::to_string(r) + ", at most " + std::to_string(max));
  return r;
}

bool BoolOpt(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull() && v.ToBoolean().Value();
}

Napi::Number Num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

class BlkWrap : public Napi::ObjectWrap<BlkWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BlkEngine",
                       {InstanceMethod<&BlkWrap::Submit>("submit"),
                        InstanceMethod<&BlkWrap::Reap>("reap"),
                        InstanceMethod<&BlkWrap::SubmitReap>("submitReap"),
                        InstanceMethod<&BlkWrap::NoteWake>("noteWake"),
                        InstanceMethod<&BlkWrap::WaitIdle>("waitIdle"),
                        InstanceMethod<&BlkWrap::Resize>("resize"),
                        InstanceMethod<&BlkWrap::InFlightOf>("inFlightOf"),
                        InstanceMethod<&BlkWrap::Stats>("stats"),
                        InstanceMethod<&BlkWrap::Close>("close"),
                        InstanceAccessor<&BlkWrap::InFlight>("inFlight"),
                        InstanceAccessor<&BlkWrap::CompletionFd>("completionFd"),
                        InstanceAccessor<&BlkWrap::Capacity>("capacitySectors"),
                        InstanceAccessor<&BlkWrap::ReadOnly>("readOnly"),
                        InstanceAccessor<&BlkWrap::Direct>("direct"),
                        InstanceAccessor<&BlkWrap::Engine>("engine"),
                        InstanceAccessor<&BlkWrap::EngineNote>("engineNote")});
  }

  // new BlkEngine({ fd | ram, capacitySectors, readOnly, serial, threads, engine, direct,
  //                 maxDiscardSectors, maxDiscardSeg, maxWriteZeroesSectors, maxWriteZeroesSeg })
  explicit BlkWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BlkWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "BlkEngine: expected an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    BlkOptions opts;
    opts.ram = BoolOpt(o, "ram");
    const bool has_fd = !o.Get("fd").IsUndefined() && !o.Get("fd").IsNull();
    if (opts.ram == has_fd) throw Napi::TypeError::New(env, "BlkEngine: give either fd or ram: true");
    if (has_fd) opts.fd = static_cast<int>(U64Opt(o, "fd", 0, INT32_MAX));
    const Napi::Value cap = o.Get("capacitySectors");
    opts.capacity_from_fd = has_fd && (cap.IsUndefined() || cap.IsNull());
    if (opts.ram && (cap.IsUndefined() || cap.IsNull())) throw Napi::TypeError::New(env, "BlkEngine: a RAM disk needs capacitySectors");
    // 2^55 sectors: the byte offsets (x 512) stay below 2^64.
    opts.capacity_sectors = U64Opt(o, "capacitySectors", 0, uint64_t{1} << 55);
    opts.read_only = BoolOpt(o, "readOnly");
    opts.direct = BoolOpt(o, "direct");
    opts.threads = static_cast<uint32_t>(U64Opt(o, "threads", 2, 64));
    // engine: 'threads' | 'io_uring' | 'auto' (default: io_uring where the kernel allows it)
    const Napi::Value eng = o.Get("engine");
    opts.engine = BlkEngineKind::kAuto;
    if (!eng.IsUndefined() && !eng.IsNull()) {
      const std::string k = eng.IsString() ? eng.As<Napi::String>().Utf8Value() : "";
      if (k == "threads") {
        opts.engine = BlkEngineKind::kThreads;
      } else if (k == "io_uring") {
        opts.engine = BlkEngineKind::kIoUring;
      } else if (k != "auto") {
        throw Napi::TypeError::New(env, "engine: expected 'threads', 'io_uring' or 'auto'");
      }
    }
    opts.max_discard_sectors = static_cast<uint32_t>(U64Opt(o, "maxDiscardSectors", opts.max_discard_sectors, UINT32_MAX));
    opts.max_discard_seg = static_cast<uint32_t>(U64Opt(o, "maxDiscardSeg", opts.max_discard_seg, UINT32_MAX));
    opts.max_write_zeroes_sectors = static_cast<uint32_t>(U64Opt(o, "maxWriteZeroesSectors", opts.max_write_zeroes_sectors, UINT32_MAX));
    opts.max_write_zeroes_seg = static_cast<uint32_t>(U64Opt(o, "maxWriteZeroesSeg", opts.max_write_zeroes_seg, UINT32_MAX));
    Napi::Value serial = o.Get("serial");
    if (serial.IsString()) {
      const std::string s = serial.As<Napi::String>().Utf8Value();
      if (s.size() > blk::kIdBytes) throw Napi::RangeError::New(env, "serial: " + std::to_string(s.size()) + " bytes, at most 20");
      memcpy(opts.serial.data(), s.data(), s.size());
    } else if (serial.IsTypedArray() && serial.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
      Napi::Uint8Array a = serial.As<Napi::Uint8Array>();
      if (a.ElementLength() > blk::kIdBytes) throw Napi::RangeError::New(env, "serial: " + std::to_string(a.ElementLength()) + " bytes, at most 20");
      memcpy(opts.serial.data(), a.Data(), a.ElementLength());
    } else if (!serial.IsUndefined() && !serial.IsNull()) {
      throw Napi::TypeError::New(env, "serial must be a string or a Uint8Array");
    }
    std::string err;
    e_ = BlkEngine::Create(opts, &err);
    if (!e_) throw Napi::Error::New(env, "BlkEngine: " + err);
  }

 private:
  BlkEngine& Open(Napi::Env env) {
    if (e_->closed()) throw Napi::Error::New(env, "BlkEngine is closed");
    return *e_;
  }

  // submit(queue, n): chains [0, n) of the queue's last pop.
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    QueueView v = UnwrapQueue(info[0]);
    const uint32_t n = info[1].As<Napi::Number>().Uint32Value();
    if (n > v.burst) throw Napi::RangeError::New(info.Env(), "submit: more chains than the burst");
    if (!v.q->memory()) throw Napi::Error::New(info.Env(), "submit: queue has no memory");
    Open(info.Env()).Submit(*v.q, *v.out, n);
    return info.Env().Undefined();
  }

  // reap(queue) -> completed requests pushed (one push, one signal at most); -1 if the
  // queue refused the push (it was reset under in-flight requests).
  Napi::Value Reap(const Napi::CallbackInfo& info) {
    QueueView v = UnwrapQueue(info[0]);
    return Napi::Number::New(info.Env(), e_->Reap(*v.q));
  }

  // submitReap(queue, n) -> submit(queue, n), then reap(queue)'s result: what completed
  // inside the submit is pushed at once, with no completion eventfd write and read for it.
  Napi::Value SubmitReap(const Napi::CallbackInfo& info) {
    QueueView v = UnwrapQueue(info[0]);
    const uint32_t n = info[1].As<Napi::Number>().Uint32Value();
    if (n > v.burst) throw Napi::RangeError::New(info.Env(), "submitReap: more chains than the burst");
    if (!v.q->memory()) throw Napi::Error::New(info.Env(), "submitReap: queue has no memory");
    return Napi::Number::New(info.Env(), Open(info.Env()).SubmitReap(*v.q, *v.out, n));
  }

  // noteWake(): the completion fd was found readable (the watcher); the next reap resets it.
  Napi::Value NoteWake(const Napi::CallbackInfo& info) {
    e_->NoteWake();
    return info.Env().Undefined();
  }

  // waitIdle(timeoutMs = -1) -> true once no request is executing.
  Napi::Value WaitIdle(const Napi::CallbackInfo& info) {
    const int64_t t = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : -1;
    return Napi::Boolean::New(info.Env(), e_->WaitIdle(t));
  }

  // resize(sectors: bigint) -> the new capacity; 0n re-reads a file's or device's size.
  Napi::Value Resize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsBigInt()) throw Napi::TypeError::New(env, "resize: expected a bigint of sectors");
    bool lossless = false;
    const uint64_t sectors = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, "resize: sectors out of range");
    std::string err;
    if (!Open(env).Resize(sectors, &err)) throw Napi::Error::New(env, "resize: " + err);
    return Napi::BigInt::New(env, e_->capacity_sectors());
  }

  Napi::Value InFlightOf(const Napi::CallbackInfo& info) {
    QueueView v = UnwrapQueue(info[0]);
    return Napi::Number::New(info.Env(), e_->InFlight(v.q));
  }

  Napi::Value InFlight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), e_->InFlight(nullptr)); }
  Napi::Value CompletionFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), e_->completion_fd()); }
  Napi::Value Capacity(const Napi::CallbackInfo& info) { return Napi::BigInt::New(info.Env(), e_->capacity_sectors()); }
  Napi::Value ReadOnly(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), e_->read_only()); }
  Napi::Value Direct(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), e_->direct()); }
  Napi::Value Engine(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), BlkEngineKindName(e_->engine())); }
  // Why the engine is threads although io_uring was allowed ('' otherwise).
  Napi::Value EngineNote(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), e_->engine_note()); }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const BlkStats s = e_->Stats();
    Napi::Object o = Napi::Object::New(env);
    Napi::Object req = Napi::Object::New(env);
    req.Set("in", Num(env, s.in));
    req.Set("out", Num(env, s.out));
    req.Set("flush", Num(env, s.flush));
    req.Set("getId", Num(env, s.get_id));
    req.Set("discard", Num(env, s.discard));
    req.Set("writeZeroes", Num(env, s.write_zeroes));
    req.Set("other", Num(env, s.other));
    o.Set("requests", req);
    o.Set("submitted", Num(env, s.submitted));
    o.Set("completed", Num(env, s.completed));
    o.Set("reaped", Num(env, s.reaped));
    o.Set("bytesRead", Num(env, s.bytes_read));
    o.Set("bytesWritten", Num(env, s.bytes_written));
    o.Set("ok", Num(env, s.ok));
    o.Set("ioerr", Num(env, s.ioerr));
    o.Set("unsupp", Num(env, s.unsupp));
    Napi::Object errs = Napi::Object::New(env);
    for (size_t i = 0; i < s.errors.size(); i++) errs.Set(BlkErrName(static_cast<BlkErr>(i)), Num(env, s.errors[i]));
    o.Set("errors", errs);
    o.Set("bounced", Num(env, s.bounced));
    o.Set("fdatasyncs", Num(env, s.fdatasyncs));
    o.Set("holesPunched", Num(env, s.holes_punched));
    o.Set("zeroRanges", Num(env, s.zero_ranges));
    o.Set("zeroWrites", Num(env, s.zero_writes));
    o.Set("inFlight", Num(env, s.in_flight));
    o.Set("executing", Num(env, s.executing));
    Napi::Array lat = Napi::Array::New(env, s.latency_us.size());
    for (uint32_t i = 0; i < s.latency_us.size(); i++) lat.Set(i, Num(env, s.latency_us[i]));
    o.Set("latencyUs", lat);
    Napi::Object ur = Napi::Object::New(env);
    ur.Set("sqes", Num(env, s.uring_sqes));
    ur.Set("inline", Num(env, s.uring_inline));
    ur.Set("later", Num(env, s.uring_later));
    ur.Set("toPool", Num(env, s.uring_to_pool));
    ur.Set("copiedInline", Num(env, s.copied_inline));
    ur.Set("deferTaskrun", Napi::Boolean::New(env, s.uring_deferred));
    o.Set("uring", ur);
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    e_->Close();
    return info.Env().Undefined();
  }

  std::unique_ptr<BlkEngine> e_;
};

}  // namespace

void BindBlk(Napi::Env env, Napi::Object exports) { exports.Set("BlkEngine", BlkWrap::Define(env)); }

}  // namespace vhostkit
