#include "addon/handles.h"

#include <mutex>
#include <unordered_map>

namespace vhostkit {
namespace {
struct Parked {
  HandleKind kind;
  std::shared_ptr<void> obj;
};
std::mutex mu;
std::unordered_map<uint32_t, Parked> parked;
uint32_t next_token = 1;
}  // namespace

uint32_t ParkHandle(HandleKind kind, std::shared_ptr<void> obj) {
  std::lock_guard<std::mutex> g(mu);
  uint32_t t = next_token++;
  if (next_token == 0) next_token = 1;
  parked[t] = Parked{kind, std::move(obj)};
  return t;
}

std::shared_ptr<void> ClaimHandle(HandleKind kind, uint32_t token) {
  std::lock_guard<std::mutex> g(mu);
  auto it = parked.find(token);
  if (it == parked.end() || it->second.kind != kind) return nullptr;
  std::shared_ptr<void> obj = std::move(it->second.obj);
  parked.erase(it);
  return obj;
}

void DropHandle(uint32_t token) {
  std::lock_guard<std::mutex> g(mu);
  parked.erase(token);
}

}  // namespace vhostkit
