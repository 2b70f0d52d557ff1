#include "io/eventfd.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace vhostkit::io {

int EventFdCreate(uint32_t initval, bool semaphore, int* fd_out) {
  int flags = EFD_NONBLOCK | EFD_CLOEXEC | (semaphore ? EFD_SEMAPHORE : 0);
  int fd = eventfd(initval, flags);
  if (fd < 0) return errno;
  *fd_out = fd;
  return 0;
}

int EventFdRead(int fd, uint64_t* value) {
  // An eventfd read transfers exactly 8 bytes or fails; a short read cannot happen.
  for (;;) {
    ssize_t n = read(fd, value, sizeof(*value));
    if (n == static_cast<ssize_t>(sizeof(*value))) return 0;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EWOULDBLOCK ? EAGAIN : errno;
    return EIO;  // not an eventfd (a short read from some other kind of fd)
  }
}

int EventFdWrite(int fd, uint64_t value) {
  for (;;) {
    ssize_t n = write(fd, &value, sizeof(value));
    if (n == static_cast<ssize_t>(sizeof(value))) return 0;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EWOULDBLOCK ? EAGAIN : errno;
    return EIO;
  }
}

}  // namespace vhostkit::io
