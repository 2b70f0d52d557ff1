// libFuzzer target: the switch's forwarding table, per-burst classification
// (switch_fdb.cc) and its data path (switch_forward.cc: grouping, host ports, capture) on
// hostile frames, offload headers, port configurations and any order of operations.
//
// Input: u8 table limit, then operations (u8 each: learn, lookup, age, flush, classify)
// with their operands. Heads live in exact-size heap buffers laid out as bind_switch.cc
// allows (every frame's first min(len, cap, 16) bytes inside).
// Oracles: learn / lookup / age / flush answer as a plain map (with the table limit) does;
// after a classify, the table is compared with the map rebuilt from Dump() (learning is
// checked by the fast-check property in test/switch/fdb.test.ts), every frame's verdict is
// a drop, a flood or a port, and the counters add up to the verdicts.
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "switch/switch_fdb.h"
#include "switch/switch_forward.h"
#include "switch/switch_layout.h"
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

namespace pc = vhostkit::layout::port_counter;
namespace cw = vhostkit::layout::capture_word;

// The forwarder (switch_forward.cc) over frames held in a buffer, from port src_id among 4
// hostile port configurations: guests whose queues do not resolve (every frame staged for
// one is counted as no buffers, or no queue when it has none), and TAP and VXLAN ports on
// a closed fd (every send fails and is counted), one of them captured into a small
// staging buffer, with hostile offload headers. Oracles: a guest port counts exactly the
// frames the VLAN rules send it; the capture's records are well formed and fill exactly
// what its state says.
void Group(Input& in, vhostkit::SwitchFdb& fdb, int32_t src_id, const uint32_t* lens, uint32_t n, int64_t now) {
  constexpr uint32_t kBurst = 16;
  vhostkit::Forwarder fwd(fdb, kBurst, NoQueue);
  std::vector<std::vector<double>> counters(4, std::vector<double>(pc::kWords, 0));
  std::vector<double> qstats(8 * vhostkit::layout::queue_stat::kWords, 0);
  std::vector<uint8_t> cap(in.U16() % 700);
  std::vector<double> cap_state(cw::kWords, 0);
  cap_state[cw::SNAPLEN] = 1 + in.U8();
  cap_state[cw::LIMIT] = in.U8() % 4;
  for (int32_t id = 0; id < 4; id++) {
    vhostkit::SwitchPort p;
    p.id = id;
    const uint8_t b = in.U8();
    p.kind = static_cast<vhostkit::PortKind>((b & 0x18) == 0x18 ? 0 : (b >> 3) & 3);
    p.hdr_len = b & 1 ? 12 : 10;
    p.vlan.access = b & 0x20;
    p.vlan.vid = in.U8() % 4;
    p.vlan.native = static_cast<int32_t>(in.U8() % 5) - 1;
    p.vlan.all_allowed = b & 0x40;
    p.vlan.allowed[0] = in.U8();
    p.counters = counters[id].data();
    if (p.kind == vhostkit::PortKind::kGuest) {
      const uint32_t nrx = (b >> 1) % 3;
      for (uint32_t k = 0; k < nrx; k++) p.rx.push_back(vhostkit::RxQueueRef{k, qstats.data() + (id * 2 + k) * vhostkit::layout::queue_stat::kWords});
    } else {
      p.host.fd = -1;  // closed: every send fails with EBADF, counted
      p.host.offloads = b & 2;
      p.host.dest.ss_family = AF_INET;
      p.host.dest_len = sizeof(sockaddr_in);
    }
    if (id == 0 && (b & 4)) {
      p.captured = true;
      p.capture = vhostkit::PcapStage{cap.data(), cap.size(), cap_state.data()};
    }
    if (b & 0x80) continue;  // not in the table
    fwd.Set(std::move(p));
  }
  vhostkit::SwitchPort* src = fwd.Find(src_id);
  if (src == nullptr) return;
  // The frames back to back, with their MACs from a small space, and hostile offload headers.
  std::vector<uint32_t> off(n);
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    off[i] = static_cast<uint32_t>(total);
    total += lens[i];
  }
  HeapBuf data(total);
  in.Bytes(data.p, total);
  for (uint32_t i = 0; i < n; i++) {
    for (uint32_t k = 0; k < lens[i] && k < 12; k++) data.p[off[i] + k] = k == 5 || k == 11 ? data.p[off[i] + k] % 4 : (k == 0 || k == 6 ? 2 : 0);
  }
  std::vector<uint8_t> hdr10(static_cast<size_t>(n) * 10);
  in.Bytes(hdr10.data(), hdr10.size());
  const bool with_hdr = in.U8() & 1;
  // A few hostile flows: any fields, values from a small space so that frames meet them.
  const uint32_t nflows = in.U8() % 8;
  for (uint32_t k = 0; k < nflows; k++) {
    vhostkit::Flow f;
    f.priority = in.U8();
    // Often one of a few shapes, so that flows share subtables (the index's buckets).
    namespace ffl = vhostkit::layout::flow_field;
    static constexpr uint32_t kShapes[] = {1u << ffl::DL_DST, (1u << ffl::DL_TYPE) | (1u << ffl::NW_PROTO),
                                           (1u << ffl::DL_TYPE) | (1u << ffl::NW_PROTO) | (1u << ffl::NW_DST) | (1u << ffl::TP_DST), 1u << ffl::IN_PORT,
                                           (1u << ffl::DL_TYPE) | (1u << ffl::IPV6_DST) | (1u << ffl::TP_DST)};
    f.match.fields = in.U8() & 1 ? kShapes[in.U8() % 5] : in.U16() & ((1u << ffl::kWords) - 1);
    // Now and then the shapes of EVPN's flows: ARP by opcode and target (IPv4's fields), and
    // ICMP/ICMPv6 by type (the ports' field), whose layers a frame must have to match.
    if ((in.U8() & 3) == 0) {
      f.match.fields = in.U8() & 1 ? (1u << ffl::DL_TYPE) | (1u << ffl::NW_PROTO) | (1u << ffl::NW_DST) | (1u << ffl::DL_VLAN)
                                   : (1u << ffl::DL_TYPE) | (1u << ffl::NW_PROTO) | (1u << ffl::TP_SRC) | (1u << ffl::IPV6_DST);
    }
    f.match.in_port = in.U8() % 4;
    f.match.dl_src = 0x020000000000ULL | (in.U8() % 4);
    f.match.dl_dst = 0x020000000000ULL | (in.U8() % 4);
    f.match.dl_vlan = in.U8() % 4;
    f.match.dl_type = in.U8() & 1 ? (in.U8() & 1 ? 0x86dd : 0x0800) : in.U16();
    f.match.nw_src_mask = 0xffffff00;
    f.match.nw_src = in.U32() & f.match.nw_src_mask;
    f.match.nw_dst_mask = in.U8() & 1 ? 0xffffffff : 0xffffffff << (in.U8() % 32);
    f.match.nw_dst = in.U32() & f.match.nw_dst_mask;
    f.match.nw_proto = in.U8() % 2 ? 6 : 17;
    f.match.tp_src = in.U8();
    f.match.tp_dst = in.U8();
    f.match.nw_ttl = in.U8() % 3;
    f.match.ipv6_src_len = in.U8() % 129;
    f.match.ipv6_src = vhostkit::Ip6{uint64_t{in.U32()} << 32, in.U8()}.Prefix(f.match.ipv6_src_len);
    f.match.ipv6_dst_len = in.U8() & 1 ? 128 : in.U8() % 129;
    f.match.ipv6_dst = vhostkit::Ip6{uint64_t{in.U32()} << 32, in.U8()}.Prefix(f.match.ipv6_dst_len);
    f.match.tcp_flags_mask = in.U16() & 0xfff;
    f.match.tcp_flags = in.U16() & f.match.tcp_flags_mask;
    // Hostile action words: any op (some unknown), small arguments, in any order; what
    // ReadFlowActions refuses is not added.
    int32_t words[6 * vhostkit::layout::flow_action::kWords] = {};
    const uint32_t nact = in.U8() % 7;
    for (uint32_t a = 0; a < nact * vhostkit::layout::flow_action::kWords; a++) {
      words[a] = a % vhostkit::layout::flow_action::kWords == 0 ? static_cast<int32_t>(in.U8() % 16) : static_cast<int32_t>(in.U16()) - 2;
    }
    if (vhostkit::ReadFlowActions(words, nact, &f.actions) != nullptr) continue;
    // Half of them take their values from a frame of the burst, so that frames meet them.
    if (n > 0 && (in.U8() & 1)) {
      const uint32_t j = in.U8() % n;
      const uint32_t have = std::min(lens[j], vhostkit::kSwitchHead);
      if (have >= 14) {
        const vhostkit::FrameKey k = vhostkit::FlowKey(data.p + off[j], have, src_id, 0);
        f.match.in_port = k.in_port;
        f.match.dl_src = k.dl_src;
        f.match.dl_dst = k.dl_dst;
        f.match.dl_type = k.dl_type;
        f.match.nw_src = k.nw_src & f.match.nw_src_mask;
        f.match.nw_dst = k.nw_dst & f.match.nw_dst_mask;
        f.match.nw_proto = k.nw_proto;
        f.match.tp_src = k.tp_src;
        f.match.tp_dst = k.tp_dst;
        f.match.nw_ttl = k.nw_ttl;
        f.match.ipv6_src = k.ipv6_src.Prefix(f.match.ipv6_src_len);
        f.match.ipv6_dst = k.ipv6_dst.Prefix(f.match.ipv6_dst_len);
        f.match.tcp_flags = k.tcp_flags & f.match.tcp_flags_mask;
      }
    }
    // Timeouts of 0-2 s, the flow added 0-255 s ago: Expire below removes some.
    f.idle_timeout = in.U8() % 3;
    f.hard_timeout = in.U8() % 3;
    fwd.flows().Add(f, now - static_cast<int64_t>(in.U8()) * 1000);
  }
  if (in.U8() & 1) {
    const size_t before = fwd.flows().size();
    const uint32_t gone = fwd.flows().Expire(now);
    FUZZ_CHECK(fwd.flows().size() + gone == before, "Expire removed %u of %zu flows, %zu left", gone, before, fwd.flows().size());
    for (uint32_t f : fwd.flows().Ordered()) {
      const vhostkit::Flow& g = fwd.flows().flow(f);
      FUZZ_CHECK((g.idle_timeout == 0 || now - fwd.flows().hot(f).used_ms < int64_t{g.idle_timeout} * 1000) &&
                     (g.hard_timeout == 0 || now - g.added_ms < int64_t{g.hard_timeout} * 1000),
                 "flow %u outlived its timeout", f);
    }
  }
  // The flow table's index finds what a scan in table order finds (FlowMatches, the rule),
  // one frame at a time and for the burst at once (the data path's call, on padded heads).
  std::vector<uint8_t> h64(static_cast<size_t>(n) * vhostkit::kSwitchHead, 0);
  for (uint32_t i = 0; i < n; i++) std::memcpy(h64.data() + i * vhostkit::kSwitchHead, data.p + off[i], std::min(lens[i], vhostkit::kSwitchHead));
  std::vector<int32_t> want(n, -1), vlans(n, 0), found(n, -2);
  const std::vector<uint32_t> order = fwd.flows().Ordered();
  std::vector<uint16_t> which;
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t have = std::min(lens[i], vhostkit::kSwitchHead);
    if (have < 14) continue;
    vlans[i] = i % 2 ? 0 : in.U8() % 4;
    const vhostkit::FrameKey k = vhostkit::FlowKey(data.p + off[i], have, src_id, static_cast<uint32_t>(vlans[i]));
    for (uint32_t f : order) {
      if (vhostkit::FlowMatches(fwd.flows().flow(f).match, k)) {
        want[i] = static_cast<int32_t>(f);
        break;
      }
    }
    const int32_t got = fwd.flows().Lookup(k);
    FUZZ_CHECK(got == want[i], "frame %u: the index found flow %d, the scan %d", i, got, want[i]);
    which.push_back(static_cast<uint16_t>(i));
  }
  fwd.flows().LookupBurst(h64.data(), vhostkit::kSwitchHead, lens, vlans.data(), src_id, which.data(), static_cast<uint32_t>(which.size()), found.data());
  for (uint16_t i : which) FUZZ_CHECK(found[i] == want[i], "frame %u: the burst lookup found flow %d, the scan %d", i, found[i], want[i]);
  // What the forwarder's classification will decide: the same call on a copy of the table.
  vhostkit::SwitchFdb copy = fdb;
  std::vector<int32_t> dest(n), vid(n), tagged(n);
  vhostkit::ClassifyCounts cc;
  vhostkit::SwitchClassify(copy, src_id, src->vlan.Ingress(), h64.data(), nullptr, vhostkit::kSwitchHead, vhostkit::kSwitchHead, lens, n, now,
                           kAging, nullptr, dest.data(), vid.data(), tagged.data(), &cc);
  // Frames for handlers staged in a buffer of any size (none at all: counted nowhere, lost).
  std::vector<uint8_t> stage(in.U8() & 1 ? 0 : 16 + in.U16() % 4096);
  if (!stage.empty()) fwd.handler_stage().Attach(stage.data(), stage.size());
  fwd.Flat(*src, data.p, off.data(), lens, with_hdr ? hdr10.data() : nullptr, n, now, kAging);
  if (!stage.empty()) {
    namespace hw = vhostkit::layout::handler_word;
    namespace hr = vhostkit::layout::handler_record;
    int32_t words[hw::kWords];
    std::memcpy(words, stage.data(), sizeof words);
    FUZZ_CHECK(words[hw::AT] >= static_cast<int32_t>(sizeof words) && static_cast<size_t>(words[hw::AT]) <= stage.size(), "handler AT %d", words[hw::AT]);
    size_t walk = sizeof words;
    int32_t records = 0;
    while (walk < static_cast<size_t>(words[hw::AT])) {
      int32_t rec[hr::kWords];
      FUZZ_CHECK(walk + sizeof rec <= stage.size(), "a handler record header cut at %zu", walk);
      std::memcpy(rec, stage.data() + walk, sizeof rec);
      FUZZ_CHECK(rec[hr::LEN] >= 0 && static_cast<uint32_t>(rec[hr::LEN]) <= vhostkit::kMaxFrame + 4, "handler record length %d", rec[hr::LEN]);
      walk += (sizeof rec + static_cast<size_t>(rec[hr::LEN]) + 7) & ~size_t{7};
      records++;
    }
    FUZZ_CHECK(walk == static_cast<size_t>(words[hw::AT]) && records == words[hw::FRAMES], "handler records walk to %zu of %d (%d of %d)", walk,
               words[hw::AT], records, words[hw::FRAMES]);
  }
  // Each guest port counted exactly the frames its VLAN rule lets through to it (without
  // flows, which change destinations: then the flows' counts must add up instead).
  double matched = 0;
  for (uint32_t f : fwd.flows().Ordered()) matched += fwd.flows().hot(f).packets;
  FUZZ_CHECK(matched <= n, "flows matched %.0f of %u frames", matched, n);
  for (int32_t id = 0; id < 4 && nflows == 0; id++) {
    const vhostkit::SwitchPort* q = fwd.Find(id);
    if (q == nullptr || q == src || q->kind != vhostkit::PortKind::kGuest) continue;
    uint32_t want = 0;
    for (uint32_t i = 0; i < n; i++) {
      if (dest[i] != vhostkit::kClassifyFlood && dest[i] != id) continue;
      if (q->vlan.Egress(static_cast<uint32_t>(vid[i]), tagged[i] == 1) != vhostkit::kEgressNone) want++;
    }
    const double got = counters[id][q->rx.empty() ? pc::DROP_NO_QUEUE : pc::DROP_NO_BUFFERS];
    FUZZ_CHECK(got == want, "port %d counted %.0f frames, expected %u", id, got, want);
    FUZZ_CHECK(counters[id][pc::TX_PACKETS] == 0, "port %d delivered into a queue that does not resolve", id);
  }
  FUZZ_CHECK(counters[src_id][pc::RX_PACKETS] == n, "source counted %.0f of %u frames", counters[src_id][pc::RX_PACKETS], n);
  // The capture's records walk exactly to its AT.
  const size_t at = static_cast<size_t>(cap_state[cw::AT]);
  FUZZ_CHECK(at <= cap.size(), "capture staged %zu bytes in %zu", at, cap.size());
  size_t walk = 0;
  uint32_t records = 0;
  while (walk < at) {
    FUZZ_CHECK(at - walk >= 16, "a record header cut at %zu", walk);
    uint32_t incl, orig;
    std::memcpy(&incl, cap.data() + walk + 8, 4);
    std::memcpy(&orig, cap.data() + walk + 12, 4);
    FUZZ_CHECK(incl <= orig && incl <= cap_state[cw::SNAPLEN], "record at %zu: incl %u orig %u", walk, incl, orig);
    walk += 16 + incl;
    records++;
  }
  FUZZ_CHECK(walk == at && records == cap_state[cw::PENDING], "records walk to %zu of %zu (%u of %.0f)", walk, at, records, cap_state[cw::PENDING]);
  if (cap_state[cw::LIMIT] > 0) FUZZ_CHECK(cap_state[cw::PACKETS] <= cap_state[cw::LIMIT], "capture past its count");
  // A handler's sends, out of any port (or one that is not there), as they are.
  fwd.Output(static_cast<int32_t>(in.U8() % 5) - 1, data.p, off.data(), lens, with_hdr ? hdr10.data() : nullptr, n);
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
  if (mode & 64) {
    Group(in, fdb, port, lens.data(), n, now);
    Resync(model, fdb);
  }
}

