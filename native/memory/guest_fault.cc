#include "memory/guest_fault.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace vhostkit::guest_fault {

std::atomic<uint32_t> g_epoch{0};

namespace {

struct Slot {
  std::atomic<uint32_t> seq{0};  // odd while a writer changes the slot
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};  // 0: free
  std::atomic<uintptr_t> page{0};  // the mapping's page size
  std::atomic<std::atomic<uint32_t>*> lost{nullptr};
};

Slot g_slots[kSlots];
std::atomic<uint32_t> g_high{0};  // slots [0, g_high) may be in use
std::mutex g_mu;                  // writers only; never taken by the handler
struct sigaction g_old;           // the SIGBUS action before ours (written once, before ours is installed)
std::atomic<int> g_efd{-1};
std::atomic<bool> g_installed{false};
uintptr_t g_page = 4096;

void Write(Slot& s, uintptr_t start, uintptr_t end, uintptr_t page, std::atomic<uint32_t>* lost) {
  const uint32_t q = s.seq.load(std::memory_order_relaxed);
  s.seq.store(q + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s.start.store(start, std::memory_order_relaxed);
  s.end.store(end, std::memory_order_relaxed);
  s.page.store(page, std::memory_order_relaxed);
  s.lost.store(lost, std::memory_order_relaxed);
  s.seq.store(q + 2, std::memory_order_release);
}

// The action before ours, for a fault that is not ours. Async-signal-safe.
void Chain(int sig, siginfo_t* si, void* uc) {
  if ((g_old.sa_flags & SA_SIGINFO) != 0 && g_old.sa_sigaction != nullptr) {
    g_old.sa_sigaction(sig, si, uc);
    return;
  }
  if (g_old.sa_handler != SIG_DFL && g_old.sa_handler != SIG_IGN) {
    g_old.sa_handler(sig);
    return;
  }
  const bool sent = si == nullptr || si->si_code <= 0;  // kill(), sigqueue(), tgkill()
  if (g_old.sa_handler == SIG_IGN && sent) return;
  // Default action: a fault re-executes the access on return and dies of it; a sent
  // signal is raised again (it is blocked in this handler: delivered on return).
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (sent) raise(sig);
}

void Handler(int sig, siginfo_t* si, void* uc) {
  const int saved_errno = errno;
  if (si != nullptr && (si->si_code == BUS_ADRERR || si->si_code == BUS_OBJERR)) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
    const uint32_t n = g_high.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < n && i < kSlots; i++) {
      Slot& s = g_slots[i];
      const uint32_t q1 = s.seq.load(std::memory_order_acquire);
      if ((q1 & 1) != 0) continue;
      const uintptr_t start = s.start.load(std::memory_order_relaxed);
      const uintptr_t end = s.end.load(std::memory_order_relaxed);
      uintptr_t pg = s.page.load(std::memory_order_relaxed);
      std::atomic<uint32_t>* lost = s.lost.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (s.seq.load(std::memory_order_relaxed) != q1) continue;
      if (end == 0 || a < start || a >= end) continue;
      if (pg == 0) pg = g_page;
      // Ours: anonymous memory over the lost pages, from the faulting one to the end of
      // the mapping (the file ends before the faulting page, so all of them are lost).
      // The raw syscall: a sanitizer's mmap interceptor is no place for a signal handler.
      uintptr_t page = a & ~(pg - 1);
      if (page < start) page = start;
      const long r = syscall(SYS_mmap, reinterpret_cast<void*>(page), static_cast<size_t>(end - page), PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0L);
      if (r == -1 || static_cast<uintptr_t>(r) != page) break;  // cannot recover: die as before
      if (lost != nullptr) lost->store(1, std::memory_order_relaxed);
      g_epoch.fetch_add(1, std::memory_order_release);
      const int efd = g_efd.load(std::memory_order_relaxed);
      if (efd >= 0) {
        const uint64_t one = 1;
        ssize_t w = write(efd, &one, sizeof one);
        (void)w;
      }
      errno = saved_errno;
      return;
    }
  }
  Chain(sig, si, uc);
  errno = saved_errno;
}

}  // namespace

bool Install(std::string* err) {
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    const long pg = sysconf(_SC_PAGESIZE);
    if (pg > 0) g_page = static_cast<uintptr_t>(pg);
    const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
      failure = std::string("eventfd: ") + strerror(errno);
      return;
    }
    g_efd.store(efd, std::memory_order_relaxed);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = Handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    // g_old is written by this call before the handler can run.
    if (sigaction(SIGBUS, &sa, &g_old) != 0) {
      failure = std::string("sigaction(SIGBUS): ") + strerror(errno);
      return;
    }
    // A sanitizer runtime may keep SIGBUS for itself and ignore the call (AddressSanitizer
    // does unless ASAN_OPTIONS has allow_user_segv_handler=1 or handle_sigbus=0): check.
    struct sigaction cur;
    memset(&cur, 0, sizeof cur);
    if (sigaction(SIGBUS, nullptr, &cur) != 0 || (cur.sa_flags & SA_SIGINFO) == 0 || cur.sa_sigaction != Handler) {
      failure = "the SIGBUS handler did not take (under AddressSanitizer: ASAN_OPTIONS=allow_user_segv_handler=1)";
      return;
    }
    g_installed.store(true, std::memory_order_release);
  });
  if (!g_installed.load(std::memory_order_acquire)) {
    if (err != nullptr) *err = failure.empty() ? "SIGBUS handler not installed" : failure;
    return false;
  }
  return true;
}

int Register(void* base, size_t len, std::atomic<uint32_t>* lost, size_t page) {
  if (!g_installed.load(std::memory_order_acquire) || len == 0) return -1;
  if (page < g_page || (page & (page - 1)) != 0) page = g_page;
  const uintptr_t start = reinterpret_cast<uintptr_t>(base);
  std::lock_guard<std::mutex> lk(g_mu);
  const uint32_t high = g_high.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < kSlots; i++) {
    if (i < high && g_slots[i].end.load(std::memory_order_relaxed) != 0) continue;
    Write(g_slots[i], start, start + len, page, lost);
    if (i >= high) g_high.store(i + 1, std::memory_order_release);
    return static_cast<int>(i);
  }
  return -1;
}

void Unregister(int slot) {
  if (slot < 0 || static_cast<uint32_t>(slot) >= kSlots) return;
  std::lock_guard<std::mutex> lk(g_mu);
  Write(g_slots[slot], 0, 0, 0, nullptr);
}

int EventFd() { return g_efd.load(std::memory_order_relaxed); }

void Probe(const iovec* iov, size_t n) {
  for (size_t k = 0; k < n; k++) {
    const auto* p = static_cast<const volatile uint8_t*>(iov[k].iov_base);
    const size_t len = iov[k].iov_len;
    if (p == nullptr || len == 0) continue;
    // The first byte, then the first byte of each following page, then the last byte.
    (void)p[0];
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (uintptr_t q = (a & ~(g_page - 1)) + g_page; q < a + len; q += g_page) (void)p[q - a];
    (void)p[len - 1];
  }
}

}  // namespace vhostkit::guest_fault
