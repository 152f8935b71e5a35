#include "soft_skeleton_cpu.h"

#include "portability.h"  // RETINA_RESTRICT

#include <algorithm>
#include <limits>
#include <vector>

namespace retina {
namespace {

// Planes padded by one cell on every spatial side (2D: rows and columns; 3D: planes too). Before a plane
// is eroded its border holds +inf and before it is dilated -inf, which is exactly "the outside never
// counts" of the reference's pools, and keeps every inner loop free of bounds checks. Code planes hold
// kNoCode on the border so gathers never match a window centred outside the image.
template <int kDims>
class Padded {
 public:
  static constexpr int kWindow = kDims == 3 ? 27 : 9;
  static constexpr int kAxes = kDims;  // erosion pools: (depth,) height, width
  static constexpr uint8_t kNoCode = 255;

  explicit Padded(const SoftSkeletonShape& s)
      : shape(s), pz(kDims == 3 ? 1 : 0), sy(s.width + 2), sz((s.height + 2) * (s.width + 2)),
        image((s.depth + 2 * pz) * sz), total(s.images * image), rows(s.images * s.depth * s.height) {
    int k = 0;
    for (int dz = -pz; dz <= pz; ++dz)
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) window_offset[k++] = dz * sz + dy * sy + dx;
    for (int a = 0; a < kAxes; ++a) axis_stride[a] = kDims == 3 ? (a == 0 ? sz : a == 1 ? sy : 1) : (a == 0 ? sy : 1);
  }

  template <class T>
  std::vector<T> plane(T value = T(0)) const { return std::vector<T>(static_cast<size_t>(total), value); }

  // Padded offset of the first interior cell of dense row `row` (rows are (image, z, y) in order).
  int64_t row_start(int64_t row) const {
    const int64_t y = row % shape.height, z = (row / shape.height) % shape.depth, n = row / (shape.height * shape.depth);
    return n * image + (z + pz) * sz + (y + 1) * sy + 1;
  }

  // body(padded offset, dense offset) for every interior cell, rows split over threads.
  template <class Body>
  void for_each(const ParallelFor& parallel_for, Body&& body) const {
    parallel_for(rows, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t o = row_start(row), d = row * shape.width;
        for (int64_t x = 0; x < shape.width; ++x) body(o + x, d + x);
      }
    });
  }

  // body(padded offset of the row's first cell, dense offset of it) for every row, split over threads.
  template <class Body>
  void for_each_row(const ParallelFor& parallel_for, Body&& body) const {
    parallel_for(rows, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) body(row_start(row), row * shape.width);
    });
  }

  // Sets every border cell of every image to `value`.
  template <class T>
  void fill_border(std::vector<T>& p, T value) const {
    for (int64_t n = 0; n < shape.images; ++n) {
      T* img = p.data() + n * image;
      const int64_t planes = shape.depth + 2 * pz;
      for (int64_t z = 0; z < planes; ++z) {
        T* plane = img + z * sz;
        if (pz && (z == 0 || z == planes - 1)) {
          std::fill(plane, plane + sz, value);
          continue;
        }
        std::fill(plane, plane + sy, value);
        std::fill(plane + (shape.height + 1) * sy, plane + sz, value);
        for (int64_t y = 1; y <= shape.height; ++y) plane[y * sy] = plane[y * sy + shape.width + 1] = value;
      }
    }
  }

  const SoftSkeletonShape shape;
  const int64_t pz, sy, sz, image, total, rows;
  int64_t window_offset[kWindow];
  int64_t axis_stride[kAxes];
};

template <class T>
constexpr T kInf = std::numeric_limits<T>::infinity();

// Share of a torch.min(a, b) gradient that goes to a: 1 if a < b, 1/2 on a tie, else 0.
template <class T>
T min_share(T a, T b) {
  // Arithmetic rather than nested conditionals: the outcome is data-dependent and would mispredict.
  return T(a < b) + T(0.5) * T(a == b);
}

template <class T>
T relu(T v) {
  return v > T(0) ? v : T(0);
}

template <class T>
T min3(T a, T b, T c) {
  return std::min(std::min(a, b), c);
}
template <class T>
T max3(T a, T b, T c) {
  return std::max(std::max(a, b), c);
}

