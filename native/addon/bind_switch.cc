// JavaScript surface of the switch: the forwarding database (SwitchFdb, switch_fdb.cc,
// whose classify() decides a burst in one call), the data path (Forwarder,
// switch_forward.cc) and the word layouts they share with TypeScript (switch_layout.h).
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <cmath>
#include <memory>
#include <unordered_map>
#include <vector>

#include "addon/bindings.h"
#include "switch/switch_fdb.h"
#include "switch/switch_forward.h"
#include "switch/switch_handoff.h"
#include "switch/switch_layout.h"

namespace vhostkit {
namespace {

namespace pw = layout::port_word;

// A port's VLAN rule from its words (layout::port_word).
void ReadVlan(const int32_t* w, VlanRule* r) {
  r->access = w[pw::ACCESS] != 0;
  r->vid = static_cast<uint32_t>(w[pw::VID]) & 0xfff;
  r->native = w[pw::NATIVE] < 0 ? -1 : (w[pw::NATIVE] & 0xfff);
  r->all_allowed = w[pw::ALL_ALLOWED] != 0;
  std::copy(w + pw::ALLOWED, w + pw::ALLOWED + pw::kAllowedWords, reinterpret_cast<int32_t*>(r->allowed));
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

bool Absent(const Napi::Value& v) { return v.IsNull() || v.IsUndefined(); }

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
                        InstanceMethod<&SwitchFdbWrap::SetRemote>("setRemote"),
                        InstanceMethod<&SwitchFdbWrap::RemoveRemote>("removeRemote"),
                        InstanceMethod<&SwitchFdbWrap::RemoteOf>("remoteOf"),
                        InstanceMethod<&SwitchFdbWrap::DumpRemote>("dumpRemote"),
                        InstanceAccessor<&SwitchFdbWrap::Size>("size")});
  }

  // new SwitchFdb(maxEntries, shared?: token of switchShared)
  // A table of its own, or the one the threads of a switch share (maxEntries was given to
  // switchShared then). Every call on a shared table holds its lock.
  explicit SwitchFdbWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SwitchFdbWrap>(info) {
    const uint32_t entries = static_cast<uint32_t>(Int(info[0], 1, 1 << 24, "maxEntries"));
    if (Absent(info[1])) {
      shared_ = std::make_shared<SwitchShared>(1, entries, 0);
    } else {
      shared_ = FindSwitchShared(static_cast<uint32_t>(Int(info[1], 1, UINT32_MAX, "shared")));
      if (!shared_) throw Napi::RangeError::New(info.Env(), "SwitchFdb: no such shared switch state (released?)");
    }
    fdb_ = &shared_->fdb();
  }

  SwitchFdb& table() { return *fdb_; }
  const std::shared_ptr<SwitchShared>& shared() const { return shared_; }

 private:
  // learn(mac, vlan, port, now) -> true if new or moved
  Napi::Value Learn(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    const bool r = fdb_->Learn(static_cast<uint64_t>(Int(info[0], 0, kMaxMac, "mac")), static_cast<uint32_t>(Int(info[1], 0, 65535, "vlan")),
                               static_cast<int32_t>(Int(info[2], 0, INT32_MAX, "port")), Int(info[3], -kMaxMs, kMaxMs, "now"));
    return Napi::Boolean::New(info.Env(), r);
  }

  // lookup(mac, vlan, now, agingMs) -> port or -1
  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    const int32_t p = fdb_->Lookup(static_cast<uint64_t>(Int(info[0], 0, kMaxMac, "mac")), static_cast<uint32_t>(Int(info[1], 0, 65535, "vlan")),
                                   Int(info[2], -kMaxMs, kMaxMs, "now"), Int(info[3], 0, kMaxMs, "agingMs"));
    return Napi::Number::New(info.Env(), p);
  }

  // age(now, agingMs) -> entries removed
  Napi::Value Age(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    return Napi::Number::New(info.Env(), fdb_->Age(Int(info[0], -kMaxMs, kMaxMs, "now"), Int(info[1], 0, kMaxMs, "agingMs")));
  }

  // flushPort(port) -> entries removed
  Napi::Value FlushPort(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    return Napi::Number::New(info.Env(), fdb_->FlushPort(static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"))));
  }

  // dump() -> Float64Array [mac, vlan, port, seen, remote] per entry (remote 0: learned;
  // else installed towards that remote VTEP, and seen means nothing)
  Napi::Value Dump(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    const std::vector<SwitchFdb::Entry> all = fdb_->Dump();
    Napi::Float64Array a = Napi::Float64Array::New(info.Env(), all.size() * 5);
    for (size_t i = 0; i < all.size(); i++) {
      a[5 * i] = static_cast<double>(all[i].mac);
      a[5 * i + 1] = all[i].vlan;
      a[5 * i + 2] = all[i].port;
      a[5 * i + 3] = static_cast<double>(all[i].seen);
      a[5 * i + 4] = all[i].remote;
    }
    return a;
  }

  // stats() -> { learned, moved, aged, full }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("learned", fdb_->stats().learned);
    o.Set("moved", fdb_->stats().moved);
    o.Set("aged", fdb_->stats().aged);
    o.Set("full", fdb_->stats().full);
    return o;
  }

  Napi::Value Size(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    return Napi::Number::New(info.Env(), fdb_->size());
  }

  // setRemote(mac, vlan, port, remote) -> false if the table is full: an installed entry
  // (a MAC behind remote VTEP `remote` >= 1 of VXLAN port `port`) that data never ages or moves.
  Napi::Value SetRemote(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    const bool r = fdb_->SetRemote(static_cast<uint64_t>(Int(info[0], 0, kMaxMac, "mac")), static_cast<uint32_t>(Int(info[1], 0, 4095, "vlan")),
                                   static_cast<int32_t>(Int(info[2], 0, INT32_MAX, "port")),
                                   static_cast<uint32_t>(Int(info[3], 1, VtepTable::kMaxVteps, "remote")));
    return Napi::Boolean::New(info.Env(), r);
  }

  // removeRemote(mac, vlan, port, remote) -> true if that installed entry was there and is gone
  Napi::Value RemoveRemote(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    const bool r = fdb_->RemoveRemote(static_cast<uint64_t>(Int(info[0], 0, kMaxMac, "mac")), static_cast<uint32_t>(Int(info[1], 0, 4095, "vlan")),
                                      static_cast<int32_t>(Int(info[2], 0, INT32_MAX, "port")),
                                      static_cast<uint32_t>(Int(info[3], 1, VtepTable::kMaxVteps, "remote")));
    return Napi::Boolean::New(info.Env(), r);
  }

  // remoteOf(mac, vlan) -> the remote VTEP of an installed entry, or 0
  Napi::Value RemoteOf(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    return Napi::Number::New(info.Env(), fdb_->RemoteOf(static_cast<uint64_t>(Int(info[0], 0, kMaxMac, "mac")),
                                                        static_cast<uint32_t>(Int(info[1], 0, 4095, "vlan"))));
  }

  // dumpRemote() -> Float64Array [mac, vlan, port, remote] per installed entry
  Napi::Value DumpRemote(const Napi::CallbackInfo& info) {
    const FdbGuard guard(*fdb_);
    std::vector<SwitchFdb::Entry> all = fdb_->Dump();
    all.erase(std::remove_if(all.begin(), all.end(), [](const SwitchFdb::Entry& e) { return e.remote == 0; }), all.end());
    Napi::Float64Array a = Napi::Float64Array::New(info.Env(), all.size() * 4);
    for (size_t i = 0; i < all.size(); i++) {
      a[4 * i] = static_cast<double>(all[i].mac);
      a[4 * i + 1] = all[i].vlan;
      a[4 * i + 2] = all[i].port;
      a[4 * i + 3] = all[i].remote;
    }
    return a;
  }

  // classify(port, portWords: Int32Array(PortWord), heads: Uint8Array, offsets: Uint32Array | null, stride, cap,
  //          lens: Uint32Array, n, now, agingMs, verdict: Int32Array | null, out: Int32Array(3B + 4)) -> bytes
  // out: dest[0, B), vid[B, 2B), tagged[2B, 3B), then the frames dropped as bad, by the hook, by
  // the VLAN rules, and the frames flooded. Returns the bytes of the n frames.
  Napi::Value Classify(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int32_t port = static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"));
    const int32_t* words = TypedData<int32_t>(env, info[1], napi_int32_array, pw::kWords, "port words");
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
    int32_t* out = TypedData<int32_t>(env, info[11], napi_int32_array, layout::classify_count::kWords, "out", &out_len);
    const size_t b = (out_len - layout::classify_count::kWords) / 3;
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
    VlanRule rule;
    ReadVlan(words, &rule);
    ClassifyCounts c;
    SwitchClassify(*fdb_, port, rule.Ingress(), heads, off, stride, cap, lens, n, now, aging, verdict, out, out + b, out + 2 * b, &c);
    int32_t* counts = out + 3 * b;
    namespace cc = layout::classify_count;
    counts[cc::BAD] = static_cast<int32_t>(c.bad);
    counts[cc::HOOK] = static_cast<int32_t>(c.hook);
    counts[cc::VLAN] = static_cast<int32_t>(c.vlan);
    counts[cc::FLOODED] = static_cast<int32_t>(c.flooded);
    return Napi::Number::New(env, c.bytes);
  }

  std::shared_ptr<SwitchShared> shared_;
  SwitchFdb* fdb_ = nullptr;
};

