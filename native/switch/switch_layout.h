// The word layouts the switch shares with TypeScript, declared here once. Each list names
// its words in order; the addon exports them (bind_switch.cc, `layouts`) and
// src/native/layouts.ts checks its names against them at load, taking the offsets from
// here. A layout is a typed array one side writes and the other reads.
#pragma once
#include <cstdint>

// Per-port counters (Float64, in a SharedArrayBuffer: the data plane adds, anyone reads).
#define VHOSTKIT_PORT_COUNTER(X)                                                                    \
  X(RX_PACKETS)         /* frames the port received (from its guest / host side) */             \
  X(RX_BYTES)                                                                                     \
  X(TX_PACKETS)         /* frames the port delivered (to its guest / host side) */              \
  X(TX_BYTES)                                                                                     \
  X(DROP_NO_BUFFERS)    /* no RX buffers at the receiver */                                     \
  X(DROP_TOO_BIG)       /* too large for the receiver's buffers (or over 64 KiB) */             \
  X(DROP_BAD)           /* malformed (shorter than an Ethernet header, empty RX buffers) */     \
  X(DROP_VLAN)          /* VLAN not allowed on the port (ingress), or another VNI */            \
  X(DROP_HOOK)          /* dropped by the dataplane hook */                                     \
  X(DROP_NO_QUEUE)      /* the destination port has no running queue */                        \
  X(FLOODED)            /* frames this port received that were flooded */                       \
  X(QUEUE_ERRORS)       /* queues of this port the driver broke, host reads that failed */      \
  X(DROP_HOST_BUSY)     /* the host side would block (TAP/UDP full) or failed the send */       \
  X(RX_CSUM_COMPLETED)  /* VXLAN frames with a partial checksum completed or marked TSO */      \
  X(CAPTURE_LOST)       /* frames a capture of this port could not stage (buffer full) */      \
  X(DROP_FLOW)          /* frames this port received that a flow's drop action dropped */

// A port's configuration as the forwarder takes it (Int32). KIND: 0 guest, 1 TAP, 2 VXLAN.
// OWNER: the data-plane thread that serves the port, of a switch with several (-1: one).
// ALLOWED is the last field and 128 words long: the trunk's allowed-VLAN bitmap.
#define VHOSTKIT_PORT_WORD(X)                                                                    \
  X(KIND) X(HDR_LEN) X(MERGEABLE) X(RX_OFFLOADS) X(MAX_FRAME) X(TX_OFFLOADS) X(HOST_FD)          \
  X(HOST_OFFLOADS) X(VNI) X(OWNER) X(ACCESS) X(VID) X(NATIVE) X(ALL_ALLOWED) X(ALLOWED)

// Per guest queue (Float64): frames and bytes moved, bursts after which the driver was
// notified, and after which it had asked not to be.
#define VHOSTKIT_QUEUE_STAT(X) X(PACKETS) X(BYTES) X(NOTIFY) X(SUPPRESSED)

// A port capture's state (Float64): bytes of pcap records staged, records staged since the
// last hand-over, records in all, records lost, 1 when the count is reached, and the
// capture's settings (snaplen, count; 0 no limit).
#define VHOSTKIT_CAPTURE_WORD(X) X(AT) X(PENDING) X(PACKETS) X(LOST) X(DONE) X(SNAPLEN) X(LIMIT)

// What classify() adds after dest, vid and tagged (Int32).
#define VHOSTKIT_CLASSIFY_COUNT(X) X(BAD) X(HOOK) X(VLAN) X(FLOODED)