// Soft erosion of a plane whose border holds +inf: the reference's nested torch.min of axis min-pools.
template <int kDims, class T>
void erode(const Padded<kDims>& g, const T* in, T* out, const ParallelFor& pf) {
  g.for_each(pf, [&](int64_t o, int64_t) {
    T value = min3(in[o - g.axis_stride[0]], in[o], in[o + g.axis_stride[0]]);
    for (int a = 1; a < kDims; ++a) value = std::min(value, min3(in[o - g.axis_stride[a]], in[o], in[o + g.axis_stride[a]]));
    out[o] = value;
  });
}

// Soft dilation (3x3(x3) max-pool) of a plane whose border holds -inf, separably through scratch
// planes whose borders hold -inf (max is exact, so the value equals the 9/27-cell maximum).
template <int kDims, class T>
void dilate(const Padded<kDims>& g, const T* in, T* out, std::vector<T>& scratch_a, std::vector<T>& scratch_b,
            const ParallelFor& pf) {
  T* along_x = scratch_a.data();
  g.for_each(pf, [&](int64_t o, int64_t) { along_x[o] = max3(in[o - 1], in[o], in[o + 1]); });
  T* along_xy = kDims == 3 ? scratch_b.data() : out;
  g.for_each(pf, [&](int64_t o, int64_t) { along_xy[o] = max3(along_x[o - g.sy], along_x[o], along_x[o + g.sy]); });
  if (kDims == 3)
    g.for_each(pf, [&](int64_t o, int64_t) { out[o] = max3(along_xy[o - g.sz], along_xy[o], along_xy[o + g.sz]); });
}

// skel <- skel + relu(delta - skel * delta), delta = relu(x - opened); the first iteration sets skel = delta.
template <int kDims, class T>
void accumulate(const Padded<kDims>& g, const T* x, const T* opened, T* skel, bool first, const ParallelFor& pf) {
  g.for_each(pf, [&](int64_t o, int64_t) {
    const T delta = relu(x[o] - opened[o]);
    skel[o] = first ? delta : skel[o] + relu(delta - skel[o] * delta);
  });
}

template <int kDims, class T>
void forward(const T* x, T* skel, const SoftSkeletonShape& shape, int64_t num_iter, const ParallelFor& pf) {
  const Padded<kDims> g(shape);
  std::vector<T> current = g.template plane<T>(), eroded = g.template plane<T>(), opened = g.template plane<T>();
  std::vector<T> running = g.template plane<T>(), scratch_a = g.template plane<T>(-kInf<T>), scratch_b = g.template plane<T>(-kInf<T>);
  g.for_each(pf, [&](int64_t o, int64_t d) { current[o] = x[d]; });
  for (int64_t j = 0; j <= num_iter; ++j) {
    // open(x_j) = dilate(erode(x_j)) and erode(x_j) is x_{j+1}: one erosion per iteration.
    g.fill_border(current, kInf<T>);
    erode(g, current.data(), eroded.data(), pf);
    g.fill_border(eroded, -kInf<T>);
    dilate(g, eroded.data(), opened.data(), scratch_a, scratch_b, pf);
    accumulate(g, current.data(), opened.data(), running.data(), j == 0, pf);
    current.swap(eroded);
  }
  g.for_each(pf, [&](int64_t o, int64_t d) { skel[d] = running[o]; });
}

// The backward's passes, one image row at a time on restrict-qualified pointers (offset to the row's
// first cell): with no possible aliasing, fully unrolled window loops, unconditional loads and every
// select of one width, the compiler vectorizes them.
#if defined(__GNUC__) && !defined(__clang__)
#define RETINA_UNROLL _Pragma("GCC unroll 32")
#else
#define RETINA_UNROLL
#endif

// open = max of the window, code = its first arg-max (row-major window position).
template <int kWindow, class T>
void window_argmax_row(const T* RETINA_RESTRICT xn, T* RETINA_RESTRICT code, T* RETINA_RESTRICT open,
                       const int64_t (&offset)[kWindow], int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    T best = xn[x + offset[0]], best_k = T(0);
    RETINA_UNROLL
    for (int k = 1; k < kWindow; ++k) {
      const T v = xn[x + offset[k]];
      const bool better = v > best;
      best_k = better ? T(k) : best_k;
      best = better ? v : best;
    }
    code[x] = best_k;
    open[x] = best;
  }
}

