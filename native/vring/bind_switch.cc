// JavaScript surface of the switch's forwarding database (switch_fdb.cc): the SwitchFdb
// class, whose classify() decides a whole burst in one call.
#include <algorithm>
#include <cmath>
#include <memory>

#include "bindings.h"
#include "switch_fdb.h"
#include "switch_forward.h"

namespace vhostkit {
namespace {

constexpr uint32_t kIngressWords = 4 + 4096 / 32;  // access, vid, native, all allowed; the allowed bitmap
constexpr uint32_t kCountWords = 4;
// A port as setPort() takes it: deliver here, hdrLen, mergeable, rxOffloads, maxFrame,
// txOffloads, RX queue count, kSwitchMaxRx RX queue slots, then its ingress words.
constexpr uint32_t kPortHead = 7 + kSwitchMaxRx;
constexpr uint32_t kPortWords = kPortHead + kIngressWords;
// forward()'s result array: bytes, push result, frames left, records; the frames left
// (burst), then kRecordWords per record.
constexpr uint32_t kResHead = 4;
constexpr uint32_t kRecordWords = 8;

// A VLAN configuration from its ingress words (see the engine's ingressWords).
void ReadVlan(const int32_t* ing, bool* access, uint32_t* vid, int32_t* native, bool* all_allowed, const uint32_t** allowed) {
  *access = ing[0] != 0;
  *vid = static_cast<uint32_t>(ing[1]) & 0xfff;
  *native = ing[2] < 0 ? -1 : (ing[2] & 0xfff);
  *all_allowed = ing[3] != 0;
  *allowed = reinterpret_cast<const uint32_t*>(ing + 4);
}

bool ResolveSlot(uint32_t slot, Virtqueue** q, const BurstArrays** arrays) {
  QueueView v;
  if (!QueueBySlot(slot, &v)) return false;
  *q = v.q;
  *arrays = v.out;
  return true;
}

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
                        InstanceMethod<&SwitchFdbWrap::BindBurst>("bindBurst"),
                        InstanceMethod<&SwitchFdbWrap::SetPort>("setPort"),
                        InstanceMethod<&SwitchFdbWrap::Forward>("forward"),
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
    ReadVlan(ing, &in.access, &in.vid, &in.native, &in.all_allowed, &in.allowed);
    ClassifyCounts c;
    SwitchClassify(*fdb_, port, in, heads, off, stride, cap, lens, n, now, aging, verdict, out, out + b, out + 2 * b, &c);
    int32_t* counts = out + 3 * b;
    counts[0] = static_cast<int32_t>(c.bad);
    counts[1] = static_cast<int32_t>(c.hook);
    counts[2] = static_cast<int32_t>(c.vlan);
    counts[3] = static_cast<int32_t>(c.flooded);
    return Napi::Number::New(env, c.bytes);
  }

  // bindBurst(heads: Uint8Array(B * 64), lens: Uint32Array(B), cls: Int32Array(3B + 4), res: Int32Array)
  // The arrays forward() writes, kept (referenced) until bound again. B, the burst, is set
  // by the first call; res needs room for 4 + B words and 8 per RX queue of the ports
  // delivered here (setPort checks it).
  Napi::Value BindBurst(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t b = 0;
    uint32_t* lens = TypedData<uint32_t>(env, info[1], napi_uint32_array, 1, "lens", &b);
    if (ports_ && b != burst_) throw Napi::RangeError::New(env, "bindBurst: the burst cannot change");
    if (b > 0xffff) throw Napi::RangeError::New(env, "bindBurst: burst too large");
    uint8_t* heads = TypedData<uint8_t>(env, info[0], napi_uint8_array, b * kSwitchHead, "heads");
    int32_t* cls = TypedData<int32_t>(env, info[2], napi_int32_array, 3 * b + kCountWords, "cls");
    size_t res_len = 0;
    int32_t* res = TypedData<int32_t>(env, info[3], napi_int32_array, kResHead + b, "res", &res_len);
    if (!ports_) {
      burst_ = static_cast<uint32_t>(b);
      ports_ = std::make_unique<SwitchPorts>(burst_);
      records_.resize(1);
      left_.resize(burst_);
    }
    if (res_len < kResHead + burst_ + static_cast<size_t>(kRecordWords) * ports_->DeliverQueues()) {
      throw Napi::RangeError::New(env, "bindBurst: res too short for the ports' RX queues");
    }
    held_.clear();
    for (uint32_t i = 0; i < 4; i++) held_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
    heads_ = heads;
    lens_ = lens;
    cls_ = cls;
    res_ = res;
    res_len_ = res_len;
    return env.Undefined();
  }

