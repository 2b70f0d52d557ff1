// Frames a flow sends to a TypeScript handler (actions=handler:NAME), on the data-plane
// thread: each is appended to the switch's handler staging as a record (layout
// handler_record: the handler, the port it came from, its VLAN, its virtio_net_hdr fields
// decoded, then the frame without the header). JavaScript runs the handlers on the staged
// records after the forwarder's call (src/switch/handlers.ts) and empties the buffer; a
// frame that does not fit is counted lost, never half written.
#pragma once
#include <cstdint>
#include <cstddef>

#include "net/offload.h"

namespace vhostkit {

// A view of the staging buffer, which the binding holds (JavaScript reads it).
class HandlerStage {
 public:
  // Stages into buf (len bytes: the handler_word words, then records); its AT, FRAMES and
  // LOST words are reset.
  void Attach(uint8_t* buf, size_t len);
  bool attached() const { return buf_ != nullptr; }
  // Whether records wait for JavaScript (staged since it last emptied the buffer).
  bool Pending() const;
  // Appends a record; false (counted LOST) if it does not fit or no buffer is attached.
  bool Put(int32_t handler, int32_t in_port, uint32_t vlan, const NetHdr& h, const uint8_t* frame, uint32_t len);

 private:
  uint8_t* buf_ = nullptr;
  size_t len_ = 0;
};

}  // namespace vhostkit
