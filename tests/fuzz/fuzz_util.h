// Helpers shared by the fuzz targets: input splitting and property checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace pgfleet::fuzz {

// A property that must hold for every input; a violation is a bug, so it crashes and libFuzzer
// saves the input.
#define PGF_FUZZ_CHECK(cond)                                                                  \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "%s:%d: fuzz property violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

// Reads an input as a mode byte followed by records, each a big-endian uint16 length and
// that many bytes (a length past the end takes the rest). Binary messages can hold any byte,
// so no separator would do; seeds are easy to write with Python's struct.pack(">H", n).
class RecordReader {
 public:
  RecordReader(const uint8_t* data, size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  bool empty() const { return rest_.empty(); }

  uint8_t Byte() {
    if (rest_.empty()) return 0;
    const uint8_t value = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return value;
  }

  std::string_view Record() {
    if (rest_.size() < 2) {
      std::string_view tail = rest_;
      rest_ = {};
      return tail;
    }
    const size_t length = (static_cast<uint8_t>(rest_[0]) << 8) | static_cast<uint8_t>(rest_[1]);
    rest_.remove_prefix(2);
    std::string_view record = rest_.substr(0, length);
    rest_.remove_prefix(record.size());
    return record;
  }

  std::string_view Rest() {
    std::string_view tail = rest_;
    rest_ = {};
    return tail;
  }

 private:
  std::string_view rest_;
};

}  // namespace pgfleet::fuzz
