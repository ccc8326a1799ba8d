#include "agent/ready_queue.h"

#include <event2/event.h>

#include <algorithm>

#include "agent/client_conn.h"
#include "common/log.h"

namespace pgfleet::agent {

ReadyQueue::ReadyQueue(event_base* base) {
  event_ = event_new(base, -1, 0, &ReadyQueue::OnReady, this);
  PGF_CHECK(event_ != nullptr);
}

ReadyQueue::~ReadyQueue() { event_free(event_); }

void ReadyQueue::Schedule(ClientConn* client) {
  if (client->input_scheduled_) return;
  client->input_scheduled_ = true;
  ready_.push_back(client);
  if (ready_.size() == 1) event_active(event_, 0, 0);
}

void ReadyQueue::Cancel(ClientConn* client) {
  if (!client->input_scheduled_) return;
  client->input_scheduled_ = false;
  std::replace(ready_.begin(), ready_.end(), client, static_cast<ClientConn*>(nullptr));
  std::replace(running_.begin(), running_.end(), client, static_cast<ClientConn*>(nullptr));
}

void ReadyQueue::OnReady(int, short, void* arg) { static_cast<ReadyQueue*>(arg)->Run(); }

void ReadyQueue::Run() {
  // Clients marked while this batch runs go into ready_ and activate the event again: the
  // loop runs them after this callback, in the same turn.
  running_.swap(ready_);
  for (size_t i = 0; i < running_.size(); ++i) {
    ClientConn* client = running_[i];
    if (client == nullptr) continue;
    running_[i] = nullptr;
    client->input_scheduled_ = false;
    client->ProcessInput();
  }
  running_.clear();
}

}  // namespace pgfleet::agent
