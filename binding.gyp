{
  "targets": [
    {
      "target_name": "vring",
      "sources": [
        "native/vring/addon.cc",
        "native/vring/memory.cc",
        "native/vring/guest_fault.cc",
        "native/vring/dirty_log.cc",
        "native/vring/virtqueue.cc",
        "native/vring/split_ring.cc",
        "native/vring/packed_ring.cc",
        "native/vring/handles.cc",
        "native/vring/bind_memory.cc",
        "native/vring/bind_queue.cc",
        "native/vring/net.cc",
        "native/vring/offload.cc",
        "native/vring/bind_net.cc",
        "native/vring/eventfd.cc",
        "native/vring/uds.cc",
        "native/vring/fd_watch.cc",
        "native/vring/bind_io.cc",
        "native/vring/tap.cc",
        "native/vring/host_io.cc",
        "native/vring/bind_host_io.cc",
        "native/vring/blk.cc", "native/vring/bind_blk.cc",
        "native/vring/switch_fdb.cc", "native/vring/switch_port.cc", "native/vring/switch_capture.cc", "native/vring/switch_host.cc",
        "native/vring/switch_forward.cc", "native/vring/bind_switch.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers", "-O2", "-fexceptions", "-fvisibility=hidden", "-fno-semantic-interposition"],
      "cflags": ["-Wall", "-Wextra", "-Werror"]
    }
  ]
}
