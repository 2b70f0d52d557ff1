// JavaScript surface of the host side of switch ports (tap.cc, host_io.cc): one call per
// burst, typed arrays in and out. Failures to open or read throw Node-style system errors
// (code, errno, syscall); a full queue on the hot paths is a counter, never an exception.
#include <netinet/in.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "addon/bindings.h"
#include "io/fd_watch.h"  // SystemError
#include "io/host_io.h"
#include "io/io_layout.h"
#include "io/tap.h"

namespace vhostkit {
namespace {

namespace hio = hostio;

int64_t Int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  if (i >= info.Length() || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= static_cast<double>(min) && v <= static_cast<double>(max) && std::floor(v) == v)) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [" + std::to_string(min) + ", " +
                                                std::to_string(max) + "], got " + info[i].ToString().Utf8Value());
  }
  return static_cast<int64_t>(v);
}

int Fd(const Napi::CallbackInfo& info, size_t i) { return static_cast<int>(Int(info, i, "fd", 0, INT32_MAX)); }

std::string Str(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// A typed array of `type` with at least min_len elements; its data and element count.
template <typename T>
T* Typed(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, size_t min_len, const char* what,
         size_t* len_out = nullptr) {
  return TypedData<T>(info.Env(), i < info.Length() ? info[i] : info.Env().Undefined(), type, min_len, what, len_out);
}

Napi::Error OpenError(Napi::Env env, int err, const char* step, const std::string& what) {
  Napi::Error e = SystemError(env, err, step, what.c_str());
  return e;
}

// The chains of a TX call: a native Virtqueue's last popped burst, indices checked.
struct TxArgs {
  QueueView v;
  std::shared_ptr<MemTable> mem;
  const uint16_t* chains;
  uint32_t n;
};
TxArgs TxChains(const Napi::CallbackInfo& info, size_t q, size_t chains, size_t n, const char* fn) {
  TxArgs a{UnwrapQueue(info[q]), nullptr, nullptr, 0};
  a.n = static_cast<uint32_t>(Int(info, n, "n", 0, a.v.burst));
  a.mem = a.v.q->memory();
  if (!a.mem) throw Napi::Error::New(info.Env(), std::string(fn) + ": the queue has no memory table");
  a.chains = Typed<uint16_t>(info, chains, napi_uint16_array, a.n, "chains");
  for (uint32_t i = 0; i < a.n; i++) {
    if (a.chains[i] >= a.v.burst) {
      throw Napi::RangeError::New(info.Env(), std::string(fn) + ": chain index " + std::to_string(a.chains[i]) +
                                                  " outside the burst of " + std::to_string(a.v.burst));
    }
  }
  return a;
}

hio::TxOptions TxOpts(const Napi::CallbackInfo& info, size_t hdr, size_t vlan, const char* fn) {
  hio::TxOptions o;
  o.hdr_len = static_cast<uint32_t>(Int(info, hdr, "hdrLen", 10, 12));
  if (o.hdr_len == 11) throw Napi::RangeError::New(info.Env(), std::string(fn) + ": hdrLen must be 10 or 12");
  o.vlan = static_cast<int32_t>(Int(info, vlan, "vlan", -2, 0xffff));
  return o;
}

namespace ts = layout::tx_stat;
namespace rs = layout::read_stat;
namespace us = layout::recv_stat;

void AddTx(uint32_t* stats, const hio::TxStats& st) {
  stats[ts::SENT] += st.sent;
  stats[ts::BYTES] += st.bytes;
  stats[ts::DROPPED] += st.dropped;
  stats[ts::ERRORS] += st.errors;
  stats[ts::BAD] += st.bad;
  stats[ts::TOO_BIG] += st.too_big;
  stats[ts::NEEDS_SEGMENTATION] += st.needs_segmentation;
  if (st.last_errno != 0) stats[ts::LAST_ERRNO] = static_cast<uint32_t>(st.last_errno);
}

// tapOpen(name, offloads, multiQueue, sndbuf) -> { fd, name }
Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  const std::string name = Str(info, 0, "name");
  tap::OpenOptions o;
  o.offloads = info[1].ToBoolean();
  o.multi_queue = info[2].ToBoolean();
  o.sndbuf = static_cast<int>(Int(info, 3, "sndbuf", 0, INT32_MAX));
  int fd = -1;
  std::string ifname;
  const char* failed = "";
  if (int e = tap::Open(name, o, &fd, &ifname, &failed)) throw OpenError(info.Env(), e, failed, name);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("fd", fd);
  r.Set("name", ifname);
  return r;
}

