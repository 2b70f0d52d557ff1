// One Bind* function per concern; addon.cc calls them all and does nothing else.
#pragma once
#include <napi.h>

namespace vhostkit {
void BindMemory(Napi::Env env, Napi::Object exports);  // bind_memory.cc: guest memory, dirty log
void BindQueue(Napi::Env env, Napi::Object exports);   // bind_queue.cc: the ring engine (Virtqueue)
void BindIo(Napi::Env env, Napi::Object exports);      // bind_io.cc: eventfd, unix sockets, fd watcher
void BindNet(Napi::Env env, Napi::Object exports);     // bind_net.cc: frame delivery between rings, offloads
void BindHostIo(Napi::Env env, Napi::Object exports);  // bind_host_io.cc: TAP, VXLAN/UDP batch I/O, I/O counter layouts
void BindBlk(Napi::Env env, Napi::Object exports);     // bind_blk.cc: virtio-blk request engine
void BindSwitch(Napi::Env env, Napi::Object exports);  // bind_switch.cc: forwarding database, data path, layouts
}  // namespace vhostkit

#include <memory>
#include <string>
namespace vhostkit {
class MemTable;
class DirtyLog;
class Virtqueue;
struct BurstArrays;
// Per-environment state (one per main thread or worker), kept as the env's instance data.
struct AddonData {
  Napi::FunctionReference mem_table_ctor;
  Napi::FunctionReference dirty_log_ctor;
  Napi::FunctionReference queue_ctor;
  Napi::FunctionReference switch_fdb_ctor;
  // Deleted by the environment's teardown, after Node has already released every
  // reference: deleting them again here would free them twice (a worker's heap dies).
  ~AddonData() {
    mem_table_ctor.SuppressDestruct();
    dirty_log_ctor.SuppressDestruct();
    queue_ctor.SuppressDestruct();
    switch_fdb_ctor.SuppressDestruct();
  }
};
AddonData& GetAddonData(Napi::Env env);
// The table behind a JS MemTable object; throws a JS TypeError if v is not one.
std::shared_ptr<MemTable> UnwrapMemTable(Napi::Value v);
// A JS Virtqueue's native queue and the burst arrays of this thread's wrapper.
struct QueueView {
  Virtqueue* q;
  const BurstArrays* out;
  uint16_t* used_id;
  uint32_t* used_len;
  uint32_t burst;
};
// v is the queue's slot number (Virtqueue.slot in JS: one array lookup, for the per-burst
// calls) or the native object itself (checked with instanceof: slow). Throws a TypeError
// for anything else.
QueueView UnwrapQueue(Napi::Value v);  // bind_queue.cc
// The live queue of this thread with that slot, if any (for native state that names queues
// by slot; the slot table is per thread).
bool QueueBySlot(uint32_t slot, QueueView* v);  // bind_queue.cc

// The elements of a typed array of `type` holding at least min_len of them (one N-API
// call: the per-burst calls take several arrays). Throws a JS TypeError / RangeError
// naming `what`. *len_out, if given, gets the element count.
template <typename T>
T* TypedData(Napi::Env env, Napi::Value v, napi_typedarray_type type, size_t min_len, const char* what,
             size_t* len_out = nullptr) {
  napi_typedarray_type t;
  size_t len = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, nullptr, nullptr) != napi_ok || t != type) {
    throw Napi::TypeError::New(env, std::string(what) + ": wrong typed array type");
  }
  if (len < min_len) {
    throw Napi::RangeError::New(env, std::string(what) + ": " + std::to_string(len) + " elements, at least " +
                                         std::to_string(min_len) + " needed");
  }
  if (len_out != nullptr) *len_out = len;
  return static_cast<T*>(data);
}
// A word layout as JavaScript sees it: { NAME: offset, ..., WORDS: size }, offsets in the
// order of `names` (a layout header's X-macro list, VHOSTKIT_LAYOUT_NAME).
#define VHOSTKIT_LAYOUT_NAME(n) #n,
inline Napi::Object LayoutObject(Napi::Env env, const char* const* names, uint32_t count, uint32_t words) {
  Napi::Object o = Napi::Object::New(env);
  for (uint32_t i = 0; i < count; i++) o.Set(names[i], Napi::Number::New(env, i));
  o.Set("WORDS", Napi::Number::New(env, words));
  return o;
}
template <size_t N>
Napi::Object LayoutObject(Napi::Env env, const char* const (&names)[N], uint32_t words) {
  return LayoutObject(env, names, static_cast<uint32_t>(N), words);
}
// The log behind a JS DirtyLog object, or nullptr for null/undefined.
std::shared_ptr<DirtyLog> UnwrapDirtyLog(Napi::Value v);
}  // namespace vhostkit
