// Which lines (2D: rows; 3D: (z, y) lines) a peeling sub-pass must visit.
//
// A line is revisited only if a line of its 3x3 window changed since the same sub-pass last visited it:
// otherwise every pixel it would test has the same neighbourhood as then, and its endpoint flag can only
// have been set since (deletion only removes neighbours), so it would delete nothing again. Within one
// sub-pass only lines of one parity change and their pixels of one parity, which are never neighbours of
// each other, so visiting lines in parallel and updating in place is race-free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace retina {

class LineSchedule {
 public:
  // `planes` x `rows` lines per image, each with a one-line border that never changes.
  LineSchedule(int64_t batch, int64_t planes, int64_t rows, int64_t subpasses)
      : planes_(planes), rows_(rows), period_(subpasses),
        last_change_(static_cast<size_t>(batch * (planes + 2) * (rows + 2)), kNever) {}

  // Sub-pass counter of sub-pass s of outer iteration t.
  int64_t stamp(int64_t t, int64_t s) const { return t * period_ + s; }

  // Must line (z, y) of image n be visited by the sub-pass with this stamp in outer iteration t?
  bool must_visit(int64_t n, int64_t z, int64_t y, int64_t t, int64_t stamp) const {
    return t == 0 || window_last_change(n, z, y) > stamp - period_;
  }
  // Must the endpoint flags of line (z, y) be recomputed at the start of outer iteration t?
  bool endpoints_stale(int64_t n, int64_t z, int64_t y, int64_t t) const {
    return t == 0 || window_last_change(n, z, y) >= stamp(t - 1, 0);
  }
  void mark_changed(int64_t n, int64_t z, int64_t y, int64_t stamp) { last_change_[index(n, z, y)] = stamp; }
  // Did image n change during outer iteration t?
  bool changed_during(int64_t n, int64_t t) const {
    const int64_t first = stamp(t, 0);
    const auto begin = last_change_.begin() + index(n, -1, -1);
    return std::any_of(begin, begin + (planes_ + 2) * (rows_ + 2), [&](int64_t v) { return v >= first; });
  }

 private:
  static constexpr int64_t kNever = -1;
  int64_t index(int64_t n, int64_t z, int64_t y) const {
    return (n * (planes_ + 2) + (z + 1)) * (rows_ + 2) + (y + 1);
  }
  int64_t window_last_change(int64_t n, int64_t z, int64_t y) const {
    int64_t latest = kNever;
    for (int64_t dz = -1; dz <= 1; ++dz)
      for (int64_t dy = -1; dy <= 1; ++dy) latest = std::max(latest, last_change_[index(n, z + dz, y + dy)]);
    return latest;
  }

  int64_t planes_, rows_, period_;
  std::vector<int64_t> last_change_;
};

}  // namespace retina