// tapSetOffloads(fd, offloads)
Napi::Value TapSetOffloads(const Napi::CallbackInfo& info) {
  if (int e = tap::SetOffloads(Fd(info, 0), info[1].ToBoolean())) throw SystemError(info.Env(), e, "ioctl TUNSETOFFLOAD");
  return info.Env().Undefined();
}

// tapInfo(fd) -> { name, flags, vnetHdrLen }
Napi::Value TapInfo(const Napi::CallbackInfo& info) {
  tap::Info ti;
  if (int e = tap::GetInfo(Fd(info, 0), &ti)) throw SystemError(info.Env(), e, "ioctl TUNGETIFF");
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("name", ti.name);
  r.Set("flags", ti.flags);
  r.Set("vnetHdrLen", ti.vnet_hdr_len);
  return r;
}

// txToTap(fd, queue, chains: Uint16Array, n, hdrLen, passHdr, vlan, stats: Uint32Array(8)) -> frames sent
Napi::Value TxToTap(const Napi::CallbackInfo& info) {
  const int fd = Fd(info, 0);
  TxArgs a = TxChains(info, 1, 2, 3, "txToTap");
  hio::TxOptions o = TxOpts(info, 4, 6, "txToTap");
  o.pass_hdr = info[5].ToBoolean();
  uint32_t* stats = Typed<uint32_t>(info, 7, napi_uint32_array, ts::kWords, "stats");
  hio::TxStats st;
  hio::TxToTap(fd, *a.v.out, *a.mem, a.chains, a.n, o, &st);
  AddTx(stats, st);
  return Napi::Number::New(info.Env(), st.sent);
}

// readTap(fd, buf: Uint8Array, slot, offsets: Uint32Array, lens: Uint32Array, hdrs10: Uint8Array | null,
//         maxFrames, stats: Uint32Array(4)) -> frames read
Napi::Value ReadTap(const Napi::CallbackInfo& info) {
  const int fd = Fd(info, 0);
  size_t buf_len = 0;
  uint8_t* buf = Typed<uint8_t>(info, 1, napi_uint8_array, 0, "buf", &buf_len);
  if (buf_len > UINT32_MAX) throw Napi::RangeError::New(info.Env(), "readTap: buf larger than 4 GiB");
  const uint32_t slot = static_cast<uint32_t>(Int(info, 2, "slot", hio::kVnetHdrLen + 14, UINT32_MAX));
  const uint32_t max = static_cast<uint32_t>(Int(info, 6, "maxFrames", 0, UINT32_MAX));
  uint32_t* offsets = Typed<uint32_t>(info, 3, napi_uint32_array, max, "offsets");
  uint32_t* lens = Typed<uint32_t>(info, 4, napi_uint32_array, max, "lens");
  uint8_t* hdrs10 = info[5].IsNull() || info[5].IsUndefined() ? nullptr : Typed<uint8_t>(info, 5, napi_uint8_array, 10 * static_cast<size_t>(max), "hdrs10");
  uint32_t* stats = Typed<uint32_t>(info, 7, napi_uint32_array, rs::kWords, "stats");
  hio::ReadStats st;
  const int32_t r = hio::ReadTap(fd, buf, static_cast<uint32_t>(buf_len), slot, offsets, lens, hdrs10, max, &st);
  stats[rs::FRAMES] += st.frames;
  stats[rs::BYTES] += st.bytes;
  stats[rs::BAD] += st.bad;
  stats[rs::TRUNCATED] += st.truncated;
  if (r < 0) throw SystemError(info.Env(), -r, "read");
  return Napi::Number::New(info.Env(), r);
}

