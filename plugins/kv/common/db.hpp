// The keyspace as commands see it: lookups that treat an expired key as
// missing (and drop it), writes that keep the expiry table in step. In v1
// there is no expiry table (`expires` is null).
//
// While a transfer runs (transfer.hpp), every key a command writes or
// removes is noted in `changes`: each write below notes its key, and so does
// each lookup of a command that writes (set_writing), since such a command
// may change the value it finds in place. Without a transfer, `changes` is
// null and nothing is noted.
#pragma once

#include <optional>

#include "state.hpp"
#include "transfer.hpp"

namespace kv {

class Db {
 public:
  Db(Keyspace& keys, Expires* expires, std::int64_t now_ms, Changes* changes = nullptr)
      : keys_(keys), expires_(expires), now_(now_ms), changes_(changes) {}

  /// Whether the command about to run may write what it finds (Command::writes).
  void set_writing(bool writing) noexcept { writing_ = writing; }

  [[nodiscard]] bool has_expiry() const noexcept { return expires_ != nullptr; }
  [[nodiscard]] std::int64_t now() const noexcept { return now_; }

  /// The live value of `key`, or null when it is missing or has expired.
  Value* find(std::string_view key) {
    if (writing_) note(key);
    const auto it = keys_.find(key);
    if (it == keys_.end()) return nullptr;
    if (expired(key)) {
      note(key);
      expires_->erase(expires_->find(key));
      keys_.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  /// Inserts a new key (precondition: find(key) is null).
  Value& insert(std::string_view key, Value value) {
    note(key);
    return keys_.emplace(std::string(key), std::move(value)).first->second;
  }

  /// Removes `key` and its deadline; true if it was live.
  bool erase(std::string_view key) {
    const auto it = keys_.find(key);
    if (it == keys_.end()) return false;
    note(key);
    const bool live = !expired(key);
    if (expires_ != nullptr) {
      if (const auto e = expires_->find(key); e != expires_->end()) expires_->erase(e);
    }
    keys_.erase(it);
    return live;
  }

  void clear() {
    if (changes_ != nullptr) changes_->clear();
    keys_.clear();
    if (expires_ != nullptr) expires_->clear();
  }

  [[nodiscard]] std::size_t size() const noexcept { return keys_.size(); }
  [[nodiscard]] std::size_t expiring() const noexcept { return expires_ ? expires_->size() : 0; }

  /// Calls f(key, value, deadline) for every live key, in no order; the
  /// deadline is -1 for a key without one.
  template <class F>
  void each(F&& f) const {
    for (const auto& [key, value] : keys_) {
      const auto d = deadline(key);
      if (d && *d <= now_) continue;  // expired, not removed yet: missing
      f(std::string_view(key), value, d.value_or(-1));
    }
  }

  /// The deadline of a live key, if it has one.
  [[nodiscard]] std::optional<std::int64_t> deadline(std::string_view key) const {
    if (expires_ == nullptr) return std::nullopt;
    const auto it = expires_->find(key);
    if (it == expires_->end()) return std::nullopt;
    return it->second;
  }

  void set_deadline(std::string_view key, std::int64_t deadline) {
    note(key);
    if (const auto it = expires_->find(key); it != expires_->end())
      it->second = deadline;
    else
      expires_->emplace(std::string(key), deadline);
  }

  /// Drops the deadline of `key`; true if it had one.
  bool clear_deadline(std::string_view key) {
    if (expires_ == nullptr || expires_->empty()) return false;
    const auto it = expires_->find(key);
    if (it == expires_->end()) return false;
    note(key);
    expires_->erase(it);
    return true;
  }

 private:
  void note(std::string_view key) {
    if (changes_ != nullptr) changes_->key(key);
  }

  [[nodiscard]] bool expired(std::string_view key) const {
    if (expires_ == nullptr || expires_->empty()) return false;
    const auto it = expires_->find(key);
    return it != expires_->end() && it->second <= now_;
  }

  Keyspace& keys_;
  Expires* expires_;
  std::int64_t now_;
  Changes* changes_;
  bool writing_ = false;
};

}  // namespace kv
