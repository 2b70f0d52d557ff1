// eventfd(2) helpers: plain C++, no N-API. Every function returns 0 on success or a positive
// errno; EAGAIN is returned as such (never retried, never thrown) so callers can tell
// "nothing to read" / "counter full" from a real error.
#pragma once
#include <cstdint>

namespace vhostkit::io {

// Creates a non-blocking, close-on-exec eventfd with the given initial counter. With
// `semaphore`, each read returns 1 and decrements the counter by 1 (EFD_SEMAPHORE).
int EventFdCreate(uint32_t initval, bool semaphore, int* fd_out);

// Reads the counter into *value and resets it (or decrements it by 1 in semaphore mode).
// Returns EAGAIN when the counter is 0. The fd must be non-blocking (ours always are; an fd
// received from a peer may not be, and then a read of a zero counter would block).
int EventFdRead(int fd, uint64_t* value);

// Adds `value` to the counter. Returns EAGAIN if the sum would exceed 0xfffffffffffffffe,
// EINVAL for value 0xffffffffffffffff.
int EventFdWrite(int fd, uint64_t value);

}  // namespace vhostkit::io
