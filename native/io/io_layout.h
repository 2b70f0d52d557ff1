// The counter arrays the per-burst I/O calls add to (bind_net.cc, bind_host_io.cc), declared
// here once: the addon exports them (`ioLayouts`) and src/native/net.ts and host-io.ts
// check their names against them at load. Each word is a field of the C++ stats struct
// of the same name in lower case (net.h DeliverStats, host_io.h TxStats, ReadStats,
// RecvStats), where what it counts is said.
#pragma once
#include <cstdint>

#define VHOSTKIT_DELIVER_STAT(X) X(DELIVERED) X(NO_BUFFERS) X(TOO_BIG) X(BAD) X(BYTES) X(SEGMENTED) X(CSUM_DONE)
// LAST_ERRNO is set (the errno of the last error), not added to.
#define VHOSTKIT_TX_STAT(X) X(SENT) X(BYTES) X(DROPPED) X(ERRORS) X(BAD) X(TOO_BIG) X(NEEDS_SEGMENTATION) X(LAST_ERRNO)
#define VHOSTKIT_READ_STAT(X) X(FRAMES) X(BYTES) X(BAD) X(TRUNCATED)
#define VHOSTKIT_RECV_STAT(X) \
  X(DATAGRAMS) X(ACCEPTED) X(BYTES) X(TOO_SHORT) X(BAD_FLAGS) X(RESERVED) X(TRUNCATED) X(CSUM_COMPLETED) X(GSO_MARKED)

namespace vhostkit::layout {

#define VHOSTKIT_LAYOUT_ENUM(n) n,
namespace deliver_stat {
enum : uint32_t { VHOSTKIT_DELIVER_STAT(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace deliver_stat
namespace tx_stat {
enum : uint32_t { VHOSTKIT_TX_STAT(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace tx_stat
namespace read_stat {
enum : uint32_t { VHOSTKIT_READ_STAT(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace read_stat
namespace recv_stat {
enum : uint32_t { VHOSTKIT_RECV_STAT(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace recv_stat
#undef VHOSTKIT_LAYOUT_ENUM

}  // namespace vhostkit::layout
