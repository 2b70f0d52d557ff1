// Guest memory that its frontend shrinks under us. A region's fd may be a file the
// frontend can truncate (an unsealed memfd, QEMU's memory-backend-file): an access to a
// page past the file's new end raises SIGBUS, and by default that kills the process with
// every port and disk in it. This file makes those faults survivable.
//
// A process-wide SIGBUS handler (SA_SIGINFO | SA_ONSTACK) looks the faulting address up
// in a registry of mapped guest ranges. Inside one, it maps anonymous memory (MAP_FIXED)
// over the lost part, from the faulting page to the end of the mapping, so the access
// completes (it reads zeros, its writes go nowhere), marks the mapping lost (the flag its
// owner registered), bumps a fault epoch and writes an eventfd. The owner of the memory
// table finds the flag and ends the session. Any other address, or a SIGBUS that was sent
// rather than raised by a fault, goes to the handler installed before (or to the default
// action), so real crashes still crash.
//
// The registry is a fixed array of slots, each under a sequence counter (a seqlock): the
// handler only reads it (no lock, no allocation), writers (Register / Unregister, from any
// thread) serialize on a mutex the handler never takes. A mapping is unregistered before it
// is unmapped; it cannot be unmapped while a thread accesses it (the accessor holds it).
//
// Syscalls on guest memory (preadv, pwritev, writev, sendmmsg) do not raise SIGBUS: the
// kernel returns EFAULT. Probe() touches the pages of their buffers so a lost page faults
// (and is recovered) here; call it when such a syscall failed with EFAULT.
#pragma once
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace vhostkit::guest_fault {

// Installs the handler and creates the eventfd, once per process (thread-safe). Returns
// false and sets err if it could not.
bool Install(std::string* err);

// Registers [base, base + len) as guest memory; on a lost page the handler stores 1 into
// *lost (which must outlive the registration). `page`: the mapping's page size (a power of
// two; a hugetlbfs mapping can only be replaced in whole huge pages), 0 for the system's.
// Returns the slot, or -1 if the registry is full (kSlots) or the handler is not installed.
constexpr uint32_t kSlots = 4096;
int Register(void* base, size_t len, std::atomic<uint32_t>* lost, size_t page = 0);
// Forgets a slot Register returned (before the range is unmapped). -1 is ignored.
void Unregister(int slot);

// Faults recovered so far (acquire: a caller that sees a new value sees the lost flags the
// handler set before it).
extern std::atomic<uint32_t> g_epoch;
inline uint32_t Epoch() { return g_epoch.load(std::memory_order_acquire); }

// The eventfd the handler writes after each recovered fault (non-blocking, close-on-exec;
// lives as long as the process), or -1 before Install.
int EventFd();

// Reads one byte of every page of the buffers (volatile), so that a page the file lost
// raises SIGBUS now and is recovered. Only for buffers in registered guest memory.
void Probe(const iovec* iov, size_t n);

}  // namespace vhostkit::guest_fault
