// Packet capture of a switch port, on the data-plane thread: each frame the port receives
// or delivers is appended to the port's staging buffer as a pcap record (its 16-byte
// header, then the frame as it goes on the wire, cut at the snaplen), with the VLAN edit of
// that delivery applied. JavaScript hands the staged records on (src/switch/capture.ts) and
// empties the buffer; a record that does not fit is counted lost, never half written.
#pragma once
#include <cstdint>
#include <ctime>

#include "net/net.h"
#include "switch/switch_port.h"

namespace vhostkit {

// Frames chains[0, n) of a popped burst (src: its arrays, memory and header length; its
// vlan the edit to apply). Returns false once the capture's count is reached.
bool CaptureChains(SwitchPort& p, const TxSource& src, const uint16_t* chains, uint32_t n, const timespec& ts);

// Frames held in a host buffer: frame idx[j] (or j when idx is null), j < n, is
// lens[i] bytes at base + off[i]. Returns false once the capture's count is reached.
bool CaptureFlat(SwitchPort& p, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint16_t* idx, uint32_t n,
                 int32_t vlan, const timespec& ts);

}  // namespace vhostkit
