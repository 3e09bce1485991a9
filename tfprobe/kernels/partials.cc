// tfprobe's per-step partials of one activation in a single pass over it.
//
// The same numbers as tfprobe.kernels.graph.sums_and_maxes (and, optionally,
// tfprobe.kernels.graph.histogram of the sampled rows), computed by reading
// every value once instead of once per statistic. The layout of the outputs
// (the order of the sum fields, the histogram buckets) comes from attrs set
// by tfprobe/kernels/native.py, so the contract stays in tfprobe/metadata.py
// and tfprobe/kernels/stats.py.
//
// Work is split over whole rows (examples) on TensorFlow's intra-op thread
// pool; each shard keeps its own accumulators and merges them once. Vectors
// are as wide as the CPU's (AVX-512, AVX2 or 4 lanes), chosen at compile time.
//
// Sums are float32 within blocks of kBlock values (kBlock / vector width per
// lane) and float64 across blocks, and sums of x and x**2 are taken about the
// mean of the row's first kBlock values, shifted back in float64 (graph.shifted_row_sums): the rounding
// error does not grow with the size of the tensor nor with its mean.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfprobe {
namespace {

using int64 = int64_t;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr uint32_t kExpMask = 0x7f800000u;  // bits of +inf; larger magnitudes are NaN
constexpr int64 kBlock = 256;                // values summed in float lanes before adding to double
constexpr int64 kHistogramValues = 16384;    // values counted into a histogram at a time, at least

enum Field { kSteps, kCount, kFinite, kSum, kSumsq, kSumAbs, kZeros, kNear, kNan, kInfs, kHoyerSum, kHoyerN, kSaturated, kNumFields };
const char* const kFieldNames[kNumFields] = {"steps", "count", "finite", "sum", "sumsq", "sum_abs", "zeros",
                                             "near", "nan", "inf", "hoyer_sum", "hoyer_n", "saturated"};

inline uint32_t Bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

struct Params {
  float near_zero, sat_low, sat_high;
  int64 units;  // 0: no per-unit maxima
  int64 sample_rows;
  bool stats, histogram, gradient;
  int hist_min_exp, hist_max_exp, hist_zero, num_buckets;
};

// What one shard of rows contributes.
struct Acc {
  double f[kNumFields] = {0};
  float max = -kInf, neg_min = -kInf;
  std::vector<uint32_t> unit;     // bits of max|x| per unit (non-negative floats order like their bits)
  std::vector<int64> hist;        // num_buckets + 1 (the last one takes NaN and is dropped)

