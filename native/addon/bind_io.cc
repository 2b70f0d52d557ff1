// JS bindings for eventfd, Unix sockets with fd passing, and the fd watcher.
// Conventions: fds are plain numbers; failures throw Node-style system errors (SystemError);
// EAGAIN on the hot paths (accept, send, recv, eventfd read/write) is a return value (null or
// false), never an exception.
#include <sched.h>
#include <sys/file.h>
#include <uv.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <string>

#include "addon/bindings.h"
#include "io/eventfd.h"
#include "io/fd_watch.h"
#include "io/uds.h"

namespace vhostkit {

Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const char* path) {
  char code[64];
  char desc[256];
  uv_err_name_r(-err, code, sizeof(code));  // libuv codes are -errno on Unix
  uv_strerror_r(-err, desc, sizeof(desc));
  std::string message = std::string(code) + ": " + desc + ", " + syscall;
  if (path != nullptr) message += std::string(" '") + path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) error.Set("path", Napi::String::New(env, path));
  return error;
}

namespace {

using vhostkit::io::kMaxFds;

// An integer argument in [min, max], else TypeError / RangeError naming the parameter.
int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= static_cast<double>(min) && v <= static_cast<double>(max) && std::floor(v) == v)) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [" +
                                                std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return static_cast<int64_t>(v);
}

int FdArg(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<int>(IntArg(info, i, "fd", 0, INT32_MAX));
}

std::string PathArg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), "path must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Uint8Array BytesArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Uint8Array");
  }
  return info[i].As<Napi::Uint8Array>();
}

// Closes received fds unless ownership passed to JS (release()): covers every throw between
// recvmsg and handing the numbers back.
struct ReceivedFds {
  io::RecvResult* r;
  ~ReceivedFds() {
    if (r != nullptr) io::CloseAll(r->fds, r->nfds);
  }
  void release() { r = nullptr; }
};

// eventfdCreate(initval: number, semaphore: boolean): number
Napi::Value EventFdCreate(const Napi::CallbackInfo& info) {
  auto initval = static_cast<uint32_t>(IntArg(info, 0, "initval", 0, UINT32_MAX));
  int fd = -1;
  if (int e = io::EventFdCreate(initval, info[1].ToBoolean(), &fd)) throw SystemError(info.Env(), e, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// eventfdRead(fd): bigint | null (null: counter is 0)
Napi::Value EventFdRead(const Napi::CallbackInfo& info) {
  uint64_t value = 0;
  int e = io::EventFdRead(FdArg(info, 0), &value);
  if (e == EAGAIN) return info.Env().Null();
  if (e != 0) throw SystemError(info.Env(), e, "read");
  return Napi::BigInt::New(info.Env(), value);
}

// eventfdWrite(fd, value: bigint): boolean (false: counter would overflow)
Napi::Value EventFdWrite(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  if (info.Length() < 2 || !info[1].IsBigInt()) throw Napi::TypeError::New(info.Env(), "value must be a bigint");
  bool lossless = false;
  uint64_t value = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(info.Env(), "value must be in [0, 2^64)");
  int e = io::EventFdWrite(fd, value);
  if (e == EAGAIN) return Napi::Boolean::New(info.Env(), false);
  if (e != 0) throw SystemError(info.Env(), e, "write");
  return Napi::Boolean::New(info.Env(), true);
}

// unixSocketPair(): [number, number]
Napi::Value UnixSocketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  if (int e = io::SocketPair(fds)) throw SystemError(info.Env(), e, "socketpair");
  Napi::Array pair = Napi::Array::New(info.Env(), 2);
  pair.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  pair.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return pair;
}

// unixListen(path, backlog): number
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  std::string path = PathArg(info, 0);
  int backlog = static_cast<int>(IntArg(info, 1, "backlog", 0, INT32_MAX));
  int fd = -1;
  if (int e = io::Listen(path, backlog, &fd)) throw SystemError(info.Env(), e, "listen", path.c_str());
  return Napi::Number::New(info.Env(), fd);
}

