// The CUDA dynamic snake convolution's block bodies (csrc/core/dsconv_cuda_tiles.h), run on the CPU and
// compared with the CPU core (dsconv2d_forward_cpu / dsconv2d_backward_cpu). A "block" is 256 std::threads
// sharing the tile's shared-memory arrays and a barrier for __syncthreads(); shared memory is filled with
// NaN before every block, so reading an element no thread wrote this block shows up in the results.
// Every tile shape the CUDA launcher can choose is run over all of a case's channels, and where a case's
// channels leave a rest tile, the launches the launcher makes for them (dsconv_tiles::for_each_weight_grad_launch
// and with_input_grad_tile, which dsconv_cuda.cu calls); with the CUDA-core product and with the
// tensor-core products (the 16-bit types', 16 deep, and float32's TF32, 8 deep) on an emulated warp-wide multiply
// that checks the alignment the hardware requires, in float and double and with bfloat16 elements summed
// in float (a host stand-in for __nv_bfloat16). Also checks the CPU backward's channel groups, and the
// CPU core with its workers on real threads.
// Built with ASan/UBSan in CI (ctest).
#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#include "../core/dsconv_cpu.h"
#include "../core/dsconv_cuda_tiles.h"

namespace {

using namespace retina;
using namespace retina::dsconv_tiles;

int failures = 0;

// bfloat16 on the host: float's upper 16 bits, rounded to nearest even. The kernels' 16-bit paths read
// elements of one type and sum in another (T != Acc); with this type the CPU runs them that way too.
// to_acc and the explicit conversion from float are what the block bodies use (as for __nv_bfloat16).
struct HostBf16 {
  uint16_t bits = 0;
  HostBf16() = default;
  explicit HostBf16(float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even (the quiet NaN used here stays NaN)
    bits = static_cast<uint16_t>(u >> 16);
  }
  explicit operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float v;
    std::memcpy(&v, &u, sizeof v);
    return v;
  }
};
float to_acc(HostBf16 v) { return static_cast<float>(v); }
float round_to_bf16(float v) { return static_cast<float>(HostBf16(v)); }

struct HostBlock {
  int tid;
  std::array<int64_t, 3> block;
  std::barrier<>* barrier;
  int thread() const { return tid; }
  int64_t index(int axis) const { return block[axis]; }
  void sync() const { barrier->arrive_and_wait(); }
  template <class A>
  void atomic_add(A* at, A value) const {
    std::atomic_ref<A>(*at).fetch_add(value);
  }
};

// A block's shared memory, 32-byte aligned as the kernels declare it.
class Shared {
 public:
  explicit Shared(size_t bytes) : bytes_(bytes), data_(static_cast<unsigned char*>(::operator new(bytes, kAlign))) {}
  ~Shared() { ::operator delete(data_, kAlign); }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  unsigned char* bytes() { return data_; }
  template <class T>
  T* as() {
    return reinterpret_cast<T*>(data_);
  }
  void poison() { std::memset(data_, 0xFF, bytes_); }  // all-ones: NaN as float and as double

 private:
  static constexpr std::align_val_t kAlign{32};
  size_t bytes_;
  unsigned char* data_;
};

// The tensor cores' warp-wide fragment operations, emulated: lane 0 of each warp computes the whole
// 16 x 16 fragment from shared memory (the other lanes' calls do nothing), so the emulation sees exactly
// the shared-memory layouts the kernels rely on. Also checks the alignment wmma requires (32-byte starts,
// strides a multiple of 16 bytes), which the CPU would not otherwise enforce.
template <int K>
struct FragA {
  float v[kFragment][K];  // (m, k)
};
template <int K>
struct FragB {
  float v[K][kFragment];  // (k, n)
};
struct FragAcc {
  float v[kFragment][kFragment];
};

template <int K>
void multiply_add(FragAcc& c, const FragA<K>& a, const FragB<K>& b) {
  for (int m = 0; m < kFragment; ++m)
    for (int n = 0; n < kFragment; ++n)
      for (int k = 0; k < K; ++k) c.v[m][n] += a.v[m][k] * b.v[k][n];
}

// TF32 rounding as __float_to_tf32 (cvt.rna.tf32.f32) does it: to 10 mantissa bits, halves away from zero.
float round_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