  void Merge(const Acc& o) {
    for (int i = 0; i < kNumFields; ++i) f[i] += o.f[i];
    max = std::max(max, o.max);
    neg_min = std::max(neg_min, o.neg_min);
    for (size_t i = 0; i < unit.size(); ++i) unit[i] = std::max(unit[i], o.unit[i]);
    for (size_t i = 0; i < hist.size(); ++i) hist[i] += o.hist[i];
  }
};

// GCC/Clang vector extensions, as wide as the target's vectors (AVX-512: 16 floats; AVX: 8; SSE, NEON: 4).
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
typedef float VF __attribute__((vector_size(kVectorBytes)));
typedef int32_t VI __attribute__((vector_size(kVectorBytes)));
typedef uint32_t VU __attribute__((vector_size(kVectorBytes)));
typedef double VD __attribute__((vector_size(2 * kVectorBytes)));  // float32 lanes widened
constexpr int kW = kVectorBytes / 4;
// Functions take and return VD by pointer: by value, a VD wider than the target's vectors has its own ABI.

inline VF Load(const float* x) {
  VF v;
  std::memcpy(&v, x, sizeof(v));
  return v;
}
inline VF Select(VI mask, VF a, VF b) { return (VF)(((VI)a & mask) | ((VI)b & ~mask)); }
inline VI SelectI(VI mask, VI a, VI b) { return (a & mask) | (b & ~mask); }
// a > b ? a : b and a < b ? a : b per lane, in one instruction where the target has it (x86's max and min are
// exactly these, NaN included): the Select forms chain a compare and two logic ops on the previous value.
inline VF Max(VF a, VF b) {
#if defined(__AVX512F__)
  return (VF)_mm512_max_ps((__m512)a, (__m512)b);
#elif defined(__AVX__)
  return (VF)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return Select(a > b, a, b);
#endif
}
inline VF Min(VF a, VF b) {
#if defined(__AVX512F__)
  return (VF)_mm512_min_ps((__m512)a, (__m512)b);
#elif defined(__AVX__)
  return (VF)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return Select(a < b, a, b);
#endif
}
inline VI MaxI(VI a, VI b) {
#if defined(__AVX512F__)
  return (VI)_mm512_max_epi32((__m512i)a, (__m512i)b);
#elif defined(__AVX2__)
  return (VI)_mm256_max_epi32((__m256i)a, (__m256i)b);
#else
  return SelectI(a > b, a, b);
#endif
}
// The lanes' total, in double: lanes hold float32 block sums or int32 counts.
template <typename V>
inline double Sum(V v) {
  double s = 0;
  for (int l = 0; l < kW; ++l) s += v[l];
  return s;
}

// Sums and counts of one row (one example), before they are finished in double.
struct Row {
  double d = 0, dd = 0, l1 = 0, fin = 0, nan = 0, zero = 0, near = 0, sat = 0;  // d, dd: of x - k and (x - k)**2
  float mx = -kInf, mn = kInf;
};

// Adds the float32 lane sums of one block to the double ones.
inline void AddBlock(VF d, VF dd, VF a, VD* sd, VD* sdd, VD* sa) {
  *sd += __builtin_convertvector(d, VD);
  *sdd += __builtin_convertvector(dd, VD);
  *sa += __builtin_convertvector(a, VD);
}

// The shift of a row's sums of x and x**2: the mean of the finite values among its first kBlock (0 if none).
float RowShift(const float* x, int64 m) {
  double s = 0;
  int64 n = 0;
  for (int64 j = 0; j < std::min(m, kBlock); ++j) {
    if ((Bits(x[j]) & 0x7fffffffu) < kExpMask) {
      s += x[j];
      ++n;
    }
  }
  return n > 0 ? static_cast<float>(s / n) : 0.0f;
}

// Adds a row summed about k to a shard (shifted back in double), with the example's Hoyer sparsity.
// Adds a row's vector lanes (sums, counts, extremes) to the row's scalar partials.
inline void AddLanes(VD sd, VD sdd, VD sa, VI azero, VI anear, VI asat, VF vmx, VF vmn, Row* r) {
  r->d += Sum(sd);
  r->dd += Sum(sdd);
  r->l1 += Sum(sa);
  r->zero += Sum(azero);
  r->near += Sum(anear);
  r->sat += Sum(asat);
  for (int l = 0; l < kW; ++l) {
    r->mx = std::max(r->mx, vmx[l]);
    r->mn = std::min(r->mn, vmn[l]);
  }
}

void AddRow(const Row& r, int64 m, float shift, bool hoyer, Acc* acc) {
  const double k = shift, s = r.d + r.fin * k;
  // Within what the L1 norm allows, l1**2 / n <= sq <= l1**2, as stats._within_l1_bounds: float32 squares of
  // values under ~1e-19 flush to zero and the shifted sums cancel to noise.
  const double l1_sq = r.l1 * r.l1;
  const double sq = std::min(std::max(r.dd + 2.0 * k * r.d + r.fin * k * k, r.fin > 0 ? l1_sq / r.fin : 0.0), l1_sq);
  double* f = acc->f;
  f[kFinite] += r.fin;
  f[kSum] += s;
  f[kSumsq] += sq;
  f[kSumAbs] += r.l1;
  f[kZeros] += r.zero;
  f[kNear] += r.near;
  f[kNan] += r.nan;
  f[kInfs] += m - r.fin - r.nan;
  f[kSaturated] += r.sat;
  if (hoyer && r.fin > 1) {  // Hoyer sparsity of the example (1 for an all-zero one)
    const double sqrt_m = std::sqrt(r.fin), l2 = std::sqrt(sq);
    f[kHoyerSum] += l2 > 0 ? (sqrt_m - r.l1 / l2) / (sqrt_m - 1.0) : 1.0;
    f[kHoyerN] += 1;
  }
  acc->max = std::max(acc->max, r.mx);
  acc->neg_min = std::max(acc->neg_min, -r.mn);
}

inline void MaxUnits(VI a, int64 u, uint32_t* unit) {
  VI cur;
  std::memcpy(&cur, unit + u, sizeof(cur));
  cur = MaxI(cur, a);
  std::memcpy(unit + u, &cur, sizeof(cur));
}

// Every statistic of a row whose values are all finite, in one pass of about a dozen vector ops per vector.
// Returns false if a value is NaN or Inf (the sums are then not finite); the caller redoes the row with
// MaskedRow. With kUnits (units a multiple of kW), it also folds max|x| per unit as float bits, where NaN
// and Inf are larger than any finite value, as the per-unit maxima need.
template <bool kBounded, bool kUnits>
bool FastRow(const float* x, int64 m, float k, const Params& p, int64 units, Row* r, uint32_t* unit) {
  const VF vk = VF{} + k, nz = VF{} + p.near_zero, lo = VF{} + p.sat_low, hi = VF{} + p.sat_high;
  const VI abs_mask = VI{} + 0x7fffffff;
  VF vmx = VF{} - kInf, vmn = VF{} + kInf;
  int64 u = 0;
  VD sd{}, sdd{}, sa{};         // block sums, in double
  VI azero{}, anear{}, asat{};  // comparisons give -1: subtracting counts
  for (int64 c0 = 0; c0 < m; c0 += kBlock) {
    const int64 c1 = std::min(m, c0 + kBlock);
    VF ad{}, add{}, aa{};
    int64 j = c0;
    for (; j + kW <= c1; j += kW) {
      const VF v = Load(x + j);
      const VF dv = v - vk;
      const VI abits = (VI)v & abs_mask;
      const VF a = (VF)abits;
      ad += dv;
      add += dv * dv;
      aa += a;
      azero -= v == 0.0f;
      anear -= a <= nz;
      if (kBounded) asat -= (v <= lo) | (v >= hi);
      vmx = Max(vmx, v);
      vmn = Min(vmn, v);
      if (kUnits) {
        MaxUnits(abits, u, unit);
        u += kW;
        if (u == units) u = 0;
      }
    }
    AddBlock(ad, add, aa, &sd, &sdd, &sa);
    for (; j < c1; ++j) {  // the tail, one value at a time, in double
      const float v = x[j], dv = v - k, a = std::fabs(v);
      r->d += dv;
      r->dd += static_cast<double>(dv) * dv;
      r->l1 += a;
      r->zero += v == 0.0f;
      r->near += a <= p.near_zero;
      r->sat += kBounded && (v <= p.sat_low || v >= p.sat_high);
      vmx[0] = std::max(vmx[0], v);
      vmn[0] = std::min(vmn[0], v);
    }
  }
  AddLanes(sd, sdd, sa, azero, anear, asat, vmx, vmn, r);
  r->fin = m;
  return std::isfinite(r->d) && std::isfinite(r->dd);
}

// Every statistic of a row over its finite values; NaN and Inf are counted, not summed. Its loop scaffolding
// repeats FastRow's on purpose: merging them would put the masking in the fast path's inner loop.
void MaskedRow(const float* x, int64 m, float k, const Params& p, Row* r) {
  const VF vk = VF{} + k, nz = VF{} + p.near_zero, lo = VF{} + p.sat_low, hi = VF{} + p.sat_high;
  const VF pinf = VF{} + kInf, ninf = VF{} - kInf;
  const VI abs_mask = VI{} + 0x7fffffff, exp_mask = VI{} + static_cast<int32_t>(kExpMask);
  *r = Row();
  VF vmx = ninf, vmn = pinf;
  VD sd{}, sdd{}, sa{};
  VI afin{}, anan{}, azero{}, anear{}, asat{};
  for (int64 c0 = 0; c0 < m; c0 += kBlock) {
    const int64 c1 = std::min(m, c0 + kBlock);
    VF ad{}, add{}, aa{};
    int64 j = c0;
    for (; j + kW <= c1; j += kW) {
      const VF v = Load(x + j);
      const VI mag = (VI)v & abs_mask;  // |v|'s bits; as signed ints, NaN > +inf
      const VI f = mag < exp_mask;
      const VF dv = (VF)((VI)(v - vk) & f);
      const VF a = (VF)(mag & f);
      ad += dv;
      add += dv * dv;
      aa += a;
      afin -= f;
      anan -= mag > exp_mask;
      azero -= v == 0.0f;
      anear -= f & (a <= nz);
      asat -= f & ((v <= lo) | (v >= hi));
      vmx = Select((vmx > v) | ~f, vmx, v);
      vmn = Select((vmn < v) | ~f, vmn, v);
    }
    AddBlock(ad, add, aa, &sd, &sdd, &sa);
    for (; j < c1; ++j) {
      const float v = x[j];
      const uint32_t mag = Bits(v) & 0x7fffffffu;
      const bool f = mag < kExpMask;
      const float a = f ? std::fabs(v) : 0.0f;
      const float dv = f ? v - k : 0.0f;
      r->d += dv;
      r->dd += static_cast<double>(dv) * dv;
      r->l1 += a;
      r->fin += f;
      r->nan += mag > kExpMask;
      r->zero += v == 0.0f;
      r->near += f && a <= p.near_zero;
      r->sat += f && (v <= p.sat_low || v >= p.sat_high);
      if (f) {
        vmx[0] = std::max(vmx[0], v);
        vmn[0] = std::min(vmn[0], v);
      }
    }
  }
  r->fin += Sum(afin);
  r->nan += Sum(anan);
  AddLanes(sd, sdd, sa, azero, anear, asat, vmx, vmn, r);
}

// max|x| per unit, as float bits clamped at +inf: a NaN or Inf keeps its unit alive.
void UnitRow(const float* x, int64 m, int64 units, uint32_t* unit) {
  for (int64 j = 0; j < m; j += units) {
    const float* r = x + j;
    for (int64 u = 0; u < units; ++u) unit[u] = std::max(unit[u], Bits(r[u]) & 0x7fffffffu);
  }
}

// Extremes of a row outside the sample; false if a value is NaN or Inf (then ExtremesMaskedRow).
bool ExtremesFastRow(const float* x, int64 m, Row* r) {
  VF vmx = VF{} - kInf, vmn = VF{} + kInf, check{};
  int64 j = 0;
  for (; j + kW <= m; j += kW) {
    const VF v = Load(x + j);
    check += v * 0.0f;  // NaN once any value is NaN or Inf
    vmx = Max(vmx, v);
    vmn = Min(vmn, v);
  }
  float c = Sum(check);
  for (; j < m; ++j) {
    c += x[j] * 0.0f;
    vmx[0] = std::max(vmx[0], x[j]);
    vmn[0] = std::min(vmn[0], x[j]);
  }
  for (int l = 0; l < kW; ++l) {
    r->mx = std::max(r->mx, vmx[l]);
    r->mn = std::min(r->mn, vmn[l]);
  }
  return c == 0.0f;
}

void ExtremesMaskedRow(const float* x, int64 m, Row* r) {
  *r = Row();
  for (int64 j = 0; j < m; ++j) {
    const uint32_t mag = Bits(x[j]) & 0x7fffffffu;
    r->nan += mag > kExpMask;
    if (mag < kExpMask) {
      r->fin += 1;
      r->mx = std::max(r->mx, x[j]);
      r->mn = std::min(r->mn, x[j]);
    }
  }
}

// Extremes, units and NaN/Inf counts of a row outside the sample (its sums are not taken).
void ExtremesRow(const float* x, int64 m, int64 units, Acc* acc) {
  Row r;
  if (ExtremesFastRow(x, m, &r)) {
    r.fin = m;
  } else {
    ExtremesMaskedRow(x, m, &r);
  }
  acc->f[kNan] += r.nan;
  acc->f[kInfs] += m - r.fin - r.nan;
  acc->max = std::max(acc->max, r.mx);
  acc->neg_min = std::max(acc->neg_min, -r.mn);
  if (units > 0) UnitRow(x, m, units, acc->unit.data());
}

// Every statistic of a row of the sample.
template <bool kBounded>
void FullRow(const float* x, int64 m, const Params& p, Acc* acc) {
  Row r;
  const int64 units = p.units;
  const bool fused = units > 0 && units % kW == 0;
  const float k = RowShift(x, m);
  const bool finite = fused ? FastRow<kBounded, true>(x, m, k, p, units, &r, acc->unit.data())
                            : FastRow<kBounded, false>(x, m, k, p, units, &r, nullptr);
  if (!finite) MaskedRow(x, m, k, p, &r);
  if (units > 0 && !fused) UnitRow(x, m, units, acc->unit.data());
  AddRow(r, m, k, true, acc);
}

// What an activation gradient's statistics read of a row of the sample (tfprobe.backward.statistics): sums of
// x**2 (not shifted: its terms do not cancel) and |x|, zeros, NaN/Inf counts and max|x| (r->mx, -r->mn), about
// half the vector ops of FastRow. kMasked counts NaN and Inf and leaves them out; without it, returns false if
// a value is NaN or Inf (max|x|'s bits reach +inf's), and the caller redoes the row masked.
template <bool kMasked>
bool GradientRow(const float* x, int64 m, Row* r) {
  const VI abs_mask = VI{} + 0x7fffffff, exp_mask = VI{} + static_cast<int32_t>(kExpMask);
  *r = Row();
  VD sdd{}, sa{};
  VI amax{}, azero{}, afin{}, anan{};  // amax: |x|'s bits, which order as the values
  uint32_t tail_max = 0;
  // Two sets of float lanes: one would chain every vector on the previous add's latency.
  auto step = [&](const float* at, VF* add, VF* aa) {
    VI mag = (VI)Load(at) & abs_mask;
    azero -= mag == 0;
    if (kMasked) {
      const VI f = mag < exp_mask;
      afin -= f;
      anan -= mag > exp_mask;
      mag &= f;
    }
    const VF a = (VF)mag;
    *aa += a;
    *add += a * a;
    amax = MaxI(amax, mag);
  };
  for (int64 c0 = 0; c0 < m; c0 += kBlock) {
    const int64 c1 = std::min(m, c0 + kBlock);
    VF add0{}, aa0{}, add1{}, aa1{};
    int64 j = c0;
    for (; j + 2 * kW <= c1; j += 2 * kW) {
      step(x + j, &add0, &aa0);
      step(x + j + kW, &add1, &aa1);
    }
    for (; j + kW <= c1; j += kW) step(x + j, &add0, &aa0);
    sdd += __builtin_convertvector(add0, VD) + __builtin_convertvector(add1, VD);
    sa += __builtin_convertvector(aa0, VD) + __builtin_convertvector(aa1, VD);
    for (; j < c1; ++j) {
      uint32_t mag = Bits(x[j]) & 0x7fffffffu;
      r->zero += mag == 0;
      if (kMasked) {
        r->fin += mag < kExpMask;
        r->nan += mag > kExpMask;
        mag = mag < kExpMask ? mag : 0;
      }
      float a;
      std::memcpy(&a, &mag, sizeof(a));
      r->dd += static_cast<double>(a) * a;
      r->l1 += a;
      tail_max = std::max(tail_max, mag);
    }
  }
  r->dd += Sum(sdd);
  r->l1 += Sum(sa);
  r->zero += Sum(azero);
  r->fin = kMasked ? r->fin + Sum(afin) : m;
  r->nan += Sum(anan);
  for (int l = 0; l < kW; ++l) tail_max = std::max(tail_max, static_cast<uint32_t>(amax[l]));
  if (!kMasked && tail_max >= kExpMask) return false;
  float a;
  std::memcpy(&a, &tail_max, sizeof(a));
  r->mx = r->fin > 0 ? a : -kInf;
  r->mn = -r->mx;
  return true;
}

// The gradient statistics' partials of a row of the sample (its other sums stay zero).
void GradientFullRow(const float* x, int64 m, Acc* acc) {
  Row r;
  if (!GradientRow<false>(x, m, &r)) GradientRow<true>(x, m, &r);
  AddRow(r, m, 0.0f, false, acc);
}

// The histogram bucket of a float's bits (stats.histogram): by sign and octave, clamped to the layout's range;
// zero (either sign) has its own bucket, NaN the slot after the last (dropped).
inline int BucketOf(uint32_t bits, const Params& p) {
  const int lo = p.hist_min_exp - 1, hi = p.hist_max_exp, zero = p.hist_zero;
  const uint32_t mag = bits & 0x7fffffffu;
  const int e = std::min(std::max(static_cast<int>(mag >> 23) - 127, lo), hi) - lo;
  const int i = (bits >> 31) ? zero - 1 - e : zero + 1 + e;
  return mag > kExpMask ? p.num_buckets : mag == 0 ? zero : i;
}

// Appends the lanes of `v` whose bit is set in `bits` to `out` (which has room for a whole vector); returns how many.
inline int Compress(VI v, uint32_t bits, int32_t* out) {
#if defined(__AVX512F__)
  _mm512_storeu_si512(out, _mm512_maskz_compress_epi32(bits, (__m512i)v));  // to a register: fast on every AVX-512 CPU
#elif defined(__AVX2__)
  // A permutation per 8-bit mask moves the selected lanes to the front.
  static const auto kPermutations = [] {
    std::vector<int32_t> t(256 * 8);
    for (int k = 0; k < 256; ++k)
      for (int l = 0, n = 0; l < 8; ++l)
        if (k >> l & 1) t[k * 8 + n++] = l;
    return t;
  }();
  const __m256i order = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kPermutations.data() + bits * 8));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permutevar8x32_epi32((__m256i)v, order));
