// libFuzzer target: the switch's forwarding table, per-burst classification
// (switch_fdb.cc) and grouping (switch_forward.cc) on hostile frame heads, port
// configurations and any order of operations.
//
// Input: u8 table limit, then operations (u8 each: learn, lookup, age, flush, classify)
// with their operands. Heads live in exact-size heap buffers laid out as bind_switch.cc
// allows (every frame's first min(len, cap, 16) bytes inside).
// Oracles: learn / lookup / age / flush answer as a plain map (with the table limit) does;
// after a classify, the table is compared with the map rebuilt from Dump() (learning is
// checked by the fast-check property in test/switch/fdb.test.ts), every frame's verdict is
// a drop, a flood or a port, and the counters add up to the verdicts.
#include <algorithm>
#include <map>
#include <vector>

#include "../vring/switch_fdb.h"
#include "../vring/switch_forward.h"
#include "fuzz_common.h"

namespace {

using namespace fuzz;
using vhostkit::ClassifyCounts;
using vhostkit::IngressVlan;
using vhostkit::SwitchFdb;

constexpr int64_t kAging = 1000;

struct Model {
  struct E {
    int32_t port;
    int64_t seen;
  };
  std::map<uint64_t, E> m;
  uint32_t max;
  static uint64_t Key(uint64_t mac, uint32_t vlan) { return (uint64_t{vlan} << 48) | mac; }
};

void Resync(Model& model, const SwitchFdb& fdb) {
  model.m.clear();
  for (const SwitchFdb::Entry& e : fdb.Dump()) model.m[Model::Key(e.mac, e.vlan)] = Model::E{e.port, e.seen};
  FUZZ_CHECK(model.m.size() == fdb.size(), "Dump() has %zu distinct entries, size() says %u", model.m.size(), fdb.size());
}

bool NoQueue(uint32_t, vhostkit::Virtqueue**, const vhostkit::BurstArrays**) { return false; }

// The grouping of a classified burst (switch_forward.cc) over 4 hostile port configurations
// whose queues do not resolve (so nothing is delivered and every staged frame is counted
// as no_buffers). Oracles: the frames left are exactly those with a destination not served
// here, once each, in order; the records count exactly the (frame, served port) pairs the
// VLAN rules let through; at most one record per served queue.
void Group(Input& in, int32_t src_id, const uint8_t* heads, const uint32_t* off, uint32_t stride, uint32_t cap, const uint32_t* lens,
           uint32_t n, const std::vector<int32_t>& dest, const std::vector<int32_t>& vid, const std::vector<int32_t>& tagged) {
  constexpr uint32_t kBurst = 16;
  vhostkit::SwitchPorts ports(kBurst);
  std::vector<vhostkit::SwitchPort> conf(4);
  for (int32_t id = 0; id < 4; id++) {
    vhostkit::SwitchPort& p = conf[id];
    p.id = id;
    const uint8_t b = in.U8();
    p.deliver = b & 1;
    p.nrx = (b >> 1) % 10;  // Set() clamps to kSwitchMaxRx
    p.access = b & 0x20;
    p.vid = in.U8() % 4;
    p.native = static_cast<int32_t>(in.U8() % 5) - 1;
    p.all_allowed = b & 0x40;
    p.allowed[0] = in.U8();
    if (b & 0x80) continue;  // not in the table
    ports.Set(p);
  }
  vhostkit::SwitchPort* src = ports.Find(src_id);
  if (src == nullptr) return;
  // The heads as the engine has them: 64 bytes per frame, zero-filled past the frame.
  std::vector<uint8_t> h64(static_cast<size_t>(n) * vhostkit::kSwitchHead, 0);
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t have = std::min({lens[i], cap, 16u});
    std::copy(heads + (off ? off[i] : i * stride), heads + (off ? off[i] : i * stride) + have, h64.data() + i * vhostkit::kSwitchHead);
  }
  std::vector<uint16_t> left(kBurst);
  std::vector<vhostkit::SwitchRecord> recs(ports.DeliverQueues() + 1);
  uint32_t nleft = 0, nrec = 0;
  const vhostkit::TxSource tx{nullptr, nullptr, 12, false, -1};
  ports.Forward(*src, tx, h64.data(), dest.data(), vid.data(), tagged.data(), n, NoQueue, left.data(), &nleft, recs.data(),
                static_cast<uint32_t>(recs.size()), &nrec);
  uint32_t want_left = 0;
  uint32_t want_staged = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (dest[i] == vhostkit::kClassifyDrop) continue;
    bool other = false;
    for (int32_t id = 0; id < 4; id++) {
      const vhostkit::SwitchPort* q = ports.Find(id);
      if (q == nullptr || q == src || (dest[i] != vhostkit::kClassifyFlood && dest[i] != id)) continue;
      if (!q->deliver) {
        other = true;
      } else if (q->nrx > 0 && q->Egress(static_cast<uint32_t>(vid[i]), tagged[i] == 1) != vhostkit::kEgressNone) {
        want_staged++;
      }
    }
    if (other) {
      FUZZ_CHECK(want_left < nleft && left[want_left] == i, "frame %u should be left (entry %u of %u)", i, want_left, nleft);
      want_left++;
    }
  }
  FUZZ_CHECK(nleft == want_left, "%u frames left, expected %u", nleft, want_left);
  uint32_t staged = 0;
  for (uint32_t r = 0; r < nrec; r++) {
    FUZZ_CHECK(recs[r].result == 0 && recs[r].st.delivered == 0, "record %u delivered with no queue", r);
    const vhostkit::SwitchPort* q = ports.Find(recs[r].port);
    FUZZ_CHECK(q != nullptr && q->deliver && recs[r].k < q->nrx, "record %u: port %d queue %u", r, recs[r].port, recs[r].k);
    staged += recs[r].st.no_buffers;
  }
  FUZZ_CHECK(nrec <= ports.DeliverQueues(), "%u records for %u queues", nrec, ports.DeliverQueues());
  FUZZ_CHECK(staged == want_staged, "%u frames staged, expected %u", staged, want_staged);
}