bool is_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x1fffu) == 0;
}

// kTf32: dsconv_cuda.cu's WmmaTf32 (float32 on the TF32 tensor cores: 8 deep, operands rounded as they are
// staged). Its loads check that every element reaching the product went through the staging rounding.
template <int K, bool kTf32 = false>
struct EmulatedMma {
  using Stage = float;
  static constexpr int kK = K;
  using A = FragA<K>;
  using B = FragB<K>;
  using Acc = FragAcc;
  static float stage(float v) { return kTf32 ? round_tf32(v) : v; }
  static void check_staged(float v) {
    if (kTf32 && !is_tf32(v)) {
      std::fprintf(stderr, "a fragment element was not staged as TF32: %.9g\n", static_cast<double>(v));
      std::abort();
    }
  }
  static void check(const void* p, int ld) {
    if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0 || ld * sizeof(float) % 16 != 0) {
      std::fprintf(stderr, "fragment access misaligned: %p, ld %d\n", p, ld);
      std::abort();
    }
  }
  static void zero(Acc& c) { std::memset(&c, 0, sizeof c); }
  static void load_a(A& f, const float* p, int ld, int lane) {
    check(p, ld);
    if (lane != 0) return;
    for (int m = 0; m < kFragment; ++m)
      for (int k = 0; k < K; ++k) check_staged(f.v[m][k] = p[k * ld + m]);
  }
  static void load_b(B& f, const float* p, int ld, int lane) {
    check(p, ld);
    if (lane != 0) return;
    for (int k = 0; k < K; ++k)
      for (int n = 0; n < kFragment; ++n) check_staged(f.v[k][n] = p[k * ld + n]);
  }
  static void mma(Acc& c, const A& a, const B& b, int lane) {
    if (lane == 0) multiply_add(c, a, b);
  }
  static void store(float* p, const Acc& c, int ld, int lane) {
    check(p, ld);
    if (lane != 0) return;
    for (int m = 0; m < kFragment; ++m)
      for (int n = 0; n < kFragment; ++n) p[m * ld + n] = c.v[m][n];
  }
};

// Runs body(block) for every block of `grid`, one block at a time, on kThreads threads; `shared` is
// poisoned with NaN before each block.
template <class Body>
void launch(std::array<int64_t, 3> grid, std::vector<Shared*> shared, Body&& body) {
  std::barrier<> barrier(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int64_t z = 0; z < grid[2]; ++z)
        for (int64_t y = 0; y < grid[1]; ++y)
          for (int64_t x = 0; x < grid[0]; ++x) {
            if (t == 0)
              for (Shared* s : shared) s->poison();
            barrier.arrive_and_wait();
            body(HostBlock{t, {x, y, z}, &barrier});
            barrier.arrive_and_wait();
          }
    });
  for (auto& th : threads) th.join();
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class T>
void naive_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                int64_t ldb, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T sum = 0;
      for (int64_t l = 0; l < k; ++l) sum += (ta ? a[l * lda + i] : a[i * lda + l]) * (tb ? b[j * ldb + l] : b[l * ldb + j]);
      c[i * ldc + j] = alpha * sum + (beta == T(0) ? T(0) : beta * c[i * ldc + j]);
    }
}

struct Case {
  int64_t batch, channels, out_channels, height, width, taps;
  int morph;
  double scope, spread;  // offsets uniform in [-spread, spread]
};

template <class T>
bool close(const std::vector<T>& got, const std::vector<T>& want, double tol, const char* what, const Case& c,
           int tm, int tn, const char* elements = "") {
  double scale = 1;
  for (T v : want) scale = std::max(scale, std::abs(static_cast<double>(v)));
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(err <= tol * scale)) {  // also catches NaN
      std::fprintf(stderr,
                   "%s (%s%s%s, tile %dx%d) differs at %zu: %.12g vs %.12g; case B=%lld C=%lld O=%lld %lldx%lld K=%lld "
                   "morph=%d scope=%g\n",
                   what, sizeof(T) == 8 ? "double" : "float", *elements ? ", " : "", elements, tm, tn, i,
                   static_cast<double>(got[i]), static_cast<double>(want[i]), (long long)c.batch, (long long)c.channels, (long long)c.out_channels,
                   (long long)c.height, (long long)c.width, (long long)c.taps, c.morph, c.scope);
      ++failures;
      return false;
    }
  }
  return true;
}