#else
  for (int l = 0, n = 0; l < kW; ++l)
    if (bits >> l & 1) out[n++] = v[l];
#endif
  return __builtin_popcount(bits);
}

// Counts one vector of float bits `b` in the window of 16 octaves from biased exponent `base`: a one at nibble
// (octave & 7) of the accumulator n[2 * negative + (octave >= 8)], zeros into `zeros` (subtracting -1). Returns the
// lanes outside the window that are not zero (smaller, subnormal, larger, NaN, Inf) as bits.
#if defined(__AVX512F__)
// With AVX-512, each accumulator's one comes from a 32-entry table indexed by octave + 16 x negative (one
// two-table permutation each): selecting the accumulator with mask logic instead made the loop twice as slow.
struct OneTables {
  int32_t t[4][32];  // [accumulator][index]: 1 << 4 x (octave & 7) if the index is that accumulator's, else 0
};
constexpr OneTables MakeOneTables() {
  OneTables o{};
  for (int a = 0; a < 4; ++a)
    for (int i = 0; i < 32; ++i) o.t[a][i] = 2 * (i >> 4) + ((i & 15) >> 3) == a ? 1 << (4 * (i & 7)) : 0;
  return o;
}
alignas(64) constexpr OneTables kOnes = MakeOneTables();

