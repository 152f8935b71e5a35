#include "skeletonize_cpu.h"

#include <vector>

#include "line_schedule.h"
#include "simple_point.h"

namespace retina {

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

namespace {

// Bit-packed 2D images: (height + 2) rows of (words + 2) words per image; the border rows and words
// stay 0, so every word has readable neighbours.
class PackedImages {
 public:
  PackedImages(int64_t batch, int64_t height, int64_t width)
      : batch(batch), height(height), width(width), words((width + 63) / 64), stride(words + 2),
        image_words((height + 2) * stride), plane_words(batch * image_words) {}

  std::vector<uint64_t> plane() const { return std::vector<uint64_t>(static_cast<size_t>(plane_words), 0); }
  // Word 0 of image row r of image n in a plane.
  uint64_t* row(std::vector<uint64_t>& plane, int64_t n, int64_t r) const {
    return plane.data() + n * image_words + (r + 1) * stride + 1;
  }

  void pack(const uint8_t* data, std::vector<uint64_t>& bits, const ParallelFor& parallel_for) const {
    parallel_for(batch * height, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const uint8_t* src = data + i * width;
        uint64_t* dst = row(bits, i / height, i % height);
        for (int64_t c = 0; c < width; ++c) dst[c >> 6] |= static_cast<uint64_t>(src[c] != 0) << (c & 63);
      }
    });
  }

  // out[pixel] = value(plane words, column) for every pixel, row by row.
  template <class Value>
  void unpack(uint8_t* out, const ParallelFor& parallel_for, Value&& value) const {
    parallel_for(batch * height, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t offset = (i / height) * image_words + (i % height + 1) * stride + 1;
        uint8_t* dst = out + i * width;
        for (int64_t c = 0; c < width; ++c) dst[c] = value(offset + (c >> 6), static_cast<int>(c & 63));
      }
    });
  }

  const int64_t batch, height, width, words, stride, image_words, plane_words;
};

// Gradient-factor bookkeeping of skeletonize2d_factors_cpu: a 'deleted' plane and bit-sliced counters.
struct FactorPlanes {
  explicit FactorPlanes(const PackedImages& images, int64_t num_iter) : deleted(images.plane()) {
    while ((int64_t{1} << num_planes) <= num_iter) ++num_planes;
    counters.assign(static_cast<size_t>(num_planes * images.plane_words), 0);
  }
  std::vector<uint64_t> deleted, counters;
  int num_planes = 0;
};

// The outer iterations of docs/skeletonize.md on packed images. Without factors: lines whose window did not
// change are skipped and iteration stops at convergence. With factors every pixel's factor changes on
// every iteration, so all lines are visited and exactly max_iter iterations run.
template <bool kFactors>
int64_t peel2d(const PackedImages& img, std::vector<uint64_t>& bits, int64_t max_iter, FactorPlanes* factors,
               const ParallelFor& parallel_for) {
  using namespace simple2d;
  std::vector<uint64_t> two_at_start = img.plane();
  LineSchedule schedule(img.batch, 1, img.height, kSubpasses);
  const int64_t height = img.height, stride = img.stride;
  return iterate(max_iter, [&](int64_t t) {
    parallel_for(img.batch * height, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / height, r = i % height;
        if (!kFactors && !schedule.endpoints_stale(n, 0, r, t)) continue;
        const uint64_t* mid = img.row(bits, n, r);
        uint64_t* out = img.row(two_at_start, n, r);
        for (int64_t w = 0; w < img.words; ++w)
          out[w] = at_least_two_neighbours(mid - stride + w, mid + w, mid + stride + w);
      }
    });
    for (int s = 0; s < kSubpasses; ++s) {
      const int64_t row_parity = subpass_row_parity(s), stamp = schedule.stamp(t, s);
      const uint64_t column_mask = subpass_column_mask(s);
      const int64_t rows = (height - row_parity + 1) / 2;
      parallel_for(img.batch * rows, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t n = i / rows, r = row_parity + 2 * (i % rows);
          if (!kFactors && !schedule.must_visit(n, 0, r, t, stamp)) continue;
          uint64_t* mid = img.row(bits, n, r);
          const uint64_t* two = img.row(two_at_start, n, r);
          bool changed = false;
          for (int64_t w = 0; w < img.words; ++w) {
            const uint64_t del = deletable(mid - stride + w, mid + w, mid + stride + w, two[w], column_mask);
            if constexpr (kFactors) {
              const int64_t o = mid + w - bits.data();
              increment_counters(factors->counters.data() + o, img.plane_words, factors->num_planes,
                                 halved(mid[w], del, two[w], column_mask));
              factors->deleted[static_cast<size_t>(o)] |= del;
            }
            if (del) {
              mid[w] &= ~del;
              changed = true;
            }
          }
          if (changed) schedule.mark_changed(n, 0, r, stamp);
        }
      });
    }
    return kFactors || any_image_changed(schedule, img.batch, t);
  });
}

}  // namespace

int64_t skeletonize2d_cpu(uint8_t* data, int64_t batch, int64_t height, int64_t width, int64_t max_iter,
                          const ParallelFor& parallel_for) {
  if (batch == 0 || height == 0 || width == 0) return 0;
  const PackedImages img(batch, height, width);
  std::vector<uint64_t> bits = img.plane();
  img.pack(data, bits, parallel_for);
  const int64_t iterations = peel2d<false>(img, bits, max_iter, nullptr, parallel_for);
  img.unpack(data, parallel_for, [&](int64_t word, int bit) { return static_cast<uint8_t>((bits[word] >> bit) & 1u); });
  return iterations;
}

void skeletonize2d_factors_cpu(uint8_t* data, uint8_t* halvings, int64_t batch, int64_t height, int64_t width,
                               int64_t num_iter, const ParallelFor& parallel_for) {
  if (batch == 0 || height == 0 || width == 0) return;
  const PackedImages img(batch, height, width);
  std::vector<uint64_t> bits = img.plane();
  img.pack(data, bits, parallel_for);
  FactorPlanes factors(img, num_iter);
  peel2d<true>(img, bits, num_iter, &factors, parallel_for);
  img.unpack(data, parallel_for, [&](int64_t word, int bit) { return static_cast<uint8_t>((bits[word] >> bit) & 1u); });
  img.unpack(halvings, parallel_for, [&](int64_t word, int bit) {
    if ((factors.deleted[word] >> bit) & 1u) return kFactorZero;
    unsigned count = 0;
    for (int k = 0; k < factors.num_planes; ++k) count |= ((factors.counters[k * img.plane_words + word] >> bit) & 1u) << k;
    return static_cast<uint8_t>(count);
  });
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