// Through skel_j = s + relu(delta - s * delta) (skel_0 = delta when !kHasBefore), delta = relu(x_j - open).
template <bool kHasBefore, class T>
void skeleton_grad_row(const T* RETINA_RESTRICT xj, const T* RETINA_RESTRICT open, const T* RETINA_RESTRICT skel_before,
                       T* RETINA_RESTRICT grad_running, T* RETINA_RESTRICT grad_cur, T* RETINA_RESTRICT grad_opened,
                       int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    const T v = xj[x] - open[x], delta = relu(v), g = grad_running[x];
    T grad_delta = g;
    if (kHasBefore) {
      const T s = skel_before[x], u = delta - s * delta;
      const T grad_u = u > T(0) ? g : T(0);
      grad_delta = grad_u - grad_u * s;
      grad_running[x] = g - grad_u * delta;
    }
    const T grad_v = v > T(0) ? grad_delta : T(0);
    grad_cur[x] = grad_v;
    grad_opened[x] = -grad_v;
  }
}

// grad_next += the open-gradients of the windows whose arg-max this cell is, windows in increasing position.
template <int kWindow, class T>
void dilation_gather_row(const T* RETINA_RESTRICT code, const T* RETINA_RESTRICT grad_opened, T* RETINA_RESTRICT grad_next,
                         const int64_t (&offset)[kWindow], int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    T sum = grad_next[x];
    RETINA_UNROLL
    for (int k = kWindow - 1; k >= 0; --k) {
      const T c = code[x - offset[k]], g = grad_opened[x - offset[k]];
      sum += c == T(k) ? g : T(0);
    }
    grad_next[x] = sum;
  }
}

// The 3-wide min-pool (lo, mid, hi): its value and first arg-min (0, 1, 2), by selects.
template <class T>
inline void axis_min(T lo, T mid, T hi, T& value, T& code) {
  const bool mid_lower = mid < lo;
  const T best = mid_lower ? mid : lo;
  const bool hi_lower = hi < best;
  code = hi_lower ? T(2) : (mid_lower ? T(1) : T(0));
  value = hi_lower ? hi : best;
}

// Per erosion centre: each axis pool's first arg-min (code) and its share of grad_next, split by
// torch.min's tie shares from the outside in (x_{j+1} = min(...min(m_0, m_1)..., m_last)). Axes are
// written out, not looped over: small arrays and loops kept the compiler from vectorizing.
template <int kAxes, class T>
void erosion_shares_row(const T* RETINA_RESTRICT xj, const T* RETINA_RESTRICT grad_next, T* RETINA_RESTRICT code,
                        T* RETINA_RESTRICT share, int64_t plane, const int64_t (&stride)[kAxes], int64_t n) {
  const int64_t s0 = stride[0], s1 = stride[1], s2 = stride[kAxes - 1];
  for (int64_t x = 0; x < n; ++x) {
    const T mid = xj[x];
    T m0, c0, m1, c1;
    axis_min(xj[x - s0], mid, xj[x + s0], m0, c0);
    axis_min(xj[x - s1], mid, xj[x + s1], m1, c1);
    T grad = grad_next[x];
    if constexpr (kAxes == 3) {
      T m2, c2;
      axis_min(xj[x - s2], mid, xj[x + s2], m2, c2);
      const T prefix = m1 < m0 ? m1 : m0;
      code[2 * plane + x] = c2;
      share[2 * plane + x] = grad * min_share(m2, prefix);
      grad = grad * min_share(prefix, m2);
    }
    code[x] = c0;
    code[plane + x] = c1;
    share[plane + x] = grad * min_share(m1, m0);
    share[x] = grad * min_share(m0, m1);
  }
}

// What the pools of one axis centred at x - d * s (d = 1, 0, -1: increasing position) route to x.
template <class T>
inline T pooled_share(const T* RETINA_RESTRICT code, const T* RETINA_RESTRICT share, int64_t x, int64_t s) {
  const T k_below = code[x - s], k_here = code[x], k_above = code[x + s];
  const T g_below = share[x - s], g_here = share[x], g_above = share[x + s];
  T pooled = k_below == T(2) ? g_below : T(0);
  pooled += k_here == T(1) ? g_here : T(0);
  pooled += k_above == T(0) ? g_above : T(0);
  return pooled;
}