// The typed array at info[i] of at least min_len elements, and a reference that keeps it.
template <typename T>
T* Held(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, size_t min_len, const char* what,
        std::vector<Napi::ObjectReference>* held, size_t* len = nullptr) {
  T* p = TypedData<T>(info.Env(), info[i], type, min_len, what, len);
  held->push_back(Napi::Persistent(info[i].As<Napi::Object>()));
  return p;
}

class ForwarderWrap : public Napi::ObjectWrap<ForwarderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Forwarder",
                       {InstanceMethod<&ForwarderWrap::SetPort>("setPort"), InstanceMethod<&ForwarderWrap::RemovePort>("removePort"),
                        InstanceMethod<&ForwarderWrap::Forward>("forward"), InstanceMethod<&ForwarderWrap::ForwardPopped>("forwardPopped"),
                        InstanceMethod<&ForwarderWrap::SetTxQueues>("setTxQueues"),
                        InstanceMethod<&ForwarderWrap::ForwardAll>("forwardAll"),
                        InstanceMethod<&ForwarderWrap::ForwardFlat>("forwardFlat"),
                        InstanceMethod<&ForwarderWrap::ServiceHost>("serviceHost"),
                        InstanceMethod<&ForwarderWrap::AddFlow>("addFlow"), InstanceMethod<&ForwarderWrap::RemoveFlows>("removeFlows"),
                        InstanceMethod<&ForwarderWrap::FlowStats>("flowStats"), InstanceMethod<&ForwarderWrap::ExpireFlows>("expireFlows"),
                        InstanceMethod<&ForwarderWrap::SetHandlerStage>("setHandlerStage"),
                        InstanceMethod<&ForwarderWrap::Output>("output"),
                        InstanceMethod<&ForwarderWrap::SetVtep>("setVtep"),
                        InstanceMethod<&ForwarderWrap::DrainHandoff>("drainHandoff"),
                        InstanceMethod<&ForwarderWrap::WakeFd>("wakeFd")});
  }

  // new Forwarder(fdb: SwitchFdb, burst, events: Int32Array, thread?: number)
  // thread: which of the threads sharing fdb's switch state this one is (ports owned by
  // another go through the handoff rings).
  // events, after every call: [queues broken B, captures done C, then B (port, slot) pairs,
  // then C ports]; room for 2 + 3 * (ports' RX queues + ports) words is checked by setPort.
  explicit ForwarderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ForwarderWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(GetAddonData(env).switch_fdb_ctor.Value())) {
      throw Napi::TypeError::New(env, "Forwarder: the first argument must be a SwitchFdb");
    }
    table_ = Napi::Persistent(info[0].As<Napi::Object>());
    const uint32_t burst = static_cast<uint32_t>(Int(info[1], 1, 1024, "burst"));
    events_ = TypedData<int32_t>(env, info[2], napi_int32_array, 2, "events", &events_len_);
    events_ref_ = Napi::Persistent(info[2].As<Napi::Object>());
    SwitchFdbWrap* fdb = Napi::ObjectWrap<SwitchFdbWrap>::Unwrap(info[0].As<Napi::Object>());
    fwd_ = std::make_unique<Forwarder>(fdb->table(), burst, ResolveSlot);
    const std::shared_ptr<SwitchShared>& shared = fdb->shared();
    if (!Absent(info[3])) {
      const uint32_t self = static_cast<uint32_t>(Int(info[3], 0, shared->threads() - 1, "thread"));
      if (shared->threads() > 1) fwd_->SetShared(shared.get(), self);
    }
  }

 private:
  // setPort(id, words: Int32Array(PortWord), counters: Float64Array(PortCounter), rxSlots: Uint32Array,
  //         rxStats: Float64Array(QueueStat x rxSlots.length), vxlanDest: Uint8Array | null,
  //         capture: Uint8Array | null, captureState: Float64Array(CaptureWord) | null)
  // Adds or replaces a port; the arrays are held (and written) until the next setPort or
  // removePort of this id.
  Napi::Value SetPort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int32_t id = static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"));
    std::vector<Napi::ObjectReference> held;
    const int32_t* w = TypedData<int32_t>(env, info[1], napi_int32_array, pw::kWords, "port words");
    SwitchPort p;
    p.id = id;
    if (w[pw::KIND] < 0 || w[pw::KIND] > 2) throw Napi::RangeError::New(env, "setPort: kind must be 0 (guest), 1 (TAP) or 2 (VXLAN)");
    p.kind = static_cast<PortKind>(w[pw::KIND]);
    p.hdr_len = static_cast<uint32_t>(w[pw::HDR_LEN]);
    if (p.hdr_len != 10 && p.hdr_len != 12) throw Napi::RangeError::New(env, "setPort: header length must be 10 or 12");
    p.mergeable = w[pw::MERGEABLE] != 0;
    const uint32_t o = static_cast<uint32_t>(w[pw::RX_OFFLOADS]);
    p.offloads.csum = o & 1;
    p.offloads.tso4 = o & 2;
    p.offloads.tso6 = o & 4;
    p.offloads.ecn = o & 8;
    p.offloads.ufo = o & 16;
    p.max_frame = w[pw::MAX_FRAME] < 0 ? 0 : static_cast<uint32_t>(w[pw::MAX_FRAME]);
    p.tx_offloads = w[pw::TX_OFFLOADS] != 0;
    ReadVlan(w, &p.vlan);
    p.counters = Held<double>(info, 2, napi_float64_array, layout::port_counter::kWords, "counters", &held);
    size_t nrx = 0;
    const uint32_t* slots = Held<uint32_t>(info, 3, napi_uint32_array, 0, "rxSlots", &held, &nrx);
    double* stats = Held<double>(info, 4, napi_float64_array, nrx * layout::queue_stat::kWords, "rxStats", &held);
    if (p.kind != PortKind::kGuest && nrx != 0) throw Napi::RangeError::New(env, "setPort: a host port has no RX queues");
    for (size_t k = 0; k < nrx; k++) p.rx.push_back(RxQueueRef{slots[k], stats + k * layout::queue_stat::kWords});
    const int32_t owner = w[pw::OWNER];
    SwitchShared* shared = fwd_->shared();
    if (owner >= 0 && shared == nullptr) throw Napi::RangeError::New(env, "setPort: an owner thread, but this forwarder is its switch's only thread");
    if (shared != nullptr && (owner < 0 || static_cast<uint32_t>(owner) >= shared->threads())) {
      throw Napi::RangeError::New(env, "setPort: the owner must be one of the switch's threads");
    }
    if (shared != nullptr && static_cast<uint32_t>(owner) != fwd_->self() && nrx == 0) {
      // Another thread's port, none of whose RX queues this thread serves: frames for it go
      // into the ring to its owner. (A guest port with several queue pairs may have some
      // served here: frames this thread switches to it go straight into those.) A capture
      // here sees what this thread takes from the port's TX queues.
      p.kind = PortKind::kGuest;
      p.handoff = &shared->Ring(fwd_->self(), static_cast<uint32_t>(owner));
      p.owner = static_cast<uint32_t>(owner);
    } else if (p.kind != PortKind::kGuest) {
      if (w[pw::HOST_FD] < 0) throw Napi::RangeError::New(env, "setPort: a host port needs its fd");
      p.host.fd = w[pw::HOST_FD];
      p.host.offloads = w[pw::HOST_OFFLOADS] != 0;
    }
    if (p.kind == PortKind::kVxlan) {
      if (w[pw::VNI] < 0 || w[pw::VNI] > 0xffffff) throw Napi::RangeError::New(env, "setPort: VNI must be 0..16777215");
      p.host.vni = static_cast<uint32_t>(w[pw::VNI]);
      const uint8_t vx[8] = {0x08, 0, 0, 0, static_cast<uint8_t>(p.host.vni >> 16), static_cast<uint8_t>(p.host.vni >> 8),
                             static_cast<uint8_t>(p.host.vni), 0};
      std::copy(vx, vx + 8, p.host.vxlan_hdr);
      size_t len = 0;
      const uint8_t* d = TypedData<uint8_t>(env, info[5], napi_uint8_array, 0, "vxlanDest", &len);
      if (len != sizeof(sockaddr_in) && len != sizeof(sockaddr_in6)) {
        throw Napi::RangeError::New(env, "setPort: vxlanDest must be a sockaddr_in or sockaddr_in6");
      }
      std::copy(d, d + len, reinterpret_cast<uint8_t*>(&p.host.dest));
      const bool ok = (p.host.dest.ss_family == AF_INET && len == sizeof(sockaddr_in)) ||
                      (p.host.dest.ss_family == AF_INET6 && len == sizeof(sockaddr_in6));
      if (!ok) throw Napi::RangeError::New(env, "setPort: vxlanDest's address family does not match its length");
      p.host.dest_len = static_cast<socklen_t>(len);
    }
    if (!Absent(info[6])) {
      size_t len = 0;
      p.capture.buf = Held<uint8_t>(info, 6, napi_uint8_array, 0, "capture", &held, &len);
      p.capture.len = len;
      p.capture.state = Held<double>(info, 7, napi_float64_array, layout::capture_word::kWords, "captureState", &held);
      p.captured = true;
    }
    // Room in events for every queue and capture that may break or end in one call.
    size_t queues = nrx + 1;
    for (const auto& [pid, refs] : held_) {
      const SwitchPort* q = fwd_->Find(pid);
      if (pid != id && q != nullptr) queues += q->rx.size() + 1;
    }
    if (events_len_ < 2 + 3 * queues) throw Napi::RangeError::New(env, "setPort: the events array is too short for the ports' queues");
    if (auto vt = vteps_.find(id); vt != vteps_.end() && p.kind == PortKind::kVxlan) p.host.vteps = vt->second.get();
    fwd_->Set(std::move(p));
    held_[id] = std::move(held);
    return env.Undefined();
  }

  // setVtep(port, remote, dest: Uint8Array (sockaddr_in / sockaddr_in6) | null, flood: boolean)
  // Remote VTEP `remote` (1..4096) of VXLAN port `port`, or none (dest null). From the first
  // call on, the port sends by its VTEP table (fdb entries installed with setRemote: to their
  // VTEP; the rest: to the flood VTEPs), not to its one remote; the table outlives setPort.
  Napi::Value SetVtep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int32_t id = static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"));
    const uint32_t r = static_cast<uint32_t>(Int(info[1], 1, VtepTable::kMaxVteps, "remote"));
    SwitchPort* p = fwd_->Find(id);
    if (p == nullptr || p->kind != PortKind::kVxlan) throw Napi::RangeError::New(env, "setVtep: no such VXLAN port in the forwarder");
    VtepTable::Vtep v;
    if (!Absent(info[2])) {
      size_t len = 0;
      const uint8_t* d = TypedData<uint8_t>(env, info[2], napi_uint8_array, 0, "dest", &len);
      if (len != sizeof(sockaddr_in) && len != sizeof(sockaddr_in6)) throw Napi::RangeError::New(env, "setVtep: dest must be a sockaddr_in or sockaddr_in6");
      std::copy(d, d + len, reinterpret_cast<uint8_t*>(&v.addr));
      const bool ok = (v.addr.ss_family == AF_INET && len == sizeof(sockaddr_in)) || (v.addr.ss_family == AF_INET6 && len == sizeof(sockaddr_in6));
      if (!ok) throw Napi::RangeError::New(env, "setVtep: dest's address family does not match its length");
      v.len = static_cast<socklen_t>(len);
      v.flood = info[3].ToBoolean().Value();
    }
    std::unique_ptr<VtepTable>& t = vteps_[id];
    if (!t) {
      t = std::make_unique<VtepTable>();
      t->fdb = &fwd_->fdb();
    }
    if (t->vteps.size() < r) t->vteps.resize(r);
    t->vteps[r - 1] = v;
    p->host.vteps = t.get();
    return env.Undefined();
  }

  // removePort(id)
  Napi::Value RemovePort(const Napi::CallbackInfo& info) {
    const int32_t id = static_cast<int32_t>(Int(info[0], 0, INT32_MAX, "port"));
    fwd_->Remove(id);
    held_.erase(id);
    vteps_.erase(id);
    return info.Env().Undefined();
  }

  SwitchPort& Port(Napi::Env env, const Napi::Value& v) {
    SwitchPort* p = fwd_->Find(static_cast<int32_t>(Int(v, 0, INT32_MAX, "port")));
    if (p == nullptr) throw Napi::RangeError::New(env, "no such port in the forwarder");
    return *p;
  }

  // After a call: the queues that broke and the captures that reached their count.
  void Events() {
    const auto& broken = fwd_->broken();
    const auto& done = fwd_->captures_done();
    size_t at = 2;
    uint32_t nb = 0;
    uint32_t nd = 0;
    for (const Forwarder::Broken& b : broken) {
      if (at + 2 > events_len_) break;
      events_[at++] = b.port;
      events_[at++] = static_cast<int32_t>(b.slot);
      nb++;
    }
    for (int32_t id : done) {
      if (at + 1 > events_len_) break;
      events_[at++] = id;
      nd++;
    }
    events_[0] = static_cast<int32_t>(nb);
    events_[1] = static_cast<int32_t>(nd);
  }

  // The chains of a popped burst of port's TX queue, to the end (classify, capture, deliver, push).
  Napi::Value Finish(Napi::Env env, SwitchPort& src, const QueueView& tx, uint32_t n, int64_t now, int64_t aging,
                     const int32_t* verdict, double* stats) {
    const std::shared_ptr<MemTable>& mem = tx.q->memory();
    if (!mem) throw Napi::Error::New(env, "forward: queue has no memory");
    const int32_t pushed = fwd_->Burst(src, *tx.q, *tx.out, *mem, tx.used_id, tx.used_len, n, now, aging, verdict, stats);
    Events();
    if (pushed < 0) throw Napi::RangeError::New(env, "forward: push failed: an id is not in flight (or pushed twice), or the rings are not set");
    return Napi::Number::New(env, n);
  }

  // forward(txSlot, port, now, agingMs, txStats: Float64Array(QueueStat)) -> frames taken, or < 0 (-VqError)
  // One whole burst of port's TX queue: pop, then as forwardPopped.
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SwitchPort& src = Port(env, info[1]);
    const int64_t now = Int(info[2], -kMaxMs, kMaxMs, "now");
    const int64_t aging = Int(info[3], 0, kMaxMs, "agingMs");
    double* stats = TypedData<double>(env, info[4], napi_float64_array, layout::queue_stat::kWords, "txStats");
    const QueueView tx = UnwrapQueue(info[0]);
    if (!tx.q->memory()) throw Napi::Error::New(env, "forward: queue has no memory");
    const int32_t n = tx.q->Pop(*tx.out, std::min(tx.burst, fwd_->burst()));
    if (n <= 0) return Napi::Number::New(env, n);
    return Finish(env, src, tx, static_cast<uint32_t>(n), now, aging, nullptr, stats);
  }

  // forwardPopped(txSlot, port, n, now, agingMs, verdict: Int32Array | null, txStats) -> n
  // The n chains the caller popped from port's TX queue (a hook saw them): classified with
  // the verdicts, captured, delivered, pushed back.
  Napi::Value ForwardPopped(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SwitchPort& src = Port(env, info[1]);
    const QueueView tx = UnwrapQueue(info[0]);
    const uint32_t n = static_cast<uint32_t>(Int(info[2], 0, std::min(tx.burst, fwd_->burst()), "n"));
    const int64_t now = Int(info[3], -kMaxMs, kMaxMs, "now");
    const int64_t aging = Int(info[4], 0, kMaxMs, "agingMs");
    const int32_t* verdict = Absent(info[5]) ? nullptr : TypedData<int32_t>(env, info[5], napi_int32_array, n, "verdict");
    double* stats = TypedData<double>(env, info[6], napi_float64_array, layout::queue_stat::kWords, "txStats");
    if (n == 0) return Napi::Number::New(env, 0);
    return Finish(env, src, tx, n, now, aging, verdict, stats);
  }

  // setTxQueues(slots: Uint32Array, ports: Int32Array, stats: Float64Array[] (QueueStat each))
  // The guests' TX queues forwardAll serves, in that order: queue i has slot slots[i], is
  // port ports[i]'s, and counts into stats[i] (held until the next call).
  Napi::Value SetTxQueues(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t n = 0;
    size_t np = 0;
    const uint32_t* slots = TypedData<uint32_t>(env, info[0], napi_uint32_array, 0, "slots", &n);
    const int32_t* ports = TypedData<int32_t>(env, info[1], napi_int32_array, 0, "ports", &np);
    if (!info[2].IsArray() || np != n || info[2].As<Napi::Array>().Length() != n) {
      throw Napi::TypeError::New(env, "setTxQueues: slots, ports and stats must have one entry per queue");
    }
    const Napi::Array list = info[2].As<Napi::Array>();
    std::vector<TxRef> txq;
    std::vector<Napi::ObjectReference> held;
    for (uint32_t i = 0; i < n; i++) {
      const Napi::Value v = list.Get(i);
      double* st = TypedData<double>(env, v, napi_float64_array, layout::queue_stat::kWords, "stats");
      held.push_back(Napi::Persistent(v.As<Napi::Object>()));
      txq.push_back(TxRef{slots[i], ports[i], st});
    }
    txq_ = std::move(txq);
    txq_held_ = std::move(held);
    return env.Undefined();
  }

  // forwardAll(now, agingMs, maxPasses, eachBurst: boolean, failed: Int32Array(2)) -> frames taken
  // Passes over the queues of setTxQueues, forwarding a burst of each as forward() does:
  // up to maxPasses passes, fewer if a pass finds no work. It returns early, for JavaScript
  // to act, after a burst that broke a receiver's queue, ended a capture or staged frames for
  // handlers (or after every burst, with eachBurst), and when a queue's pop fails: then
  // failed = [its index in the list, the pop's result (-VqError)], else failed[0] = -1.
  // Queues whose slot or port has gone are skipped (the caller sets the list again).
  Napi::Value ForwardAll(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t now = Int(info[0], -kMaxMs, kMaxMs, "now");
    const int64_t aging = Int(info[1], 0, kMaxMs, "agingMs");
    const int64_t passes = Int(info[2], 1, 1 << 20, "maxPasses");
    const bool each = info[3].ToBoolean().Value();
    int32_t* failed = TypedData<int32_t>(env, info[4], napi_int32_array, 2, "failed");
    failed[0] = -1;
    failed[1] = 0;
    double total = 0;
    // While it spins the thread drains its handoff rings itself: the others need not wake it.
    SwitchShared* shared = fwd_->shared();
    struct Awake {
      SwitchShared* s;
      uint32_t self;
      ~Awake() {
        if (s != nullptr) s->SetWantWake(self, true);
      }
    } awake{shared, fwd_->self()};
    if (shared != nullptr) shared->SetWantWake(fwd_->self(), false);
    for (int64_t pass = 0; pass < passes; pass++) {
      uint32_t work = 0;
      if (shared != nullptr) {
        work += fwd_->DrainHandoff(4 * fwd_->burst());
        Events();
        if (events_[0] != 0 || events_[1] != 0) return Napi::Number::New(env, total + work);
      }
      for (size_t i = 0; i < txq_.size(); i++) {
        const TxRef& t = txq_[i];
        QueueView tx;
        if (!QueueBySlot(t.slot, &tx)) continue;
        SwitchPort* src = fwd_->Find(t.port);
        const std::shared_ptr<MemTable>& mem = tx.q->memory();
        if (src == nullptr || !mem) continue;
        const int32_t n = tx.q->Pop(*tx.out, std::min(tx.burst, fwd_->burst()));
        if (n < 0) {
          failed[0] = static_cast<int32_t>(i);
          failed[1] = n;
          return Napi::Number::New(env, total + work);
        }
        if (n == 0) continue;
        const int32_t pushed =
            fwd_->Burst(*src, *tx.q, *tx.out, *mem, tx.used_id, tx.used_len, static_cast<uint32_t>(n), now, aging, nullptr, t.stats);
        Events();
        if (pushed < 0) throw Napi::RangeError::New(env, "forwardAll: push failed: an id is not in flight (or pushed twice), or the rings are not set");
        work += static_cast<uint32_t>(n);
        if (each || events_[0] != 0 || events_[1] != 0 || fwd_->handler_stage().Pending()) return Napi::Number::New(env, total + work);
      }
      total += work;
      if (work == 0) break;
    }
    return Napi::Number::New(env, total);
  }

  // drainHandoff(maxFrames, readWake) -> frames taken: what the switch's other threads
  // handed to this one, sent on to its ports (readWake: its wake-up eventfd fired, and is
  // read first).
  Napi::Value DrainHandoff(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const uint32_t max = static_cast<uint32_t>(Int(info[0], 1, 1 << 20, "maxFrames"));
    SwitchShared* shared = fwd_->shared();
    if (shared == nullptr) return Napi::Number::New(env, 0);
    uint64_t v;
    while (info[1].ToBoolean().Value() && read(shared->WakeFd(fwd_->self()), &v, sizeof v) < 0 && errno == EINTR) {
    }
    const uint32_t n = fwd_->DrainHandoff(max);
    Events();
    return Napi::Number::New(env, n);
  }

  // wakeFd() -> the eventfd that turns readable when another thread hands this one frames
  // (-1: the switch has one thread).
  Napi::Value WakeFd(const Napi::CallbackInfo& info) {
    SwitchShared* shared = fwd_->shared();
    return Napi::Number::New(info.Env(), shared == nullptr ? -1 : shared->WakeFd(fwd_->self()));
  }

  // forwardFlat(port, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null, n, now, agingMs)
  // Frames held in data (frame i: lens[i] bytes at offsets[i]), switched as if port had received them.
  Napi::Value ForwardFlat(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SwitchPort& src = Port(env, info[0]);
    const FlatArgs f = ReadFlat(info, "forwardFlat");
    fwd_->Flat(src, f.data, f.off, f.lens, f.hdr10, f.n, Int(info[6], -kMaxMs, kMaxMs, "now"), Int(info[7], 0, kMaxMs, "agingMs"));
    Events();
    return env.Undefined();
  }

  // Frames in a host buffer, info[1..5]: data, offsets, lens, hdr10 | null, n; each checked
  // to lie inside data and to be no larger than kMaxFrame.
  struct FlatArgs {
    const uint8_t* data;
    const uint32_t* off;
    const uint32_t* lens;
    const uint8_t* hdr10;
    uint32_t n;
  };
  static FlatArgs ReadFlat(const Napi::CallbackInfo& info, const std::string& what) {
    Napi::Env env = info.Env();
    size_t data_len = 0;
    FlatArgs f;
    f.data = TypedData<uint8_t>(env, info[1], napi_uint8_array, 0, "data", &data_len);
    f.n = static_cast<uint32_t>(Int(info[5], 0, 1 << 20, "n"));
    f.off = TypedData<uint32_t>(env, info[2], napi_uint32_array, f.n, "offsets");
    f.lens = TypedData<uint32_t>(env, info[3], napi_uint32_array, f.n, "lens");
    f.hdr10 = Absent(info[4]) ? nullptr : TypedData<uint8_t>(env, info[4], napi_uint8_array, size_t{f.n} * 10, "hdr10");
    for (uint32_t i = 0; i < f.n; i++) {
      if (uint64_t{f.off[i]} + f.lens[i] > data_len) throw Napi::RangeError::New(env, what + ": a frame lies outside data");
      if (f.lens[i] > kMaxFrame) throw Napi::RangeError::New(env, what + ": a frame is larger than 64 KiB + 256");
    }
    return f;
  }

  // serviceHost(port, now, agingMs) -> frames switched, or -errno if reading the port's fd failed
  Napi::Value ServiceHost(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SwitchPort& p = Port(env, info[0]);
    if (p.kind == PortKind::kGuest) throw Napi::RangeError::New(env, "serviceHost: not a host port");
    const int32_t r = fwd_->ServiceHost(p, Int(info[1], -kMaxMs, kMaxMs, "now"), Int(info[2], 0, kMaxMs, "agingMs"));
    Events();
    return Napi::Number::New(env, r);
  }

  // A flow from its words (layout::flow_word, then its actions: layout::flow_action each).
  static Flow ReadFlow(Napi::Env env, const Napi::Value& v, bool with_actions) {
    namespace fw = layout::flow_word;
    size_t len = 0;
    const int32_t* w = TypedData<int32_t>(env, v, napi_int32_array, fw::kWords, "flow words", &len);
    Flow f;
    f.priority = w[fw::PRIORITY];
    if (f.priority < 0 || f.priority > 65535) throw Napi::RangeError::New(env, "flow: priority must be 0..65535");
    FlowMatch& m = f.match;
    m.fields = static_cast<uint32_t>(w[fw::FIELDS]);
    if (m.fields >> layout::flow_field::kWords) throw Napi::RangeError::New(env, "flow: unknown match fields");
    m.in_port = w[fw::IN_PORT];
    m.dl_src = (uint64_t{static_cast<uint32_t>(w[fw::DL_SRC_HI]) & 0xffff} << 32) | static_cast<uint32_t>(w[fw::DL_SRC_LO]);
    m.dl_dst = (uint64_t{static_cast<uint32_t>(w[fw::DL_DST_HI]) & 0xffff} << 32) | static_cast<uint32_t>(w[fw::DL_DST_LO]);
    m.dl_vlan = static_cast<uint32_t>(w[fw::DL_VLAN]) & 0xfff;
    m.dl_type = static_cast<uint32_t>(w[fw::DL_TYPE]) & 0xffff;
    m.nw_src_mask = static_cast<uint32_t>(w[fw::NW_SRC_MASK]);
    m.nw_src = static_cast<uint32_t>(w[fw::NW_SRC]) & m.nw_src_mask;
    m.nw_dst_mask = static_cast<uint32_t>(w[fw::NW_DST_MASK]);
    m.nw_dst = static_cast<uint32_t>(w[fw::NW_DST]) & m.nw_dst_mask;
    m.nw_proto = static_cast<uint32_t>(w[fw::NW_PROTO]) & 0xff;
    m.nw_ttl = static_cast<uint32_t>(w[fw::NW_TTL]) & 0xff;
    m.tp_src = static_cast<uint32_t>(w[fw::TP_SRC]) & 0xffff;
    m.tp_dst = static_cast<uint32_t>(w[fw::TP_DST]) & 0xffff;
    m.tcp_flags_mask = static_cast<uint32_t>(w[fw::TCP_FLAGS_MASK]) & 0x0fff;
    m.tcp_flags = static_cast<uint32_t>(w[fw::TCP_FLAGS]) & m.tcp_flags_mask;
    auto ip6 = [&](uint32_t at, uint32_t len_at, Ip6* a, uint32_t* len) {
      if (w[len_at] < 0 || w[len_at] > 128) throw Napi::RangeError::New(env, "flow: an IPv6 prefix length must be 0..128");
      *len = static_cast<uint32_t>(w[len_at]);
      Ip6 v;
      v.hi = (uint64_t{static_cast<uint32_t>(w[at])} << 32) | static_cast<uint32_t>(w[at + 1]);
      v.lo = (uint64_t{static_cast<uint32_t>(w[at + 2])} << 32) | static_cast<uint32_t>(w[at + 3]);
      *a = v.Prefix(*len);
    };
    ip6(fw::IPV6_SRC_0, fw::IPV6_SRC_LEN, &m.ipv6_src, &m.ipv6_src_len);
    ip6(fw::IPV6_DST_0, fw::IPV6_DST_LEN, &m.ipv6_dst, &m.ipv6_dst_len);
    f.id = w[fw::ID];
    if (w[fw::IDLE_TIMEOUT] < 0 || w[fw::IDLE_TIMEOUT] > 65535 || w[fw::HARD_TIMEOUT] < 0 || w[fw::HARD_TIMEOUT] > 65535) {
      throw Napi::RangeError::New(env, "flow: idle_timeout and hard_timeout must be 0..65535 seconds");
    }
    f.idle_timeout = static_cast<uint32_t>(w[fw::IDLE_TIMEOUT]);
    f.hard_timeout = static_cast<uint32_t>(w[fw::HARD_TIMEOUT]);
    if (!with_actions) return f;
    const int32_t n = w[fw::N_ACTIONS];
    if (n < 0 || len < fw::kWords + static_cast<size_t>(n) * layout::flow_action::kWords) {
      throw Napi::RangeError::New(env, "flow: N_ACTIONS does not fit the words");
    }
    if (const char* bad = ReadFlowActions(w + fw::kWords, static_cast<uint32_t>(n), &f.actions)) throw Napi::RangeError::New(env, bad);
    return f;
  }

  // addFlow(words: Int32Array(FlowWord + actions), now: ms): adds a flow, or replaces the one
  // of the same priority and match (its counters kept). now: the clock of the calls' now.
  Napi::Value AddFlow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fwd_->flows().Add(ReadFlow(env, info[0], true), Int(info[1], -kMaxMs, kMaxMs, "now"))) {
      throw Napi::RangeError::New(env, "flow table full (" + std::to_string(FlowTable::kMaxFlows) + " flows)");
    }
    return env.Undefined();
  }

  // removeFlows(words, strict) -> flows removed: those of the same match (strict: and priority),
  // or (not strict) every flow whose match includes the given fields with their values.
  Napi::Value RemoveFlows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const Flow f = ReadFlow(env, info[0], false);
    return Napi::Number::New(env, fwd_->flows().Remove(f.match, f.priority, info[1].ToBoolean()));
  }

  // setHandlerStage(buf: Uint8Array): where frames for handlers are staged (layout
  // handler_word, then handler_record records); held until replaced.
  Napi::Value SetHandlerStage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t len = 0;
    uint8_t* buf = TypedData<uint8_t>(env, info[0], napi_uint8_array, layout::handler_word::kWords * 4, "handler stage", &len);
    if (len > (size_t{1} << 30)) throw Napi::RangeError::New(env, "setHandlerStage: at most 1 GiB");
    stage_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    fwd_->handler_stage().Attach(buf, len);
    return env.Undefined();
  }

  // output(port, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, hdr10: Uint8Array | null, n)
  // -> false if there is no such port: frames sent out of the port as they are.
  Napi::Value Output(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int32_t port = static_cast<int32_t>(Int(info[0], INT32_MIN, INT32_MAX, "port"));
    const FlatArgs f = ReadFlat(info, "output");
    const bool found = fwd_->Output(port, f.data, f.off, f.lens, f.hdr10, f.n);
    Events();
    return Napi::Boolean::New(env, found);
  }

  // flowStats(now: ms) -> Float64Array of FlowStat words per flow, in the table's order.
  Napi::Value FlowStats(const Napi::CallbackInfo& info) {
    namespace fs = layout::flow_stat;
    const auto now = Int(info[0], -kMaxMs, kMaxMs, "now");
    const std::vector<uint32_t> order = fwd_->flows().Ordered();
    Napi::Float64Array a = Napi::Float64Array::New(info.Env(), order.size() * fs::kWords);
    for (size_t i = 0; i < order.size(); i++) {
      const Flow& f = fwd_->flows().flow(order[i]);
      const FlowHot& h = fwd_->flows().hot(order[i]);
      a[i * fs::kWords + fs::ID] = f.id;
      a[i * fs::kWords + fs::PACKETS] = h.packets;
      a[i * fs::kWords + fs::BYTES] = h.bytes;
      a[i * fs::kWords + fs::IDLE_MS] = static_cast<double>(std::max<int64_t>(0, now - h.used_ms));
      a[i * fs::kWords + fs::AGE_MS] = static_cast<double>(std::max<int64_t>(0, now - f.added_ms));
    }
    return a;
  }

  // expireFlows(now: ms) -> flows removed because their idle or hard timeout passed.
  Napi::Value ExpireFlows(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), fwd_->flows().Expire(Int(info[0], -kMaxMs, kMaxMs, "now")));
  }

  Napi::ObjectReference table_;
  Napi::ObjectReference events_ref_;
  Napi::ObjectReference stage_ref_;
  int32_t* events_ = nullptr;
  size_t events_len_ = 0;
  std::unique_ptr<Forwarder> fwd_;
  std::unordered_map<int32_t, std::vector<Napi::ObjectReference>> held_;
  // The TX queues forwardAll serves (setTxQueues), and their stats arrays, held.
  struct TxRef {
    uint32_t slot;
    int32_t port;
    double* stats;
  };
  std::vector<TxRef> txq_;
  std::vector<Napi::ObjectReference> txq_held_;
  // VXLAN ports' remote VTEPs (setVtep), by port id.
  std::unordered_map<int32_t, std::unique_ptr<VtepTable>> vteps_;
};