template <class T>
struct Problem {
  Case c;
  DSConvShape shape;
  std::vector<T> input, offset, weight, bias, grad_out;
  // CPU core results
  std::vector<T> out, grad_input, grad_offset, grad_weight;
  // tap positions
  std::vector<int32_t> low;
  std::vector<T> frac;
  std::vector<uint8_t> live;
  // permuted weights: [C, K, O] and [O, K, C]
  std::vector<T> weight_cko, weight_okc;

  // bf16_values: every input a bfloat16 value, so that bfloat16 copies of them are exact.
  explicit Problem(const Case& cs, uint32_t seed, bool bf16_values = false)
      : c(cs), shape{cs.batch, cs.channels, cs.out_channels, cs.height, cs.width, cs.taps, cs.morph, cs.scope} {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> unit(-1.0, 1.0);
    const int64_t HW = c.height * c.width, B = c.batch, C = c.channels, O = c.out_channels, K = c.taps;
    auto fill = [&](std::vector<T>& v, int64_t n, double scale) {
      v.resize(n);
      for (auto& x : v) {
        x = static_cast<T>(scale * unit(gen));
        if (bf16_values) x = static_cast<T>(round_to_bf16(static_cast<float>(x)));
      }
    };
    fill(input, B * C * HW, 1.0);
    fill(offset, B * K * HW, c.spread);
    fill(weight, O * C * K, 0.3);
    fill(bias, O, 1.0);
    fill(grad_out, B * O * HW, 1.0);
    const Gemm<T> gemm = naive_gemm<T>;
    out.resize(B * O * HW);
    dsconv2d_forward_cpu<T>(input.data(), offset.data(), weight.data(), bias.data(), out.data(), shape, 1, gemm, serial_for);
    grad_input.resize(input.size());
    grad_offset.resize(offset.size());
    grad_weight.resize(weight.size());
    dsconv2d_backward_cpu<T>(grad_out.data(), input.data(), offset.data(), weight.data(), grad_input.data(),
                             grad_offset.data(), grad_weight.data(), shape, 1, gemm, serial_for);

    low.resize(B * K * HW);
    frac.resize(B * K * HW);
    live.resize(B * K * HW);
    const LocateArgs<T, T> locate{offset.data(), low.data(), frac.data(), live.data(), B, c.height, c.width, K,
                                  c.morph, static_cast<T>(c.scope)};
    for (int64_t n = 0; n < B * HW; ++n) locate_pixel(locate, n);
    weight_cko.resize(weight.size());
    weight_okc.resize(weight.size());
    for (int64_t o = 0; o < O; ++o)
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t k = 0; k < K; ++k) {
          const T w = weight[(o * C + ch) * K + k];
          weight_cko[(ch * K + k) * O + o] = w;
          weight_okc[(o * K + k) * C + ch] = w;
        }
  }
  int64_t high_step() const { return SnakeFrame(c.height, c.width, c.morph).high_step; }
};

// v's elements converted to To (between the element type and the accumulation type, either way).
template <class To, class From>
std::vector<To> converted(const std::vector<From>& v) {
  std::vector<To> out;
  out.reserve(v.size());
  for (From x : v) out.push_back(static_cast<To>(x));
  return out;
}

// The problem's kernel operands in the element type T (the problem's values, converted exactly when
// they were made bfloat16 values); tap positions and every sum stay in the problem's type Acc.
template <class T, class Acc>
struct Elements {
  std::vector<T> input, weight_cko, weight_okc, bias, grad_out;
  // Relative rounding of a result stored as T: bfloat16 keeps 8 significant bits.
  static constexpr double kRounding = std::is_same_v<T, HostBf16> ? 1.0 / 256 : 0.0;
  static constexpr const char* kName = std::is_same_v<T, HostBf16> ? "bfloat16 elements" : "";

  explicit Elements(const Problem<Acc>& pr)
      : input(converted<T>(pr.input)), weight_cko(converted<T>(pr.weight_cko)),
        weight_okc(converted<T>(pr.weight_okc)), bias(converted<T>(pr.bias)), grad_out(converted<T>(pr.grad_out)) {}
};