  // setPort(id, rec: Int32Array(kPortWords) | null): a port as forward() sees it, or gone.
  Napi::Value SetPort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!ports_) throw Napi::Error::New(env, "setPort: bindBurst first");
    const int32_t id = static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"));
    if (info[1].IsNull() || info[1].IsUndefined()) {
      ports_->Remove(id);
      return env.Undefined();
    }
    const int32_t* w = TypedData<int32_t>(env, info[1], napi_int32_array, kPortWords, "port record");
    SwitchPort p;
    p.id = id;
    p.deliver = w[0] != 0;
    p.hdr_len = static_cast<uint32_t>(w[1]);
    if (p.hdr_len != 10 && p.hdr_len != 12) throw Napi::RangeError::New(env, "setPort: header length must be 10 or 12");
    p.mergeable = w[2] != 0;
    const uint32_t o = static_cast<uint32_t>(w[3]);
    p.offloads.csum = o & 1;
    p.offloads.tso4 = o & 2;
    p.offloads.tso6 = o & 4;
    p.offloads.ecn = o & 8;
    p.offloads.ufo = o & 16;
    p.max_frame = w[4] < 0 ? 0 : static_cast<uint32_t>(w[4]);
    p.tx_offloads = w[5] != 0;
    if (w[6] < 0 || static_cast<uint32_t>(w[6]) > kSwitchMaxRx) throw Napi::RangeError::New(env, "setPort: 0 to 8 RX queues");
    p.nrx = static_cast<uint32_t>(w[6]);
    for (uint32_t k = 0; k < p.nrx; k++) {
      if (w[7 + k] < 0) throw Napi::RangeError::New(env, "setPort: a queue slot is negative");
      p.rx_slot[k] = static_cast<uint32_t>(w[7 + k]);
    }
    const uint32_t* allowed = nullptr;
    ReadVlan(w + kPortHead, &p.access, &p.vid, &p.native, &p.all_allowed, &allowed);
    std::copy(allowed, allowed + 4096 / 32, p.allowed);
    const uint32_t before = ports_->DeliverQueues();
    const SwitchPort* old = ports_->Find(id);
    const uint32_t mine = old != nullptr && old->deliver ? old->nrx : 0;
    const uint32_t after = before - mine + (p.deliver ? p.nrx : 0);
    if (res_len_ < kResHead + burst_ + static_cast<size_t>(kRecordWords) * after) {
      throw Napi::RangeError::New(env, "setPort: res too short for the ports' RX queues (bind a longer one first)");
    }
    ports_->Set(p);
    records_.resize(std::max<size_t>(1, after));
    return env.Undefined();
  }

  // forward(txSlot, port, now, agingMs) -> frames taken, or < 0 (-VqError) if the TX queue broke.
  // One whole burst of port's TX queue: pop, read the heads, classify (into cls, as
  // classify() does), deliver to the ports set with `deliver`, and push the chains back if
  // no frame is left for JavaScript. res: [bytes, push result (1 notified, 0 not, -2 not
  // pushed: frames left), frames left L, records R, the L frame indices (B words), then R
  // records of [port, queue position, result (1, 0, or -VqError), delivered, bytes,
  // no buffers, too big, bad]].
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!ports_) throw Napi::Error::New(env, "forward: bindBurst first");
    const int32_t id = static_cast<int32_t>(Int(info[1], 0, INT32_MAX, "port"));
    const int64_t now = Int(info[2], -kMaxMs, kMaxMs, "now");
    const int64_t aging = Int(info[3], 0, kMaxMs, "agingMs");
    const SwitchPort* src = ports_->Find(id);
    if (src == nullptr) throw Napi::RangeError::New(env, "forward: no such port");
    const QueueView tx = UnwrapQueue(info[0]);
    if (tx.burst > burst_) throw Napi::RangeError::New(env, "forward: the queue's burst is larger than the bound arrays");
    const std::shared_ptr<MemTable>& mem = tx.q->memory();
    if (!mem) throw Napi::Error::New(env, "forward: queue has no memory");
    const int32_t n = tx.q->Pop(*tx.out, tx.burst);
    if (n <= 0) return Napi::Number::New(env, n);
    const uint32_t un = static_cast<uint32_t>(n);
    NetPeek(*tx.out, *mem, un, src->hdr_len, heads_, kSwitchHead, lens_);
    int32_t* dest = cls_;
    int32_t* vid = cls_ + burst_;
    int32_t* tagged = cls_ + 2 * burst_;
    ClassifyCounts c;
    SwitchClassify(*fdb_, id, src->Ingress(), heads_, nullptr, kSwitchHead, kSwitchHead, lens_, un, now, aging, nullptr, dest, vid,
                   tagged, &c);
    int32_t* counts = cls_ + 3 * burst_;
    counts[0] = static_cast<int32_t>(c.bad);
    counts[1] = static_cast<int32_t>(c.hook);
    counts[2] = static_cast<int32_t>(c.vlan);
    counts[3] = static_cast<int32_t>(c.flooded);
    const TxSource s{tx.out, mem.get(), src->hdr_len, src->tx_offloads, -1};
    uint32_t nleft = 0;
    uint32_t nrec = 0;
    const size_t room = (res_len_ - kResHead - burst_) / kRecordWords;  // bindBurst checked res_len_ >= kResHead + burst_
    ports_->Forward(*src, s, heads_, dest, vid, tagged, un, ResolveSlot, left_.data(), &nleft, records_.data(),
                    static_cast<uint32_t>(std::min(records_.size(), room)), &nrec);
    res_[0] = static_cast<int32_t>(std::min<double>(c.bytes, INT32_MAX));
    res_[2] = static_cast<int32_t>(nleft);
    res_[3] = static_cast<int32_t>(nrec);
    std::copy(left_.begin(), left_.begin() + nleft, res_ + kResHead);
    int32_t* r = res_ + kResHead + burst_;
    for (uint32_t i = 0; i < nrec; i++, r += kRecordWords) {
      const SwitchRecord& e = records_[i];
      r[0] = e.port;
      r[1] = static_cast<int32_t>(e.k);
      r[2] = e.result;
      r[3] = static_cast<int32_t>(e.st.delivered);
      r[4] = static_cast<int32_t>(e.st.bytes);
      r[5] = static_cast<int32_t>(e.st.no_buffers);
      r[6] = static_cast<int32_t>(e.st.too_big);
      r[7] = static_cast<int32_t>(e.st.bad);
    }
    if (nleft > 0) {
      res_[1] = -2;
    } else {
      for (uint32_t i = 0; i < un; i++) {
        tx.used_id[i] = tx.out->head[i];
        tx.used_len[i] = 0;
      }
      const int32_t p = tx.q->Push(tx.used_id, tx.used_len, un);
      if (p == 1) tx.q->Signal();
      res_[1] = p;
    }
    return Napi::Number::New(env, n);
  }

  std::unique_ptr<SwitchFdb> fdb_;
  // forward()'s state: the ports, and the arrays bindBurst() gave (held by held_).
  std::unique_ptr<SwitchPorts> ports_;
  uint32_t burst_ = 0;
  std::vector<Napi::ObjectReference> held_;
  uint8_t* heads_ = nullptr;
  uint32_t* lens_ = nullptr;
  int32_t* cls_ = nullptr;
  int32_t* res_ = nullptr;
  size_t res_len_ = 0;
  std::vector<SwitchRecord> records_;
  std::vector<uint16_t> left_;
};

}  // namespace

void BindSwitch(Napi::Env env, Napi::Object exports) { exports.Set("SwitchFdb", SwitchFdbWrap::Define(env)); }

}  // namespace vhostkit
