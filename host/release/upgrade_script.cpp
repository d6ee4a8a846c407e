#include "molt/host/release/upgrade_script.hpp"

#include <algorithm>

#include <toml++/toml.h>

#include "config/toml_fields.hpp"
#include "molt/module.hpp"

namespace molt::host {
namespace {

bool valid_sha256(std::string_view text) {
  return text.size() == 64 &&
         std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string step_label(const ScriptStep& step) {
  return "step " + std::to_string(step.number) + (step.module.empty() ? "" : " (" + step.module + ")");
}

}  // namespace

Error step_error(const UpgradeScript& script, const ScriptStep& step, std::string reason) {
  return Error{{}, {}, script.source, Phase::Script, step_label(step) + ": " + std::move(reason)};
}

Result<UpgradeScript> parse_upgrade_script(std::string_view text, const std::string& source) {
  auto refuse = [&](std::string reason) { return Error{{}, {}, source, Phase::Script, std::move(reason)}; };
  if (text.size() > kMaxScriptBytes)
    return refuse("script is " + std::to_string(text.size()) + " bytes, more than the limit of " +
                  std::to_string(kMaxScriptBytes));
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return refuse("line " + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  UpgradeScript script;
  script.source = source;
  if (auto unknown = check_only_keys(root, {"release", "step"})) return refuse(std::move(*unknown));
  const auto* release = root.get_as<std::string>("release");
  if (release == nullptr || release->get().empty()) return refuse("release: needs a name, e.g. release = \"2026.11.1\"");
  script.release = release->get();
  const auto* steps = root.get_as<toml::array>("step");
  if (steps == nullptr || steps->empty()) return refuse("no [[step]]: nothing to do");

  std::size_t number = 0;
  for (const auto& node : *steps) {
    ScriptStep step;
    step.number = ++number;
    const auto* table = node.as_table();
    if (table == nullptr) return step_error(script, step, "must be a table");
    auto fail = [&](const std::string& key, const std::string& reason) { return step_error(script, step, key + ": " + reason); };
    if (const auto* module = table->get_as<std::string>("module")) step.module = module->get();
    if (auto unknown = check_only_keys(*table, {"action", "module", "from", "to", "file", "sha256", "from_file",
                                                "from_sha256", "extra", "depends_on", "listen", "config"}))
      return step_error(script, step, std::move(*unknown));
    if (!api::detail::valid_module_name(step.module)) return fail("module", "needs a module name of [a-z0-9_-]");
    if (const auto* action = table->get("action")) {
      const auto* name = action->as_string();
      if (name == nullptr) return fail("action", "must be \"upgrade\", \"add\" or \"remove\"");
      if (name->get() == "upgrade") step.action = StepAction::Upgrade;
      else if (name->get() == "add") step.action = StepAction::Add;
      else if (name->get() == "remove") step.action = StepAction::Remove;
      else return fail("action", "must be \"upgrade\", \"add\" or \"remove\", got '" + name->get() + "'");
    }
    for (const char* key : {"from", "to"}) {
      if (const auto* node_value = table->get(key)) {
        const auto* version = node_value->as_integer();
        if (version == nullptr || version->get() < 1 || version->get() > UINT32_MAX)
          return fail(key, "must be a positive integer");
        (std::string_view(key) == "from" ? step.from : step.to) = api::ModuleVersion{static_cast<std::uint32_t>(version->get())};
      }
    }
    for (const char* key : {"file", "from_file", "sha256", "from_sha256"}) {
      if (const auto* node_value = table->get(key)) {
        const auto* value = node_value->as_string();
        if (value == nullptr || value->get().empty()) return fail(key, "must be a non-empty string");
        const std::string text_value = value->get();
        const std::string_view k(key);
        if (k == "file") step.file = text_value;
        if (k == "from_file") step.from_file = text_value;
        if (k == "sha256" || k == "from_sha256") {
          if (!valid_sha256(text_value)) return fail(key, "must be 64 lowercase hex digits");
          (k == "sha256" ? step.sha256 : step.from_sha256) = text_value;
        }
      }
    }
    for (const char* key : {"extra", "config"}) {
      if (const auto* node_value = table->get(key)) {
        const auto* values = node_value->as_table();
        if (values == nullptr) return fail(key, "must be a table of strings");
        for (const auto& [name, value] : *values) {
          const auto* text_value = value.as_string();
          if (text_value == nullptr) return fail(std::string(key) + "." + std::string(name.str()), "must be a string");
          (std::string_view(key) == "extra" ? step.extra : step.config)[std::string(name.str())] = text_value->get();
        }
      }
    }
    if (const auto* depends = table->get("depends_on")) {
      const auto* list = depends->as_array();
      if (list == nullptr) return fail("depends_on", "must be a list of module names");
      for (const auto& item : *list) {
        const auto* name = item.as_string();
        if (name == nullptr || !api::detail::valid_module_name(name->get())) return fail("depends_on", "must list module names");
        step.depends_on.push_back(name->get());
      }
    }
    if (const auto* listen = table->get("listen")) {
      auto endpoints = parse_listen_address(*listen);
      if (!endpoints) return fail("listen", std::string(kListenAddressForm));
      step.listen = std::move(*endpoints);
    }

    switch (step.action) {
      case StepAction::Upgrade:
        if (!step.from || !step.to) return step_error(script, step, "an upgrade needs from and to");
        if (step.file.empty()) step.file = step.module + '-' + std::to_string(step.to->value) + ".so";
        if (step.from_file.empty()) step.from_file = step.module + '-' + std::to_string(step.from->value) + ".so";
        if (!step.listen.empty() || !step.config.empty())
          return step_error(script, step, "listen and config belong to add steps (module settings are not changed by an upgrade)");
        break;
      case StepAction::Add:
        if (!step.to || step.from) return step_error(script, step, "an add needs to (and no from)");
        if (step.file.empty()) step.file = step.module + '-' + std::to_string(step.to->value) + ".so";
        break;
      case StepAction::Remove:
        if (!step.from || step.to) return step_error(script, step, "a remove needs from (and no to)");
        if (step.from_file.empty()) step.from_file = step.module + '-' + std::to_string(step.from->value) + ".so";
        break;
    }
    for (const auto& earlier : script.steps)
      if (earlier.module == step.module) return step_error(script, step, "the module already has step " + std::to_string(earlier.number));
    script.steps.push_back(std::move(step));
  }
  return script;
}

UpgradeScript reversed(const UpgradeScript& script) {
  UpgradeScript down;
  down.release = script.release;
  down.source = script.source + " (down)";
  for (auto it = script.steps.rbegin(); it != script.steps.rend(); ++it) {
    ScriptStep step = *it;
    std::swap(step.from, step.to);
    std::swap(step.file, step.from_file);
    std::swap(step.sha256, step.from_sha256);
    if (step.action == StepAction::Add) step.action = StepAction::Remove;
    else if (step.action == StepAction::Remove) step.action = StepAction::Add;
    down.steps.push_back(std::move(step));
  }
  return down;
}

}  // namespace molt::host