// unixAccept(fd): number | null (null: no pending connection)
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  int fd = -1;
  int e = io::Accept(FdArg(info, 0), &fd);
  if (e == EAGAIN) return info.Env().Null();
  if (e != 0) throw SystemError(info.Env(), e, "accept");
  return Napi::Number::New(info.Env(), fd);
}

// unixConnect(path): number
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  std::string path = PathArg(info, 0);
  int fd = -1;
  if (int e = io::Connect(path, &fd)) throw SystemError(info.Env(), e, "connect", path.c_str());
  return Napi::Number::New(info.Env(), fd);
}

// unixSendMsg(fd, data: Uint8Array, fds?: number[]): number | null (null: would block)
Napi::Value UnixSendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Uint8Array data = BytesArg(info, 1, "data");
  int fds[kMaxFds];
  size_t nfds = 0;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsArray()) throw Napi::TypeError::New(env, "fds must be an array of numbers");
    Napi::Array array = info[2].As<Napi::Array>();
    if (array.Length() > kMaxFds) {
      throw Napi::RangeError::New(env, "at most " + std::to_string(kMaxFds) + " fds per message, got " +
                                           std::to_string(array.Length()));
    }
    nfds = array.Length();
    for (uint32_t i = 0; i < nfds; i++) {
      Napi::Value v = array.Get(i);
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0 && d <= INT32_MAX && std::floor(d) == d)) throw Napi::TypeError::New(env, "fds must be integers >= 0");
      fds[i] = static_cast<int>(d);
    }
  }
  if (nfds > 0 && data.ByteLength() == 0) throw Napi::RangeError::New(env, "fds need at least one byte of data");
  size_t sent = 0;
  int e = io::SendMsg(fd, data.Data(), data.ByteLength(), fds, nfds, &sent);
  if (e == EAGAIN) return env.Null();
  if (e != 0) throw SystemError(env, e, "sendmsg");
  return Napi::Number::New(env, static_cast<double>(sent));
}

// unixRecvMsg(fd, buf: Uint8Array, maxFds): {bytes, fds, fdsTruncated, payloadTruncated} | null
Napi::Value UnixRecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Uint8Array buf = BytesArg(info, 1, "buf");
  auto max_fds = static_cast<size_t>(IntArg(info, 2, "maxFds", 0, kMaxFds));
  if (buf.ByteLength() == 0) throw Napi::RangeError::New(env, "buf must not be empty");
  io::RecvResult r;
  int e = io::RecvMsg(fd, buf.Data(), buf.ByteLength(), max_fds, &r);
  if (e == EAGAIN) return env.Null();
  if (e != 0) throw SystemError(env, e, "recvmsg");
  ReceivedFds guard{&r};  // from here on, any throw closes the received fds
  Napi::Array fds = Napi::Array::New(env, r.nfds);
  for (size_t i = 0; i < r.nfds; i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, r.fds[i]));
  Napi::Object result = Napi::Object::New(env);
  result.Set("bytes", Napi::Number::New(env, static_cast<double>(r.bytes)));
  result.Set("fds", fds);
  result.Set("fdsTruncated", Napi::Boolean::New(env, r.fds_truncated));
  result.Set("payloadTruncated", Napi::Boolean::New(env, r.payload_truncated));
  guard.release();
  return result;
}

// unixPeerCred(fd): {pid, uid, gid}
Napi::Value UnixPeerCred(const Napi::CallbackInfo& info) {
  io::PeerCred cred{};
  if (int e = io::PeerCredentials(FdArg(info, 0), &cred)) throw SystemError(info.Env(), e, "getsockopt");
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("pid", Napi::Number::New(info.Env(), cred.pid));
  result.Set("uid", Napi::Number::New(info.Env(), cred.uid));
  result.Set("gid", Napi::Number::New(info.Env(), cred.gid));
  return result;
}

// unixPeerClosed(fd): whether the peer closed its end (data may still be unread).
Napi::Value UnixPeerClosed(const Napi::CallbackInfo& info) {
  bool closed = false;
  if (int e = io::PeerClosed(FdArg(info, 0), &closed)) throw SystemError(info.Env(), e, "poll");
  return Napi::Boolean::New(info.Env(), closed);
}