// The layouts of switch_layout.h.
Napi::Object Layouts(Napi::Env env) {
  static constexpr const char* kPortCounter[] = {VHOSTKIT_PORT_COUNTER(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kPortWord[] = {VHOSTKIT_PORT_WORD(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kQueueStat[] = {VHOSTKIT_QUEUE_STAT(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kCaptureWord[] = {VHOSTKIT_CAPTURE_WORD(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kClassifyCount[] = {VHOSTKIT_CLASSIFY_COUNT(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kFlowWord[] = {VHOSTKIT_FLOW_WORD(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kFlowField[] = {VHOSTKIT_FLOW_FIELD(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kFlowStat[] = {VHOSTKIT_FLOW_STAT(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kFlowAction[] = {VHOSTKIT_FLOW_ACTION(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kFlowOp[] = {VHOSTKIT_FLOW_OP(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kHandlerWord[] = {VHOSTKIT_HANDLER_WORD(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kHandlerRecord[] = {VHOSTKIT_HANDLER_RECORD(VHOSTKIT_LAYOUT_NAME)};
  Napi::Object all = Napi::Object::New(env);
  all.Set("PortCounter", LayoutObject(env, kPortCounter, layout::port_counter::kWords));
  all.Set("PortWord", LayoutObject(env, kPortWord, pw::kWords));
  all.Set("QueueStat", LayoutObject(env, kQueueStat, layout::queue_stat::kWords));
  all.Set("CaptureWord", LayoutObject(env, kCaptureWord, layout::capture_word::kWords));
  all.Set("ClassifyCount", LayoutObject(env, kClassifyCount, layout::classify_count::kWords));
  all.Set("FlowWord", LayoutObject(env, kFlowWord, layout::flow_word::kWords));
  all.Set("FlowField", LayoutObject(env, kFlowField, layout::flow_field::kWords));
  all.Set("FlowStat", LayoutObject(env, kFlowStat, layout::flow_stat::kWords));
  all.Set("FlowAction", LayoutObject(env, kFlowAction, layout::flow_action::kWords));
  all.Set("FlowOp", LayoutObject(env, kFlowOp, layout::flow_op::kWords));
  all.Set("HandlerWord", LayoutObject(env, kHandlerWord, layout::handler_word::kWords));
  all.Set("HandlerRecord", LayoutObject(env, kHandlerRecord, layout::handler_record::kWords));
  return all;
}

// switchShared(threads, maxEntries, ringBytes) -> token: the state the data-plane threads
// of one switch share (its table, the handoff rings), found by each thread's
// new SwitchFdb(maxEntries, token). releaseSwitchShared(token) forgets the token; the state
// lives on while a table holds it.
Napi::Value CreateShared(const Napi::CallbackInfo& info) {
  const uint32_t threads = static_cast<uint32_t>(Int(info[0], 1, 64, "threads"));
  const uint32_t entries = static_cast<uint32_t>(Int(info[1], 1, 1 << 24, "maxEntries"));
  const size_t ring = static_cast<size_t>(Int(info[2], 1 << 18, 1 << 28, "ringBytes"));
  try {
    return Napi::Number::New(info.Env(), RegisterSwitchShared(std::make_shared<SwitchShared>(threads, entries, ring)));
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("switchShared: ") + e.what());
  }
}

Napi::Value ReleaseShared(const Napi::CallbackInfo& info) {
  UnregisterSwitchShared(static_cast<uint32_t>(Int(info[0], 1, UINT32_MAX, "token")));
  return info.Env().Undefined();
}

}  // namespace

void BindSwitch(Napi::Env env, Napi::Object exports) {
  Napi::Function fdb = SwitchFdbWrap::Define(env);
  GetAddonData(env).switch_fdb_ctor = Napi::Persistent(fdb);
  exports.Set("SwitchFdb", fdb);
  exports.Set("Forwarder", ForwarderWrap::Define(env));
  exports.Set("switchLayouts", Layouts(env));
  exports.Set("switchShared", Napi::Function::New(env, CreateShared, "switchShared"));
  exports.Set("releaseSwitchShared", Napi::Function::New(env, ReleaseShared, "releaseSwitchShared"));
}

}  // namespace vhostkit
