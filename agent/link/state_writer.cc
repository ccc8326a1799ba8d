#include "agent/link/state_writer.h"

#include "agent/event_loop.h"

namespace pgfleet::agent {

StateWriter::StateWriter(EventLoop& loop) : loop_(loop), thread_([this] { Run(); }) {}

StateWriter::~StateWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StateWriter::Enqueue(Job job, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(std::move(job), std::move(done));
  }
  cv_.notify_all();
}

void StateWriter::Run() {
  for (;;) {
    std::pair<Job, Done> next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // Stopping, and nothing left to write.
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    absl::Status status = next.first();
    loop_.Post([done = std::move(next.second), status = std::move(status)]() mutable {
      done(std::move(status));
    });
  }
}

}  // namespace pgfleet::agent