// closeFd(fd): undefined
void CloseFd(const Napi::CallbackInfo& info) {
  if (int e = io::Close(FdArg(info, 0))) throw SystemError(info.Env(), e, "close");
}

// lockImage(fd, shared): a non-blocking flock on the open file (a disk image), exclusive (no
// other server at once) or shared (only other shared servers, as the two ends of a live
// migration are). Returns false if another open file holds a lock that conflicts.
Napi::Value LockImage(const Napi::CallbackInfo& info) {
  const int fd = FdArg(info, 0);
  const bool shared = info.Length() > 1 && info[1].ToBoolean().Value();
  for (;;) {
    if (flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0) return Napi::Boolean::New(info.Env(), true);
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    throw SystemError(info.Env(), errno, "flock");
  }
}

}  // namespace

// setThreadAffinity(cpus: number[]): pins the calling thread (the JS thread that calls it:
// the main thread or a worker) to these CPUs. getThreadAffinity() -> number[].
Napi::Value SetThreadAffinity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "setThreadAffinity: expected an array of CPU numbers");
  Napi::Array a = info[0].As<Napi::Array>();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (a.Length() == 0) throw Napi::RangeError::New(env, "setThreadAffinity: no CPU given");
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d < CPU_SETSIZE) || std::floor(d) != d) {
      throw Napi::RangeError::New(env, "setThreadAffinity: CPU numbers are integers in 0.." + std::to_string(CPU_SETSIZE - 1));
    }
    CPU_SET(static_cast<int>(d), &set);
  }
  if (sched_setaffinity(0, sizeof set, &set) != 0) throw SystemError(env, errno, "sched_setaffinity", nullptr);
  return env.Undefined();
}

Napi::Value GetThreadAffinity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) throw SystemError(env, errno, "sched_getaffinity", nullptr);
  Napi::Array out = Napi::Array::New(env);
  uint32_t k = 0;
  for (int c = 0; c < CPU_SETSIZE; c++) {
    if (CPU_ISSET(c, &set)) out.Set(k++, Napi::Number::New(env, c));
  }
  return out;
}

void BindIo(Napi::Env env, Napi::Object exports) {
  exports.Set("setThreadAffinity", Napi::Function::New<SetThreadAffinity>(env, "setThreadAffinity"));
  exports.Set("getThreadAffinity", Napi::Function::New<GetThreadAffinity>(env, "getThreadAffinity"));
  exports.Set("lockImage", Napi::Function::New(env, LockImage, "lockImage"));
  exports.Set("eventfdCreate", Napi::Function::New<EventFdCreate>(env, "eventfdCreate"));
  exports.Set("eventfdRead", Napi::Function::New<EventFdRead>(env, "eventfdRead"));
  exports.Set("eventfdWrite", Napi::Function::New<EventFdWrite>(env, "eventfdWrite"));
  exports.Set("unixSocketPair", Napi::Function::New<UnixSocketPair>(env, "unixSocketPair"));
  exports.Set("unixListen", Napi::Function::New<UnixListen>(env, "unixListen"));
  exports.Set("unixAccept", Napi::Function::New<UnixAccept>(env, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New<UnixConnect>(env, "unixConnect"));
  exports.Set("unixSendMsg", Napi::Function::New<UnixSendMsg>(env, "unixSendMsg"));
  exports.Set("unixRecvMsg", Napi::Function::New<UnixRecvMsg>(env, "unixRecvMsg"));
  exports.Set("unixPeerCred", Napi::Function::New<UnixPeerCred>(env, "unixPeerCred"));
  exports.Set("unixPeerClosed", Napi::Function::New<UnixPeerClosed>(env, "unixPeerClosed"));
  exports.Set("closeFd", Napi::Function::New<CloseFd>(env, "closeFd"));
  exports.Set("FdWatcher", DefineFdWatcher(env));
  exports.Set("maxFdsPerMessage", Napi::Number::New(env, kMaxFds));
}

}  // namespace vhostkit
