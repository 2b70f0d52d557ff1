#include "switch/switch_handler.h"

#include <cstring>

#include "switch/switch_layout.h"

namespace vhostkit {
namespace {

namespace hw = layout::handler_word;
namespace hr = layout::handler_record;

constexpr uint32_t kHead = hw::kWords * 4;
constexpr uint32_t kRecordHead = hr::kWords * 4;

int32_t Word(const uint8_t* buf, uint32_t w) {
  int32_t v;
  std::memcpy(&v, buf + 4 * w, 4);
  return v;
}
void SetWord(uint8_t* buf, uint32_t w, int32_t v) { std::memcpy(buf + 4 * w, &v, 4); }

}  // namespace

void HandlerStage::Attach(uint8_t* buf, size_t len) {
  buf_ = len >= kHead ? buf : nullptr;
  len_ = len;
  if (buf_ == nullptr) return;
  SetWord(buf_, hw::AT, static_cast<int32_t>(kHead));
  SetWord(buf_, hw::FRAMES, 0);
  SetWord(buf_, hw::LOST, 0);
}

bool HandlerStage::Pending() const { return buf_ != nullptr && Word(buf_, hw::FRAMES) > 0; }

bool HandlerStage::Put(int32_t handler, int32_t in_port, uint32_t vlan, const NetHdr& h, const uint8_t* frame, uint32_t len) {
  uint8_t* b = buf_;
  if (b == nullptr) return false;
  // JavaScript resets AT to the head once it has run the records: take nothing else on trust.
  int64_t at = Word(b, hw::AT);
  if (at < kHead || static_cast<uint64_t>(at) > len_) at = kHead;
  const uint64_t need = (uint64_t{kRecordHead} + len + 7) & ~uint64_t{7};
  if (need > len_ - static_cast<uint64_t>(at)) {
    SetWord(b, hw::LOST, Word(b, hw::LOST) + 1);
    return false;
  }
  uint8_t* r = b + at;
  int32_t words[hr::kWords];
  words[hr::HANDLER] = handler;
  words[hr::IN_PORT] = in_port;
  words[hr::LEN] = static_cast<int32_t>(len);
  words[hr::VLAN] = static_cast<int32_t>(vlan);
  words[hr::FLAGS] = h.flags;
  words[hr::GSO_TYPE] = h.gso_type;
  words[hr::HDR_LEN] = h.hdr_len;
  words[hr::GSO_SIZE] = h.gso_size;
  words[hr::CSUM_START] = h.csum_start;
  words[hr::CSUM_OFFSET] = h.csum_offset;
  std::memcpy(r, words, kRecordHead);
  std::memcpy(r + kRecordHead, frame, len);
  SetWord(b, hw::AT, static_cast<int32_t>(static_cast<uint64_t>(at) + need));
  SetWord(b, hw::FRAMES, Word(b, hw::FRAMES) + 1);
  return true;
}

}  // namespace vhostkit
