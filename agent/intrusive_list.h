// A doubly linked list whose nodes live inside the objects (PgBouncer's StatList).
// A connection's state *is* the list it sits on, so moving between states is O(1) and
// SHOW counts are list sizes.
#pragma once

#include <cstddef>

#include "common/log.h"

namespace pgfleet::agent {

struct ListNode {
  ListNode* prev = nullptr;
  ListNode* next = nullptr;
  bool linked() const { return prev != nullptr; }
};

// T must derive from ListNode exactly once; an object sits on at most one list.
template <typename T>
class IntrusiveList {
 public:
  IntrusiveList() { head_.prev = head_.next = &head_; }
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* front() const { return empty() ? nullptr : static_cast<T*>(head_.next); }
  T* back() const { return empty() ? nullptr : static_cast<T*>(head_.prev); }

  void PushBack(T* item) {
    ListNode* node = item;
    PGF_CHECK(!node->linked());  // Always on: a corrupt list must stop, not spread.
    node->prev = head_.prev;
    node->next = &head_;
    head_.prev->next = node;
    head_.prev = node;
    ++size_;
  }

  void Remove(T* item) {
    ListNode* node = item;
    PGF_CHECK(node->linked());
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = nullptr;
    --size_;
  }

  T* PopFront() {
    T* item = front();
    if (item != nullptr) Remove(item);
    return item;
  }

  // Calls fn(T*) for each item; fn may remove the current item (not others).
  template <typename Fn>
  void ForEach(Fn&& fn) {
    for (ListNode* node = head_.next; node != &head_;) {
      ListNode* next = node->next;
      fn(static_cast<T*>(node));
      node = next;
    }
  }
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const ListNode* node = head_.next; node != &head_; node = node->next) {
      fn(static_cast<const T*>(node));
    }
  }

 private:
  ListNode head_;
  size_t size_ = 0;
};

}  // namespace pgfleet::agent
