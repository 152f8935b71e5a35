// Unit tests of the torch-free skeletonization core (run by ctest, also under ASan/UBSan).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "../core/simple_point.h"
#include "../core/skeletonize_cpu.h"

namespace {

int failures = 0;
#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                       \
    }                                                                   \
  } while (0)

// ---- independent, slow definitions --------------------------------------------------------------

// Components of `cells` (coordinates) under an adjacency predicate, optionally only those touching `seeds`.
template <class Cell, class Adjacent, class Touches>
int count_components(std::vector<Cell> cells, Adjacent adjacent, Touches touches) {
  int count = 0;
  while (!cells.empty()) {
    std::vector<Cell> stack{cells.back()}, component{cells.back()};
    cells.pop_back();
    while (!stack.empty()) {
      const Cell a = stack.back();
      stack.pop_back();
      for (size_t i = 0; i < cells.size();) {
        if (adjacent(a, cells[i])) {
          stack.push_back(cells[i]);
          component.push_back(cells[i]);
          cells[i] = cells.back();
          cells.pop_back();
        } else {
          ++i;
        }
      }
    }
    if (std::any_of(component.begin(), component.end(), touches)) ++count;
  }
  return count;
}

struct P2 { int y, x; };
struct P3 { int z, y, x; };

bool simple2d_by_definition(const bool nb[3][3]) {
  std::vector<P2> fg, bg;
  for (int y = -1; y <= 1; ++y)
    for (int x = -1; x <= 1; ++x)
      if (y || x) (nb[y + 1][x + 1] ? fg : bg).push_back({y, x});
  auto adj8 = [](P2 a, P2 b) { return std::max(std::abs(a.y - b.y), std::abs(a.x - b.x)) == 1; };
  auto adj4 = [](P2 a, P2 b) { return std::abs(a.y - b.y) + std::abs(a.x - b.x) == 1; };
  const int c8 = count_components(fg, adj8, [](P2) { return true; });
  const int c4 = count_components(bg, adj4, [](P2 a) { return std::abs(a.y) + std::abs(a.x) == 1; });
  return c8 == 1 && c4 == 1;
}

bool simple3d_by_definition(uint32_t mask) {
  std::vector<P3> fg, bg;
  for (int i = 0; i < 27; ++i) {
    if (i == 13) continue;
    const P3 p{i / 9 - 1, (i / 3) % 3 - 1, i % 3 - 1};
    const int nonzero = (p.z != 0) + (p.y != 0) + (p.x != 0);
    if (mask >> i & 1u) fg.push_back(p);
    else if (nonzero <= 2) bg.push_back(p);  // background is looked at in N18 only
  }
  auto adj26 = [](P3 a, P3 b) {
    return std::max({std::abs(a.z - b.z), std::abs(a.y - b.y), std::abs(a.x - b.x)}) == 1;
  };
  auto adj6 = [](P3 a, P3 b) { return std::abs(a.z - b.z) + std::abs(a.y - b.y) + std::abs(a.x - b.x) == 1; };
  const int t26 = count_components(fg, adj26, [](P3) { return true; });
  const int t6 = count_components(bg, adj6, [](P3 a) { return std::abs(a.z) + std::abs(a.y) + std::abs(a.x) == 1; });
  return t26 == 1 && t6 == 1;
}