// Installed entries (EVPN: SetRemote, a MAC behind a remote VTEP) beside learned ones,
// against a model of their own: they never age, frames from their own port leave them as
// they are, a frame from another port takes one over as a learned entry, RemoveRemote
// removes only the entry it names.
void RemoteOps(Input& in) {
  struct E {
    int32_t port;
    int64_t seen;
    uint32_t remote;
  };
  std::map<uint64_t, E> m;
  const uint32_t max = 1 + in.U8() % 64;
  SwitchFdb fdb(max);
  int64_t now = 0;
  for (uint32_t ops = 0; !in.done() && ops < 512; ops++) {
    const uint8_t op = in.U8() % 6;
    now += in.U8();
    const uint64_t mac = in.U8() | (uint64_t{in.U8() & 1u} << 47);
    const uint32_t vlan = in.U8() % 4;
    const int32_t port = in.U8() % 4;
    const uint32_t remote = 1 + in.U8() % 4;
    const uint64_t key = Model::Key(mac, vlan);
    auto it = m.find(key);
    if (op == 0) {
      bool want = false;
      if (it != m.end()) {
        E& e = it->second;
        if (!(e.remote != 0 && e.port == port)) {
          e.seen = now;
          if (e.port != port) {
            e.port = port;
            e.remote = 0;
            want = true;
          }
        }
      } else if (m.size() < max) {
        m[key] = E{port, now, 0};
        want = true;
      }
      FUZZ_CHECK(fdb.Learn(mac, vlan, port, now) == want, "Learn over installed entries disagrees with the model");
    } else if (op == 1) {
      const int32_t want = it == m.end() || (it->second.remote == 0 && now - it->second.seen > kAging) ? -1 : it->second.port;
      FUZZ_CHECK(fdb.Lookup(mac, vlan, now, kAging) == want, "Lookup of an installed entry disagrees with the model");
    } else if (op == 2) {
      uint32_t want = 0;
      for (auto e = m.begin(); e != m.end();) e = e->second.remote == 0 && now - e->second.seen > kAging ? (want++, m.erase(e)) : std::next(e);
      FUZZ_CHECK(fdb.Age(now, kAging) == want, "Age removed other than %u (installed entries never age)", want);
    } else if (op == 3) {
      bool want = true;
      if (it != m.end()) {
        it->second.port = port;
        it->second.remote = remote;
      } else if (m.size() >= max) {
        want = false;
      } else {
        m[key] = E{port, 0, remote};
      }
      FUZZ_CHECK(fdb.SetRemote(mac, vlan, port, remote) == want, "SetRemote disagrees with the model");
    } else if (op == 4) {
      const bool want = it != m.end() && it->second.remote == remote && it->second.port == port;
      if (want) m.erase(it);
      FUZZ_CHECK(fdb.RemoveRemote(mac, vlan, port, remote) == want, "RemoveRemote disagrees with the model");
    } else {
      const uint32_t want = it == m.end() ? 0 : it->second.remote;
      FUZZ_CHECK(fdb.RemoteOf(mac, vlan) == want, "RemoteOf returned other than %u", want);
    }
    FUZZ_CHECK(fdb.size() == m.size(), "size %u, the model holds %zu", fdb.size(), m.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Inputs starting 0xEE exercise installed (EVPN) entries; the rest, learning alone.
  if (size > 0 && data[0] == 0xee) {
    Input r(data + 1, size - 1);
    RemoteOps(r);
    return 0;
  }
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
