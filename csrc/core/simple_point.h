// Simple-point and endpoint tests for Euler-characteristic boundary peeling (docs/skeletonize.md).
//
// Everything here is __host__ __device__ so the CPU kernels, the CUDA kernels and the C++ unit tests
// all run the same code: a CPU test of these functions is also a test of the GPU logic.
#pragma once

#include <cstdint>

#include "portability.h"

namespace retina {

// Gradient-factor exponents of the differentiable skeleton (docs/differentiable_skeleton.md): a byte k means a factor of
// 2^-k, kFactorZero a factor of 0. Counts stay below kFactorZero because iterations are capped.
constexpr uint8_t kFactorZero = 255;
constexpr int64_t kMaxFactorIterations = 254;

namespace simple2d {

// ---- 2D, bit-parallel: 64 pixels per word ----------------------------------------------------------
// Bit j of a row word is the pixel in column 64*w + j. A row is stored with one zero word on each side,
// so the neighbours of word w are read from words w-1 and w+1 without bounds checks.

// Pixel value of the west (column - 1) neighbour of every bit of `mid`.
RETINA_HD uint64_t west(uint64_t left, uint64_t mid) { return (mid << 1) | (left >> 63); }
// Pixel value of the east (column + 1) neighbour of every bit of `mid`.
RETINA_HD uint64_t east(uint64_t mid, uint64_t right) { return (mid >> 1) | (right << 63); }

// The 3x3 neighbourhood of the 64 pixels of one word, as eight neighbour bit-planes.
struct Neighbours {
  uint64_t n, ne, e, se, s, sw, w, nw;
};

// up/mid/down: rows r-1, r, r+1; each pointer addresses word w of its row (w-1 and w+1 are readable).
RETINA_HD Neighbours gather(const uint64_t* up, const uint64_t* mid, const uint64_t* down) {
  Neighbours nb;
  nb.n = up[0];
  nb.nw = west(up[-1], up[0]);
  nb.ne = east(up[0], up[1]);
  nb.w = west(mid[-1], mid[0]);
  nb.e = east(mid[0], mid[1]);
  nb.s = down[0];
  nb.sw = west(down[-1], down[0]);
  nb.se = east(down[0], down[1]);
  return nb;
}

// Bits whose pixel has at least two foreground 8-neighbours. Taken once per outer iteration, before its
// sub-passes: a foreground pixel outside this set is an endpoint (<= 1 foreground neighbour, docs/skeletonize.md).
RETINA_HD uint64_t at_least_two_neighbours(const Neighbours& nb) {
  const uint64_t planes[8] = {nb.n, nb.ne, nb.e, nb.se, nb.s, nb.sw, nb.w, nb.nw};
  uint64_t one = 0, two = 0;
  for (int k = 0; k < 8; ++k) {
    two |= one & planes[k];
    one |= planes[k];
  }
  return two;
}

// Bits whose 3x3 neighbourhood makes the centre a simple point for (8, 4) connectivity.
// Yokoi's connectivity number: with the neighbours in cyclic order E, NE, N, NW, W, SW, S, SE the
// centre is simple iff exactly one of the four terms  ~x_k & (x_{k+1} | x_{k+2}), k = E, N, W, S,
// is set. This equals the 116-entry table of simple configurations (checked exhaustively in the tests).
RETINA_HD uint64_t simple(const Neighbours& nb) {
  const uint64_t t0 = ~nb.e & (nb.ne | nb.n);
  const uint64_t t1 = ~nb.n & (nb.nw | nb.w);
  const uint64_t t2 = ~nb.w & (nb.sw | nb.s);
  const uint64_t t3 = ~nb.s & (nb.se | nb.e);
  const uint64_t any = t0 | t1 | t2 | t3;
  const uint64_t two = (t0 & t1) | (t2 & t3) | ((t0 | t1) & (t2 | t3));
  return any & ~two;
}

// at_least_two_neighbours() of one word, from rows r-1, r, r+1.
RETINA_HD uint64_t at_least_two_neighbours(const uint64_t* up, const uint64_t* mid, const uint64_t* down) {
  return at_least_two_neighbours(gather(up, mid, down));
}

// Pixels of one word that a sub-pass deletes: foreground, not an endpoint (at least two neighbours at the
// start of the outer iteration: `two_at_start`), simple now, and of the column parity selected by
// `column_mask` (0x5555... for even columns, 0xAAAA... for odd ones).
RETINA_HD uint64_t deletable(const uint64_t* up, const uint64_t* mid, const uint64_t* down, uint64_t two_at_start,
                             uint64_t column_mask) {
  return mid[0] & column_mask & two_at_start & simple(gather(up, mid, down));
}

// Pixels of this sub-pass whose gradient factor it halves (docs/differentiable_skeleton.md): the reference sets
// x <- min(x, 1 - d), d = simple * (1 - endpoint), and PyTorch splits the gradient of a tie in half.
// Ties are x = 1, d = 0 (a foreground pixel this sub-pass keeps) and x = 0, d = 1 (a background pixel,
// which counts as simple, with at least two foreground neighbours at the iteration's start). A deleted
// pixel's factor becomes 0 instead; other background pixels keep theirs.
RETINA_HD uint64_t halved(uint64_t centre, uint64_t deleted, uint64_t two_at_start, uint64_t column_mask) {
  return column_mask & ((centre & ~deleted) | (~centre & two_at_start));
}

// Adds 1 to the bit-sliced counters of the bits set in `increment`: plane k holds bit k of every
// pixel's count and planes are `plane_stride` words apart. The caller sizes the planes for the maximum.
RETINA_HD void increment_counters(uint64_t* planes, int64_t plane_stride, int num_planes, uint64_t increment) {
  for (int k = 0; k < num_planes && increment; ++k) {
    uint64_t& plane = planes[k * plane_stride];
    const uint64_t carry = plane & increment;
    plane ^= increment;
    increment = carry;
  }
}

constexpr uint64_t kEvenColumns = 0x5555555555555555ull;
constexpr uint64_t kOddColumns = 0xAAAAAAAAAAAAAAAAull;

// Sub-pass order as (row parity, column parity), docs/skeletonize.md. Reproduces the public reference.
constexpr int kSubpasses = 4;
RETINA_HD int subpass_row_parity(int s) { return (s == 0 || s == 2) ? 1 : 0; }     // 1, 0, 1, 0
RETINA_HD int subpass_column_parity(int s) { return (s < 2) ? 1 : 0; }             // 1, 1, 0, 0
RETINA_HD uint64_t subpass_column_mask(int s) {
  return subpass_column_parity(s) ? kOddColumns : kEvenColumns;
}

}  // namespace simple2d

namespace simple3d {

// ---- 3D: the 3x3x3 neighbourhood as a 27-bit mask ---------------------------------------------------
// Bit (dz+1)*9 + (dy+1)*3 + (dx+1) holds the voxel at offset (dz, dy, dx); the centre is bit 13.
constexpr uint32_t kCentre = 1u << 13;
constexpr uint32_t kCube = (1u << 27) - 1;

RETINA_HD constexpr uint32_t bits_where(int axis_divisor, int value) {
  uint32_t m = 0;
  for (int i = 0; i < 27; ++i)
    if ((i / axis_divisor) % 3 == value) m |= 1u << i;
  return m;
}
constexpr uint32_t kX0 = bits_where(1, 0), kX2 = bits_where(1, 2);
constexpr uint32_t kY0 = bits_where(3, 0), kY2 = bits_where(3, 2);

// The six face neighbours, and the 18-neighbourhood without the centre (faces and edges, no corners).
RETINA_HD constexpr uint32_t faces() {
  return (1u << 4) | (1u << 22) | (1u << 10) | (1u << 16) | (1u << 12) | (1u << 14);
}
RETINA_HD constexpr uint32_t n18_without_centre() {
  uint32_t m = 0;
  for (int i = 0; i < 27; ++i) {
    const int dz = i / 9 - 1, dy = (i / 3) % 3 - 1, dx = i % 3 - 1;
    const int nonzero = (dz != 0) + (dy != 0) + (dx != 0);
    if (nonzero == 1 || nonzero == 2) m |= 1u << i;
  }
  return m;
}
constexpr uint32_t kFaces = faces();
constexpr uint32_t kN18 = n18_without_centre();

// Each shift is masked to the cube: a bit shifted past bit 26 would otherwise come back through the
// next axis' right shift as a false neighbour.
RETINA_HD uint32_t dilate_x(uint32_t s) { return (s | ((s << 1) & ~kX0) | ((s >> 1) & ~kX2)) & kCube; }
RETINA_HD uint32_t dilate_y(uint32_t s) { return (s | ((s << 3) & ~kY0) | ((s >> 3) & ~kY2)) & kCube; }
RETINA_HD uint32_t dilate_z(uint32_t s) { return (s | (s << 9) | (s >> 9)) & kCube; }
// One step of 26-adjacency (the 3x3x3 box, separably) and of 6-adjacency (faces only).
RETINA_HD uint32_t dilate26(uint32_t s) { return dilate_z(dilate_y(dilate_x(s))); }
RETINA_HD uint32_t dilate6(uint32_t s) {
  return (s | ((s << 1) & ~kX0) | ((s >> 1) & ~kX2) | ((s << 3) & ~kY0) | ((s >> 3) & ~kY2) | (s << 9) |
          (s >> 9)) &
         kCube;
}

RETINA_HD uint32_t lowest_bit(uint32_t v) { return v & (~v + 1u); }

// Number of the 26-connected components of `set` is one: grows the component of one bit to a fixed point.
RETINA_HD bool one_component26(uint32_t set) {
  if (set == 0) return false;
  uint32_t reach = lowest_bit(set);
  for (;;) {
    const uint32_t next = dilate26(reach) & set;
    if (next == reach) break;
    reach = next;
  }
  return reach == set;
}

// Exact simple-point test for (26, 6) connectivity (Bertrand & Malandain's topological numbers):
// T26 = number of 26-components of the foreground in N26*, must be 1; T6 = number of 6-components of
// the background in N18* that contain a face neighbour, must be 1. Euler invariance alone is not enough.
RETINA_HD bool is_simple(uint32_t neighbourhood) {
  const uint32_t fg = neighbourhood & kCube & ~kCentre;
  if (!one_component26(fg)) return false;
  const uint32_t bg = ~neighbourhood & kN18;
  const uint32_t bg_faces = bg & kFaces;
  if (bg_faces == 0) return false;  // deleting the centre would open a cavity
  uint32_t reach = lowest_bit(bg_faces);
  for (;;) {
    const uint32_t next = dilate6(reach) & bg;
    if (next == reach) break;
    reach = next;
  }
  return (bg_faces & ~reach) == 0;
}

// Foreground voxel with at most one foreground 26-neighbour.
RETINA_HD bool is_endpoint(uint32_t neighbourhood) {
  return popcount32(neighbourhood & kCube & ~kCentre) <= 1;
}

// The 27-bit mask around the voxel `p` of a byte volume whose rows are `sy` bytes and planes `sz` bytes
// apart; all 26 neighbours must be addressable (the volume is padded by one voxel of background).
RETINA_HD uint32_t gather(const uint8_t* p, int64_t sy, int64_t sz) {
  uint32_t m = 0;
  int bit = 0;
  for (int dz = -1; dz <= 1; ++dz)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx, ++bit)
        m |= static_cast<uint32_t>(p[dz * sz + dy * sy + dx] != 0) << bit;
  return m;
}

// Sub-pass order as (z, y, x) parities in image coordinates (docs/skeletonize.md: the reference's padded-volume
// offsets (0,0,0), (1,0,0), (0,1,0), (1,1,0), (0,0,1), ... select image parities 1 - offset).
constexpr int kSubpasses = 8;
RETINA_HD int subpass_z_parity(int s) { return 1 - (s & 1); }
RETINA_HD int subpass_y_parity(int s) { return 1 - ((s >> 1) & 1); }
RETINA_HD int subpass_x_parity(int s) { return 1 - ((s >> 2) & 1); }

}  // namespace simple3d
}  // namespace retina