// Each check takes `launches`, which calls run(Int<TM>{}, Int<TN>{}, rest, tiles) for each launch to
// make (rest: std::bool_constant or, for the input gradient, Int<REST_TM>): either one tile shape over
// every channel (every_channel_in) or what dsconv_cuda.cu launches for the case (with_forward_tile and
// the like). `tm`, `tn` only label a failure (0 x 0: the launcher's plan).

template <int TM, int TN>
auto every_channel_in(int64_t extent, int64_t tile_extent) {
  return [=](auto&& run) { run(Int<TM>{}, Int<TN>{}, std::false_type{}, ceil_div(extent, tile_extent)); };
}

template <class Math, class T, class Acc, class Launches>
void check_forward(const Problem<Acc>& pr, const Elements<T, Acc>& el, double tol, Launches&& launches, int tm, int tn) {
  const Case& c = pr.c;
  const int64_t HW = c.height * c.width;
  std::vector<T> out(pr.out.size(), static_cast<T>(std::numeric_limits<Acc>::quiet_NaN()));
  const ForwardArgs<T, Acc> a{el.input.data(), {pr.low.data(), pr.frac.data(), nullptr}, el.weight_cko.data(),
                              el.bias.data(), out.data(), c.channels, c.out_channels, c.taps, HW, pr.high_step()};
  launches([&](auto tm_, auto tn_, auto rest, int64_t tiles) {
    constexpr int TM = decltype(tm_)::value, TN = decltype(tn_)::value;
    static_assert(!decltype(rest)::value, "the forward has whole tiles only");
    Shared shared(SharedTile<Math, TM, TN>::bytes);
    launch({ceil_div(HW, Tile<TM, TN>::kCols), tiles, c.batch}, {&shared}, [&](const HostBlock& blk) {
      forward_tile<Math, T, Acc, TM, TN>(a, shared.bytes(), blk);
    });
  });
  close(converted<Acc>(out), pr.out, tol + Elements<T, Acc>::kRounding, "forward", c, tm, tn, el.kName);
}

// with_input_grad false: a null grad_input (no scatter), and the offset gradient must be unchanged.
template <class Math, class T, class Acc, class Launches>
void check_input_grad(const Problem<Acc>& pr, const Elements<T, Acc>& el, double tol, Launches&& launches, int tm,
                      int tn, bool with_input_grad = true) {
  const Case& c = pr.c;
  const int64_t HW = c.height * c.width;
  std::vector<Acc> grad_input(with_input_grad ? pr.grad_input.size() : 0, Acc(0));
  std::vector<Acc> grad_offset(pr.grad_offset.size(), std::numeric_limits<Acc>::quiet_NaN());
  const InputGradArgs<T, Acc> a{el.grad_out.data(), el.input.data(), {pr.low.data(), pr.frac.data(), pr.live.data()},
                                el.weight_okc.data(), with_input_grad ? grad_input.data() : nullptr,
                                grad_offset.data(), c.channels,
                                c.out_channels, c.taps, HW, pr.high_step(), static_cast<Acc>(c.scope)};
  launches([&](auto tm_, auto tn_, auto rest_tm, int64_t) {
    constexpr int TM = decltype(tm_)::value, TN = decltype(tn_)::value, REST_TM = int(decltype(rest_tm)::value);
    using S = Tile<TM, TN>;
    Shared shared(InputGradShared<Math, TM, TN, REST_TM>::bytes), partial(kThreads * sizeof(Acc)),
        running(S::kCols * sizeof(Acc));
    launch({ceil_div(HW, S::kCols), c.batch, 1}, {&shared, &partial, &running}, [&](const HostBlock& blk) {
      input_grad_tile<Math, T, Acc, TM, TN, REST_TM>(a, shared.bytes(), partial.as<Acc>(), running.as<Acc>(), blk);
    });
  });
  if (with_input_grad) close(grad_input, pr.grad_input, tol, "grad_input", c, tm, tn, el.kName);
  close(grad_offset, pr.grad_offset, tol, with_input_grad ? "grad_offset" : "grad_offset without grad_input", c, tm,
        tn, el.kName);
}

