// A host for control-plane unit tests: a module table, a release handler over
// it, and the control handler that answers for them, in a temporary
// directory, with no sockets (no listener is bound, no thread serves).
#pragma once

#include <filesystem>

#include "molt/host/control/control_handler.hpp"
#include "molt/host/release/release_handler.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "test_support.hpp"

namespace molt::test {

struct ControlHost {
  static host::ReleaseOptions release_options(const std::filesystem::path& dir) {
    host::ReleaseOptions options;
    options.record_path = dir / "releases.json";
    options.plugin_dir = dir;
    return options;
  }

  TempDir dir;
  host::Loader loader{host::LoaderOptions{dir.path() / "images"}};
  host::ModuleTable table{loader, host::TableOptions{dir.path(), {}, test_logger, 0}};
  host::NoListeners listeners;  // the control logic needs no sockets
  host::SnapshotStore snapshots{dir.path() / "snapshots", 1u << 20};
  host::ReleaseHandler releases{table, listeners, snapshots, release_options(dir.path()), test_logger("release")};
  host::HostInfo info;
  host::ControlHandler handler{table, releases, info};
};

}  // namespace molt::test
