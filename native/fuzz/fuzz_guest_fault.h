// Input format of the guest_fault target (fuzz_guest_fault.cc), shared with its seeds
// (gen_seeds.cc). Values are read as fuzz::Input reads them (little-endian, 0 past the end).
//
//   u8 layout (Layout bits)
//   region 0: u16 size (1 + v % (kMaxRegionPages pages)), u16 mmap offset (v % 2 pages)
//   region 1 (kTwoRegions): u16 size, u16 mmap offset, u8 gpa mode
//       offset, in its own file: v % 2 pages; in region 0's file (kSameFile): bit 15 set,
//       (v & 0x7fff) % 2 pages, which may share bytes with region 0; else region 0's end
//       rounded up to a page, plus (v & 1) pages
//       gpa mode bit 0: 1 MiB above region 0's end, else right after it (chains can cross)
//   u8 slack: bits 0-1 pages of file 0 past its last region, bits 2-3 the same for file 1
//   u8 queue size: split 1 << (v % 5), packed 1 + v % 16
//   3 ring areas (descriptors, driver, device): u8 sel (bit 0: in region 1), u16 offset in
//       the region (v % size, moved up to the next 16-byte host alignment)
//   [kLog: u8 log pages (1 + v % 2)]
// then up to kMaxOps operations, each a u8 opcode (% kOpCount) and its arguments:
//   kAddChain   u8 c (1 + c % 4 descriptors), u8 head (split) / buffer id (packed), then per
//               descriptor u8 f (bit 0 device-writable, bit 1 in region 1, bit 2 raw u64
//               address instead of the u16 offset), u16 offset | u64 address, u16 len
//               (v % (2 pages + 1)); written by the driver, published at once
//   kPop        u8 max (1 + v % 16)
//   kPopDirect  u8 max (1 + v % 16)
//   kCopy       u8 chain (of those held), u8 t (bit 0: a truncation spec follows), u16 at:
//               the device copies the chain's segments (reads the readable ones, writes the
//               writable ones) and, with bit 0, truncates after `at % (bytes + 1)` bytes
//   kPush       u8 n: pushes the first 1 + n % held chains held, used length = bytes written
//   kTruncate   a truncation spec
//   kVerify     reads every region byte through its mapping and checks it (see the .cc)
//   kNotify     u8 (bit 0: kicks on)
//   kQuery      AvailCount / HasAvail
// A truncation spec: u8 sel: bits 0-1 the file (0: region 0's, 1: region 1's, 2: the dirty
// log's, 3: region 0's; a file that does not exist means region 0's), bits 2-3 the size:
//   0: u16 v, v % (size + 1)      1: u8 v, (v % (pages + 1)) whole pages
//   2: 0                          3: u8 v, size - 1 - v % size (a few bytes shorter)
// A file only shrinks (a size above the current one is the current one).
#pragma once
#include <cstdint>

namespace fuzz::gf {

constexpr uint32_t kPage = 4096;  // the target checks the system's page size at start
constexpr uint32_t kMaxRegionPages = 4;
constexpr uint32_t kMaxOps = 64;
constexpr uint64_t kLowGpa = 0x100000;   // its dirty log bits are in the log's first page
constexpr uint64_t kHighGpa = 0x8000000; // 128 MiB: its dirty log bits are in the second page
constexpr uint64_t kRegion1Gap = 0x100000;

enum Layout : uint8_t {
  kTwoRegions = 1,
  kSameFile = 2,   // region 1 maps region 0's file (QEMU: one memory backend, two regions)
  kPacked = 4,
  kEventIdx = 8,
  kLog = 16,       // a dirty log in a third file, set on the queue
  kLogRings = 32,  // ... which also logs the ring writes
  kSealed = 64,    // region 0's file is a sealable memfd: Mapping::Map seals it (not guarded)
  kHigh = 128,     // region 0 at kHighGpa (else kLowGpa)
};

enum Op : uint8_t { kAddChain, kPop, kPopDirect, kCopy, kPush, kTruncate, kVerify, kNotify, kQuery, kOpCount };

// Truncation spec, sel byte: a file | a size mode.
constexpr uint8_t kFile0 = 0, kFile1 = 1, kFileLog = 2;
constexpr uint8_t kSizeRaw = 0, kSizePages = 1 << 2, kSizeZero = 2 << 2, kSizeShorter = 3 << 2;

}  // namespace fuzz::gf
