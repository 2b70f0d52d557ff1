// AF_UNIX SOCK_STREAM helpers with SCM_RIGHTS fd passing: plain C++, no N-API.
// Every fd created here is O_NONBLOCK and O_CLOEXEC. Every function returns 0 on success or
// a positive errno; EAGAIN is reported as such, never retried, so callers can tell "try
// again when the loop says so" from a real error.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace vhostkit::io {

// Most fds sent or received in one message. vhost-user needs at most 8 (SET_MEM_TABLE);
// the kernel's own limit is SCM_MAX_FD (253).
inline constexpr size_t kMaxFds = 32;

int SocketPair(int fds_out[2]);

// socket + bind + listen. Does not unlink an existing path (bind then fails with EADDRINUSE).
// Paths longer than sun_path allows fail with ENAMETOOLONG; empty paths or paths containing
// NUL with EINVAL (abstract-namespace sockets are not supported).
int Listen(std::string_view path, int backlog, int* fd_out);

// accept4; EAGAIN when no connection is pending.
int Accept(int listen_fd, int* fd_out);

// Non-blocking connect. A Unix stream connect completes or fails at once: ENOENT (no such
// path), ECONNREFUSED (nobody listening), EAGAIN (listener's backlog full). Linux never
// answers EINPROGRESS for AF_UNIX; if it ever did, it is reported as an error like any other.
// On any error no fd is left open.
int Connect(std::string_view path, int* fd_out);

// sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT) of `len` bytes with `nfds` (<= kMaxFds) fds attached
// via SCM_RIGHTS. On success *sent is the number of bytes written, which on a stream socket
// may be less than len; the fds travel with the first byte, so a caller finishing a short
// write must not send them again. Sending fds with zero bytes is EINVAL: on a stream socket
// the kernel would silently drop them. The caller keeps ownership of its fds (the kernel
// duplicates them into the message).
int SendMsg(int fd, const uint8_t* data, size_t len, const int* fds, size_t nfds, size_t* sent);

struct RecvResult {
  size_t bytes = 0;                // 0: the peer closed (len > 0 is required)
  int fds[kMaxFds] = {};           // fds[0..nfds) are open and owned by the caller
  size_t nfds = 0;
  bool fds_truncated = false;      // the kernel set MSG_CTRUNC, or we closed fds beyond max_fds
  bool payload_truncated = false;  // MSG_TRUNC: only datagram sockets; never on SOCK_STREAM
};

// recvmsg(MSG_CMSG_CLOEXEC | MSG_DONTWAIT) into buf[0..len), accepting at most `max_fds`
// (<= kMaxFds) fds. No received fd ever leaks: extras are closed here, and on error nothing
// is returned open. Returns EAGAIN when nothing is pending; EINVAL for len == 0 or
// max_fds > kMaxFds.
int RecvMsg(int fd, uint8_t* buf, size_t len, size_t max_fds, RecvResult* out);

struct PeerCred {
  pid_t pid;
  uid_t uid;
  gid_t gid;
};

// SO_PEERCRED of a connected Unix socket: the peer's credentials at connect/socketpair time.
int PeerCredentials(int fd, PeerCred* out);

// Whether the peer of a connected stream socket has closed it or shut down its writing side
// (poll: POLLRDHUP, POLLHUP or POLLERR), even with data still unread. Sets *closed.
int PeerClosed(int fd, bool* closed);

// close(2). EINTR counts as success: Linux has released the fd by then, and retrying could
// close an fd another thread just got.
int Close(int fd);

// Closes fds[0..n) ignoring errors (cleanup paths).
void CloseAll(const int* fds, size_t n);

}  // namespace vhostkit::io