// A sockaddr_in / sockaddr_in6 given as bytes (udpSockaddr's result), copied aligned.
socklen_t DestArg(const Napi::CallbackInfo& info, size_t i, sockaddr_storage* ss) {
  size_t len = 0;
  const uint8_t* p = Typed<uint8_t>(info, i, napi_uint8_array, 0, "dest", &len);
  if (len != sizeof(sockaddr_in) && len != sizeof(sockaddr_in6)) {
    throw Napi::RangeError::New(info.Env(), "dest: " + std::to_string(len) + " bytes, expected a sockaddr_in (" +
                                                std::to_string(sizeof(sockaddr_in)) + ") or sockaddr_in6 (" +
                                                std::to_string(sizeof(sockaddr_in6)) + ")");
  }
  std::memset(ss, 0, sizeof *ss);
  std::memcpy(ss, p, len);
  const bool ok = (ss->ss_family == AF_INET && len == sizeof(sockaddr_in)) || (ss->ss_family == AF_INET6 && len == sizeof(sockaddr_in6));
  if (!ok) throw Napi::RangeError::New(info.Env(), "dest: address family " + std::to_string(ss->ss_family) + " does not match its length");
  return static_cast<socklen_t>(len);
}

// txToUdp(fd, queue, chains, n, hdrLen, vlan, vxlanHdr: Uint8Array(8), dest: Uint8Array, stats: Uint32Array(8)) -> sent
Napi::Value TxToUdp(const Napi::CallbackInfo& info) {
  const int fd = Fd(info, 0);
  TxArgs a = TxChains(info, 1, 2, 3, "txToUdp");
  const hio::TxOptions o = TxOpts(info, 4, 5, "txToUdp");
  uint8_t vx[hio::kVxlanHdrLen];
  std::memcpy(vx, Typed<uint8_t>(info, 6, napi_uint8_array, hio::kVxlanHdrLen, "vxlanHdr"), sizeof vx);
  sockaddr_storage dest;
  const socklen_t dest_len = DestArg(info, 7, &dest);
  uint32_t* stats = Typed<uint32_t>(info, 8, napi_uint32_array, ts::kWords, "stats");
  hio::TxStats st;
  hio::TxToUdp(fd, *a.v.out, *a.mem, a.chains, a.n, o, vx, reinterpret_cast<sockaddr*>(&dest), dest_len, &st);
  AddTx(stats, st);
  return Napi::Number::New(info.Env(), st.sent);
}

// flatToUdp(fd, data: Uint8Array, offsets: Uint32Array, lens: Uint32Array, n, vxlanHdr: Uint8Array(8), dest, stats(8))
Napi::Value FlatToUdp(const Napi::CallbackInfo& info) {
  const int fd = Fd(info, 0);
  size_t data_len = 0;
  const uint8_t* data = Typed<uint8_t>(info, 1, napi_uint8_array, 0, "data", &data_len);
  const uint32_t n = static_cast<uint32_t>(Int(info, 4, "n", 0, hio::kMaxBatch));
  const uint32_t* offsets = Typed<uint32_t>(info, 2, napi_uint32_array, n, "offsets");
  const uint32_t* lens = Typed<uint32_t>(info, 3, napi_uint32_array, n, "lens");
  for (uint32_t k = 0; k < n; k++) {
    if (static_cast<uint64_t>(offsets[k]) + lens[k] > data_len) throw Napi::RangeError::New(info.Env(), "flatToUdp: frame outside data");
  }
  uint8_t vx[hio::kVxlanHdrLen];
  std::memcpy(vx, Typed<uint8_t>(info, 5, napi_uint8_array, hio::kVxlanHdrLen, "vxlanHdr"), sizeof vx);
  sockaddr_storage dest;
  const socklen_t dest_len = DestArg(info, 6, &dest);
  uint32_t* stats = Typed<uint32_t>(info, 7, napi_uint32_array, ts::kWords, "stats");
  hio::TxStats st;
  hio::FlatToUdp(fd, data, offsets, lens, n, vx, reinterpret_cast<sockaddr*>(&dest), dest_len, &st);
  AddTx(stats, st);
  return Napi::Number::New(info.Env(), st.sent);
}