// 8-connected foreground components and 4-connected background components (border counted as
// background) of an image: the topology the skeleton must keep.
std::pair<int, int> betti2d(const std::vector<uint8_t>& img, int h, int w) {
  auto count = [&](bool fg, bool eight) {
    const int H = h + 2, W = w + 2;
    std::vector<uint8_t> seen(size_t(H * W), 0);
    auto value = [&](int y, int x) {
      return (y >= 1 && y <= h && x >= 1 && x <= w) ? img[size_t((y - 1) * w + (x - 1))] != 0 : false;
    };
    int n = 0;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        if (seen[size_t(y * W + x)] || value(y, x) != fg) continue;
        ++n;
        std::vector<P2> stack{{y, x}};
        seen[size_t(y * W + x)] = 1;
        while (!stack.empty()) {
          const P2 p = stack.back();
          stack.pop_back();
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) {
              if ((!dy && !dx) || (!eight && dy && dx)) continue;
              const int yy = p.y + dy, xx = p.x + dx;
              if (yy < 0 || xx < 0 || yy >= H || xx >= W || seen[size_t(yy * W + xx)] || value(yy, xx) != fg) continue;
              seen[size_t(yy * W + xx)] = 1;
              stack.push_back({yy, xx});
            }
        }
      }
    return n;
  };
  return {count(true, true), count(false, false) - 1};
}

// A crude vessel-like image: random thick line segments and a few discs.
std::vector<uint8_t> random_shapes(int h, int w, std::mt19937& rng) {
  std::vector<uint8_t> img(size_t(h * w), 0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int k = 0; k < 6; ++k) {
    const double y0 = u(rng) * h, x0 = u(rng) * w, y1 = u(rng) * h, x1 = u(rng) * w, r = 0.5 + u(rng) * 4.0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const double dy = y1 - y0, dx = x1 - x0, len2 = dy * dy + dx * dx + 1e-9;
        const double t = std::clamp(((y - y0) * dy + (x - x0) * dx) / len2, 0.0, 1.0);
        const double ey = y - (y0 + t * dy), ex = x - (x0 + t * dx);
        if (ey * ey + ex * ex <= r * r) img[size_t(y * w + x)] = 1;
      }
  }
  return img;
}

void threaded_for(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
  const int64_t workers = 4, chunk = (n + workers - 1) / workers;
  std::vector<std::thread> threads;
  for (int64_t b = 0; b < n; b += chunk) threads.emplace_back(body, b, std::min(n, b + chunk));
  for (auto& t : threads) t.join();
}

// ---- tests -----------------------------------------------------------------------------------------

void test_simple2d_matches_definition_on_all_256_neighbourhoods() {
  int simple_count = 0;
  for (int code = 0; code < 256; ++code) {
    // Place the neighbourhood around the pixel at column 5 of a 3-row, 1-word image (with border words).
    uint64_t rows[3][3] = {};
    bool nb[3][3] = {};
    const int order[8][2] = {{-1, -1}, {-1, 0}, {-1, 1}, {0, 1}, {1, 1}, {1, 0}, {1, -1}, {0, -1}};
    for (int k = 0; k < 8; ++k) {
      const bool on = code >> k & 1;
      nb[order[k][0] + 1][order[k][1] + 1] = on;
      if (on) rows[order[k][0] + 1][1] |= 1ull << (5 + order[k][1]);
    }
    rows[1][1] |= 1ull << 5;
    const auto gathered = retina::simple2d::gather(&rows[0][1], &rows[1][1], &rows[2][1]);
    const bool fast = retina::simple2d::simple(gathered) >> 5 & 1;
    CHECK(fast == simple2d_by_definition(nb));
    simple_count += fast;
    const bool two = retina::simple2d::at_least_two_neighbours(&rows[0][1], &rows[1][1], &rows[2][1]) >> 5 & 1;
    CHECK(two == (__builtin_popcount(unsigned(code)) >= 2));
  }
  CHECK(simple_count == 116);  // docs/skeletonize.md
}

void test_word_borders_carry_neighbours() {
  // A horizontal line crossing the word boundary between columns 63 and 64 is one component.
  uint64_t up[4] = {}, mid[4] = {0, 1ull << 63, 1ull, 0}, down[4] = {};
  const auto nb = retina::simple2d::gather(&up[2], &mid[2], &down[2]);
  CHECK((nb.w & 1ull) == 1ull);  // bit 0 of word 2 sees column 63 to its west
  const auto nb1 = retina::simple2d::gather(&up[1], &mid[1], &down[1]);
  CHECK((nb1.e >> 63) == 1ull);  // bit 63 of word 1 sees column 64 to its east
}