void Classify(Input& in, SwitchFdb& fdb, Model& model, int64_t now) {
  const uint32_t n = in.U8() % 17;
  const uint8_t mode = in.U8();
  const bool offsets = mode & 1;
  const uint32_t stride = 16 + in.U8() % 49;
  const uint32_t cap = offsets ? (mode & 2 ? 0xffffffffu : stride) : 16 + (in.U8() % (stride - 15));
  std::vector<uint32_t> lens(n), off(n);
  for (uint32_t i = 0; i < n; i++) lens[i] = in.U8() % 80;
  size_t total = static_cast<size_t>(n) * stride;
  if (offsets) {
    total = 16 + in.U16() % 1024;
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t need = std::min({lens[i], cap, 16u});
      off[i] = static_cast<uint32_t>(in.U16() % (total - need + 1));
    }
  }
  HeapBuf heads(total);
  in.Bytes(heads.p, total);
  // A small MAC space, so that frames meet entries: only the last byte of each MAC varies
  // beyond what the input wrote.
  std::vector<uint32_t> allowed(128);
  IngressVlan ing;
  ing.access = mode & 4;
  ing.vid = in.U8() % 4;
  ing.native = (mode & 8) ? static_cast<int32_t>(in.U8() % 4) : -1;
  ing.all_allowed = mode & 16;
  for (uint32_t k = 0; k < 4; k++) allowed[0] |= (in.U8() & 1u) << k;
  ing.allowed = allowed.data();
  std::vector<int32_t> verdict(n);
  for (uint32_t i = 0; i < n; i++) verdict[i] = static_cast<int32_t>(in.U8() % 6) - 2;  // -2 drop, -1 switch, ports 0..3
  std::vector<int32_t> dest(n), vid(n), tagged(n);
  ClassifyCounts c;
  const int32_t port = in.U8() % 4;
  vhostkit::SwitchClassify(fdb, port, ing, heads.p, offsets ? off.data() : nullptr, stride, cap, lens.data(), n, now, kAging,
                           (mode & 32) ? verdict.data() : nullptr, dest.data(), vid.data(), tagged.data(), &c);
  uint32_t drops = 0, floods = 0;
  double bytes = 0;
  for (uint32_t i = 0; i < n; i++) {
    FUZZ_CHECK(dest[i] == vhostkit::kClassifyDrop || dest[i] == vhostkit::kClassifyFlood || dest[i] >= 0, "frame %u: dest %d", i, dest[i]);
    drops += dest[i] == vhostkit::kClassifyDrop;
    floods += dest[i] == vhostkit::kClassifyFlood;
    bytes += lens[i];
    if (std::min(lens[i], cap) < 14) FUZZ_CHECK(dest[i] == vhostkit::kClassifyDrop, "frame %u of %u bytes not dropped", i, lens[i]);
    if (dest[i] != vhostkit::kClassifyDrop) FUZZ_CHECK(vid[i] >= 0 && vid[i] < 4096 && tagged[i] <= 1, "frame %u: vid %d tagged %d", i, vid[i], tagged[i]);
  }
  FUZZ_CHECK(c.packets == n && c.bytes == bytes, "counted %u frames, %.0f bytes of %u, %.0f", c.packets, c.bytes, n, bytes);
  FUZZ_CHECK(c.bad + c.hook + c.vlan == drops && c.flooded == floods, "counters bad %u hook %u vlan %u flooded %u; drops %u floods %u", c.bad,
             c.hook, c.vlan, c.flooded, drops, floods);
  Resync(model, fdb);
  FUZZ_CHECK(fdb.size() <= model.max, "size %u above the limit %u", fdb.size(), model.max);
  if (mode & 64) Group(in, port, heads.p, offsets ? off.data() : nullptr, stride, cap, lens.data(), n, dest, vid, tagged);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Model model;
  model.max = 1 + in.U8() % 64;
  SwitchFdb fdb(model.max);
  int64_t now = 0;
  for (uint32_t ops = 0; !in.done() && ops < 512; ops++) {
    const uint8_t op = in.U8() % 5;
    now += in.U8();
    if (op == 4) {
      Classify(in, fdb, model, now);
      continue;
    }
    // Addresses from a small space (collisions, long probe runs); VLANs 0..3; ports 0..3.
    const uint64_t low = in.U8();
    const uint64_t high = in.U8() & 1u;
    const uint64_t mac = low | (high << 47);
    const uint32_t vlan = in.U8() % 4;
    const int32_t port = in.U8() % 4;
    const uint64_t key = Model::Key(mac, vlan);
    auto it = model.m.find(key);
    if (op == 0) {
      bool want;
      if (it != model.m.end()) {
        want = it->second.port != port;
        it->second = Model::E{port, now};
      } else if (model.m.size() >= model.max) {
        want = false;
      } else {
        want = true;
        model.m[key] = Model::E{port, now};
      }
      const bool got = fdb.Learn(mac, vlan, port, now);
      FUZZ_CHECK(got == want, "Learn(%llx, %u, %d) returned %d", static_cast<unsigned long long>(mac), vlan, port, got);
    } else if (op == 1) {
      const int32_t want = it == model.m.end() || now - it->second.seen > kAging ? -1 : it->second.port;
      const int32_t got = fdb.Lookup(mac, vlan, now, kAging);
      FUZZ_CHECK(got == want, "Lookup(%llx, %u) returned %d, expected %d", static_cast<unsigned long long>(mac), vlan, got, want);
    } else if (op == 2) {
      uint32_t want = 0;
      for (auto e = model.m.begin(); e != model.m.end();) e = now - e->second.seen > kAging ? (want++, model.m.erase(e)) : std::next(e);
      FUZZ_CHECK(fdb.Age(now, kAging) == want, "Age removed other than %u", want);
    } else {
      uint32_t want = 0;
      for (auto e = model.m.begin(); e != model.m.end();) e = e->second.port == port ? (want++, model.m.erase(e)) : std::next(e);
      FUZZ_CHECK(fdb.FlushPort(port) == want, "FlushPort(%d) removed other than %u", port, want);
    }
    FUZZ_CHECK(fdb.size() == model.m.size(), "size %u, the map holds %zu", fdb.size(), model.m.size());
  }
  return 0;
}