// recvUdp(fd, buf, slot, maxFrames, offsets: Uint32Array, lens: Uint32Array, vni: Uint32Array,
//         srcAddr: Uint8Array(16 * max), srcPort: Uint16Array, srcFamily: Uint8Array, stats: Uint32Array(9)[, hdr10: Uint8Array(10 * max) | null]) -> accepted
Napi::Value RecvUdp(const Napi::CallbackInfo& info) {
  const int fd = Fd(info, 0);
  size_t buf_len = 0;
  uint8_t* buf = Typed<uint8_t>(info, 1, napi_uint8_array, 0, "buf", &buf_len);
  const uint32_t slot = static_cast<uint32_t>(Int(info, 2, "slot", hio::kVxlanHdrLen + 14, 1 << 20));
  const uint32_t max = static_cast<uint32_t>(Int(info, 3, "maxFrames", 0, hio::kMaxBatch));
  if (static_cast<uint64_t>(slot) * max > buf_len) {
    throw Napi::RangeError::New(info.Env(), "recvUdp: buf holds " + std::to_string(buf_len) + " bytes, " +
                                                std::to_string(max) + " slots of " + std::to_string(slot) + " need more");
  }
  hio::RecvOut out;
  out.offsets = Typed<uint32_t>(info, 4, napi_uint32_array, max, "offsets");
  out.lens = Typed<uint32_t>(info, 5, napi_uint32_array, max, "lens");
  out.vni = Typed<uint32_t>(info, 6, napi_uint32_array, max, "vni");
  out.src_addr = Typed<uint8_t>(info, 7, napi_uint8_array, 16 * static_cast<size_t>(max), "srcAddr");
  out.src_port = Typed<uint16_t>(info, 8, napi_uint16_array, max, "srcPort");
  out.src_family = Typed<uint8_t>(info, 9, napi_uint8_array, max, "srcFamily");
  uint32_t* stats = Typed<uint32_t>(info, 10, napi_uint32_array, us::kWords, "stats");
  if (info.Length() > 11 && !info[11].IsNull() && !info[11].IsUndefined()) {
    out.hdrs10 = Typed<uint8_t>(info, 11, napi_uint8_array, 10 * static_cast<size_t>(max), "hdr10");
  }
  hio::RecvStats st;
  const int32_t r = hio::RecvUdp(fd, buf, slot, max, out, &st);
  stats[us::DATAGRAMS] += st.datagrams;
  stats[us::ACCEPTED] += st.accepted;
  stats[us::BYTES] += st.bytes;
  stats[us::TOO_SHORT] += st.too_short;
  stats[us::BAD_FLAGS] += st.bad_flags;
  stats[us::RESERVED] += st.reserved;
  stats[us::TRUNCATED] += st.truncated;
  stats[us::CSUM_COMPLETED] += st.csum_completed;
  stats[us::GSO_MARKED] += st.gso_marked;
  if (r < 0) throw SystemError(info.Env(), -r, "recvmmsg");
  return Napi::Number::New(info.Env(), r);
}

// finishFrame(frame: Uint8Array, hdr10: Uint8Array(10), adj, out: Uint8Array, offsets: Uint32Array,
//             lens: Uint32Array) -> frames written to out, -1 bad header, -2 no room
Napi::Value FinishFrame(const Napi::CallbackInfo& info) {
  size_t len = 0, out_len = 0, max_out = 0, max_lens = 0;
  const uint8_t* frame = Typed<uint8_t>(info, 0, napi_uint8_array, 0, "frame", &len);
  const uint8_t* hdr = Typed<uint8_t>(info, 1, napi_uint8_array, 10, "hdr10");
  const int32_t adj = static_cast<int32_t>(Int(info, 2, "adj", -4, 4));
  uint8_t* out = Typed<uint8_t>(info, 3, napi_uint8_array, 0, "out", &out_len);
  uint32_t* offsets = Typed<uint32_t>(info, 4, napi_uint32_array, 0, "offsets", &max_out);
  uint32_t* lens = Typed<uint32_t>(info, 5, napi_uint32_array, 0, "lens", &max_lens);
  if (len > UINT32_MAX || out_len > UINT32_MAX) throw Napi::RangeError::New(info.Env(), "finishFrame: buffers of 4 GiB or more");
  const int32_t r = hio::FinishFrame(frame, static_cast<uint32_t>(len), hdr, adj, out, static_cast<uint32_t>(out_len), offsets, lens,
                                     static_cast<uint32_t>(std::min(max_out, max_lens)));
  return Napi::Number::New(info.Env(), r);
}

