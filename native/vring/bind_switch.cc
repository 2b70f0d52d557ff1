// JavaScript surface of the switch's forwarding database (switch_fdb.cc): the SwitchFdb
// class, whose classify() decides a whole burst in one call.
#include <algorithm>
#include <cmath>
#include <memory>

#include "bindings.h"
#include "switch_fdb.h"

namespace vhostkit {
namespace {

constexpr uint32_t kIngressWords = 4 + 4096 / 32;  // access, vid, native, all allowed; the allowed bitmap
constexpr uint32_t kCountWords = 4;

// A whole number in [lo, hi] (MACs, ports and milliseconds arrive as doubles).
int64_t Int(const Napi::Value& v, double lo, double hi, const char* what) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || std::trunc(d) != d) {
    throw Napi::RangeError::New(v.Env(), std::string(what) + " must be an integer in [" + std::to_string(static_cast<int64_t>(lo)) +
                                             ", " + std::to_string(static_cast<int64_t>(hi)) + "]");
  }
  return static_cast<int64_t>(d);
}

constexpr double kMaxMac = 281474976710655.0;  // 2^48 - 1
constexpr double kMaxMs = 9007199254740991.0;  // 2^53 - 1

class SwitchFdbWrap : public Napi::ObjectWrap<SwitchFdbWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SwitchFdb",
                       {InstanceMethod<&SwitchFdbWrap::Learn>("learn"), InstanceMethod<&SwitchFdbWrap::Lookup>("lookup"),
                        InstanceMethod<&SwitchFdbWrap::Age>("age"), InstanceMethod<&SwitchFdbWrap::FlushPort>("flushPort"),
                        InstanceMethod<&SwitchFdbWrap::Dump>("dump"), InstanceMethod<&SwitchFdbWrap::Stats>("stats"),
                        InstanceMethod<&SwitchFdbWrap::Classify>("classify"),
                        InstanceAccessor<&SwitchFdbWrap::Size>("size")});
  }

  // new SwitchFdb(maxEntries)
  explicit SwitchFdbWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SwitchFdbWrap>(info) {
    fdb_ = std::make_unique<SwitchFdb>(static_cast<uint32_t>(Int(info[0], 1, 1 << 24, "maxEntries")));
  }

 private:
  // learn(mac, vlan, port, now) -> true if new or moved
  Napi::Value Learn(const Napi::CallbackInfo& info) {
    const bool r = fdb_->Learn(static_cast<uint64_t>(Int(info[0], 0, kMaxMac, "mac")), static_cast<uint32_t>(Int(info[1], 0, 65535, "vlan")),
                               static_cast<int32_t>(Int(info[2], 0, INT32_MAX, "port")), Int(info[3], -kMaxMs, kMaxMs, "now"));
    return Napi::Boolean::New(info.Env(), r);
  }

  // lookup(mac, vlan, now, agingMs) -> port or -1
  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    const int32_t p = fdb_->Lookup(static_cast<uint64_t>(Int(info[0], 0, kMaxMac, "mac")), static_cast<uint32_t>(Int(info[1], 0, 65535, "vlan")),
                                   Int(info[2], -kMaxMs, kMaxMs, "now"), Int(info[3], 0, kMaxMs, "agingMs"));
    return Napi::Number::New(info.Env(), p);
  }

  // age(now, agingMs) -> entries removed
  Napi::Value Age(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), fdb_->Age(Int(info[0], -kMaxMs, kMaxMs, "now"), Int(info[1], 0, kMaxMs, "agingMs")));
  }

  // flushPort(port) -> entries removed
  Napi::Value FlushPort(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), fdb_->FlushPort(static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"))));
  }

  // dump() -> Float64Array [mac, vlan, port, seen] per entry
  Napi::Value Dump(const Napi::CallbackInfo& info) {
    const std::vector<SwitchFdb::Entry> all = fdb_->Dump();
    Napi::Float64Array a = Napi::Float64Array::New(info.Env(), all.size() * 4);
    for (size_t i = 0; i < all.size(); i++) {
      a[4 * i] = static_cast<double>(all[i].mac);
      a[4 * i + 1] = all[i].vlan;
      a[4 * i + 2] = all[i].port;
      a[4 * i + 3] = static_cast<double>(all[i].seen);
    }
    return a;
  }

  // stats() -> { learned, moved, aged, full }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("learned", fdb_->stats().learned);
    o.Set("moved", fdb_->stats().moved);
    o.Set("aged", fdb_->stats().aged);
    o.Set("full", fdb_->stats().full);
    return o;
  }

  Napi::Value Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fdb_->size()); }

  // classify(port, ingress: Int32Array(132), heads: Uint8Array, offsets: Uint32Array | null, stride, cap,
  //          lens: Uint32Array, n, now, agingMs, verdict: Int32Array | null, out: Int32Array(3B + 4)) -> bytes
  // out: dest[0, B), vid[B, 2B), tagged[2B, 3B), then the frames dropped as bad, by the hook, by
  // the VLAN rules, and the frames flooded. Returns the bytes of the n frames.
  Napi::Value Classify(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int32_t port = static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"));
    const int32_t* ing = TypedData<int32_t>(env, info[1], napi_int32_array, kIngressWords, "ingress");
    size_t heads_len = 0;
    const uint8_t* heads = TypedData<uint8_t>(env, info[2], napi_uint8_array, 0, "heads", &heads_len);
    const uint32_t stride = static_cast<uint32_t>(Int(info[4], 0, UINT32_MAX, "stride"));
    const uint32_t cap = static_cast<uint32_t>(Int(info[5], 0, UINT32_MAX, "cap"));
    const uint32_t n = static_cast<uint32_t>(Int(info[7], 0, UINT32_MAX, "n"));
    const uint32_t* lens = TypedData<uint32_t>(env, info[6], napi_uint32_array, n, "lens");
    const int64_t now = Int(info[8], -kMaxMs, kMaxMs, "now");
    const int64_t aging = Int(info[9], 0, kMaxMs, "agingMs");
    const int32_t* verdict = info[10].IsNull() || info[10].IsUndefined() ? nullptr : TypedData<int32_t>(env, info[10], napi_int32_array, n, "verdict");
    size_t out_len = 0;
    int32_t* out = TypedData<int32_t>(env, info[11], napi_int32_array, kCountWords, "out", &out_len);
    const size_t b = (out_len - kCountWords) / 3;
    if (n > b) throw Napi::RangeError::New(env, "classify: more frames than out holds");
    // Every byte classification may read (up to 16 per frame) lies inside heads.
    const uint32_t* off = nullptr;
    if (info[3].IsNull() || info[3].IsUndefined()) {
      if (stride < 16 || cap > stride || static_cast<uint64_t>(n) * stride > heads_len) {
        throw Napi::RangeError::New(env, "classify: heads too short for n frames of this stride, or cap above the stride");
      }
    } else {
      off = TypedData<uint32_t>(env, info[3], napi_uint32_array, n, "offsets");
      for (uint32_t i = 0; i < n; i++) {
        const uint64_t need = std::min({lens[i], cap, 16u});
        if (uint64_t{off[i]} + need > heads_len) throw Napi::RangeError::New(env, "classify: a frame's head lies outside heads");
      }
    }
    IngressVlan in;
    in.access = ing[0] != 0;
    in.vid = static_cast<uint32_t>(ing[1]) & 0xfff;
    in.native = ing[2] < 0 ? -1 : (ing[2] & 0xfff);
    in.all_allowed = ing[3] != 0;
    in.allowed = reinterpret_cast<const uint32_t*>(ing + 4);
    ClassifyCounts c;
    SwitchClassify(*fdb_, port, in, heads, off, stride, cap, lens, n, now, aging, verdict, out, out + b, out + 2 * b, &c);
    int32_t* counts = out + 3 * b;
    counts[0] = static_cast<int32_t>(c.bad);
    counts[1] = static_cast<int32_t>(c.hook);
    counts[2] = static_cast<int32_t>(c.vlan);
    counts[3] = static_cast<int32_t>(c.flooded);
    return Napi::Number::New(env, c.bytes);
  }

  std::unique_ptr<SwitchFdb> fdb_;
};

}  // namespace

void BindSwitch(Napi::Env env, Napi::Object exports) { exports.Set("SwitchFdb", SwitchFdbWrap::Define(env)); }

}  // namespace vhostkit