void test_simple3d_matches_definition() {
  std::mt19937 rng(1234);
  int simple_count = 0, mismatches = 0;
  const int samples = 60000;
  for (int i = 0; i < samples; ++i) {
    const double density = (i % 10 + 0.5) / 10.0;
    std::bernoulli_distribution bit(density);
    uint32_t mask = 1u << 13;
    for (int b = 0; b < 27; ++b)
      if (b != 13 && bit(rng)) mask |= 1u << b;
    const bool fast = retina::simple3d::is_simple(mask);
    mismatches += fast != simple3d_by_definition(mask);
    simple_count += fast;
  }
  CHECK(mismatches == 0);
  CHECK(simple_count > samples / 20);  // the sample is not degenerate
  // Classic cases: isolated voxel, interior voxel, end of a line, middle of a line.
  CHECK(!retina::simple3d::is_simple(1u << 13));
  CHECK(!retina::simple3d::is_simple(retina::simple3d::kCube));
  CHECK(retina::simple3d::is_simple((1u << 13) | (1u << 14)));
  CHECK(!retina::simple3d::is_simple((1u << 12) | (1u << 13) | (1u << 14)));
}

void test_2d_topology_thinness_and_idempotence() {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 12; ++trial) {
    const int h = 20 + trial * 7, w = 30 + trial * 11;  // odd and multi-word widths
    const std::vector<uint8_t> img = random_shapes(h, w, rng);
    std::vector<uint8_t> skel = img;
    retina::skeletonize2d_cpu(skel.data(), 1, h, w, -1, retina::serial_for);
    CHECK(betti2d(skel, h, w) == betti2d(img, h, w));
    for (size_t i = 0; i < img.size(); ++i) CHECK(skel[i] <= img[i]);
    int blocks = 0;
    for (int y = 0; y + 1 < h; ++y)
      for (int x = 0; x + 1 < w; ++x)
        blocks += skel[size_t(y * w + x)] && skel[size_t(y * w + x + 1)] && skel[size_t((y + 1) * w + x)] &&
                  skel[size_t((y + 1) * w + x + 1)];
    CHECK(blocks == 0);
    std::vector<uint8_t> again = skel;
    CHECK(retina::skeletonize2d_cpu(again.data(), 1, h, w, -1, retina::serial_for) == 1);
    CHECK(again == skel);
  }
}

void test_2d_batch_and_threads_agree_with_single_images() {
  std::mt19937 rng(11);
  const int h = 37, w = 131, batch = 3;
  std::vector<uint8_t> all;
  std::vector<std::vector<uint8_t>> singles;
  for (int n = 0; n < batch; ++n) {
    auto img = random_shapes(h, w, rng);
    all.insert(all.end(), img.begin(), img.end());
    retina::skeletonize2d_cpu(img.data(), 1, h, w, -1, retina::serial_for);
    singles.push_back(img);
  }
  retina::skeletonize2d_cpu(all.data(), batch, h, w, -1, threaded_for);
  for (int n = 0; n < batch; ++n)
    CHECK(std::equal(singles[size_t(n)].begin(), singles[size_t(n)].end(), all.begin() + n * h * w));
}

void test_2d_max_iter_and_edge_cases() {
  std::vector<uint8_t> square(size_t(9 * 9), 1);
  std::vector<uint8_t> copy = square;
  CHECK(retina::skeletonize2d_cpu(copy.data(), 1, 9, 9, 0, retina::serial_for) == 0);
  CHECK(copy == square);
  retina::skeletonize2d_cpu(copy.data(), 1, 9, 9, -1, retina::serial_for);
  CHECK(std::count(copy.begin(), copy.end(), 1) >= 1);
  CHECK(betti2d(copy, 9, 9) == std::make_pair(1, 0));
  std::vector<uint8_t> one{5};  // non-0/1 foreground becomes 1
  retina::skeletonize2d_cpu(one.data(), 1, 1, 1, -1, retina::serial_for);
  CHECK(one[0] == 1);
  CHECK(retina::skeletonize2d_cpu(nullptr, 0, 4, 4, -1, retina::serial_for) == 0);
}

