// The keyspace as commands see it: lookups that treat an expired key as
// missing (and drop it), writes that keep the expiry table in step. In v1
// there is no expiry table (`expires` is null).
#pragma once

#include <optional>

#include "state.hpp"

namespace kv {

class Db {
 public:
  Db(Keyspace& keys, Expires* expires, std::int64_t now_ms) : keys_(keys), expires_(expires), now_(now_ms) {}

  [[nodiscard]] bool has_expiry() const noexcept { return expires_ != nullptr; }
  [[nodiscard]] std::int64_t now() const noexcept { return now_; }

  /// The live value of `key`, or null when it is missing or has expired.
  Value* find(std::string_view key) {
    const auto it = keys_.find(key);
    if (it == keys_.end()) return nullptr;
    if (expired(key)) {
      expires_->erase(expires_->find(key));
      keys_.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  /// Inserts a new key (precondition: find(key) is null).
  Value& insert(std::string_view key, Value value) {
    return keys_.emplace(std::string(key), std::move(value)).first->second;
  }

  /// Removes `key` and its deadline; true if it was live.
  bool erase(std::string_view key) {
    const auto it = keys_.find(key);
    if (it == keys_.end()) return false;
    const bool live = !expired(key);
    if (expires_ != nullptr) {
      if (const auto e = expires_->find(key); e != expires_->end()) expires_->erase(e);
    }
    keys_.erase(it);
    return live;
  }

  void clear() {
    keys_.clear();
    if (expires_ != nullptr) expires_->clear();
  }

  [[nodiscard]] std::size_t size() const noexcept { return keys_.size(); }
  [[nodiscard]] std::size_t expiring() const noexcept { return expires_ ? expires_->size() : 0; }

  /// The deadline of a live key, if it has one.
  [[nodiscard]] std::optional<std::int64_t> deadline(std::string_view key) const {
    if (expires_ == nullptr) return std::nullopt;
    const auto it = expires_->find(key);
    if (it == expires_->end()) return std::nullopt;
    return it->second;
  }

  void set_deadline(std::string_view key, std::int64_t deadline) {
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
    expires_->erase(it);
    return true;
  }

 private:
  [[nodiscard]] bool expired(std::string_view key) const {
    if (expires_ == nullptr || expires_->empty()) return false;
    const auto it = expires_->find(key);
    return it != expires_->end() && it->second <= now_;
  }

  Keyspace& keys_;
  Expires* expires_;
  std::int64_t now_;
};

}  // namespace kv
