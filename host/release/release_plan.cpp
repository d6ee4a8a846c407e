#include "molt/host/release/release_plan.hpp"

#include <algorithm>
#include <functional>
#include <map>

namespace molt::host {
namespace fs = std::filesystem;

namespace {

/// The order modules pause in: a step goes after every step that depends on
/// it; otherwise the script's order. Empty on a cycle, then `cycle`
/// describes it and `culprit` is the step where it closes.
std::vector<std::size_t> dependency_order(const std::vector<ScriptStep>& steps, std::string& cycle, std::size_t& culprit) {
  std::vector<std::size_t> order;
  enum class Mark { New, Visiting, Done };
  std::vector<Mark> mark(steps.size(), Mark::New);
  std::vector<std::string> path;
  std::function<bool(std::size_t)> visit = [&](std::size_t i) {
    if (mark[i] == Mark::Done) return true;
    if (mark[i] == Mark::Visiting) {
      cycle.clear();
      const auto start = std::find(path.begin(), path.end(), steps[i].module);
      for (auto it = start; it != path.end(); ++it) cycle += *it + " -> ";
      cycle += steps[i].module;
      culprit = i;
      return false;
    }
    mark[i] = Mark::Visiting;
    path.push_back(steps[i].module);
    for (std::size_t j = 0; j < steps.size(); ++j)  // steps that depend on i come first
      if (std::find(steps[j].depends_on.begin(), steps[j].depends_on.end(), steps[i].module) != steps[j].depends_on.end())
        if (!visit(j)) return false;
    path.pop_back();
    mark[i] = Mark::Done;
    order.push_back(i);
    return true;
  };
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (!visit(i)) return {};
  return order;
}

const ReleaseModule* find_in(const std::vector<ReleaseModule>& modules, std::string_view name) {
  const auto it = std::find_if(modules.begin(), modules.end(), [&](const ReleaseModule& m) { return m.name == name; });
  return it == modules.end() ? nullptr : &*it;
}

std::string v(api::ModuleVersion version) { return std::to_string(version.value); }

}  // namespace

Result<ReleasePlan> plan_release(const UpgradeScript& script, const PlanContext& context) {
  std::string cycle;
  std::size_t culprit = 0;
  const auto order = dependency_order(script.steps, cycle, culprit);
  if (order.empty() && !script.steps.empty())
    return step_error(script, script.steps[culprit], "dependency cycle: " + cycle);
  const auto in_script = [&](const std::string& module) {
    return std::any_of(script.steps.begin(), script.steps.end(), [&](const ScriptStep& s) { return s.module == module; });
  };
  const auto image_path = [&](const std::string& file) {
    return fs::path(file).is_absolute() ? fs::path(file) : context.plugin_dir / file;
  };

  ReleasePlan plan;
  plan.release = script.release;
  for (const std::size_t i : order) {
    const ScriptStep& step = script.steps[i];
    const StepOrigin origin{script.source, step.number};
    for (const auto& dependency : step.depends_on)
      if (!find_in(context.running, dependency) && !in_script(dependency))
        return step_error(script, step, "depends on '" + dependency + "', which is neither running nor in the script");
    const ReleaseModule* running = find_in(context.running, step.module);
    if (step.action == StepAction::Add) {
      if (running) return step_error(script, step, step.module + " is already running (v" + v(running->version) + ")");
      ModuleConfig module{step.module, image_path(step.file), step.config, step.listen};
      if (module.listen.empty() && module.values.empty())
        if (const ReleaseModule* known = find_in(context.known, step.module))
          module.listen = known->listen, module.values = known->config;
      plan.steps.push_back(release_step::Add{origin, std::move(module), *step.to, step.sha256, std::nullopt});
      continue;
    }
    if (!running) return step_error(script, step, step.module + " is not running");
    if (step.from && *step.from != running->version)
      return step_error(script, step, "from = " + v(*step.from) + " but " + step.module + " runs v" + v(running->version));
    if (step.action == StepAction::Remove) {
      plan.steps.push_back(release_step::Remove{origin, step.module, running->version});
    } else {
      plan.steps.push_back(release_step::Upgrade{origin, step.module, image_path(step.file), running->version, *step.to,
                                                 step.sha256, step.extra, step.depends_on});
    }
  }
  return plan;
}

UpgradeScript script_between(const Release& from, const Release& to) {
  UpgradeScript script;
  script.release = to.name;
  script.source = "rollback of " + from.name;
  const auto next_step = [&] {
    ScriptStep step;
    step.number = script.steps.size() + 1;
    return step;
  };
  for (const auto& now : from.modules) {
    const ReleaseModule* before = to.find(now.name);
    if (before != nullptr && before->sha256 == now.sha256 && before->file == now.file) continue;
    ScriptStep step = next_step();
    step.module = now.name;
    step.from = now.version;
    if (before == nullptr) {
      step.action = StepAction::Remove;
    } else {
      step.to = before->version;
      step.file = before->file;
      step.sha256 = before->sha256;
    }
    script.steps.push_back(std::move(step));
  }
  for (const auto& before : to.modules) {
    if (from.find(before.name) != nullptr) continue;
    ScriptStep step = next_step();
    step.action = StepAction::Add;
    step.module = before.name;
    step.to = before.version;
    step.file = before.file;
    step.sha256 = before.sha256;
    step.listen = before.listen;
    step.config = before.config;
    script.steps.push_back(std::move(step));
  }
  return script;
}

}  // namespace molt::host
