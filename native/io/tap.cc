#include "io/tap.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vhostkit::tap {

namespace {

constexpr unsigned kOffloadFlags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;

int Fail(int fd, const char* step, const char** failed) {
  const int e = errno;
  if (fd >= 0) close(fd);
  *failed = step;
  return e;
}

}  // namespace

int Open(const std::string& name, const OpenOptions& opts, int* fd_out, std::string* ifname, const char** failed) {
  *fd_out = -1;
  if (name.size() >= IFNAMSIZ) {
    *failed = "interface name (at most 15 bytes)";
    return ENAMETOOLONG;
  }
  if (name.find('\0') != std::string::npos) {
    *failed = "interface name (contains NUL)";
    return EINVAL;
  }
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Fail(-1, "open /dev/net/tun", failed);
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (opts.multi_queue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) return Fail(fd, "ioctl TUNSETIFF", failed);
  // The header size must be set before the first frame (default 10, without num_buffers).
  int hdr = static_cast<int>(kVnetHdrLen);
  if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) return Fail(fd, "ioctl TUNSETVNETHDRSZ", failed);
  const unsigned off = opts.offloads ? kOffloadFlags : 0;
  if (ioctl(fd, TUNSETOFFLOAD, off) < 0) return Fail(fd, "ioctl TUNSETOFFLOAD", failed);
  if (opts.sndbuf > 0 && ioctl(fd, TUNSETSNDBUF, &opts.sndbuf) < 0) return Fail(fd, "ioctl TUNSETSNDBUF", failed);
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  *ifname = ifr.ifr_name;
  *fd_out = fd;
  return 0;
}

int SetOffloads(int fd, bool offloads) {
  const unsigned off = offloads ? kOffloadFlags : 0;
  return ioctl(fd, TUNSETOFFLOAD, off) < 0 ? errno : 0;
}

int GetInfo(int fd, Info* out) {
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) return errno;
  int hdr = 0;
  if (ioctl(fd, TUNGETVNETHDRSZ, &hdr) < 0) return errno;
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  out->name = ifr.ifr_name;
  out->flags = static_cast<uint16_t>(ifr.ifr_flags);
  out->vnet_hdr_len = hdr;
  return 0;
}

}  // namespace vhostkit::tap
