// Lifetime, in short:
//
// 1. The uv_poll_t lives in a heap block (Poll) separate from the C++/JS object, because libuv
//    may still use the handle after the object is gone: uv_close() only *schedules* the close,
//    and the handle's memory must stay valid until OnClose runs on a later loop iteration. So
//    close() (or the destructor) detaches the Poll from the object and calls uv_close, and
//    OnClose frees the Poll. Nothing else ever frees it.
//
// 2. While the poll is started, the JS object holds a strong reference to itself (Ref()), so
//    a watcher the program forgot about keeps running and is not collected under libuv's
//    feet; stop() / close() drop that reference (Unref()). A watcher collected by the GC is
//    therefore always stopped, and its destructor only has to uv_close the handle.
//
// 3. The JS callback is a property of the JS object, not a persistent reference: callbacks
//    usually capture their watcher, and a persistent (a GC root) would keep that cycle alive
//    forever, so a stopped, forgotten watcher could never be collected.
//
// 4. Environment teardown (process exit, a worker thread ending): Node unloads the addon once
//    the environment is cleaned up, and libuv must not run an OnClose of ours after that (it
//    did, in a worker, before this rule: a segfault in unmapped code). An async cleanup hook
//    per environment closes every handle still open and reports itself done only when all
//    their OnClose callbacks have run; Node keeps the addon loaded until then.
#include "io/fd_watch.h"

#include <uv.h>

#include <cmath>
#include <unordered_set>

namespace vhostkit {
namespace {

constexpr const char* kCallbackKey = "callback";

class FdWatcher;

// Per-environment bookkeeping (main thread, each worker): the class's constructor data.
struct EnvState {
  napi_async_cleanup_hook_handle hook = nullptr;
  std::unordered_set<FdWatcher*> live;  // watchers whose handle is open
  size_t open_handles = 0;              // handles not yet through OnClose
  bool tearing_down = false;

  static void OnTeardown(napi_async_cleanup_hook_handle hook, void* arg);
  void FinishTeardownIfDone();
};

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit FdWatcher(const Napi::CallbackInfo& info);
  ~FdWatcher() override;
  void Detach();  // uv_close the handle; the Poll frees itself in OnClose

 private:
  struct Poll {
    uv_poll_t handle;
    FdWatcher* owner;  // nullptr once detached (closed, collected or torn down)
    EnvState* state;
  };

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnClose(uv_handle_t* handle);

  void Start(const Napi::CallbackInfo& info);
  void Stop(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);
  Napi::Value IsActive(const Napi::CallbackInfo& info);
  void SetInactive();  // drops the self-reference taken while active

  Napi::AsyncContext context_;
  EnvState* state_;
  Poll* poll_ = nullptr;  // nullptr once detached
  bool active_ = false;   // started; the JS object is Ref()'d
  bool want_readable_ = false;
  bool want_writable_ = false;
};

void EnvState::OnTeardown(napi_async_cleanup_hook_handle, void* arg) {
  auto* state = static_cast<EnvState*>(arg);
  state->tearing_down = true;
  std::unordered_set<FdWatcher*> live;
  live.swap(state->live);  // Detach() erases from state->live: iterate over our own copy
  for (FdWatcher* w : live) w->Detach();
  state->FinishTeardownIfDone();
}

void EnvState::FinishTeardownIfDone() {
  if (open_handles != 0) return;
  napi_remove_async_cleanup_hook(hook);  // tells Node we are done; it may unload us now
  delete this;  // no watcher refers to us any more: all are detached
}

FdWatcher::FdWatcher(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<FdWatcher>(info),
      context_(info.Env(), "vhostkit.FdWatcher", info.This().As<Napi::Object>()),
      state_(static_cast<EnvState*>(info.Data())) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "FdWatcher(fd: number, callback: function)");
  }
  double fd = info[0].As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= INT32_MAX && std::floor(fd) == fd)) {
    throw Napi::RangeError::New(env, "FdWatcher: fd must be an integer in [0, 2^31)");
  }
  info.This().As<Napi::Object>().DefineProperty(
      Napi::PropertyDescriptor::Value(kCallbackKey, info[1], napi_writable));  // not enumerable
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "FdWatcher: no libuv loop");
  }
  auto* poll = new Poll{{}, this, state_};
  state_->live.insert(this);  // before uv_poll_init: an allocation failure leaves nothing open
  // Note: uv_poll_init puts the fd in non-blocking mode. It fails with EEXIST if another
  // poll handle of this loop is active on the same fd (libuv allows one per fd).
  int rc = uv_poll_init(loop, &poll->handle, static_cast<int>(fd));
  if (rc != 0) {
    state_->live.erase(this);
    delete poll;  // a failed uv_poll_init registers nothing with the loop: plain delete is safe
    throw SystemError(env, -rc, "uv_poll_init");
  }
  poll->handle.data = poll;
  state_->open_handles++;
  poll_ = poll;
}

