#include "switch/switch_fdb.h"

#include <sys/random.h>

#include <algorithm>
#include <chrono>

namespace vhostkit {
namespace {

constexpr uint32_t kMinSlots = 256;

uint64_t RandomSeed() {
  uint64_t s = 0;
  if (getrandom(&s, sizeof s, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof s)) {
    // No entropy yet (early boot): the clock still differs between processes.
    s = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return s | 1;
}

// murmur3's 64-bit finalizer: every key bit reaches the low bits the mask keeps.
uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

uint64_t Mac(const uint8_t* p) {
  return (uint64_t{p[0]} << 40) | (uint64_t{p[1]} << 32) | (uint64_t{p[2]} << 24) | (uint64_t{p[3]} << 16) |
         (uint64_t{p[4]} << 8) | p[5];
}

}  // namespace

SwitchFdb::SwitchFdb(uint32_t max_entries) : seed_(RandomSeed()), max_(max_entries) {
  slots_.assign(kMinSlots, Slot{0, 0, -1, 0});
  mask_ = kMinSlots - 1;
}

uint64_t SwitchFdb::Home(uint64_t key) const { return Mix(key ^ seed_) & mask_; }

int64_t SwitchFdb::Find(uint64_t key) const {
  for (uint64_t i = Home(key);; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.port < 0) return -1;
    if (s.key == key) return static_cast<int64_t>(i);
  }
}

void SwitchFdb::Grow() {
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(old.size() * 2, Slot{0, 0, -1, 0});
  mask_ = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.port < 0) continue;
    uint64_t i = Home(s.key);
    while (slots_[i].port >= 0) i = (i + 1) & mask_;
    slots_[i] = s;
  }
}

bool SwitchFdb::Learn(uint64_t mac, uint32_t vlan, int32_t port, int64_t now) {
  const uint64_t key = Key(mac, vlan);
  uint64_t i = Home(key);
  for (;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.port < 0) break;
    if (s.key == key) {
      // An installed entry: frames from its own port (the tunnel) leave it as it is.
      if (s.remote != 0 && s.port == port) return false;
      s.seen = now;
      if (s.port == port) return false;
      s.port = port;
      s.remote = 0;
      stats_.moved++;
      return true;
    }
  }
  if (count_ >= max_) {
    stats_.full++;
    return false;
  }
  if ((uint64_t{count_} + 1) * 2 > slots_.size()) {
    Grow();
    i = Home(key);
    while (slots_[i].port >= 0) i = (i + 1) & mask_;
  }
  slots_[i] = Slot{key, now, port, 0};
  count_++;
  stats_.learned++;
  return true;
}

int32_t SwitchFdb::Lookup(uint64_t mac, uint32_t vlan, int64_t now, int64_t aging_ms) const {
  const int64_t i = Find(Key(mac, vlan));
  if (i < 0) return -1;
  const Slot& s = slots_[static_cast<uint64_t>(i)];
  return s.remote == 0 && now - s.seen > aging_ms ? -1 : s.port;
}

bool SwitchFdb::SetRemote(uint64_t mac, uint32_t vlan, int32_t port, uint32_t remote) {
  const uint64_t key = Key(mac, vlan);
  const int64_t at = Find(key);
  if (at >= 0) {
    Slot& s = slots_[static_cast<uint64_t>(at)];
    s.port = port;
    s.remote = remote;
    return true;
  }
  if (count_ >= max_) {
    stats_.full++;
    return false;
  }
  if ((uint64_t{count_} + 1) * 2 > slots_.size()) Grow();
  uint64_t i = Home(key);
  while (slots_[i].port >= 0) i = (i + 1) & mask_;
  slots_[i] = Slot{key, 0, port, remote};
  count_++;
  return true;
}

bool SwitchFdb::RemoveRemote(uint64_t mac, uint32_t vlan, int32_t port, uint32_t remote) {
  const int64_t i = Find(Key(mac, vlan));
  if (i < 0) return false;
  const Slot& s = slots_[static_cast<uint64_t>(i)];
  if (s.remote == 0 || s.remote != remote || s.port != port) return false;
  EraseAt(static_cast<uint64_t>(i));
  return true;
}

uint32_t SwitchFdb::RemoteOf(uint64_t mac, uint32_t vlan) const {
  const int64_t i = Find(Key(mac, vlan));
  return i < 0 ? 0 : slots_[static_cast<uint64_t>(i)].remote;
}

