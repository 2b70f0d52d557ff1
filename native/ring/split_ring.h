// Split virtqueue, device side (virtio 1.2 §2.7).
//   desc:  { le64 addr; le32 len; le16 flags; le16 next; } [size]
//   avail: { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }
//   used:  { le16 flags; le16 idx; { le32 id; le32 len; } ring[size]; le16 avail_event; }
#pragma once
#include "ring/virtqueue.h"

namespace vhostkit {

class SplitRing final : public Virtqueue {
 public:
  explicit SplitRing(uint32_t size);
  uint32_t GetBase() const override { return last_avail_; }
  VqError SetBase(uint32_t base) override;
  void SyncUsedFromRing() override;
  bool SetInflight(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len) override;
  int32_t Pop(const BurstArrays& out, uint32_t max) override;
  int32_t PopDirect(DirectBuf* out, uint32_t max) override;
  int32_t Push(const uint16_t* ids, const uint32_t* lens, uint32_t n) override;
  void Unpop(const uint16_t* ids, uint32_t n) override;
  bool SetNotify(bool enable) override;
  bool HasAvail() const override;
  uint32_t AvailCount() const override;

 private:
  // Walks one chain from head; on success fills *end with the next free segment.
  VqError WalkChain(uint16_t head, const BurstArrays& out, uint32_t first, uint32_t* end, uint64_t* rlen,
                    uint64_t* wlen, bool* full, std::string* detail);
  uint16_t AvailIdx() const { return LoadAcquire<uint16_t>(driver_ + 2); }
  uint8_t* UsedEventPtr() const { return driver_ + 4 + 2 * size_; }
  uint8_t* AvailEventPtr() const { return device_ + 4 + 8 * size_; }

  // QueueRegionSplit: u64 features; u16 version; u16 desc_num; u16 last_batch_head;
  // u16 used_idx; then per descriptor { u8 inflight; u8 pad[5]; u16 next; u64 counter }.
  uint8_t* InflightDesc(uint32_t i) const { return inflight_ + 16 + 16 * static_cast<size_t>(i); }
  void RecoverInflight();
  std::shared_ptr<MemTable> inflight_table_;
  uint8_t* inflight_ = nullptr;
  uint64_t inflight_counter_ = 1;

  const uint16_t mask_;
  uint16_t last_avail_ = 0;
  uint16_t last_used_ = 0;
  // Loop detection: visit stamps per descriptor index (ring and indirect table),
  // compared with a per-chain generation, so no clearing per chain.
  std::vector<uint32_t> stamp_;
  std::vector<uint32_t> ind_stamp_;
  uint32_t gen_ = 0;
};

}  // namespace vhostkit