template <class Math, class T, class Acc, class Launches>
void check_weight_grad(const Problem<Acc>& pr, const Elements<T, Acc>& el, double tol, int64_t splits,
                       Launches&& launches, int tm, int tn) {
  const Case& c = pr.c;
  const int64_t HW = c.height * c.width, rows = c.channels * c.taps, O = c.out_channels;
  std::vector<Acc> partial(splits * rows * O, std::numeric_limits<Acc>::quiet_NaN());
  const WeightGradArgs<T, Acc> a{el.grad_out.data(), el.input.data(), {pr.low.data(), pr.frac.data(), nullptr},
                                 partial.data(), c.batch, c.channels, O, c.taps, HW, pr.high_step(), splits};
  launches([&](auto tm_, auto tn_, auto rest, int64_t tiles) {
    constexpr int TM = decltype(tm_)::value, TN = decltype(tn_)::value;
    Shared shared(SharedTile<Math, TM, TN>::bytes);
    launch({ceil_div(rows, Tile<TM, TN>::kRows), tiles, splits}, {&shared}, [&](const HostBlock& blk) {
      weight_grad_tile<Math, T, Acc, TM, TN, decltype(rest)::value>(a, shared.bytes(), blk);
    });
  });
  std::vector<Acc> grad_weight(pr.grad_weight.size(), Acc(0));
  for (int64_t s = 0; s < splits; ++s)
    for (int64_t k = 0; k < c.taps; ++k)
      for (int64_t ch = 0; ch < c.channels; ++ch)
        for (int64_t o = 0; o < O; ++o)
          grad_weight[(o * c.channels + ch) * c.taps + k] += partial[((s * c.channels + ch) * c.taps + k) * O + o];
  close(grad_weight, pr.grad_weight, tol, "grad_weight", c, tm, tn, el.kName);
}

// The CPU backward split into channel groups (more workers than strips of one parity; serial_for runs
// the workers one after another) against the unsplit one.
template <class T>
void check_cpu_channel_groups(const Problem<T>& pr, double tol) {
  std::vector<T> grad_input(pr.grad_input.size()), grad_offset(pr.grad_offset.size()), grad_weight(pr.grad_weight.size());
  dsconv2d_backward_cpu<T>(pr.grad_out.data(), pr.input.data(), pr.offset.data(), pr.weight.data(), grad_input.data(),
                           grad_offset.data(), grad_weight.data(), pr.shape, 5, naive_gemm<T>, serial_for);
  close(grad_input, pr.grad_input, tol, "cpu grouped grad_input", pr.c, 0, 0);
  close(grad_offset, pr.grad_offset, tol, "cpu grouped grad_offset", pr.c, 0, 0);
  close(grad_weight, pr.grad_weight, tol, "cpu grouped grad_weight", pr.c, 0, 0);
}

// The CPU backward asked for some of its gradients (null pointers for the others): each one it returns is
// bit for bit the one the full backward returns.
template <class T>
void check_cpu_output_mask(const Problem<T>& pr) {
  std::vector<T> full[3] = {std::vector<T>(pr.grad_input.size()), std::vector<T>(pr.grad_offset.size()),
                            std::vector<T>(pr.grad_weight.size())};
  dsconv2d_backward_cpu<T>(pr.grad_out.data(), pr.input.data(), pr.offset.data(), pr.weight.data(), full[0].data(),
                           full[1].data(), full[2].data(), pr.shape, 5, naive_gemm<T>, serial_for);
  const char* names[] = {"grad_input", "grad_offset", "grad_weight"};
  for (int mask = 0; mask < 7; ++mask) {  // 7 = all three: the full run
    std::vector<T> part[3];
    T* data[3] = {nullptr, nullptr, nullptr};
    for (int i = 0; i < 3; ++i)
      if (mask & (1 << i)) {
        part[i].assign(full[i].size(), std::numeric_limits<T>::quiet_NaN());
        data[i] = part[i].data();
      }
    dsconv2d_backward_cpu<T>(pr.grad_out.data(), pr.input.data(), pr.offset.data(), pr.weight.data(), data[0],
                             data[1], data[2], pr.shape, 5, naive_gemm<T>, serial_for);
    for (int i = 0; i < 3; ++i)
      if (data[i] && std::memcmp(part[i].data(), full[i].data(), full[i].size() * sizeof(T)) != 0) {
        std::fprintf(stderr, "cpu %s with output mask %d differs from the full backward's; case C=%lld %lldx%lld "
                     "K=%lld morph=%d\n", names[i], mask, (long long)pr.c.channels, (long long)pr.c.height,
                     (long long)pr.c.width, (long long)pr.c.taps, pr.c.morph);
        ++failures;
      }
  }
}