// Backward-shift deletion: the entries after the hole that may live closer to their home
// slot move back into it, so every probe run stays unbroken.
void SwitchFdb::EraseAt(uint64_t hole) {
  for (uint64_t k = (hole + 1) & mask_;; k = (k + 1) & mask_) {
    Slot& s = slots_[k];
    if (s.port < 0) break;
    const uint64_t home = Home(s.key);
    // s may move to hole unless its home lies cyclically in (hole, k].
    const bool stays = hole <= k ? (home > hole && home <= k) : (home > hole || home <= k);
    if (stays) continue;
    slots_[hole] = s;
    hole = k;
  }
  slots_[hole].port = -1;
  count_--;
}

template <typename Pred>
uint32_t SwitchFdb::EraseIf(Pred pred) {
  // Keys first, then erase: shifting entries while scanning could move one past the scan.
  std::vector<uint64_t> keys;
  for (const Slot& s : slots_) {
    if (s.port >= 0 && pred(s)) keys.push_back(s.key);
  }
  for (uint64_t key : keys) {
    const int64_t i = Find(key);
    if (i >= 0) EraseAt(static_cast<uint64_t>(i));
  }
  return static_cast<uint32_t>(keys.size());
}

uint32_t SwitchFdb::Age(int64_t now, int64_t aging_ms) {
  const uint32_t n = EraseIf([&](const Slot& s) { return s.remote == 0 && now - s.seen > aging_ms; });
  stats_.aged += n;
  return n;
}

uint32_t SwitchFdb::FlushPort(int32_t port) {
  return EraseIf([&](const Slot& s) { return s.port == port; });
}

std::vector<SwitchFdb::Entry> SwitchFdb::Dump() const {
  std::vector<Entry> out;
  for (const Slot& s : slots_) {
    if (s.port >= 0) out.push_back(Entry{s.key & 0xffffffffffffULL, static_cast<uint32_t>(s.key >> 48), s.port, s.seen, s.remote});
  }
  return out;
}

void SwitchClassify(SwitchFdb& fdb, int32_t port, const IngressVlan& in, const uint8_t* heads, const uint32_t* off,
                    uint32_t stride, uint32_t cap, const uint32_t* lens, uint32_t n, int64_t now, int64_t aging_ms,
                    const int32_t* verdict, int32_t* dest, int32_t* vid, int32_t* tagged, ClassifyCounts* c) {
  // A burst is mostly one flow or a few: the last source learned and the last destination
  // looked up in this call are remembered (now is the same for the whole call).
  uint64_t learned_key = ~uint64_t{0};
  uint64_t looked_key = ~uint64_t{0};
  int32_t looked_port = -1;
  const FdbGuard guard(fdb);
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t len = lens[i];
    c->packets++;
    c->bytes += len;
    dest[i] = kClassifyDrop;
    vid[i] = 0;
    tagged[i] = 0;
    const uint32_t have = std::min(len, cap);
    if (have < 14) {
      c->bad++;
      continue;
    }
    const int32_t v = verdict != nullptr ? verdict[i] : kVerdictSwitch;
    if (v == kVerdictDrop) {
      c->hook++;
      continue;
    }
    const uint8_t* h = heads + (off != nullptr ? off[i] : static_cast<uint64_t>(i) * stride);
    const bool is_tagged = h[12] == 0x81 && h[13] == 0x00;
    uint32_t id;
    if (in.access) {
      if (is_tagged) {
        c->vlan++;
        continue;
      }
      id = in.vid;
    } else if (is_tagged) {
      if (have < 16) {
        c->bad++;
        continue;
      }
      id = ((uint32_t{h[14]} << 8) | h[15]) & 0xfff;
      if (!in.all_allowed && (in.allowed[id >> 5] & (1u << (id & 31))) == 0) {
        c->vlan++;
        continue;
      }
    } else if (in.native >= 0) {
      id = static_cast<uint32_t>(in.native);
    } else {
      c->vlan++;
      continue;
    }
    vid[i] = static_cast<int32_t>(id);
    tagged[i] = is_tagged ? 1 : 0;
    if ((h[6] & 1) == 0) {
      const uint64_t src = Mac(h + 6);
      const uint64_t key = (uint64_t{id} << 48) | src;
      if (key != learned_key) {
        learned_key = key;
        // A new entry or a move may change what the remembered lookup found.
        if (fdb.Learn(src, id, port, now)) looked_key = ~uint64_t{0};
      }
    }
    int32_t d = kClassifyFlood;
    if ((h[0] & 1) == 0) {
      const uint64_t dst = Mac(h);
      const uint64_t key = (uint64_t{id} << 48) | dst;
      if (key != looked_key) {
        looked_key = key;
        looked_port = fdb.Lookup(dst, id, now, aging_ms);
      }
      if (looked_port >= 0) d = looked_port;
    }
    if (v >= 0) d = v;
    if (d == kClassifyFlood) c->flooded++;
    dest[i] = d;
  }
}

}  // namespace vhostkit
