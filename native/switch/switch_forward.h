// The switch's data path: a burst from one port, classified (switch_fdb.h: ingress VLAN,
// learning, lookup), grouped by destination port, RX queue (flow hash) and VLAN edit, and
// delivered to every destination in native code: guest ports into their RX buffers (one
// copy, guest to guest), TAP and VXLAN ports through switch_host.h, captured ports staged
// on the way (switch_capture.h). One path for a guest's TX burst, with or without a hook's
// verdicts, and for frames held in a host buffer (read from a TAP or tunnel, or made by the
// switch). Counters go straight into each port's counter words. Owned by one data-plane
// thread; what it shares with the switch's other threads (the table, the handoff rings) is
// in switch_handoff.h.
#pragma once
#include <cstdint>
#include <ctime>
#include <memory>
#include <unordered_map>
#include <vector>

#include "net/net.h"
#include "switch/switch_fdb.h"
#include "switch/switch_flows.h"
#include "switch/switch_handler.h"
#include "switch/switch_handoff.h"
#include "switch/switch_host.h"
#include "switch/switch_port.h"

namespace vhostkit {

class Forwarder {
 public:
  // Finds a live RX queue by its native slot: the queue and its burst arrays (scratch for
  // popping RX chains).
  using Resolve = bool (*)(uint32_t slot, Virtqueue** q, const BurstArrays** arrays);

  // A guest RX queue that broke while frames were delivered into it (its driver wrote a bad
  // ring): no more frames go to it in this call; the caller stops it.
  struct Broken {
    int32_t port;
    uint32_t slot;
  };

  Forwarder(SwitchFdb& fdb, uint32_t burst, Resolve resolve);

  // Adds or replaces port p.id (its staging is sized here).
  SwitchPort& Set(SwitchPort p);
  void Remove(int32_t id);
  SwitchPort* Find(int32_t id);
  uint32_t burst() const { return burst_; }

  // A burst of n chains popped from src's TX queue (q, its arrays b): classified with the
  // hook's verdicts (or none), captured, delivered, pushed back (used_id / used_len: the
  // queue's push arrays). tx_stats: the queue's layout::queue_stat words.
  // Returns the push's result (1 the driver was notified, 0 not, < 0 the push failed).
  int32_t Burst(SwitchPort& src, Virtqueue& q, const BurstArrays& b, const MemTable& mem, uint16_t* used_id, uint32_t* used_len,
             uint32_t n, int64_t now, int64_t aging_ms, const int32_t* verdict, double* tx_stats);

  // Frames held in a host buffer, as if src had received them: frame i is lens[i] bytes
  // at base + off[i], hdr10 (or null) 10 virtio_net_hdr bytes per frame. n <= burst().
  void Flat(SwitchPort& src, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10, uint32_t n,
            int64_t now, int64_t aging_ms);

  // Frames held in a host buffer sent out of port dst as they are (a handler's sends): no
  // classification, no flow, no VLAN rule of dst's. Frames to a port that is not there are
  // dropped (returns false).
  bool Output(int32_t dst, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10, uint32_t n);

  // Reads host port p's fd (up to 16 batches, until it has nothing more) and switches what
  // came. Returns the frames switched, or -errno if the first read failed.
  int32_t ServiceHost(SwitchPort& p, int64_t now, int64_t aging_ms);

  // One of several data-plane threads of a switch (thread `self` of shared): ports set with
  // an owner other than self are reached through the handoff rings.
  void SetShared(SwitchShared* shared, uint32_t self);
  SwitchShared* shared() const { return shared_; }
  uint32_t self() const { return self_; }
  // Frames the other threads handed to this one, sent on to their ports as they are (up to
  // max_frames). Returns how many were taken.
  uint32_t DrainHandoff(uint32_t max_frames);

  // Queues that broke in the last call, and ports whose capture reached its count.
  const std::vector<Broken>& broken() const { return broken_; }
  const std::vector<int32_t>& captures_done() const { return captures_done_; }

  SwitchFdb& fdb() { return fdb_; }
  // The flow table consulted after classification (empty: the learning switch alone).
  FlowTable& flows() { return flows_; }
  // Where frames for TypeScript handlers are staged.
  HandlerStage& handler_stage() { return handler_stage_; }