sockaddr_storage ParseAddr(const Napi::CallbackInfo& info, size_t addr, size_t port, socklen_t* len) {
  const std::string a = Str(info, addr, "address");
  const uint16_t p = static_cast<uint16_t>(Int(info, port, "port", 0, 65535));
  sockaddr_storage ss;
  if (!hio::ParseSockaddr(a, p, &ss, len)) {
    throw Napi::TypeError::New(info.Env(), "address '" + a + "' is not a numeric IPv4 or IPv6 address");
  }
  return ss;
}

// udpSockaddr(address, port) -> Uint8Array (sockaddr_in or sockaddr_in6 bytes)
Napi::Value UdpSockaddr(const Napi::CallbackInfo& info) {
  socklen_t len = 0;
  const sockaddr_storage ss = ParseAddr(info, 0, 1, &len);
  Napi::Uint8Array r = Napi::Uint8Array::New(info.Env(), len);
  std::memcpy(r.Data(), &ss, len);
  return r;
}

// udpOpen(address, port, reuseAddr, v6Only (-1 default, 0, 1), rcvbuf, sndbuf) -> { fd, port }
Napi::Value UdpOpen(const Napi::CallbackInfo& info) {
  socklen_t len = 0;
  const sockaddr_storage ss = ParseAddr(info, 0, 1, &len);
  hio::UdpOptions o;
  o.reuse_addr = info[2].ToBoolean();
  o.v6_only = static_cast<int>(Int(info, 3, "v6Only", -1, 1));
  o.rcvbuf = static_cast<int>(Int(info, 4, "rcvbuf", 0, INT32_MAX));
  o.sndbuf = static_cast<int>(Int(info, 5, "sndbuf", 0, INT32_MAX));
  int fd = -1;
  uint16_t port = 0;
  const char* failed = "";
  if (int e = hio::UdpOpen(reinterpret_cast<const sockaddr*>(&ss), len, o, &fd, &port, &failed)) {
    throw OpenError(info.Env(), e, failed, Str(info, 0, "address") + " port " + std::to_string(Int(info, 1, "port", 0, 65535)));
  }
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("fd", fd);
  r.Set("port", port);
  return r;
}

}  // namespace

void BindHostIo(Napi::Env env, Napi::Object exports) {
  static constexpr const char* kDeliver[] = {VHOSTKIT_DELIVER_STAT(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kTx[] = {VHOSTKIT_TX_STAT(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kRead[] = {VHOSTKIT_READ_STAT(VHOSTKIT_LAYOUT_NAME)};
  static constexpr const char* kRecv[] = {VHOSTKIT_RECV_STAT(VHOSTKIT_LAYOUT_NAME)};
  Napi::Object io = Napi::Object::New(env);
  io.Set("DeliverStat", LayoutObject(env, kDeliver, layout::deliver_stat::kWords));
  io.Set("TxStat", LayoutObject(env, kTx, ts::kWords));
  io.Set("ReadStat", LayoutObject(env, kRead, rs::kWords));
  io.Set("RecvStat", LayoutObject(env, kRecv, us::kWords));
  exports.Set("ioLayouts", io);
  exports.Set("tapOpen", Napi::Function::New(env, TapOpen, "tapOpen"));
  exports.Set("tapSetOffloads", Napi::Function::New(env, TapSetOffloads, "tapSetOffloads"));
  exports.Set("tapInfo", Napi::Function::New(env, TapInfo, "tapInfo"));
  exports.Set("txToTap", Napi::Function::New(env, TxToTap, "txToTap"));
  exports.Set("readTap", Napi::Function::New(env, ReadTap, "readTap"));
  exports.Set("txToUdp", Napi::Function::New(env, TxToUdp, "txToUdp"));
  exports.Set("recvUdp", Napi::Function::New(env, RecvUdp, "recvUdp"));
  exports.Set("flatToUdp", Napi::Function::New(env, FlatToUdp, "flatToUdp"));
  exports.Set("finishFrame", Napi::Function::New(env, FinishFrame, "finishFrame"));
  exports.Set("udpSockaddr", Napi::Function::New(env, UdpSockaddr, "udpSockaddr"));
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen, "udpOpen"));
}

}  // namespace vhostkit