namespace vhostkit::layout {

#define VHOSTKIT_LAYOUT_ENUM(n) n,
namespace port_counter {
enum : uint32_t { VHOSTKIT_PORT_COUNTER(VHOSTKIT_LAYOUT_ENUM) kUsed };
constexpr uint32_t kWords = 16;  // room to grow without changing the SharedArrayBuffer size
static_assert(kUsed <= kWords);
}  // namespace port_counter
namespace port_word {
enum : uint32_t { VHOSTKIT_PORT_WORD(VHOSTKIT_LAYOUT_ENUM) kUsed };
constexpr uint32_t kAllowedWords = 4096 / 32;
constexpr uint32_t kWords = ALLOWED + kAllowedWords;
}  // namespace port_word
namespace queue_stat {
enum : uint32_t { VHOSTKIT_QUEUE_STAT(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace queue_stat
namespace capture_word {
enum : uint32_t { VHOSTKIT_CAPTURE_WORD(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace capture_word
namespace classify_count {
enum : uint32_t { VHOSTKIT_CLASSIFY_COUNT(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace classify_count
#undef VHOSTKIT_LAYOUT_ENUM

}  // namespace vhostkit::layout

// One flow of a switch's flow table as the forwarder takes it (Int32). FIELDS: which match
// fields are set (bit k: the k-th of IN_PORT .. TCP_FLAGS below, in order). MACs as two
// words each (the high 16 bits, the low 32). DL_VLAN: the frame's VLAN as the switch
// assigned it (tagged or from the port). NW_*: IPv4 addresses with their masks. TP_SRC /
// TP_DST: TCP/UDP ports, or an ICMP/ICMPv6 type / code (flows' icmp_type, icmp_code). TCP_FLAGS:
// the flags under TCP_FLAGS_MASK. IDLE_TIMEOUT / HARD_TIMEOUT: seconds after its last
// match / after it was added that the flow is removed (0: never). ID: the caller's. N_ACTIONS actions follow the words,
// FLOW_ACTION words each; none: the flow drops what it matches.
#define VHOSTKIT_FLOW_WORD(X)                                                                    \
  X(PRIORITY) X(FIELDS) X(IN_PORT) X(DL_SRC_HI) X(DL_SRC_LO) X(DL_DST_HI) X(DL_DST_LO) X(DL_VLAN) \
  X(DL_TYPE) X(NW_SRC) X(NW_SRC_MASK) X(NW_DST) X(NW_DST_MASK) X(NW_PROTO) X(NW_TTL) X(TP_SRC)    \
  X(TP_DST) X(TCP_FLAGS) X(TCP_FLAGS_MASK) X(IPV6_SRC_0) X(IPV6_SRC_1) X(IPV6_SRC_2) X(IPV6_SRC_3) \
  X(IPV6_SRC_LEN) X(IPV6_DST_0) X(IPV6_DST_1) X(IPV6_DST_2) X(IPV6_DST_3) X(IPV6_DST_LEN)          \
  X(IDLE_TIMEOUT) X(HARD_TIMEOUT) X(ID) X(N_ACTIONS)

// The match fields, as bits of a flow's FIELDS word.
#define VHOSTKIT_FLOW_FIELD(X)                                                                                             \
  X(IN_PORT) X(DL_SRC) X(DL_DST) X(DL_VLAN) X(DL_TYPE) X(NW_SRC) X(NW_DST) X(NW_PROTO) X(NW_TTL) X(TP_SRC) X(TP_DST) X(TCP_FLAGS) \
  X(IPV6_SRC) X(IPV6_DST)

// One action of a flow (Int32 words): OP (a flow_op), then its arguments A to D. The
// edits (STRIP_VLAN .. DEC_TTL) come before the outputs (OUTPUT .. HANDLER) and apply to
// every output. OUTPUT: to port A. FLOOD: to every port but the one it came from. NORMAL:
// where the learning switch sends it. HANDLER: to TypeScript handler A. STRIP_VLAN: its
// 802.1Q tag removed (the frame leaves every output untagged). SET_VLAN_VID /
// SET_VLAN_PCP: the tag's VLAN A / priority A (a tag pushed if it has none): the frame is
// of that VLAN, and each output's VLAN rule applies as to any frame of it. SET_DL_SRC / SET_DL_DST: MAC (A high 16 bits, B low 32).
// SET_NW_SRC / SET_NW_DST: IPv4 address A. SET_IPV6_SRC / SET_IPV6_DST: IPv6 address A..D
// (from its first bytes). SET_TP_SRC / SET_TP_DST: TCP/UDP port A. DEC_TTL: the IPv4 TTL or
// IPv6 hop limit less one (the frame dropped when it reaches 0).
#define VHOSTKIT_FLOW_ACTION(X) X(OP) X(A) X(B) X(C) X(D)
#define VHOSTKIT_FLOW_OP(X)                                                                        \
  X(OUTPUT) X(FLOOD) X(NORMAL) X(HANDLER) X(STRIP_VLAN) X(SET_VLAN_VID) X(SET_VLAN_PCP) X(SET_DL_SRC) \
  X(SET_DL_DST) X(SET_NW_SRC) X(SET_NW_DST) X(SET_IPV6_SRC) X(SET_IPV6_DST) X(SET_TP_SRC) X(SET_TP_DST) \
  X(DEC_TTL)

// A flow's counters (Float64), per flow in the order of the table's dump: ID, packets, bytes,
// the milliseconds since its last match (or since it was added, if none) and since it was added.
#define VHOSTKIT_FLOW_STAT(X) X(ID) X(PACKETS) X(BYTES) X(IDLE_MS) X(AGE_MS)

// Frames for TypeScript handlers, staged by the forwarder in one buffer per switch (Int32
// words at its start): AT the bytes used (records start at HANDLER_WORD words), FRAMES the
// records, LOST frames that did not fit.
#define VHOSTKIT_HANDLER_WORD(X) X(AT) X(FRAMES) X(LOST) X(RESERVED)
// One staged frame: a header of these Int32 words, then LEN frame bytes (no virtio_net_hdr;
// its fields decoded here), the next record at the next multiple of 8. HANDLER: the
// handler's id; IN_PORT: the port it came from; VLAN: the VLAN the switch assigned it.
#define VHOSTKIT_HANDLER_RECORD(X) \
  X(HANDLER) X(IN_PORT) X(LEN) X(VLAN) X(FLAGS) X(GSO_TYPE) X(HDR_LEN) X(GSO_SIZE) X(CSUM_START) X(CSUM_OFFSET)

namespace vhostkit::layout {
#define VHOSTKIT_LAYOUT_ENUM(n) n,
namespace flow_word {
enum : uint32_t { VHOSTKIT_FLOW_WORD(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace flow_word
namespace flow_field {
enum : uint32_t { VHOSTKIT_FLOW_FIELD(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace flow_field
namespace flow_action {
enum : uint32_t { VHOSTKIT_FLOW_ACTION(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace flow_action
namespace flow_op {
enum : uint32_t { VHOSTKIT_FLOW_OP(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace flow_op
namespace flow_stat {
enum : uint32_t { VHOSTKIT_FLOW_STAT(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace flow_stat
namespace handler_word {
enum : uint32_t { VHOSTKIT_HANDLER_WORD(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace handler_word
namespace handler_record {
enum : uint32_t { VHOSTKIT_HANDLER_RECORD(VHOSTKIT_LAYOUT_ENUM) kWords };
}  // namespace handler_record
#undef VHOSTKIT_LAYOUT_ENUM
}  // namespace vhostkit::layout
