// Hands native objects from one JavaScript thread to another (the main thread's control
// plane to a data-plane worker and back): an object is parked under a token by one thread
// and claimed, once, by another. The object itself is shared (shared_ptr); the caller
// makes sure only one thread uses a queue at a time.
#pragma once
#include <cstdint>
#include <memory>

namespace vhostkit {

enum class HandleKind : uint32_t { kQueue = 1, kMemTable = 2, kDirtyLog = 3 };

uint32_t ParkHandle(HandleKind kind, std::shared_ptr<void> obj);
// nullptr if the token is unknown, already claimed, or of another kind.
std::shared_ptr<void> ClaimHandle(HandleKind kind, uint32_t token);
// Forgets a parked object that nobody will claim.
void DropHandle(uint32_t token);

}  // namespace vhostkit