// grad_out = grad_cur + what each axis pool routes to x, axes in order.
template <int kAxes, class T>
void erosion_gather_row(const T* RETINA_RESTRICT grad_cur, const T* RETINA_RESTRICT code, const T* RETINA_RESTRICT share,
                        T* RETINA_RESTRICT grad_out, int64_t plane, const int64_t (&stride)[kAxes], int64_t n) {
  const int64_t s0 = stride[0], s1 = stride[1], s2 = stride[kAxes - 1];
  for (int64_t x = 0; x < n; ++x) {
    T sum = grad_cur[x];
    sum += pooled_share(code, share, x, s0);
    sum += pooled_share(code + plane, share + plane, x, s1);
    if constexpr (kAxes == 3) sum += pooled_share(code + 2 * plane, share + 2 * plane, x, s2);
    grad_out[x] = sum;
  }
}

template <int kDims, class T>
void backward(const T* x, const T* grad_skel, T* grad_x, const SoftSkeletonShape& shape, int64_t num_iter,
              const ParallelFor& pf) {
  using G = Padded<kDims>;
  const G g(shape);
  // Recompute the erosions x_0 .. x_{num_iter+1} and the running skeleton before each iteration.
  std::vector<std::vector<T>> xs(static_cast<size_t>(num_iter + 2));
  std::vector<std::vector<T>> skels(static_cast<size_t>(num_iter));
  xs[0] = g.template plane<T>();
  g.for_each(pf, [&](int64_t o, int64_t d) { xs[0][o] = x[d]; });
  std::vector<T> opened = g.template plane<T>(), running = g.template plane<T>();
  std::vector<T> scratch_a = g.template plane<T>(-kInf<T>), scratch_b = g.template plane<T>(-kInf<T>);
  for (int64_t j = 0; j <= num_iter; ++j) {
    xs[j + 1] = g.template plane<T>();
    g.fill_border(xs[j], kInf<T>);
    erode(g, xs[j].data(), xs[j + 1].data(), pf);
    if (j < num_iter) {
      g.fill_border(xs[j + 1], -kInf<T>);
      dilate(g, xs[j + 1].data(), opened.data(), scratch_a, scratch_b, pf);
      accumulate(g, xs[j].data(), opened.data(), running.data(), j == 0, pf);
      skels[j] = running;
    }
  }

  std::vector<T> grad_running_plane = g.template plane<T>(), grad_opened_plane = g.template plane<T>();
  std::vector<T> grad_next_plane = g.template plane<T>(), grad_cur_plane = g.template plane<T>();
  std::vector<T> grad_axis_planes = g.template plane<T>();  // kAxes planes back to back
  grad_axis_planes.resize(static_cast<size_t>(G::kAxes * g.total));
  // Codes are stored as T, not bytes: same-width lanes let the compiler vectorize the selects and gathers.
  std::vector<T> window_code_plane = g.template plane<T>(T(G::kNoCode));
  std::vector<T> axis_code_planes(static_cast<size_t>(G::kAxes * g.total), T(G::kNoCode));
  // Raw pointers and local copies of the geometry, so that no store forces members or vector internals
  // to be reloaded inside the loops.
  T* const grad_running = grad_running_plane.data();
  T* const grad_opened = grad_opened_plane.data();
  T* const grad_next = grad_next_plane.data();
  T* const grad_cur = grad_cur_plane.data();
  T* const grad_axis = grad_axis_planes.data();
  T* const window_code = window_code_plane.data();
  T* const axis_code = axis_code_planes.data();
  const int64_t total = g.total, width = shape.width;
  int64_t window_offset[G::kWindow], axis_stride[G::kAxes];
  std::copy(g.window_offset, g.window_offset + G::kWindow, window_offset);
  std::copy(g.axis_stride, g.axis_stride + G::kAxes, axis_stride);
  g.for_each(pf, [&](int64_t o, int64_t d) { grad_running[o] = grad_skel[d]; });

  for (int64_t j = num_iter; j >= 0; --j) {
    const T* const xj = xs[j].data();
    const T* const xn = xs[j + 1].data();
    const T* const skel_before = j > 0 ? skels[j - 1].data() : nullptr;
    T* const open = opened.data();
    // open_j = dilate(x_{j+1}) with each window's first arg-max, then the gradient through the update.
    g.fill_border(xs[j + 1], -kInf<T>);
    g.for_each_row(pf, [&](int64_t o, int64_t) {
      window_argmax_row<G::kWindow>(xn + o, window_code + o, open + o, window_offset, width);
      if (skel_before)
        skeleton_grad_row<true>(xj + o, open + o, skel_before + o, grad_running + o, grad_cur + o, grad_opened + o, width);
      else
        skeleton_grad_row<false>(xj + o, open + o, static_cast<const T*>(nullptr), grad_running + o, grad_cur + o, grad_opened + o, width);
    });
    // Dilation backward as a gather (x_{j+1} receives the windows whose arg-max it is): now d/dx_{j+1}.
    g.for_each_row(pf, [&](int64_t o, int64_t) {
      dilation_gather_row<G::kWindow>(window_code + o, grad_opened + o, grad_next + o, window_offset, width);
    });
    // Erosion backward: shares per pool, then each cell gathers what its pools route to it: d/dx_j.
    g.fill_border(xs[j], kInf<T>);
    g.for_each_row(pf, [&](int64_t o, int64_t) {
      erosion_shares_row<G::kAxes>(xj + o, grad_next + o, axis_code + o, grad_axis + o, total, axis_stride, width);
    });
    g.for_each_row(pf, [&](int64_t o, int64_t) {
      erosion_gather_row<G::kAxes>(grad_cur + o, axis_code + o, grad_axis + o, grad_next + o, total, axis_stride, width);
    });
  }
  g.for_each(pf, [&](int64_t o, int64_t d) { grad_x[d] = grad_next[o]; });
}