inline uint32_t CountVector(VI b, int base, VI* n, VI* zeros) {
  const __m512i v = (__m512i)b, mag = _mm512_and_si512(v, _mm512_set1_epi32(0x7fffffff));
  const __m512i rel = _mm512_sub_epi32(_mm512_srli_epi32(mag, 23), _mm512_set1_epi32(base));
  const __mmask16 in = _mm512_cmple_epu32_mask(rel, _mm512_set1_epi32(15));
  const __m512i index = _mm512_or_si512(rel, _mm512_and_si512(_mm512_srli_epi32(v, 27), _mm512_set1_epi32(16)));
  for (int a = 0; a < 4; ++a) {
    const __m512i low = _mm512_load_si512(kOnes.t[a]), high = _mm512_load_si512(kOnes.t[a] + 16);
    n[a] = (VI)_mm512_add_epi32((__m512i)n[a], _mm512_maskz_permutex2var_epi32(in, low, index, high));
  }
  const __mmask16 zero = _mm512_testn_epi32_mask(mag, mag);
  *zeros = (VI)_mm512_mask_sub_epi32((__m512i)*zeros, zero, (__m512i)*zeros, _mm512_set1_epi32(-1));
  return static_cast<uint16_t>(~(in | zero));
}
#else
inline uint32_t LaneBits(VI mask) {  // one bit per lane of a comparison's result
#if defined(__AVX__)
  return _mm256_movemask_ps((__m256)mask);
#else
  uint32_t bits = 0;
  for (int l = 0; l < kW; ++l) bits |= static_cast<uint32_t>(mask[l] != 0) << l;
  return bits;
#endif
}