// Every worker of the CPU core on its own std::thread (the extension runs them on OpenMP's threads).
void threaded_for(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
  std::vector<std::thread> threads;
  for (int64_t worker = 0; worker < n; ++worker) threads.emplace_back(body, worker, worker + 1);
  for (auto& thread : threads) thread.join();
}

template <class T>
bool same(const std::vector<T>& got, const std::vector<T>& want, const char* what, const Case& c, int64_t threads) {
  if (std::memcmp(got.data(), want.data(), want.size() * sizeof(T)) == 0) return true;
  std::fprintf(stderr, "cpu %s on %lld real threads differs from the same work run serially; case C=%lld %lldx%lld "
               "K=%lld morph=%d\n", what, (long long)threads, (long long)c.channels, (long long)c.height,
               (long long)c.width, (long long)c.taps, c.morph);
  ++failures;
  return false;
}

// The CPU core with its workers on concurrent threads against the same work list run serially: bit for
// bit, since workers own disjoint outputs (tiles; strips of one parity; channel groups) and add their
// private weight gradients in worker order. Two workers writing one element may lose updates here, and
// always make the ThreadSanitizer build (RETINA_TSAN) report a race.
template <class T>
void check_cpu_threads(const Case& c, uint32_t seed) {
  const Problem<T> pr(c, seed);
  for (int64_t threads : {2, 3, 8}) {
    std::vector<std::vector<T>> results[2];
    for (int run = 0; run < 2; ++run) {
      const ParallelFor& parallel_for = run == 0 ? ParallelFor(serial_for) : ParallelFor(threaded_for);
      std::vector<T> out(pr.out.size()), grad_input(pr.grad_input.size()), grad_offset(pr.grad_offset.size()),
          grad_weight(pr.grad_weight.size());
      dsconv2d_forward_cpu<T>(pr.input.data(), pr.offset.data(), pr.weight.data(), pr.bias.data(), out.data(),
                              pr.shape, threads, naive_gemm<T>, parallel_for);
      dsconv2d_backward_cpu<T>(pr.grad_out.data(), pr.input.data(), pr.offset.data(), pr.weight.data(),
                               grad_input.data(), grad_offset.data(), grad_weight.data(), pr.shape, threads,
                               naive_gemm<T>, parallel_for);
      // Without the input gradient (no scatter, the same units).
      std::vector<T> alone_offset(pr.grad_offset.size()), alone_weight(pr.grad_weight.size());
      dsconv2d_backward_cpu<T>(pr.grad_out.data(), pr.input.data(), pr.offset.data(), pr.weight.data(), nullptr,
                               alone_offset.data(), alone_weight.data(), pr.shape, threads, naive_gemm<T>,
                               parallel_for);
      results[run] = {out, grad_input, grad_offset, grad_weight, alone_offset, alone_weight};
    }
    const char* names[] = {"out", "grad_input", "grad_offset", "grad_weight", "grad_offset (alone)",
                           "grad_weight (alone)"};
    for (int i = 0; i < 6; ++i) same(results[1][i], results[0][i], names[i], c, threads);
  }
}

// The tile choice: fewest kGrid-wide slices covering the extent, at most 4 (dsconv_cuda_tiles.h).
static_assert(tile_slices(1) == 1 && tile_slices(16) == 1 && tile_slices(17) == 2 && tile_slices(32) == 2 &&
              tile_slices(33) == 4 && tile_slices(64) == 4 && tile_slices(65) == 4 && tile_slices(72) == 4 &&
              tile_slices(216) == 4, "tile_slices");
