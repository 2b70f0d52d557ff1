// Packed virtqueue, device side (virtio 1.2 §2.8).
//   desc:   { le64 addr; le32 len; le16 id; le16 flags; } [size]
//   driver event suppression (written by the driver), device event suppression
//   (written by us): { le16 off_wrap; le16 flags; }
// A descriptor is available when its AVAIL bit equals our avail wrap counter and its
// USED bit does not; the buffer id of a chain is the id of its last descriptor.
#pragma once
#include "virtqueue.h"

namespace vhostkit {

class PackedRing final : public Virtqueue {
 public:
  explicit PackedRing(uint32_t size) : Virtqueue(true, size) {}
  uint32_t GetBase() const override;
  VqError SetBase(uint32_t base) override;
  int32_t Pop(const BurstArrays& out, uint32_t max) override;
  int32_t Push(const uint16_t* ids, const uint32_t* lens, uint32_t n) override;
  void Unpop(const uint16_t* ids, uint32_t n) override;
  bool SetNotify(bool enable) override;
  bool HasAvail() const override;

 private:
  bool Avail(uint16_t flags) const;
  VqError WalkChain(const BurstArrays& out, uint32_t first, uint32_t* end, uint16_t* id, uint32_t* ndesc,
                    uint64_t* rlen, uint64_t* wlen, bool* full, std::string* detail);
  void WriteDeviceEvent(uint16_t flags, const LogState& lg);

  uint16_t last_avail_ = 0;
  bool avail_wrap_ = true;
  uint16_t last_used_ = 0;
  bool used_wrap_ = true;
};

}  // namespace vhostkit