inline uint32_t CountVector(VI b, int base, VI* n, VI* zeros) {
  const VI mag = b & 0x7fffffff, rel = (mag >> 23) - base;
  const VI in = (VI)((VU)rel <= 15u);
  const VI one = ((VI{} + 1) << ((rel & 7) << 2)) & in;
  const VI upper = (rel << 28) >> 31, neg = b >> 31;
  n[0] += one & ~(upper | neg);
  n[1] += one & upper & ~neg;
  n[2] += one & ~upper & neg;
  n[3] += one & upper & neg;
  *zeros -= mag == 0;
  return LaneBits(~in & (mag != 0));
}
#endif

// The lowest biased exponent of the 16-octave window that holds the most of a strided sample of `m` values' nonzero
// finite magnitudes, clamped so that NaN and Inf (exponent 255) and zeros and subnormals (0) fall outside it.
int WindowBase(const float* x, int64 m) {
  int counts[256] = {0};
  const int64 stride = std::max<int64>(1, m / 512);
  for (int64 j = 0; j < m; j += stride) ++counts[Bits(x[j]) >> 23 & 0xff];
  counts[0] = counts[255] = 0;
  int best = 1, covered = 0, run = 0;
  for (int e = 1; e < 255; ++e) {
    run += counts[e] - (e >= 17 ? counts[e - 16] : 0);  // the window [e - 15, e]
    if (run > covered) {
      covered = run;
      best = e - 15;
    }
  }
  return std::min(std::max(best, 1), 255 - 16);
}