// How channels are covered: in the gradients, 64-wide tiles and a 16- or 32-wide rest tile for up to 32
// channels left over (channel_tiles); in the forward, tiles of one width (whole_tiles).
constexpr bool same(ChannelTiles t, int slices, int64_t count, int rest_slices) {
  return t.slices == slices && t.count == count && t.rest_slices == rest_slices;
}
constexpr bool covers(int64_t extent, int slices, int64_t count, int rest_slices) {
  return same(channel_tiles(extent), slices, count, rest_slices);
}
static_assert(same(whole_tiles(0), 1, 0, 0) && same(whole_tiles(3), 1, 1, 0) && same(whole_tiles(20), 2, 1, 0) &&
                  same(whole_tiles(64), 4, 1, 0) && same(whole_tiles(72), 4, 2, 0) && same(whole_tiles(216), 4, 4, 0),
              "whole_tiles");
static_assert(covers(3, 1, 1, 0) && covers(20, 2, 1, 0) && covers(64, 4, 1, 0) && covers(65, 4, 1, 1) &&
                  covers(72, 4, 1, 1) && covers(96, 4, 1, 2) && covers(97, 4, 2, 0) && covers(128, 4, 2, 0) &&
                  covers(144, 4, 2, 1) && covers(216, 4, 3, 2) && covers(250, 4, 4, 0),
              "channel_tiles");
static_assert(rest_tile_first(72) == 64 && rest_tile_first(144) == 128 && rest_tile_first(216) == 192,
              "rest_tile_first");

// One tile shape over every channel, with one product: the tiles dsconv_cuda.cu launches for one choice
// of slices (whatever the case's channels, which only decide the choice on the GPU).
template <class Math, int Slices, class T, class Acc>
void check_slices(const Problem<Acc>& pr, const Elements<T, Acc>& el, double tol, int64_t splits) {
  constexpr int pm = pixel_tile_tm(Slices), pn = pixel_tile_tn(Slices);
  constexpr int wm = weight_tile_tm(Slices), wn = weight_tile_tn(Slices);
  const Case& c = pr.c;
  check_forward<Math>(pr, el, tol, every_channel_in<pm, pn>(c.out_channels, Tile<pm, pn>::kRows), pm, pn);
  check_input_grad<Math>(pr, el, tol, every_channel_in<pm, pn>(c.channels, Tile<pm, pn>::kRows), pm, pn);
  check_weight_grad<Math>(pr, el, tol, splits, every_channel_in<wm, wn>(c.out_channels, Tile<wm, wn>::kCols), wm, wn);
}

// What dsconv_cuda.cu launches for the case's channels, rest tiles included; checked where the case has
// a rest tile (otherwise the launches are check_slices' for one choice). The forward has no rest tiles;
// its launch is checked on the same cases.
template <class Math, class T, class Acc>
void check_launch_plan(const Problem<Acc>& pr, const Elements<T, Acc>& el, double tol, int64_t splits) {
  const Case& c = pr.c;
  if (channel_tiles(c.out_channels).rest_slices > 0) {
    auto forward_plan = [&](auto&& run) {
      with_forward_tile(c.out_channels, [&](auto tm, auto tn, int64_t tiles) { run(tm, tn, std::false_type{}, tiles); });
    };
    check_forward<Math>(pr, el, tol, forward_plan, 0, 0);
    check_weight_grad<Math>(pr, el, tol, splits, [&](auto&& run) { for_each_weight_grad_launch(c.out_channels, run); },
                            0, 0);
  }
  if (channel_tiles(c.channels).rest_slices > 0) {
    auto plan = [&](auto&& run) {
      with_input_grad_tile(c.channels, [&](auto tm, auto tn, auto rest_tm) { run(tm, tn, rest_tm, int64_t(1)); });
    };
    check_input_grad<Math>(pr, el, tol, plan, 0, 0);
    check_input_grad<Math>(pr, el, tol, plan, 0, 0, /*with_input_grad=*/false);
  }
}

// Every tile shape dsconv_cuda.cu can choose, and its launches for this case, with one product.
template <class Math, class T, class Acc>
void check_tiles(const Problem<Acc>& pr, const Elements<T, Acc>& el, double tol) {
  check_slices<Math, 1>(pr, el, tol, 1);
  check_slices<Math, 2>(pr, el, tol, 3);
  check_slices<Math, 4>(pr, el, tol, 2);
  check_launch_plan<Math>(pr, el, tol, 2);
}

