// JavaScript surface of the virtio-net loops (net.cc): one call per burst.
#include "addon/bindings.h"
#include "io/io_layout.h"
#include "net/net.h"
#include "net/vlan.h"

namespace vhostkit {
namespace {

template <typename T>
T* Typed(Napi::Value v, napi_typedarray_type type, size_t min_len, const char* what) {
  return TypedData<T>(v.Env(), v, type, min_len, what);
}

// netPeek(queue, n, hdrLen, out: Uint8Array, stride, lens: Uint32Array)
// Receiver offload bits as JavaScript passes them.
RxOffloads Offloads(const Napi::Value& v) {
  const uint32_t m = v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : 0;
  RxOffloads o;
  o.csum = m & 1;
  o.tso4 = m & 2;
  o.tso6 = m & 4;
  o.ecn = m & 8;
  o.ufo = m & 16;
  return o;
}

namespace ds = layout::deliver_stat;

void AddStats(uint32_t* stats, const DeliverStats& st) {
  stats[ds::DELIVERED] += st.delivered;
  stats[ds::NO_BUFFERS] += st.no_buffers;
  stats[ds::TOO_BIG] += st.too_big;
  stats[ds::BAD] += st.bad;
  stats[ds::BYTES] += st.bytes;
  stats[ds::SEGMENTED] += st.segmented;
  stats[ds::CSUM_DONE] += st.csum_done;
}

Napi::Value Peek(const Napi::CallbackInfo& info) {
  QueueView v = UnwrapQueue(info[0]);
  const uint32_t n = info[1].As<Napi::Number>().Uint32Value();
  const uint32_t hdr = info[2].As<Napi::Number>().Uint32Value();
  const uint32_t stride = info[4].As<Napi::Number>().Uint32Value();
  if (n > v.burst) throw Napi::RangeError::New(info.Env(), "netPeek: more chains than the burst");
  if (!v.q->memory()) throw Napi::Error::New(info.Env(), "netPeek: queue has no memory");
  uint8_t* out = Typed<uint8_t>(info[3], napi_uint8_array, static_cast<size_t>(n) * stride, "out");
  uint32_t* lens = Typed<uint32_t>(info[5], napi_uint32_array, n, "lens");
  NetPeek(*v.out, *v.q->memory(), n, hdr, out, stride, lens);
  return info.Env().Undefined();
}

// A VLAN operation argument: -1 keep, -2 strip, or a TCI to insert.
int32_t Vlan(const Napi::Value& v, const char* who) {
  const int32_t vlan = v.As<Napi::Number>().Int32Value();
  if (vlan < -2 || vlan > 0xffff) throw Napi::RangeError::New(v.Env(), std::string(who) + ": vlan must be -2, -1 or a TCI");
  return vlan;
}

// Frames 0..n of a flat buffer: each must lie inside its data_len bytes.
void CheckFrames(Napi::Env env, const uint32_t* offsets, const uint32_t* lens, uint32_t n, size_t data_len, const char* who) {
  for (uint32_t i = 0; i < n; i++) {
    if (static_cast<uint64_t>(offsets[i]) + lens[i] > data_len) {
      throw Napi::RangeError::New(env, std::string(who) + ": frame outside the data buffer");
    }
  }
}

// netDeliver(rxQueue, rxHdrLen, mergeable, txQueue, txHdrLen, txOffloads, chains: Uint16Array, n, stats: Uint32Array(7),
//            vlan, rxOffloads, rxMaxFrame)
// -> 1 signalled, 0 not, < 0 the RX queue is broken (-VqError)
Napi::Value Deliver(const Napi::CallbackInfo& info) {
  QueueView rx = UnwrapQueue(info[0]);
  QueueView tx = UnwrapQueue(info[3]);
  if (rx.q == tx.q) throw Napi::Error::New(info.Env(), "netDeliver: RX and TX must be different queues");
  const uint32_t n = info[7].As<Napi::Number>().Uint32Value();
  if (n > tx.burst) throw Napi::RangeError::New(info.Env(), "netDeliver: more chains than the burst");
  if (!tx.q->memory()) throw Napi::Error::New(info.Env(), "netDeliver: TX queue has no memory");
  const uint16_t* chains = Typed<uint16_t>(info[6], napi_uint16_array, n, "chains");
  for (uint32_t i = 0; i < n; i++) {
    if (chains[i] >= tx.burst) throw Napi::RangeError::New(info.Env(), "netDeliver: chain index outside the burst");
  }
  uint32_t* stats = Typed<uint32_t>(info[8], napi_uint32_array, ds::kWords, "stats");
  const uint32_t rx_hdr = info[1].As<Napi::Number>().Uint32Value();
  const uint32_t tx_hdr = info[4].As<Napi::Number>().Uint32Value();
  if ((rx_hdr != 10 && rx_hdr != 12) || (tx_hdr != 10 && tx_hdr != 12)) {
    throw Napi::RangeError::New(info.Env(), "netDeliver: header length must be 10 or 12");
  }
  RxTarget dst{rx.q, rx.out, rx_hdr, info[2].ToBoolean(), Offloads(info[10]),
               info[11].IsNumber() ? info[11].As<Napi::Number>().Uint32Value() : 0};
  const int32_t vlan = info.Length() > 9 ? Vlan(info[9], "netDeliver") : -1;
  TxSource src{tx.out, tx.q->memory().get(), tx_hdr, info[5].ToBoolean(), vlan};
  DeliverStats st;
  const int32_t r = NetDeliver(dst, src, chains, n, &st);
  AddStats(stats, st);
  return Napi::Number::New(info.Env(), r);
}

// netDeliverFlat(rxQueue, rxHdrLen, mergeable, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n,
//                hdr10: Uint8Array | null, stats: Uint32Array(7), vlan, rxOffloads, rxMaxFrame)
Napi::Value DeliverFlat(const Napi::CallbackInfo& info) {
  QueueView rx = UnwrapQueue(info[0]);
  const uint32_t rx_hdr = info[1].As<Napi::Number>().Uint32Value();
  if (rx_hdr != 10 && rx_hdr != 12) throw Napi::RangeError::New(info.Env(), "netDeliverFlat: header length must be 10 or 12");
  const uint32_t n = info[6].As<Napi::Number>().Uint32Value();
  size_t data_len = 0;
  const uint8_t* base = TypedData<uint8_t>(info.Env(), info[3], napi_uint8_array, 0, "netDeliverFlat: data", &data_len);
  const uint32_t* offsets = Typed<uint32_t>(info[4], napi_uint32_array, n, "offsets");
  const uint32_t* lens = Typed<uint32_t>(info[5], napi_uint32_array, n, "lens");
  CheckFrames(info.Env(), offsets, lens, n, data_len, "netDeliverFlat");
  const uint8_t* hdr10 = info[7].IsNull() || info[7].IsUndefined() ? nullptr : Typed<uint8_t>(info[7], napi_uint8_array, 10 * static_cast<size_t>(n), "hdr10");
  uint32_t* stats = Typed<uint32_t>(info[8], napi_uint32_array, ds::kWords, "stats");
  const int32_t vlan = Vlan(info[9], "netDeliverFlat");
  RxTarget dst{rx.q, rx.out, rx_hdr, info[2].ToBoolean(), Offloads(info[10]),
               info[11].IsNumber() ? info[11].As<Napi::Number>().Uint32Value() : 0};
  DeliverStats st;
  const int32_t r = NetDeliverFlat(dst, base, offsets, lens, n, hdr10, vlan, &st);
  AddStats(stats, st);
  return Napi::Number::New(info.Env(), r);
}

// netToFlat(txQueue, txHdrLen, txOffloads, chains: Uint16Array, n, vlan, out: Uint8Array, offsets: Uint32Array,
//           lens: Uint32Array, maxFrames, stats: Uint32Array(7)) -> frames written
Napi::Value ToFlat(const Napi::CallbackInfo& info) {
  QueueView tx = UnwrapQueue(info[0]);
  if (!tx.q->memory()) throw Napi::Error::New(info.Env(), "netToFlat: TX queue has no memory");
  const uint32_t hdr = info[1].As<Napi::Number>().Uint32Value();
  if (hdr != 10 && hdr != 12) throw Napi::RangeError::New(info.Env(), "netToFlat: header length must be 10 or 12");
  const uint32_t n = info[4].As<Napi::Number>().Uint32Value();
  if (n > tx.burst) throw Napi::RangeError::New(info.Env(), "netToFlat: more chains than the burst");
  const uint16_t* chains = Typed<uint16_t>(info[3], napi_uint16_array, n, "chains");
  for (uint32_t i = 0; i < n; i++) {
    if (chains[i] >= tx.burst) throw Napi::RangeError::New(info.Env(), "netToFlat: chain index outside the burst");
  }
  const int32_t vlan = Vlan(info[5], "netToFlat");
  size_t out_len = 0;
  uint8_t* out = TypedData<uint8_t>(info.Env(), info[6], napi_uint8_array, 0, "netToFlat: out", &out_len);
  const uint32_t max = info[9].As<Napi::Number>().Uint32Value();
  uint32_t* offsets = Typed<uint32_t>(info[7], napi_uint32_array, max, "offsets");
  uint32_t* lens = Typed<uint32_t>(info[8], napi_uint32_array, max, "lens");
  uint32_t* stats = Typed<uint32_t>(info[10], napi_uint32_array, ds::kWords, "stats");
  TxSource src{tx.out, tx.q->memory().get(), hdr, info[2].ToBoolean(), vlan};
  DeliverStats st;
  const uint32_t k = NetToFlat(src, chains, n, out, static_cast<uint32_t>(std::min<size_t>(out_len, UINT32_MAX)), offsets, lens, max, &st);
  AddStats(stats, st);
  return Napi::Number::New(info.Env(), k);
}

// FlatFrames: netDeliverFlat's host-side arrays given once, for a caller that delivers
// from the same arrays every burst (net-load's generator): each deliver() then passes
// numbers only, not five typed arrays to unwrap again (about a tenth of a 32-frame burst
// of 64 B frames went to that). The arrays are held (referenced) for the object's life;
// their contents (offsets, lens) are checked on every call, as netDeliverFlat does.
class FlatFramesWrap : public Napi::ObjectWrap<FlatFramesWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FlatFrames", {InstanceMethod<&FlatFramesWrap::DeliverBound>("deliver")});
  }