// Counts `m` values (a row, or several short ones) into `hist`. A value's bucket depends only on its sign and
// octave, and most of a layer's values lie within 16 octaves (a factor 65536) of each other: those are counted
// in the vector lanes, eight 4-bit counters per 32-bit lane (a one shifted by 4 x octave, added to one of four
// accumulators by sign and upper or lower eight octaves), widened to bytes every 15 vectors and to 32-bit lanes
// every 255. Zeros are counted apart; any other value (outside the window, subnormal, NaN, Inf) is set aside
// and bucketed one at a time. 2-3x faster than a table increment per value (benchmarks/RESULTS.md).
void HistogramRow(const float* x, int64 m, const Params& p, int64* hist) {
  constexpr int64 kNibbleSteps = 15;  // vectors before a 4-bit counter may overflow
  constexpr int kByteSteps = 17;      // nibble flushes before a byte may overflow (17 x 15 = 255)
  constexpr int64 kOuter = kByteSteps * kNibbleSteps * kW;
  const VI nibbles = VI{} + 0x0f0f0f0f, byte = VI{} + 0xff;
  const int base = WindowBase(x, m);
  VI wide[32] = {};  // per lane, the count of octave base + 8 * (a & 1) + k, negative if a & 2: wide[8 * a + k]
  VI zeros{};
  int32_t aside[kOuter + kW];  // values set aside in a block (uninitialized: written before read)
  int64 j = 0;
  while (j + kW <= m) {
    const int64 outer_end = j + std::min((m - j) / kW * kW, kOuter);
    int n_aside = 0;
    VI bytes[8] = {};  // accumulator a's even nibbles in bytes[2a], its odd ones in bytes[2a + 1]
    while (j < outer_end) {
      VI n[4] = {};
      for (const int64 stop = std::min(outer_end, j + kNibbleSteps * kW); j < stop; j += kW) {
        const VI b = (VI)Load(x + j);
        const uint32_t out = CountVector(b, base, n, &zeros);
        if (out != 0) n_aside += Compress(b, out, aside + n_aside);
      }
      for (int a = 0; a < 4; ++a) {
        bytes[2 * a] += n[a] & nibbles;
        bytes[2 * a + 1] += (n[a] >> 4) & nibbles;
      }
    }
    for (int a = 0; a < 4; ++a)
      for (int k = 0; k < 8; ++k) wide[8 * a + k] += (bytes[2 * a + (k & 1)] >> (8 * (k >> 1))) & byte;
    for (int i = 0; i < n_aside; ++i) ++hist[BucketOf(static_cast<uint32_t>(aside[i]), p)];
  }
  for (; j < m; ++j) ++hist[BucketOf(Bits(x[j]), p)];
  for (int a = 0; a < 4; ++a)
    for (int k = 0; k < 8; ++k) {
      const uint32_t e = static_cast<uint32_t>(base + ((a & 1) ? 8 : 0) + k);
      hist[BucketOf((e << 23) | ((a & 2) ? 0x80000000u : 0u), p)] += static_cast<int64>(Sum(wide[8 * a + k]));
    }
  hist[p.hist_zero] += static_cast<int64>(Sum(zeros));
}