template <class T>
void check_case(const Case& c, uint32_t seed, double tol) {
  Problem<T> pr(c, seed);
  check_cpu_channel_groups(pr, tol);
  check_cpu_output_mask(pr);
  check_tiles<SimtMath<T>>(pr, Elements<T, T>(pr), tol);
  if constexpr (std::is_same_v<T, float>) {
    check_tiles<TensorMath<EmulatedMma<16>>>(pr, Elements<T, T>(pr), tol);  // the 16-bit types' product
    // float32 as TF32: each operand keeps 11 significant bits, so a product is off by up to 2^-10 of
    // itself; over the sums here that is within 2e-3 of the largest result.
    check_tiles<TensorMath<EmulatedMma<8, true>>>(pr, Elements<T, T>(pr), 2e-3);
    // bfloat16 elements summed in float: on the tensor cores, and on the CUDA cores as GPUs before sm_80
    // run them. Inputs are bfloat16 values, so the CPU core's float results are the reference.
    const Problem<float> bf16_values(c, seed, true);
    const Elements<HostBf16, float> bf16(bf16_values);
    check_tiles<TensorMath<EmulatedMma<16>>>(bf16_values, bf16, tol);
    check_tiles<SimtMath<float>>(bf16_values, bf16, tol);
  }
}

}  // namespace

// `test_dsconv_tiles --cpu-threads` runs only the CPU core's threading check (the ThreadSanitizer build
// runs that: the emulated 256-thread blocks would take many minutes under it).
int main(int argc, char** argv) {
  const bool cpu_threads_only = argc > 1 && std::strcmp(argv[1], "--cpu-threads") == 0;
  const Case cases[] = {
      // batch, C, O, H, W, K, morph, scope, spread
      {2, 5, 7, 11, 13, 9, 0, 1.0, 1.0},
      {2, 5, 7, 11, 13, 9, 1, 1.0, 1.0},
      {1, 37, 70, 9, 7, 5, 0, 3.0, 1.0},    // partial row tiles (C, O not multiples of 16/32/64)
      {1, 37, 70, 9, 7, 5, 1, 3.0, 1.0},
      {3, 1, 20, 6, 17, 3, 1, 2.0, 4.0},    // one input channel; offsets far outside the image
      {1, 3, 2, 1, 19, 7, 0, 1.0, 2.0},     // one row thick: the two lines coincide
      {1, 3, 2, 19, 1, 7, 1, 1.0, 2.0},
      {1, 3, 2, 19, 1, 7, 0, 1.0, 2.0},     // one column wide, snake along it (both strides are 1)
      {1, 3, 2, 1, 19, 7, 1, 1.0, 2.0},
      {2, 18, 33, 12, 12, 11, 0, 3.0, 1.0},
      {2, 144, 72, 5, 7, 11, 1, 3.0, 1.0},  // S3-OCTA's widths: 64-wide tiles and 16-wide rest tiles
      {1, 90, 88, 6, 5, 7, 0, 2.0, 1.5},    // 32-wide rest tiles (26 and 24 channels left over)
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    if (cpu_threads_only) break;
    check_case<double>(c, seed, 1e-11);
    check_case<float>(c, seed, 2e-5);
    ++seed;
  }
  // Several 16-wide strips across the snake, so each parity runs strips side by side (and, with 8
  // workers, channel groups); 64 across: strips end exactly at the image's edge. From 8 channels the
  // samples are channels-last (the input and its gradient transposed by the workers too).
  const Case threaded[] = {
      {2, 6, 5, 9, 70, 9, 0, 2.0, 2.0},
      {2, 6, 5, 70, 9, 9, 1, 2.0, 2.0},
      {1, 3, 4, 5, 64, 11, 0, 3.0, 1.0},
      {2, 12, 5, 9, 70, 9, 0, 2.0, 2.0},
      {1, 19, 4, 70, 9, 9, 1, 2.0, 2.0},
  };
  for (const Case& c : threaded) {
    check_cpu_threads<double>(c, seed);
    check_cpu_threads<float>(c, seed);
    ++seed;
  }
  if (failures) {
    std::fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  std::puts(cpu_threads_only ? "dsconv cpu threads: all checks passed" : "dsconv tiles: all checks passed");
  return 0;
}
