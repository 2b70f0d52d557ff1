// One Bind* function per concern; addon.cc calls them all and does nothing else.
#pragma once
#include <napi.h>

namespace vhostkit {
void BindMemory(Napi::Env env, Napi::Object exports);  // bind_memory.cc
void BindQueue(Napi::Env env, Napi::Object exports);   // bind_queue.cc
void BindIo(Napi::Env env, Napi::Object exports);      // bind_io.cc: eventfd, unix sockets, fd watcher
}  // namespace vhostkit

#include <memory>
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
  // Deleted by the environment's teardown, after Node has already released every
  // reference: deleting them again here would free them twice (a worker's heap dies).
  ~AddonData() {
    mem_table_ctor.SuppressDestruct();
    dirty_log_ctor.SuppressDestruct();
    queue_ctor.SuppressDestruct();
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
QueueView UnwrapQueue(Napi::Value v);  // bind_queue.cc
void BindNet(Napi::Env env, Napi::Object exports);  // bind_net.cc
void BindHostIo(Napi::Env env, Napi::Object exports);  // bind_host_io.cc: TAP, VXLAN/UDP batch I/O
void BindBlk(Napi::Env env, Napi::Object exports);  // bind_blk.cc: virtio-blk request engine
// The log behind a JS DirtyLog object, or nullptr for null/undefined.
std::shared_ptr<DirtyLog> UnwrapDirtyLog(Napi::Value v);
}  // namespace vhostkit