class PartialsOp : public OpKernel {
 public:
  explicit PartialsOp(OpKernelConstruction* c) : OpKernel(c) {
    std::vector<std::string> fields;
    OP_REQUIRES_OK(c, c->GetAttr("fields", &fields));
    position_.assign(kNumFields, -1);
    for (int i = 0; i < kNumFields; ++i)
      for (size_t j = 0; j < fields.size(); ++j)
        if (fields[j] == kFieldNames[i]) position_[i] = static_cast<int>(j);
    num_sums_ = static_cast<int>(fields.size());
    OP_REQUIRES_OK(c, c->GetAttr("units", &p_.units));
    OP_REQUIRES_OK(c, c->GetAttr("sample_rows", &p_.sample_rows));
    OP_REQUIRES_OK(c, c->GetAttr("near_zero", &p_.near_zero));
    OP_REQUIRES_OK(c, c->GetAttr("bounded", &bounded_));
    OP_REQUIRES_OK(c, c->GetAttr("saturated_below", &p_.sat_low));
    OP_REQUIRES_OK(c, c->GetAttr("saturated_above", &p_.sat_high));
    OP_REQUIRES_OK(c, c->GetAttr("stats", &p_.stats));
    OP_REQUIRES_OK(c, c->GetAttr("gradient", &p_.gradient));
    OP_REQUIRES(c, !p_.gradient || p_.units == 0,
                absl::InvalidArgumentError(absl::StrCat("gradient=true takes no units; got units=", p_.units)));
    OP_REQUIRES_OK(c, c->GetAttr("hist_min_exp", &p_.hist_min_exp));
    OP_REQUIRES_OK(c, c->GetAttr("hist_max_exp", &p_.hist_max_exp));
    OP_REQUIRES_OK(c, c->GetAttr("num_buckets", &p_.num_buckets));
    OP_REQUIRES_OK(c, c->GetAttr("hist_zero_bucket", &p_.hist_zero));
    if (!bounded_) {  // no finite value is saturated
      p_.sat_low = -kInf;
      p_.sat_high = kInf;
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& with_histogram = ctx->input(1);
    const Tensor& with_stats = ctx->input(2);
    // Any rank: the first axis holds the rows (examples), the others their values (a scalar is one row of one).
    const int64 rows = x.dims() == 0 ? 1 : x.dim_size(0), units = p_.units;
    int64 m = 1;
    for (int d = 1; d < x.dims(); ++d) m *= x.dim_size(d);
    OP_REQUIRES(ctx, units == 0 || m % units == 0,
                absl::InvalidArgumentError(
                    absl::StrCat("values per row (", m, ") are not a multiple of units (", units, ")")));
    Params p = p_;
    p.histogram = p.num_buckets > 0 && with_histogram.scalar<bool>()();
    p.stats = p.stats && with_stats.scalar<bool>()();
    const int64 sampled = p.sample_rows < 0 ? rows : std::min(rows, p.sample_rows);
    const float* data = x.flat<float>().data();

    Acc total;
    total.unit.assign(p.stats ? units : 0, 0u);
    total.hist.assign(p.histogram ? p.num_buckets + 1 : 0, 0);
    std::mutex mu;
    auto work = [&](int64 begin, int64 end) {
      Acc acc;
      acc.unit.assign(total.unit.size(), 0u);
      acc.hist.assign(total.hist.size(), 0);
      int64 counted = begin;  // rows before it are in the histogram
      for (int64 r = begin; r < end; ++r) {
        const float* row = data + r * m;
        if (p.stats) {
          if (r >= sampled)
            ExtremesRow(row, m, units, &acc);
          else if (p.gradient)
            GradientFullRow(row, m, &acc);
          else if (bounded_)
            FullRow<true>(row, m, p, &acc);
          else
            FullRow<false>(row, m, p, &acc);
        }
        // A histogram ignores row boundaries: short rows are counted together (a row's setup costs about as much
        // as 2,000 values), long ones right after their statistics, while in cache.
        if (p.histogram && r < sampled && (r + 1 - counted) * m >= kHistogramValues) {
          HistogramRow(data + counted * m, (r + 1 - counted) * m, p, acc.hist.data());
          counted = r + 1;
        }
      }
      if (p.histogram && std::min(end, sampled) > counted)
        HistogramRow(data + counted * m, (std::min(end, sampled) - counted) * m, p, acc.hist.data());
      std::lock_guard<std::mutex> lock(mu);
      total.Merge(acc);
    };
    // Rows outside the sample add only extremes, per-unit maxima and NaN/Inf counts; a histogram covers the sample.
    const int64 work_rows = p.stats ? rows : sampled;
    const int64 cost = m * ((p.stats ? (p.gradient ? 6 : 12) : 0) + (p.histogram ? 8 : 0)) + 1;
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads->num_threads, threads->workers, work_rows, cost, work);

    Tensor* sums = nullptr;
    Tensor* maxes = nullptr;
    Tensor* hist = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({num_sums_}), &sums));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({2 + units}), &maxes));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({p_.num_buckets}), &hist));
    auto s = sums->flat<double>();
    s.setZero();
    if (p.stats) {
      total.f[kSteps] = 1;
      total.f[kCount] = static_cast<double>(sampled) * m;  // of the rows the sums cover
      for (int i = 0; i < kNumFields; ++i)
        if (position_[i] >= 0) s(position_[i]) = total.f[i];
    }
    auto mx = maxes->flat<float>();
    mx(0) = p.gradient ? std::max(total.max, total.neg_min) : total.max;  // gradient: max|x| in both
    mx(1) = p.gradient ? mx(0) : total.neg_min;
    for (int64 u = 0; u < units; ++u) {
      float v = -kInf;  // no rows: nothing seen, as the graph's empty reductions
      if (p.stats && rows > 0) {
        const uint32_t b = std::min(total.unit[u], kExpMask);  // NaN's bits are larger: +inf
        std::memcpy(&v, &b, sizeof(v));
      }
      mx(2 + u) = v;
    }
    auto h = hist->flat<double>();
    for (int i = 0; i < p_.num_buckets; ++i) h(i) = p.histogram ? static_cast<double>(total.hist[i]) : 0.0;
  }

 private:
  Params p_;
  bool bounded_ = false;
  std::vector<int> position_;
  int num_sums_ = 0;
};

}  // namespace

