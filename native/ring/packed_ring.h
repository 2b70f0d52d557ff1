// Packed virtqueue, device side (virtio 1.2 §2.8).
//   desc:   { le64 addr; le32 len; le16 id; le16 flags; } [size]
//   driver event suppression (written by the driver), device event suppression
//   (written by us): { le16 off_wrap; le16 flags; }
// A descriptor is available when its AVAIL bit equals our avail wrap counter and its
// USED bit does not; the buffer id of a chain is the id of its last descriptor.
#pragma once
#include "ring/virtqueue.h"

namespace vhostkit {

class PackedRing final : public Virtqueue {
 public:
  explicit PackedRing(uint32_t size) : Virtqueue(true, size), popped_at_(size, 0) {}
  uint32_t GetBase() const override;
  VqError SetBase(uint32_t base) override;
  void SyncUsedFromRing() override;
  bool SetInflight(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len) override;
  bool SetRingRecord(std::shared_ptr<MemTable> table, uint8_t* host, uint64_t len, uint32_t frontend_base) override;
  void ForgetRingRecord() override;
  int32_t Pop(const BurstArrays& out, uint32_t max) override;
  int32_t PopDirect(DirectBuf* out, uint32_t max) override;
  int32_t Push(const uint16_t* ids, const uint32_t* lens, uint32_t n) override;
  void Unpop(const uint16_t* ids, uint32_t n) override;
  bool SetNotify(bool enable) override;
  bool HasAvail() const override;
  uint32_t AvailCount() const override;

 private:
  bool Avail(uint16_t flags) const;
  // Walks the chain that starts at descriptor `start` of `ring` (ring_len descriptors,
  // wrapping), at most max_desc descriptors long.
  VqError WalkChain(const uint8_t* ring, uint32_t start, uint32_t ring_len, uint32_t max_desc, const BurstArrays& out,
                    uint32_t first, uint32_t* end, uint16_t* id, uint32_t* ndesc, uint64_t* rlen, uint64_t* wlen,
                    bool* full, std::string* detail);
  void WriteDeviceEvent(uint16_t flags, const LogState& lg);

  // Inflight I/O tracking for packed rings. The device writes used descriptors over the
  // ring slots of chains still in flight (out-of-order completion), so the area keeps a
  // copy of each in-flight chain's descriptors, and the device's own ring state (QEMU
  // cannot restore a packed ring's position after a backend died). Private layout
  // (QEMU does not read the area; sizes agree through GET_INFLIGHT_FD):
  //   0  u32 magic "VKP1"     4  u16 desc_num     6  u8 batch_valid
  //   8  u64 avail_commit: bits 0-15 avail position | wrap << 15, bits 16-63 the counter of
  //      the last chain popped; one store commits a whole pop burst
  //   16 u16 used_commit (position | wrap << 15)   18 u16 batch_used (used_commit after the
  //      batch being pushed)
  //   64 records [desc_num] { u8 state (0 free, 1 in flight, 2 completing); u8 pad;
  //      u16 ndesc; u16 first pool entry; u16 pad; u64 counter }
  //   64 + 16 n  pool [desc_num] descriptor copies (16 bytes)
  //   64 + 32 n  pool_next [desc_num] u16
  // Recovery (SyncUsedFromRing on start) settles a push batch that was cut short (did its
  // head flags reach the ring?), drops chains of a pop burst that was not committed, and
  // resubmits the rest from their copies, oldest first. The area is shared with the
  // frontend: everything read from it is bounds-checked, and an inconsistent area is
  // reinitialized (nothing resubmitted).
  static constexpr uint32_t kInflightMagic = 0x31504b56;  // "VKP1"
 public:
  static uint64_t InflightBytes(uint32_t size) { return 64 + 34 * static_cast<uint64_t>(size); }
  static uint64_t RecordBytes(uint32_t size) { return 64 + 8 * static_cast<uint64_t>(size); }

