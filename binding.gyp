{
  "targets": [
    {
      "target_name": "vring",
      "sources": [
        "native/addon/addon.cc",
        "native/memory/memory.cc",
        "native/memory/guest_fault.cc",
        "native/memory/dirty_log.cc",
        "native/ring/virtqueue.cc",
        "native/ring/split_ring.cc",
        "native/ring/packed_ring.cc",
        "native/addon/handles.cc",
        "native/addon/bind_memory.cc",
        "native/addon/bind_queue.cc",
        "native/net/net.cc",
        "native/net/offload.cc",
        "native/net/edit.cc",
        "native/addon/bind_net.cc",
        "native/io/eventfd.cc",
        "native/io/uds.cc",
        "native/io/fd_watch.cc",
        "native/addon/bind_io.cc",
        "native/io/tap.cc",
        "native/io/host_io.cc",
        "native/addon/bind_host_io.cc",
        "native/blk/blk.cc", "native/blk/uring.cc", "native/addon/bind_blk.cc",
        "native/switch/switch_fdb.cc", "native/switch/switch_port.cc", "native/switch/switch_capture.cc", "native/switch/switch_host.cc",
        "native/switch/switch_forward.cc", "native/switch/switch_flows.cc", "native/switch/switch_handler.cc", "native/switch/switch_handoff.cc",
        "native/addon/bind_switch.cc"
      ],
      "include_dirs": ["native", "<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers", "-O2", "-fexceptions", "-fvisibility=hidden", "-fno-semantic-interposition"],
      "cflags": ["-Wall", "-Wextra", "-Werror"]
    }
  ]
}