FdWatcher::~FdWatcher() {
  // Reached on garbage collection (never while active: active means Ref()'d) or at
  // environment teardown, after the cleanup hook detached us. No Unref here: the reference
  // is being destroyed with us.
  Detach();
}

void FdWatcher::Detach() {
  if (poll_ == nullptr) return;  // state_ may be gone by now: touch it only while attached
  state_->live.erase(this);
  poll_->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_->handle), OnClose);  // also stops the poll
  poll_ = nullptr;
}

void FdWatcher::OnClose(uv_handle_t* handle) {
  auto* poll = static_cast<Poll*>(handle->data);
  EnvState* state = poll->state;
  delete poll;
  state->open_handles--;
  if (state->tearing_down) state->FinishTeardownIfDone();
}

void FdWatcher::SetInactive() {
  if (active_) {
    active_ = false;
    Unref();
  }
}

void FdWatcher::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (poll_ == nullptr) throw Napi::Error::New(env, "FdWatcher: start() after close()");
  want_readable_ = info[0].ToBoolean();
  want_writable_ = info[1].ToBoolean();
  int events = (want_readable_ ? UV_READABLE : 0) | (want_writable_ ? UV_WRITABLE : 0);
  if (events == 0) {
    uv_poll_stop(&poll_->handle);
    SetInactive();
    return;
  }
  int rc = uv_poll_start(&poll_->handle, events, OnPoll);  // EPERM for regular files
  if (rc != 0) {
    uv_poll_stop(&poll_->handle);
    SetInactive();
    throw SystemError(env, -rc, "uv_poll_start");
  }
  if (!active_) {
    active_ = true;
    Ref();
  }
}

void FdWatcher::Stop(const Napi::CallbackInfo&) {
  if (poll_ == nullptr) return;
  uv_poll_stop(&poll_->handle);
  SetInactive();
}

void FdWatcher::Close(const Napi::CallbackInfo&) {
  SetInactive();
  Detach();
  Value().Set(kCallbackKey, Env().Undefined());  // let the closure go
}

Napi::Value FdWatcher::IsActive(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), active_);
}

void FdWatcher::OnPoll(uv_poll_t* handle, int status, int events) {
  FdWatcher* self = static_cast<Poll*>(handle->data)->owner;
  if (self == nullptr) return;  // detached; uv_close has stopped the poll, so not expected
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  // This local handle keeps the JS object (and so `self`, and its callback property) alive
  // until we return, even if the callback calls close(), which drops the self-reference, and
  // a GC runs during the callback: the finalizer cannot run while we hold it.
  Napi::Object object = self->Value();
  bool readable = (events & UV_READABLE) != 0;
  bool writable = (events & UV_WRITABLE) != 0;
  int error = 0;
  if (status < 0) {
    // libuv saw EPOLLERR (e.g. the peer closed with our data unread: ECONNRESET) and has
    // already stopped the handle; it reports UV_EBADF whatever the cause. Tell JS the fd is
    // ready for what it waited for, so that its read/write surfaces the real error.
    error = -status;
    readable = self->want_readable_;
    writable = self->want_writable_;
    self->SetInactive();
  }
  try {
    Napi::Value callback = object.Get(kCallbackKey);
    if (!callback.IsFunction()) return;
    callback.As<Napi::Function>().MakeCallback(
        object,
        {Napi::Boolean::New(env, readable), Napi::Boolean::New(env, writable), Napi::Number::New(env, error)},
        self->context_);
  } catch (const Napi::Error& e) {
    // We are in a libuv callback with no JS caller to throw to: report it like Node reports
    // an exception thrown by any event callback (process 'uncaughtException').
    napi_fatal_exception(env, e.Value());
  }
}

Napi::Function FdWatcher::Define(Napi::Env env) {
  auto* state = new EnvState();
  if (napi_add_async_cleanup_hook(env, EnvState::OnTeardown, state, &state->hook) != napi_ok) {
    delete state;
    throw Napi::Error::New(env, "FdWatcher: napi_add_async_cleanup_hook failed");
  }
  return DefineClass(env, "FdWatcher",
                     {
                         InstanceMethod<&FdWatcher::Start>("start"),
                         InstanceMethod<&FdWatcher::Stop>("stop"),
                         InstanceMethod<&FdWatcher::Close>("close"),
                         InstanceAccessor<&FdWatcher::IsActive>("active"),
                     },
                     state);
}

}  // namespace

Napi::Function DefineFdWatcher(Napi::Env env) { return FdWatcher::Define(env); }

}  // namespace vhostkit