 private:
  uint8_t* Record(uint32_t id) const { return inflight_ + 64 + 16 * static_cast<size_t>(id); }
  uint8_t* PoolDesc(uint32_t i) const { return inflight_ + 64 + 16 * (static_cast<size_t>(size_) + i); }
  uint8_t* PoolNext(uint32_t i) const { return inflight_ + 64 + 32 * static_cast<size_t>(size_) + 2 * i; }
  uint16_t AvailPos() const { return static_cast<uint16_t>(last_avail_ | (avail_wrap_ ? 0x8000 : 0)); }
  uint16_t UsedPos() const { return static_cast<uint16_t>(last_used_ | (used_wrap_ ? 0x8000 : 0)); }
  void CommitAvail(uint64_t counter);
  void InitInflight();
  bool RecoverInflight();  // false: the area is inconsistent
  bool SaveChain(uint16_t id, uint32_t start, uint32_t ndesc);
  void FreeChain(uint16_t id, uint32_t ndesc);  // its pool entries back to the free stack

  // Ring position record (Virtqueue::SetRingRecord), used only without an inflight area.
  // Chains complete in pop order, so the chains in flight are the ring slots from the used
  // position on, untouched by the device: the record keeps the used position, and a
  // restart pops again from there. Layout:
  //   0  u32 magic "VKR1"   4 u16 size   6 u8 batch_valid
  //   8  u64 desc, 16 u64 driver area, 24 u64 device area (as SetRings got them)
  //   32 u32 the frontend's SET_VRING_BASE when the record was started
  //   36 u16 used_commit (position | wrap << 15)   38 u16 batch_end   40 u32 batch_n
  //   64 entries [size] { u16 slot | wrap << 15; u16 id; u32 len }: the push batch being
  //      written (write-ahead: a backend dying inside a batch leaves some of its used
  //      descriptors written, the head's last; recovery writes the rest from here).
  static constexpr uint32_t kRecordMagic = 0x31524b56;  // "VKR1"
  uint8_t* Entry(uint32_t i) const { return record_ + 64 + 8 * static_cast<size_t>(i); }
  void InitRecord();
  bool RecoverRecord();  // false: the record is not this ring's, or inconsistent
  // Before a push batch is written: checks it completes chains in pop order and logs it.
  // Returns false (and invalidates the record) if it does not.
  bool RecordBatch(const uint16_t* ids, const uint32_t* lens, uint32_t n);
  uint16_t UsedFlags(bool wrap, uint32_t len) const {
    return static_cast<uint16_t>((wrap ? (kDescAvailBit | kDescUsedBit) : 0) | (len ? kDescWriteBit : 0));
  }
  static constexpr uint16_t kDescWriteBit = 2;
  static constexpr uint16_t kDescAvailBit = 1 << 7;
  static constexpr uint16_t kDescUsedBit = 1 << 15;
  std::shared_ptr<MemTable> record_table_;
  uint8_t* record_ = nullptr;
  uint32_t frontend_base_ = 0;

  std::shared_ptr<MemTable> inflight_table_;
  uint8_t* inflight_ = nullptr;
  uint64_t inflight_counter_ = 1;
  std::vector<uint16_t> pool_free_;   // free pool entries (a stack)
  std::vector<uint16_t> pool_first_;  // per id: its first pool entry (shadow of the area)
  std::vector<uint16_t> pool_next_;   // shadow of pool_next
  std::vector<uint16_t> resubmit_ndesc_;  // per resubmit_ entry: descriptors saved
  std::vector<uint8_t> chain_copy_;   // one resubmitted chain's descriptors, contiguous

  // Per buffer id in flight: the avail position (| wrap << 15) its chain was popped from.
  // RecordBatch checks pop order against it instead of reading the ring's descriptor
  // lines, which a read would bring over shared just before the push takes them exclusive.
  std::vector<uint16_t> popped_at_;
  uint16_t last_avail_ = 0;
  bool avail_wrap_ = true;
  uint16_t last_used_ = 0;
  bool used_wrap_ = true;
};

}  // namespace vhostkit
