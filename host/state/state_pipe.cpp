#include "molt/host/state/state_pipe.hpp"

#include <algorithm>
#include <cstring>

namespace molt::host {

StatePipe::StatePipe(std::uint64_t limit, std::function<void()> on_first_chunk, std::size_t chunk_bytes,
                     std::size_t max_chunks)
    : limit_(limit), chunk_bytes_(chunk_bytes), max_chunks_(std::max<std::size_t>(max_chunks, 1)),
      on_first_chunk_(std::move(on_first_chunk)) {}

StatePipe::Chunk StatePipe::fresh_chunk() {
  {
    std::lock_guard lock(mutex_);
    if (!spare_.empty()) {
      Chunk chunk = std::move(spare_.back());
      spare_.pop_back();
      return chunk;
    }
  }
  return std::make_unique_for_overwrite<char[]>(chunk_bytes_);  // no zero fill: every byte is written before it is read
}

// --- writer --------------------------------------------------------------

bool StatePipe::flush_chunk() {
  const auto size = sink_.filled();
  if (written_ + size > limit_) {
    over_limit_ = true;
    return false;
  }
  std::uint64_t queued = 0;
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return queue_.size() < max_chunks_ || reader_done_; });
    if (reader_done_) return false;
    queue_.push_back(Filled{std::move(writing_), size});
    for (const auto& chunk : queue_) queued += chunk.size;
  }
  changed_.notify_all();
  written_ += size;
  if (on_chunk_) on_chunk_(written_, written_ - std::min<std::uint64_t>(queued, written_));
  if (!first_chunk_sent_) {
    first_chunk_sent_ = true;
    if (on_first_chunk_) on_first_chunk_();  // the caller starts the reader now
  }
  writing_ = fresh_chunk();
  sink_.start(writing_.get(), chunk_bytes_);
  return true;
}

StatePipe::Sink::int_type StatePipe::Sink::overflow(int_type ch) {
  if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
  const char c = traits_type::to_char_type(ch);
  return xsputn(&c, 1) == 1 ? ch : traits_type::eof();
}

std::streamsize StatePipe::Sink::xsputn(const char* data, std::streamsize count) {
  std::streamsize done = 0;
  while (done < count) {
    if (pptr() == epptr()) {
      if (!pipe_.writing_) {
        pipe_.writing_ = pipe_.fresh_chunk();
        start(pipe_.writing_.get(), pipe_.chunk_bytes_);
      } else if (!pipe_.flush_chunk()) {
        return done;  // the stream fails: the reader gave up, or the state is too large
      }
    }
    const auto n = std::min<std::streamsize>(count - done, epptr() - pptr());
    std::memcpy(pptr(), data + done, static_cast<std::size_t>(n));
    pbump(static_cast<int>(n));  // n <= chunk size
    done += n;
  }
  return done;
}

void StatePipe::finish_writing(bool complete) {
  const auto size = writing_ ? sink_.filled() : 0;
  if (complete && written_ + size > limit_) {
    over_limit_ = true;
    complete = false;
  }
  {
    std::unique_lock lock(mutex_);
    if (complete && size > 0) {
      changed_.wait(lock, [&] { return queue_.size() < max_chunks_ || reader_done_; });
      if (!reader_done_) queue_.push_back(Filled{std::move(writing_), size});
    }
    if (!complete) queue_.clear();  // the reader must not take a partial state for a whole one
    writer_done_ = true;
  }
  if (complete) written_ += size;
  changed_.notify_all();
}

// --- reader --------------------------------------------------------------

bool StatePipe::next_chunk() {
  {
    std::unique_lock lock(mutex_);
    if (reading_) {
      consumed_ += source_.span();
      spare_.push_back(std::move(reading_));
      source_.start(nullptr, 0);
    }
    changed_.wait(lock, [&] { return !queue_.empty() || writer_done_ || reader_done_; });
    if (queue_.empty() || reader_done_) return false;
    Filled next = std::move(queue_.front());
    queue_.pop_front();
    reading_ = std::move(next.data);
    source_.start(reading_.get(), next.size);
  }
  changed_.notify_all();  // a writer may be waiting for room
  return true;
}

StatePipe::Source::int_type StatePipe::Source::underflow() {
  if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
  if (!pipe_.next_chunk()) return traits_type::eof();
  return traits_type::to_int_type(*gptr());
}

std::streamsize StatePipe::Source::xsgetn(char* data, std::streamsize count) {
  std::streamsize done = 0;
  while (done < count) {
    if (gptr() == egptr() && !pipe_.next_chunk()) break;
    const auto n = std::min<std::streamsize>(count - done, egptr() - gptr());
    std::memcpy(data + done, gptr(), static_cast<std::size_t>(n));
    gbump(static_cast<int>(n));
    done += n;
  }
  return done;
}

StatePipe::Source::pos_type StatePipe::Source::seekoff(off_type offset, std::ios_base::seekdir from,
                                                      std::ios_base::openmode which) {
  if (offset != 0 || from != std::ios_base::cur || (which & std::ios_base::in) == 0) return pos_type(off_type(-1));
  // No lock: consumed_ is written only on this (the reader's) thread. Asked
  // once per string read, so it must cost next to nothing.
  return pos_type(static_cast<off_type>(pipe_.consumed_ + static_cast<std::uint64_t>(gptr() - eback())));
}

void StatePipe::finish_reading() {
  {
    std::lock_guard lock(mutex_);
    reader_first_ = !writer_done_;
    reader_done_ = true;
  }
  changed_.notify_all();
}

bool StatePipe::reader_gave_up() const {
  std::lock_guard lock(mutex_);
  return reader_first_;
}

std::uint64_t StatePipe::unread() const {
  std::lock_guard lock(mutex_);
  std::uint64_t left = source_.left();
  for (const auto& chunk : queue_) left += chunk.size;
  return left;
}

}  // namespace molt::host
