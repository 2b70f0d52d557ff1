#include "io/uds.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04  // Linux 6.5: a pidfd, sent when the receiver set SO_PASSPIDFD
#endif

namespace vhostkit::io {
namespace {

constexpr int kSockFlags = SOCK_NONBLOCK | SOCK_CLOEXEC;

// A control buffer big enough for kMaxFds fds, aligned for struct cmsghdr.
union ControlBuffer {
  char bytes[CMSG_SPACE(sizeof(int) * kMaxFds)];
  struct cmsghdr align;
};

int NormalizeErrno(int e) { return e == EWOULDBLOCK ? EAGAIN : e; }

int MakeAddress(std::string_view path, sockaddr_un* addr) {
  if (path.empty() || path.find('\0') != std::string_view::npos) return EINVAL;
  // sun_path must hold the path and its terminating NUL.
  if (path.size() >= sizeof(addr->sun_path)) return ENAMETOOLONG;
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return 0;
}

// Calls fn(fd) for each fd in the payload of one SCM_RIGHTS / SCM_PIDFD cmsg. The payload is
// bounded by the end of the control buffer as well as by cmsg_len, so a malformed length can
// never make us read past what the kernel wrote; ints are read with memcpy (no alignment
// assumptions on CMSG_DATA).
template <typename Fn>
void ForEachFd(const cmsghdr* c, const char* control_end, Fn fn) {
  const char* data = reinterpret_cast<const char*>(CMSG_DATA(c));
  const char* end = std::min(reinterpret_cast<const char*>(c) + c->cmsg_len, control_end);
  if (end <= data) return;
  size_t n = static_cast<size_t>(end - data) / sizeof(int);
  for (size_t i = 0; i < n; i++) {
    int fd;
    std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
    fn(fd);
  }
}

}  // namespace

int SocketPair(int fds_out[2]) {
  if (socketpair(AF_UNIX, SOCK_STREAM | kSockFlags, 0, fds_out) < 0) return errno;
  return 0;
}

int Listen(std::string_view path, int backlog, int* fd_out) {
  sockaddr_un addr;
  if (int e = MakeAddress(path, &addr)) return e;
  int fd = socket(AF_UNIX, SOCK_STREAM | kSockFlags, 0);
  if (fd < 0) return errno;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(fd, backlog) < 0) {
    int e = errno;
    close(fd);
    return e;
  }
  *fd_out = fd;
  return 0;
}

int Accept(int listen_fd, int* fd_out) {
  for (;;) {
    int fd = accept4(listen_fd, nullptr, nullptr, kSockFlags);
    if (fd >= 0) {
      *fd_out = fd;
      return 0;
    }
    // ECONNABORTED: a pending connection died before we took it; look at the next one.
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return NormalizeErrno(errno);
  }
}

int Connect(std::string_view path, int* fd_out) {
  sockaddr_un addr;
  if (int e = MakeAddress(path, &addr)) return e;
  int fd = socket(AF_UNIX, SOCK_STREAM | kSockFlags, 0);
  if (fd < 0) return errno;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    int e = NormalizeErrno(errno);
    close(fd);
    return e;
  }
  *fd_out = fd;
  return 0;
}

int SendMsg(int fd, const uint8_t* data, size_t len, const int* fds, size_t nfds, size_t* sent) {
  if (nfds > kMaxFds || (nfds > 0 && len == 0)) return EINVAL;
  iovec iov{const_cast<uint8_t*>(data), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control;
  if (nfds > 0) {
    std::memset(&control, 0, sizeof(control));
    msg.msg_control = control.bytes;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  for (;;) {
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      *sent = static_cast<size_t>(n);
      return 0;
    }
    if (errno == EINTR) continue;
    return NormalizeErrno(errno);
  }
}

int RecvMsg(int fd, uint8_t* buf, size_t len, size_t max_fds, RecvResult* out) {
  if (len == 0 || max_fds > kMaxFds) return EINVAL;
  *out = RecvResult{};
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // Offer room for exactly max_fds fds. When more arrive, the kernel installs only what fits,
  // drops the rest inside the kernel (they never reach our fd table) and sets MSG_CTRUNC.
  // CMSG_SPACE rounds up to 8 bytes, so an odd max_fds leaves room for one more fd than
  // asked: such an extra is closed below. With max_fds == 0 we offer no control buffer at all;
  // any fds sent are then dropped by the kernel, again with MSG_CTRUNC.
  ControlBuffer control;
  if (max_fds > 0) {
    std::memset(&control, 0, sizeof(control));
    msg.msg_control = control.bytes;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  }
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  // On failure the kernel has installed no fds, so there is nothing to close.
  if (n < 0) return NormalizeErrno(errno);

  out->bytes = static_cast<size_t>(n);
  out->fds_truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  out->payload_truncated = (msg.msg_flags & MSG_TRUNC) != 0;
  if (msg.msg_controllen > 0) {
    const char* control_end = control.bytes + std::min<size_t>(msg.msg_controllen, sizeof(control));
    // A stream recvmsg returns the fds of at most one sendmsg, in one SCM_RIGHTS cmsg; other
    // cmsgs appear only if someone set SO_PASSCRED / SO_PASSSEC / SO_PASSPIDFD on the socket.
    // We walk them all anyway: SCM_RIGHTS fds are kept (up to max_fds), a SCM_PIDFD pidfd is
    // closed, anything else carries no fd and is ignored.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_RIGHTS) {
        ForEachFd(c, control_end, [&](int received) {
          if (out->nfds < max_fds) {
            out->fds[out->nfds++] = received;
          } else {
            close(received);  // the CMSG_SPACE round-up extra (see above)
            out->fds_truncated = true;
          }
        });
      } else if (c->cmsg_type == SCM_PIDFD) {
        ForEachFd(c, control_end, [](int received) { close(received); });
      }
    }
  }
  return 0;
}

int PeerCredentials(int fd, PeerCred* out) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return errno;
  if (len != sizeof(cred)) return EINVAL;
  *out = PeerCred{cred.pid, cred.uid, cred.gid};
  return 0;
}

int PeerClosed(int fd, bool* closed) {
  pollfd p{fd, POLLRDHUP, 0};
  for (;;) {
    const int n = poll(&p, 1, 0);
    if (n >= 0) break;
    if (errno != EINTR) return errno;
  }
  if (p.revents & POLLNVAL) return EBADF;
  *closed = (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  return 0;
}

int Close(int fd) {
  if (close(fd) < 0 && errno != EINTR) return errno;
  return 0;
}

void CloseAll(const int* fds, size_t n) {
  for (size_t i = 0; i < n; i++) close(fds[i]);
}

}  // namespace vhostkit::io
