// Memory for the state of the I/O threads' asynchronous operations, so that
// a request on a kept-open connection costs no malloc.
//
// Asio allocates each operation (a read, a write and the composed op around
// it) through its handler's associated allocator. By default that is a
// per-thread cache of one block per kind (Boost 1.74), and a connection
// alternates a read and a write of different sizes: one free and one malloc
// per request (BM_KvGet_Tcp: 1.00 allocation per request). OpAllocator keeps
// a few blocks of one size per thread instead; a handler gets it with
// with_op_memory(handler).
//
// Stateless and per thread: an operation destroyed on another thread (an
// io_context torn down at shutdown) gives its block to that thread's cache,
// and nothing points into a connection that may be gone by then.
#pragma once

#include <array>
#include <cstddef>
#include <new>
#include <utility>

namespace molt::host {

/// Blocks of kOpBlockBytes, a few per thread.
class OpBlockCache {
 public:
  static constexpr std::size_t kOpBlockBytes = 512;  ///< a read op is about 150 B, async_write's about 250 B

  static void* allocate(std::size_t bytes) {
    if (bytes > kOpBlockBytes) return ::operator new(bytes);
    OpBlockCache& cache = mine();
    if (cache.count_ > 0) return cache.blocks_[--cache.count_];
    return ::operator new(kOpBlockBytes);
  }
  static void deallocate(void* block, std::size_t bytes) noexcept {
    if (bytes <= kOpBlockBytes) {
      OpBlockCache& cache = mine();
      if (cache.count_ < cache.blocks_.size()) {
        cache.blocks_[cache.count_++] = block;
        return;
      }
    }
    ::operator delete(block);
  }

  OpBlockCache() = default;
  OpBlockCache(const OpBlockCache&) = delete;
  OpBlockCache& operator=(const OpBlockCache&) = delete;
  ~OpBlockCache() {
    for (std::size_t i = 0; i < count_; ++i) ::operator delete(blocks_[i]);
  }

 private:
  static OpBlockCache& mine() {
    thread_local OpBlockCache cache;
    return cache;
  }
  std::array<void*, 8> blocks_{};  ///< enough for the operations one thread has in flight at once, per connection served in turn
  std::size_t count_ = 0;
};

/// The allocator Asio finds on a handler wrapped by with_op_memory.
template <class T>
class OpAllocator {
 public:
  using value_type = T;
  OpAllocator() noexcept = default;
  template <class U>
  OpAllocator(const OpAllocator<U>&) noexcept {}  // NOLINT: converting, as allocators are
  T* allocate(std::size_t n) { return static_cast<T*>(OpBlockCache::allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { OpBlockCache::deallocate(p, n * sizeof(T)); }
  friend bool operator==(const OpAllocator&, const OpAllocator&) noexcept { return true; }
  friend bool operator!=(const OpAllocator&, const OpAllocator&) noexcept { return false; }
};

/// A completion handler whose operation's memory comes from OpBlockCache.
template <class Handler>
class WithOpMemory {
 public:
  using allocator_type = OpAllocator<void>;
  explicit WithOpMemory(Handler handler) : handler_(std::move(handler)) {}
  [[nodiscard]] allocator_type get_allocator() const noexcept { return {}; }
  template <class... Args>
  void operator()(Args&&... args) {
    handler_(std::forward<Args>(args)...);
  }

 private:
  Handler handler_;
};

template <class Handler>
WithOpMemory<Handler> with_op_memory(Handler handler) {
  return WithOpMemory<Handler>(std::move(handler));
}

}  // namespace molt::host