void test_bit_sliced_counters() {
  // 5 planes of one word each; pixel j is incremented j times (j < 32).
  uint64_t planes[5] = {};
  for (int step = 0; step < 31; ++step) {
    uint64_t increment = 0;
    for (int j = 0; j < 32; ++j)
      if (step < j) increment |= 1ull << j;
    retina::simple2d::increment_counters(planes, 1, 5, increment);
  }
  for (int j = 0; j < 32; ++j) {
    unsigned count = 0;
    for (int k = 0; k < 5; ++k) count |= unsigned(planes[k] >> j & 1u) << k;
    CHECK(count == unsigned(j));
  }
}

void test_factor_pass_matches_binary_schedule() {
  std::mt19937 rng(5);
  const int h = 41, w = 97, batch = 2;
  std::vector<uint8_t> img;
  for (int n = 0; n < batch; ++n) {
    auto one = random_shapes(h, w, rng);
    img.insert(img.end(), one.begin(), one.end());
  }
  for (int num_iter : {0, 1, 5, 9}) {
    std::vector<uint8_t> skel = img, factored = img, halvings(img.size(), 77);
    retina::skeletonize2d_cpu(skel.data(), batch, h, w, num_iter, retina::serial_for);
    retina::skeletonize2d_factors_cpu(factored.data(), halvings.data(), batch, h, w, num_iter, threaded_for);
    CHECK(factored == skel);
    for (size_t i = 0; i < img.size(); ++i) {
      const bool deleted = img[i] && !skel[i];
      CHECK((halvings[i] == retina::kFactorZero) == deleted);
      if (!deleted) CHECK(halvings[i] <= num_iter);
      // A surviving foreground pixel is halved once per iteration (a kept pixel is a tie at 1).
      if (skel[i]) CHECK(halvings[i] == num_iter);
    }
  }
}

void test_3d_preserves_components_and_thins() {
  std::mt19937 rng(3);
  const int d = 13, h = 17, w = 19;
  std::vector<uint8_t> vol(size_t(d * h * w), 0);
  // Two thick rods and a solid block.
  for (int z = 0; z < d; ++z)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const bool rod1 = (y - 4) * (y - 4) + (z - 4) * (z - 4) <= 5;
        const bool rod2 = (x - 13) * (x - 13) + (z - 9) * (z - 9) <= 4 && y > 8;
        const bool block = z >= 9 && z <= 11 && y >= 2 && y <= 5 && x >= 2 && x <= 6;
        vol[size_t((z * h + y) * w + x)] = rod1 || rod2 || block;
      }
  std::vector<uint8_t> serial = vol, threaded = vol;
  retina::skeletonize3d_cpu(serial.data(), 1, d, h, w, -1, retina::serial_for);
  retina::skeletonize3d_cpu(threaded.data(), 1, d, h, w, -1, threaded_for);
  CHECK(serial == threaded);
  const long before = std::count(vol.begin(), vol.end(), 1), after = std::count(serial.begin(), serial.end(), 1);
  CHECK(after > 0 && after < before / 4);
  std::vector<uint8_t> again = serial;
  CHECK(retina::skeletonize3d_cpu(again.data(), 1, d, h, w, -1, retina::serial_for) == 1);
  CHECK(again == serial);
}

}  // namespace

int main() {
  test_simple2d_matches_definition_on_all_256_neighbourhoods();
  test_word_borders_carry_neighbours();
  test_simple3d_matches_definition();
  test_2d_topology_thinness_and_idempotence();
  test_2d_batch_and_threads_agree_with_single_images();
  test_2d_max_iter_and_edge_cases();
  test_bit_sliced_counters();
  test_factor_pass_matches_binary_schedule();
  test_3d_preserves_components_and_thins();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all core checks passed\n");
  return 0;
}