 private:
  // Starts a call: no queue broken, no capture done, no clock read yet.
  void Begin();
  const timespec& Now();
  // Notes a capture that reached its count (CaptureChains / CaptureFlat said stop).
  void Captured(SwitchPort& p, bool going);
  void FlatBurst(SwitchPort& src, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10, uint32_t n,
                 int64_t now, int64_t aging_ms);
  // Counts and decides frames [0, n) whose heads are in heads_: dest_, vid_, tagged_.
  double Classify(SwitchPort& src, uint32_t n, int64_t now, int64_t aging_ms, const int32_t* verdict);
  struct FlatSource {
    const uint8_t* base;
    const uint32_t* off;
    const uint32_t* lens;
    const uint8_t* hdr10;
  };
  // Frames [0, n) of src (from tx or flat) through the flow table: a matching flow's
  // actions replace the learning switch's destination, and the flow counts the frame. A
  // frame the flow edits is copied, edited, and left for DeliverEdited; frames for
  // handlers are staged. Returns whether any frame was edited.
  bool ApplyFlows(SwitchPort& src, uint32_t n, const TxSource* tx, const FlatSource* flat);
  // The edited copies of ApplyFlows, to their flows' destinations.
  void DeliverEdited(SwitchPort& src, uint32_t n);
  // Frame i (a copy of len bytes, its header h) to the handlers of a.
  void ToHandlers(const FlowActions& a, const SwitchPort& src, uint32_t i, const uint8_t* frame, uint32_t len, const NetHdr& h);
  // Frames [0, n) through the flow table (if any) and to their destinations.
  void Switch(SwitchPort& src, uint32_t n, const TxSource* tx, const FlatSource* flat);
  void Stage(SwitchPort& q, uint32_t i);
  // Stages frame i for q with VLAN operation op (q's RX queue by the frame's flow).
  void StageOp(SwitchPort& q, uint32_t i, int32_t op);
  void StageTo(const SwitchPort& src, int32_t port, uint32_t i);
  void StageFlood(const SwitchPort& src, uint32_t i);
  // Stages frames [0, n) for every destination but src.
  void Group(const SwitchPort& src, uint32_t n);
  // Delivers every staged group: from the burst src (tx) or from a host buffer (flat).
  void Deliver(const TxSource* tx, const FlatSource* flat);
  void DeliverGuest(SwitchPort& q, uint32_t k, const TxSource* tx, const FlatSource* flat);
  // The staged frames for a port another thread owns, copied into the ring to it.
  void DeliverRemote(SwitchPort& q, const TxSource* tx, const FlatSource* flat);
  // Frames [0, n) of a host buffer out of q with the VLAN operation vlan (Output: as they
  // are; DrainHandoff: the one the sending thread's egress rule chose).
  void OutputFrames(SwitchPort& q, const uint8_t* base, const uint32_t* off, const uint32_t* lens, const uint8_t* hdr10, uint32_t n,
                    int32_t vlan);

  SwitchFdb& fdb_;
  FlowTable flows_;
  uint32_t burst_;
  Resolve resolve_;
  std::vector<std::unique_ptr<SwitchPort>> list_;  // for flooding, in the order added
  std::unordered_map<int32_t, SwitchPort*> by_id_;
  std::vector<SwitchPort*> touched_;
  uint64_t stage_seq_ = 0;  // per frame Group stages: see SwitchPort::staged_seq
  std::vector<uint8_t> heads_;
  std::vector<uint32_t> lens_;
  std::vector<int32_t> dest_, vid_, tagged_;
  // Flows' work per frame: the actions of a flow with several destinations (dest_ is then
  // kFlowMulti) or that edits the frame; the learning switch's destination (for normal);
  // sent with the tag a flow gave it, whatever the port's VLAN rule.
  std::vector<const FlowActions*> acts_;
  std::vector<int32_t> learned_;
  std::vector<uint8_t> as_is_;
  // The frames of a burst the flow table looks up, and the flow each matched (or -1).
  std::vector<uint16_t> which_;
  std::vector<int32_t> found_;
  // Edited copies: frame i at edit_buf_ + edit_off_[i], edit_len_[i] bytes (0: not edited),
  // its header's 10 bytes at edit_hdr_ + 10 * i. Sized at the first edit.
  std::vector<uint8_t> edit_buf_, edit_hdr_;
  std::vector<uint32_t> edit_off_, edit_len_;
  std::vector<uint8_t> one_frame_;  // a frame for a handler, copied out of a burst
  HandlerStage handler_stage_;
  // Compacted offsets / lengths / headers of one group of host-buffer frames.
  std::vector<uint32_t> goff_, glen_;
  std::vector<uint8_t> ghdr_;
  HostScratch host_;
  std::unordered_map<int32_t, std::unique_ptr<HostBatch>> batches_;
  std::vector<Broken> broken_;
  std::vector<int32_t> captures_done_;
  std::vector<uint16_t> iota_;  // 0, 1, ... burst - 1: every chain of a burst
  SwitchShared* shared_ = nullptr;
  uint32_t self_ = 0;
  // One run of handed-off frames for a port (DrainHandoff): offsets into the ring.
  std::vector<uint32_t> hoff_, hlen_;
  std::vector<uint8_t> hhdr_;
  int64_t now_ = 0, aging_ms_ = 0;  // of the call (the table's clock)
  timespec ts_{};
  bool have_ts_ = false;
};

}  // namespace vhostkit
