#include "skeletonize_cpu.h"

#include <vector>

#include "line_schedule.h"
#include "simple_point.h"

namespace retina {

void serial_for(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
  if (n > 0) body(0, n);
}

namespace {

// Runs outer iterations until one changes nothing in any image, or max_iter (if >= 0) is reached.
// `iteration(t)` performs outer iteration t and returns whether anything changed.
template <class Iteration>
int64_t iterate(int64_t max_iter, Iteration&& iteration) {
  int64_t t = 0;
  while (max_iter < 0 || t < max_iter) {
    const bool changed = iteration(t);
    ++t;
    if (!changed) break;
  }
  return t;
}

bool any_image_changed(const LineSchedule& schedule, int64_t batch, int64_t t) {
  for (int64_t n = 0; n < batch; ++n)
    if (schedule.changed_during(n, t)) return true;
  return false;
}

}  // namespace

int64_t skeletonize2d_cpu(uint8_t* data, int64_t batch, int64_t height, int64_t width, int64_t max_iter,
                          const ParallelFor& parallel_for) {
  if (batch == 0 || height == 0 || width == 0) return 0;
  using namespace simple2d;
  // Bit-packed copy: (height + 2) rows of (words + 2) words per image; the border rows and words stay 0.
  const int64_t words = (width + 63) / 64, stride = words + 2, image_words = (height + 2) * stride;
  std::vector<uint64_t> bits(static_cast<size_t>(batch * image_words), 0);
  std::vector<uint64_t> ends(bits.size(), 0);
  auto row_words = [&](std::vector<uint64_t>& v, int64_t n, int64_t r) {
    return v.data() + n * image_words + (r + 1) * stride + 1;  // word 0 of image row r
  };

  parallel_for(batch * height, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* src = data + i * width;
      uint64_t* dst = row_words(bits, i / height, i % height);
      for (int64_t c = 0; c < width; ++c) dst[c >> 6] |= static_cast<uint64_t>(src[c] != 0) << (c & 63);
    }
  });

  LineSchedule schedule(batch, 1, height, kSubpasses);
  const int64_t iterations = iterate(max_iter, [&](int64_t t) {
    // Endpoints are taken once per outer iteration, before its sub-passes (SPEC.md §2).
    parallel_for(batch * height, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / height, r = i % height;
        if (!schedule.endpoints_stale(n, 0, r, t)) continue;
        const uint64_t* mid = row_words(bits, n, r);
        uint64_t* out = row_words(ends, n, r);
        for (int64_t w = 0; w < words; ++w) out[w] = endpoints(mid - stride + w, mid + w, mid + stride + w);
      }
    });
    for (int s = 0; s < kSubpasses; ++s) {
      const int64_t row_parity = subpass_row_parity(s), stamp = schedule.stamp(t, s);
      const uint64_t column_mask = subpass_column_mask(s);
      const int64_t rows = (height - row_parity + 1) / 2;
      parallel_for(batch * rows, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t n = i / rows, r = row_parity + 2 * (i % rows);
          if (!schedule.must_visit(n, 0, r, t, stamp)) continue;
          uint64_t* mid = row_words(bits, n, r);
          const uint64_t* end_flags = row_words(ends, n, r);
          bool changed = false;
          for (int64_t w = 0; w < words; ++w) {
            const uint64_t del =
                deletable(mid - stride + w, mid + w, mid + stride + w, end_flags[w], column_mask);
            if (del) {
              mid[w] &= ~del;
              changed = true;
            }
          }
          if (changed) schedule.mark_changed(n, 0, r, stamp);
        }
      });
    }
    return any_image_changed(schedule, batch, t);
  });

  parallel_for(batch * height, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      uint8_t* dst = data + i * width;
      const uint64_t* src = row_words(bits, i / height, i % height);
      for (int64_t c = 0; c < width; ++c) dst[c] = static_cast<uint8_t>((src[c >> 6] >> (c & 63)) & 1u);
    }
  });
  return iterations;
}

int64_t skeletonize3d_cpu(uint8_t* data, int64_t batch, int64_t depth, int64_t height, int64_t width,
                          int64_t max_iter, const ParallelFor& parallel_for) {
  if (batch == 0 || depth == 0 || height == 0 || width == 0) return 0;
  using namespace simple3d;
  // Byte copy padded by one background voxel on every side, so every voxel has 26 readable neighbours.
  const int64_t sy = width + 2, sz = (height + 2) * sy, volume = (depth + 2) * sz;
  std::vector<uint8_t> vox(static_cast<size_t>(batch * volume), 0);
  std::vector<uint8_t> ends(vox.size(), 0);
  const int64_t lines = depth * height;
  auto line_offset = [&](int64_t n, int64_t z, int64_t y) { return n * volume + (z + 1) * sz + (y + 1) * sy + 1; };

  parallel_for(batch * lines, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* src = data + i * width;
      uint8_t* dst = vox.data() + line_offset(i / lines, (i % lines) / height, i % height);
      for (int64_t x = 0; x < width; ++x) dst[x] = src[x] != 0;
    }
  });

  LineSchedule schedule(batch, depth, height, kSubpasses);
  const int64_t iterations = iterate(max_iter, [&](int64_t t) {
    parallel_for(batch * lines, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / lines, z = (i % lines) / height, y = i % height;
        if (!schedule.endpoints_stale(n, z, y, t)) continue;
        const int64_t o = line_offset(n, z, y);
        for (int64_t x = 0; x < width; ++x)
          ends[o + x] = vox[o + x] && is_endpoint(gather(vox.data() + o + x, sy, sz));
      }
    });
    for (int s = 0; s < kSubpasses; ++s) {
      const int64_t pz = subpass_z_parity(s), py = subpass_y_parity(s), px = subpass_x_parity(s);
      const int64_t planes = (depth - pz + 1) / 2, rows = (height - py + 1) / 2;
      const int64_t stamp = schedule.stamp(t, s);
      parallel_for(batch * planes * rows, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t n = i / (planes * rows);
          const int64_t z = pz + 2 * ((i / rows) % planes), y = py + 2 * (i % rows);
          if (!schedule.must_visit(n, z, y, t, stamp)) continue;
          uint8_t* line = vox.data() + line_offset(n, z, y);
          const uint8_t* end_flags = ends.data() + line_offset(n, z, y);
          bool changed = false;
          for (int64_t x = px; x < width; x += 2) {
            if (!line[x] || end_flags[x] || !is_simple(gather(line + x, sy, sz))) continue;
            line[x] = 0;
            changed = true;
          }
          if (changed) schedule.mark_changed(n, z, y, stamp);
        }
      });
    }
    return any_image_changed(schedule, batch, t);
  });

  parallel_for(batch * lines, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* src = vox.data() + line_offset(i / lines, (i % lines) / height, i % height);
      uint8_t* dst = data + i * width;
      for (int64_t x = 0; x < width; ++x) dst[x] = src[x];
    }
  });
  return iterations;
}

}  // namespace retina
