// A bounded pipe of byte chunks from one writer to one reader, possibly on
// another thread: how an upgrade streams a large state from the old version's
// save_state into the new version's load_state while it is still being
// written. The pause is then about max(save, load) instead of their sum, and
// at most `max_chunks` chunks of the serialized state exist at once instead
// of all of it.
//
//   writer: sink() ... finish_writing(ok)       reader: source() ... finish_reading()
//
// The writer fills chunks; each full chunk goes to the queue. When the first
// chunk is full, `on_first_chunk` runs (on the writer's thread): that is when
// the caller starts the reader. A state that fits in one chunk never needs a
// second thread: the caller reads it after writing. If either side gives up,
// the other sees end of stream (the reader) or a failed write (the writer),
// so neither blocks forever.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <streambuf>
#include <vector>

namespace molt::host {

class StatePipe {
 public:
  StatePipe(std::uint64_t limit, std::function<void()> on_first_chunk, std::size_t chunk_bytes = 1u << 20,
            std::size_t max_chunks = 8);
  StatePipe(const StatePipe&) = delete;
  StatePipe& operator=(const StatePipe&) = delete;

  [[nodiscard]] std::streambuf& sink() noexcept { return sink_; }
  [[nodiscard]] std::streambuf& source() noexcept { return source_; }

  /// The writer is done; `complete` false means it failed half way (the
  /// reader then sees the stream end early).
  void finish_writing(bool complete);
  /// The reader is done (or gave up); later writes fail.
  void finish_reading();

  /// Called on the writer's thread after each chunk it hands over, with the
  /// bytes written so far and, of those, the ones the reader has taken.
  /// Must be quick: it runs inside the save.
  void on_chunk(std::function<void(std::uint64_t written, std::uint64_t taken)> callback) {
    on_chunk_ = std::move(callback);
  }

  [[nodiscard]] std::uint64_t bytes_written() const noexcept { return written_; }
  [[nodiscard]] bool over_limit() const noexcept { return over_limit_; }
  /// The reader finished before the writer: it gave up, and the writer
  /// failed because of that.
  [[nodiscard]] bool reader_gave_up() const;
  /// Bytes the reader has not consumed (0 after a load that read everything).
  [[nodiscard]] std::uint64_t unread() const;

 private:
  using Chunk = std::unique_ptr<char[]>;
  struct Filled {
    Chunk data;
    std::size_t size;
  };

  class Sink final : public std::streambuf {
   public:
    explicit Sink(StatePipe& pipe) : pipe_(pipe) {}
    int_type overflow(int_type ch) override;
    std::streamsize xsputn(const char* data, std::streamsize count) override;
    int sync() override { return 0; }
    [[nodiscard]] std::size_t filled() const { return static_cast<std::size_t>(pptr() - pbase()); }
    void start(char* chunk, std::size_t size) { setp(chunk, chunk + size); }

   private:
    StatePipe& pipe_;
  };

  class Source final : public std::streambuf {
   public:
    explicit Source(StatePipe& pipe) : pipe_(pipe) {}
    int_type underflow() override;
    std::streamsize xsgetn(char* data, std::streamsize count) override;
    /// Tells the read position (bytes read so far); other seeks fail.
    pos_type seekoff(off_type offset, std::ios_base::seekdir from, std::ios_base::openmode which) override;
    [[nodiscard]] std::size_t span() const { return static_cast<std::size_t>(egptr() - eback()); }
    [[nodiscard]] std::size_t left() const { return static_cast<std::size_t>(egptr() - gptr()); }
    void start(char* chunk, std::size_t size) { setg(chunk, chunk, chunk + size); }

   private:
    StatePipe& pipe_;
  };

  /// Sends the writer's current chunk and gives it a fresh one; false if
  /// the reader gave up or the limit is reached.
  bool flush_chunk();
  /// Gives the reader its next chunk; false at the end of the stream.
  bool next_chunk();
  Chunk fresh_chunk();

  const std::uint64_t limit_;
  const std::size_t chunk_bytes_;
  const std::size_t max_chunks_;
  std::function<void()> on_first_chunk_;
  Sink sink_{*this};
  Source source_{*this};

  // Writer side (writer thread only).
  Chunk writing_;
  std::uint64_t written_ = 0;  ///< bytes sent to the queue, plus those in `writing_`
  bool over_limit_ = false;
  bool first_chunk_sent_ = false;

  // Reader side (reader thread only).
  Chunk reading_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Filled> queue_;
  std::vector<Chunk> spare_;  ///< chunks the reader has finished, for reuse
  std::uint64_t consumed_ = 0;  ///< written under mutex_, by the reader thread only (which reads it without)
  std::function<void(std::uint64_t, std::uint64_t)> on_chunk_;
  bool writer_done_ = false;
  bool reader_done_ = false;
  bool reader_first_ = false;  ///< the reader finished (gave up) before the writer
};

}  // namespace molt::host