  // new FlatFrames(data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null,
  //                stats: Uint32Array(7)); frames: as many as offsets and lens (and hdr10) hold
  explicit FlatFramesWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FlatFramesWrap>(info) {
    Napi::Env env = info.Env();
    data_ = TypedData<uint8_t>(env, info[0], napi_uint8_array, 0, "FlatFrames: data", &data_len_);
    size_t noff = 0;
    size_t nlen = 0;
    offsets_ = TypedData<uint32_t>(env, info[1], napi_uint32_array, 0, "FlatFrames: offsets", &noff);
    lens_ = TypedData<uint32_t>(env, info[2], napi_uint32_array, 0, "FlatFrames: lens", &nlen);
    max_ = std::min(noff, nlen);
    if (!info[3].IsNull() && !info[3].IsUndefined()) {
      size_t nh = 0;
      hdr10_ = TypedData<uint8_t>(env, info[3], napi_uint8_array, 0, "FlatFrames: hdr10", &nh);
      max_ = std::min(max_, nh / 10);
    }
    stats_ = TypedData<uint32_t>(env, info[4], napi_uint32_array, ds::kWords, "FlatFrames: stats");
    for (uint32_t i = 0; i < 5; i++) {
      if (info[i].IsObject()) held_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
    }
  }

 private:
  // deliver(rxSlot, n, rxHdrLen, mergeable, vlan, rxOffloads, rxMaxFrame, withHdr10) -> as netDeliverFlat
  Napi::Value DeliverBound(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    QueueView rx = UnwrapQueue(info[0]);
    const uint32_t n = info[1].As<Napi::Number>().Uint32Value();
    if (n > max_) throw Napi::RangeError::New(env, "FlatFrames.deliver: more frames than the arrays hold");
    const uint32_t rx_hdr = info[2].As<Napi::Number>().Uint32Value();
    if (rx_hdr != 10 && rx_hdr != 12) throw Napi::RangeError::New(env, "FlatFrames.deliver: header length must be 10 or 12");
    const int32_t vlan = Vlan(info[4], "FlatFrames.deliver");
    const bool with_hdr = info[7].ToBoolean();
    if (with_hdr && hdr10_ == nullptr) throw Napi::Error::New(env, "FlatFrames.deliver: no hdr10 array was given");
    CheckFrames(env, offsets_, lens_, n, data_len_, "FlatFrames.deliver");
    RxTarget dst{rx.q, rx.out, rx_hdr, info[3].ToBoolean(), Offloads(info[5]), info[6].As<Napi::Number>().Uint32Value()};
    DeliverStats st;
    const int32_t r = NetDeliverFlat(dst, data_, offsets_, lens_, n, with_hdr ? hdr10_ : nullptr, vlan, &st);
    AddStats(stats_, st);
    return Napi::Number::New(env, r);
  }

