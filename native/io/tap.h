// TAP devices (Linux drivers/net/tun.c) as the host side of a switch port: plain C++, no
// N-API. Every TAP opened here carries a 12-byte virtio_net_hdr in front of each frame in
// both directions (IFF_VNET_HDR + TUNSETVNETHDRSZ 12, the virtio 1.x layout of §5.1.6 with
// num_buffers), has no packet-information prefix (IFF_NO_PI), and its fd is O_NONBLOCK and
// O_CLOEXEC. The device exists while the fd is open (no TUNSETPERSIST) and keeps working
// when the interface is moved into another network namespace.
#pragma once
#include <cstdint>
#include <string>

namespace vhostkit::tap {

inline constexpr uint32_t kVnetHdrLen = 12;

struct OpenOptions {
  // TUNSETOFFLOAD TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6: the kernel may hand us frames with
  // partial checksums (NEEDS_CSUM) and TCP segments up to 64 KiB (GSO). Only ask for this
  // when every receiver of the frames can take them (the guest negotiated GUEST_CSUM and
  // GUEST_TSO4/6). Frames written to the TAP may carry offloads either way.
  bool offloads = false;
  bool multi_queue = false;  // IFF_MULTI_QUEUE: open the same name again for another queue
  // TUNSETSNDBUF if > 0: the bytes of written frames the kernel may hold at once (in qdiscs,
  // backlogs) before a write fails with EAGAIN. The default (INT_MAX) never says EAGAIN.
  int sndbuf = 0;
};

// Opens /dev/net/tun and attaches it to TAP interface `name` (created if missing; an empty
// name lets the kernel pick "tap%d"). On success returns 0, *fd_out is the fd and *ifname the
// interface's actual name. On failure returns a positive errno, *failed names the step
// ("open /dev/net/tun", "ioctl TUNSETIFF", ...) and no fd is left open. A name of 16 bytes
// or more is ENAMETOOLONG.
int Open(const std::string& name, const OpenOptions& opts, int* fd_out, std::string* ifname, const char** failed);

// Changes the offloads of an open TAP (see OpenOptions::offloads). 0 or a positive errno.
int SetOffloads(int fd, bool offloads);

struct Info {
  std::string name;
  uint32_t flags = 0;        // IFF_* from TUNGETIFF (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, ...)
  int32_t vnet_hdr_len = 0;  // TUNGETVNETHDRSZ
};
// What the kernel says about an open TAP fd. 0 or a positive errno.
int GetInfo(int fd, Info* out);

}  // namespace vhostkit::tap