REGISTER_OP("TfprobePartials")
    .Input("x: float")
    .Input("with_histogram: bool")
    .Input("with_stats: bool")  // false: as the attr stats=false (sums zero, maxes -inf), decided at run time
    .Output("sums: double")
    .Output("maxes: float")
    .Output("histogram: double")
    .Attr("fields: list(string)")
    .Attr("units: int >= 0 = 0")
    .Attr("sample_rows: int = -1")
    .Attr("near_zero: float")
    .Attr("bounded: bool = false")
    .Attr("saturated_below: float = 0")  // x <= this is saturated (-inf: one-sided; stats.saturation_thresholds)
    .Attr("saturated_above: float = 0")  // x >= this is saturated (high - margin)
    .Attr("stats: bool = true")
    .Attr("gradient: bool = false")  // only what gradient statistics read: see GradientRow
    .Attr("hist_min_exp: int = 0")
    .Attr("hist_max_exp: int = 0")
    .Attr("hist_zero_bucket: int = 0")
    .Attr("num_buckets: int >= 0 = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      std::vector<std::string> fields;
      int64 units, buckets;
      TF_RETURN_IF_ERROR(c->GetAttr("fields", &fields));
      TF_RETURN_IF_ERROR(c->GetAttr("units", &units));
      TF_RETURN_IF_ERROR(c->GetAttr("num_buckets", &buckets));
      tensorflow::shape_inference::ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 0, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 0, &unused));
      c->set_output(0, c->Vector(static_cast<int64>(fields.size())));
      c->set_output(1, c->Vector(2 + units));
      c->set_output(2, c->Vector(buckets));
      return absl::OkStatus();
    })
    .Doc("tfprobe's partials of one step of one activation, in one pass (see tfprobe/kernels/partials.cc).");

REGISTER_KERNEL_BUILDER(Name("TfprobePartials").Device(tensorflow::DEVICE_CPU), PartialsOp);

}  // namespace tfprobe