  const uint8_t* data_ = nullptr;
  size_t data_len_ = 0;
  const uint32_t* offsets_ = nullptr;
  const uint32_t* lens_ = nullptr;
  const uint8_t* hdr10_ = nullptr;
  uint32_t* stats_ = nullptr;
  size_t max_ = 0;
  std::vector<Napi::ObjectReference> held_;
};

// FlatSink: a receiver of a guest's TX queue that reads every frame into memory of its
// own, as a real receiver must (net-load's copying sink; the vhost PMD copies each frame
// into an mbuf). One call per burst pops, copies the frames out (NetToFlat) and gives the
// buffers back, with the host-side arrays given once.
class FlatSinkWrap : public Napi::ObjectWrap<FlatSinkWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FlatSink", {InstanceMethod<&FlatSinkWrap::Take>("take")});
  }

  // new FlatSink(out: Uint8Array, offsets: Uint32Array, lens: Uint32Array, stats: Uint32Array(7));
  // a burst takes at most as many frames as offsets and lens hold.
  explicit FlatSinkWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FlatSinkWrap>(info) {
    Napi::Env env = info.Env();
    out_ = TypedData<uint8_t>(env, info[0], napi_uint8_array, 0, "FlatSink: out", &out_len_);
    size_t noff = 0;
    size_t nlen = 0;
    offsets_ = TypedData<uint32_t>(env, info[1], napi_uint32_array, 0, "FlatSink: offsets", &noff);
    lens_ = TypedData<uint32_t>(env, info[2], napi_uint32_array, 0, "FlatSink: lens", &nlen);
    max_ = static_cast<uint32_t>(std::min<size_t>(std::min(noff, nlen), 1024));
    stats_ = TypedData<uint32_t>(env, info[3], napi_uint32_array, ds::kWords, "FlatSink: stats");
    for (uint32_t i = 0; i < 4; i++) held_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
  }

 private:
  // take(txSlot, hdrLen, offloads) -> chains taken (their frames copied out, counted in
  // stats: DELIVERED, BYTES, BAD), or -VqError if the queue is broken
  Napi::Value Take(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    QueueView tx = UnwrapQueue(info[0]);
    const uint32_t hdr = info[1].As<Napi::Number>().Uint32Value();
    if (hdr != 10 && hdr != 12) throw Napi::RangeError::New(env, "FlatSink.take: header length must be 10 or 12");
    const MemTable* mem = tx.q->memory().get();
    if (mem == nullptr) throw Napi::Error::New(env, "FlatSink.take: queue has no memory");
    const int32_t n = tx.q->Pop(*tx.out, std::min(tx.burst, max_));
    if (n <= 0) return Napi::Number::New(env, n);
    const uint32_t m = static_cast<uint32_t>(n);
    chains_.resize(m);
    for (uint32_t i = 0; i < m; i++) chains_[i] = static_cast<uint16_t>(i);
    const TxSource src{tx.out, mem, hdr, info[2].ToBoolean(), kVlanKeep};
    DeliverStats st;
    NetToFlat(src, chains_.data(), m, out_, static_cast<uint32_t>(std::min<size_t>(out_len_, UINT32_MAX)), offsets_, lens_, max_, &st);
    AddStats(stats_, st);
    for (uint32_t i = 0; i < m; i++) {
      tx.used_id[i] = tx.out->head[i];
      tx.used_len[i] = 0;
    }
    const int32_t r = tx.q->Push(tx.used_id, tx.used_len, m);
    if (r < 0) throw Napi::RangeError::New(env, "FlatSink.take: push failed: an id is not in flight (or pushed twice)");
    if (r == 1) tx.q->Signal();
    return Napi::Number::New(env, n);
  }

  uint8_t* out_ = nullptr;
  size_t out_len_ = 0;
  uint32_t* offsets_ = nullptr;
  uint32_t* lens_ = nullptr;
  uint32_t* stats_ = nullptr;
  uint32_t max_ = 0;
  std::vector<uint16_t> chains_;
  std::vector<Napi::ObjectReference> held_;
};

}  // namespace

void BindNet(Napi::Env env, Napi::Object exports) {
  exports.Set("FlatFrames", FlatFramesWrap::Define(env));
  exports.Set("FlatSink", FlatSinkWrap::Define(env));
  exports.Set("netPeek", Napi::Function::New(env, Peek));
  exports.Set("netDeliver", Napi::Function::New(env, Deliver));
  exports.Set("netDeliverFlat", Napi::Function::New(env, DeliverFlat));
  exports.Set("netToFlat", Napi::Function::New(env, ToFlat));
  exports.Set("netMaxFrame", Napi::Number::New(env, kMaxFrame));
}

}  // namespace vhostkit
