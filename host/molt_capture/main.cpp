// molt-capture: captures a module's state for a version-pair migration
// fixture. Loads one real image, sends it the given requests, and writes its
// state archive plus capture.json, which records how the state was made.
//
//   molt-capture --image build/plugins/counter-1.so --request "POST /counter/incr"
//                --repeat 7 --out tests/fixtures/counter/1-2
//
// Fixtures are evidence: it refuses to overwrite an existing state archive.
// Installed (bin/molt-capture) for modules built outside this tree.
#include <chrono>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "molt/host/common/json_text.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/host/slot/module_slot.hpp"
#include "molt/host/state/state_blob.hpp"

namespace fs = std::filesystem;
using namespace molt;

int main(int argc, char** argv) {
  CLI::App app{"Capture a module's state as a migration fixture (see docs/fixtures.md)"};
  fs::path image_file, out_dir;
  std::vector<std::string> requests;
  unsigned repeat = 1;
  app.add_option("--image", image_file, "module image to run, e.g. build/plugins/counter-1.so")->required()->check(CLI::ExistingFile);
  app.add_option("--request", requests, "request to send, as \"METHOD /path?query\"; repeatable, sent in order");
  app.add_option("--repeat", repeat, "send the whole request list this many times")->check(CLI::PositiveNumber);
  app.add_option("--out", out_dir, "fixture directory to write state.molt and capture.json into")->required();
  CLI11_PARSE(app, argc, argv);

  if (fs::exists(out_dir / "state.molt")) {
    std::cerr << "molt-capture: " << (out_dir / "state.molt").string()
              << ": exists; fixtures are captured once (delete it yourself to re-capture)\n";
    return 1;
  }
  char temp[] = "/tmp/molt-capture-XXXXXX";
  if (::mkdtemp(temp) == nullptr) return 1;
  host::Loader loader(host::LoaderOptions{fs::path(temp) / "images"});
  auto image = loader.load(image_file, "");
  if (!image) {
    std::cerr << "molt-capture: " << image.error().to_string() << '\n';
    return 1;
  }
  const host::ImageInfo info = image.value()->info();
  const std::string sha256 = image.value()->sha256();
  auto logger = std::make_shared<spdlog::logger>(info.name, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  auto slot = host::ModuleSlot::start(std::move(image.value()), host::SlotOptions{logger, {}, nullptr, nullptr});
  if (!slot) {
    std::cerr << "molt-capture: " << slot.error().to_string() << '\n';
    return 1;
  }

  nlohmann::json sent = nlohmann::json::array();
  for (unsigned round = 0; round < repeat; ++round) {
    for (const std::string& line : requests) {
      const auto space = line.find(' ');
      api::Request request;
      request.method = line.substr(0, space);
      const std::string target = space == std::string::npos ? "/" : line.substr(space + 1);
      const auto question = target.find('?');
      request.path = target.substr(0, question);
      if (question != std::string::npos) request.query = target.substr(question + 1);
      auto response = slot.value()->call(request);
      if (!response || response->status >= 400) {
        std::cerr << "molt-capture: " << line << ": "
                  << (response ? std::to_string(response->status) + ' ' + response->body : response.error().to_string())
                  << '\n';
        return 1;
      }
      sent.push_back(line);
    }
  }

  auto blob = slot.value()->save_state(std::chrono::seconds(10));
  if (!blob) {
    std::cerr << "molt-capture: " << blob.error().to_string() << '\n';
    return 1;
  }
  fs::create_directories(out_dir);
  if (auto written = host::write_state_file(out_dir / "state.molt", blob.value()); !written) {
    std::cerr << "molt-capture: " << written.error().to_string() << '\n';
    return 1;
  }
  const nlohmann::ordered_json record = {
      {"module", info.name},
      {"version", info.version.value},
      {"schema", info.schema.value},
      {"image", image_file.filename().string()},
      {"image_sha256", sha256},
      {"requests", sent},
      {"state_bytes", blob->bytes.size()},
      {"captured_at", std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count()},
  };
  std::ofstream(out_dir / "capture.json") << host::json_text(record, 2) << '\n';
  fs::remove_all(temp);
  std::cout << "captured " << info.name << " v" << info.version.value << " state (" << blob->bytes.size()
            << " bytes) into " << (out_dir / "state.molt").string() << "\nnow write "
            << (out_dir / "expect.json").string() << " by hand: see docs/fixtures.md\n";
  return 0;
}
