// FdWatcher: a JS class that watches one fd for readability / writability on the libuv loop
// (uv_poll_t) and calls a JS callback. It never owns, reads or closes the fd.
#pragma once
#include <napi.h>

namespace vhostkit {

// A Node-style system error: message "ECODE: description, syscall 'path'", with `errno`
// (negative, as Node's own errors carry it), `code` ('ENOENT'...), `syscall` and, when given,
// `path`. `err` is a positive errno. Defined in bind_io.cc; shared by the io bindings.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const char* path = nullptr);

// The FdWatcher constructor: new FdWatcher(fd, (readable, writable, error) => void).
Napi::Function DefineFdWatcher(Napi::Env env);

}  // namespace vhostkit
