// Module entry: binds each concern's functions and classes. No logic here.
#include "addon/bindings.h"

namespace vhostkit {
AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }
}  // namespace vhostkit

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<vhostkit::AddonData>(new vhostkit::AddonData());
  vhostkit::BindMemory(env, exports);
  vhostkit::BindQueue(env, exports);
  vhostkit::BindIo(env, exports);
  vhostkit::BindNet(env, exports);
  vhostkit::BindHostIo(env, exports);
  vhostkit::BindBlk(env, exports);
  vhostkit::BindSwitch(env, exports);
  return exports;
}

NODE_API_MODULE(vring, Init)