// Images processed together: about 256 Ki cells per group, enough rows to share among threads and few
// enough that a group's planes stay in cache; small images are batched so passes are not all overhead.
int64_t images_per_group(int64_t plane) { return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(plane, 1)); }

}  // namespace

template <class T>
void soft_skeleton_forward_cpu(const T* x, T* skel, const SoftSkeletonShape& shape, int64_t num_iter,
                               const ParallelFor& pf) {
  if (shape.images * shape.depth * shape.height * shape.width == 0) return;
  // A few images at a time (rows in parallel): their planes stay in cache and memory does not grow with
  // the batch.
  const int64_t plane = shape.depth * shape.height * shape.width, group = images_per_group(plane);
  for (int64_t n = 0; n < shape.images; n += group) {
    const SoftSkeletonShape part{std::min(group, shape.images - n), shape.depth, shape.height, shape.width, shape.dims};
    if (shape.dims == 3)
      forward<3>(x + n * plane, skel + n * plane, part, num_iter, pf);
    else
      forward<2>(x + n * plane, skel + n * plane, part, num_iter, pf);
  }
}

template <class T>
void soft_skeleton_backward_cpu(const T* x, const T* grad_skel, T* grad_x, const SoftSkeletonShape& shape,
                                int64_t num_iter, const ParallelFor& pf) {
  if (shape.images * shape.depth * shape.height * shape.width == 0) return;
  // Grouped as the forward: the 2 * num_iter + 2 recomputed planes of a group stay in cache.
  const int64_t plane = shape.depth * shape.height * shape.width, group = images_per_group(plane);
  for (int64_t n = 0; n < shape.images; n += group) {
    const SoftSkeletonShape part{std::min(group, shape.images - n), shape.depth, shape.height, shape.width, shape.dims};
    if (shape.dims == 3)
      backward<3>(x + n * plane, grad_skel + n * plane, grad_x + n * plane, part, num_iter, pf);
    else
      backward<2>(x + n * plane, grad_skel + n * plane, grad_x + n * plane, part, num_iter, pf);
  }
}

template void soft_skeleton_forward_cpu<float>(const float*, float*, const SoftSkeletonShape&, int64_t, const ParallelFor&);
template void soft_skeleton_forward_cpu<double>(const double*, double*, const SoftSkeletonShape&, int64_t, const ParallelFor&);
template void soft_skeleton_backward_cpu<float>(const float*, const float*, float*, const SoftSkeletonShape&, int64_t,
                                                const ParallelFor&);
template void soft_skeleton_backward_cpu<double>(const double*, const double*, double*, const SoftSkeletonShape&, int64_t,
                                                 const ParallelFor&);

}  // namespace retina
