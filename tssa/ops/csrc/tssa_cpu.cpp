// Fused CPU kernels of the non-causal TSSA core (Wu et al., ICLR 2025, Eq. 10-12), forward and
// backward. Python side: tssa/ops/fused_cpu.py, which builds this file at first use.
//
// Layout: every full-size tensor is token-major, (B, N, H, D) contiguous, i.e. the memory behind the
// (B, H, N, D) head split the layer hands the core. One token is a contiguous row of C = H * D values.
//
// Work split: the tokens of each batch element are cut into chunks of `chunk` tokens (the caller
// derives it from the shape only); at::parallel_for runs over the B x K (batch, chunk) pairs. A chunk
// writes its partial sums of every (H, D) or (H,) reduction into its own slot, and the slots are then
// added in chunk order by one thread, so results are bit-identical whatever the thread count.
//
// Precision: per-token arithmetic runs in the input type (float or double). Partial sums over tokens
// are accumulated in the input type over blocks of at most kBlock tokens, then added into float64
// slots; the (H, D) / (H,) statistics are float64. Sums over d (a head's feature row) use kLanes
// fixed lanes combined in a fixed order, which the compiler can vectorise without -ffast-math.
//
// Blocks of tokens: the passes that sum over tokens (forward 1 and 2, backward A and B) run kTok
// consecutive tokens per call of a blocked kernel (the tokens left over one at a time), with the same
// operations in the same order as kTok calls of the one-token kernel, so their bits do not depend on it.
//
// Memory: besides the output (Y or dW) the only token-sized buffers are (B, N, H): the memberships Pi
// kept from forward, and one buffer in backward (dPi1, then overwritten by tau * dS).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TSSA_VECTOR_EXP 1
#endif

namespace {

using at::Tensor;

constexpr int64_t kBlock = 32;  // tokens summed in the input type before joining a float64 slot
constexpr int kLanes = 8;       // independent partial sums of a reduction over d

// The per-token kernels below take every pointer as __restrict__ (no two of them overlap) and the head
// size as a template constant where it is one of the common sizes (KD > 0; KD = 0: the runtime d), so
// that their loops over d compile to straight vector code without runtime alias checks. They run the
// same operations in the same order whatever KD and the instruction set are (no FP contraction: the
// build passes -ffp-contract=off), so results do not depend on either.

// sum_{i < n} a[i] * b[i], with kLanes fixed lanes combined pairwise: a deterministic order.
template <typename T>
inline T lane_dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  T lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) lane[l] += a[i] * b[i];
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

// Runs f(b, k, n0, n1) for every chunk [n0, n1) of every batch element b. With more than one thread,
// each of at::parallel_for's threads takes the next chunk from a shared counter until none is left
// (dynamic scheduling: a thread whose core is busy with other work takes fewer chunks instead of
// holding back a fixed share). Which thread runs a chunk does not change what the chunk computes.
template <typename F>
void for_each_chunk(int64_t B, int64_t N, int64_t step, const F& f) {
  const int64_t K = (N + step - 1) / step, total = B * K;
  auto run = [&](int64_t i) {
    const int64_t b = i / K, k = i % K, n0 = k * step;
    f(b, k, n0, std::min(N, n0 + step));
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), total);
  if (threads <= 1 || at::in_parallel_region()) {
    for (int64_t i = 0; i < total; ++i) run(i);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < total;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      run(i);
    }
  });
}

// out[b, c] = sum_k part[b, k, c], k in chunk order.
void reduce_slots(const double* part, int64_t B, int64_t K, int64_t width, double* out) {
  for (int64_t b = 0; b < B; ++b) {
    double* o = out + b * width;
    std::fill(o, o + width, 0.0);
    for (int64_t k = 0; k < K; ++k) {
      const double* p = part + (b * K + k) * width;
      for (int64_t c = 0; c < width; ++c) o[c] += p[c];
    }
  }
}

// slot[c] += blk[c] in float64, then blk = 0: the end of a block of kBlock tokens.
template <typename T>
inline void flush(T* __restrict__ blk, double* __restrict__ slot, int64_t width) {
  for (int64_t c = 0; c < width; ++c) slot[c] += static_cast<double>(blk[c]);
  std::fill(blk, blk + width, T(0));
}

template <typename T>
std::vector<T> to_vec(const double* p, int64_t n) {
  std::vector<T> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<T>(p[i]);
  return v;
}

void check_inputs(const char* op, const Tensor& w, const Tensor& tau, const std::optional<Tensor>& bias,
                  int64_t chunk) {
  TORCH_CHECK(w.device().is_cpu(), op, ": CPU tensors only, got ", w.device());
  TORCH_CHECK(w.dim() == 4 && w.is_contiguous(), op, ": w_tm must be a contiguous (B, N, H, D) tensor");
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble, op,
              ": float32 or float64 only, got ", w.scalar_type());
  const int64_t N = w.size(1), H = w.size(2);
  TORCH_CHECK(tau.dim() == 1 && tau.size(0) == H && tau.is_contiguous() &&
                  tau.scalar_type() == w.scalar_type() && tau.device() == w.device(),
              op, ": tau must be a contiguous (H,) tensor of w's dtype");
  if (bias.has_value()) {
    const Tensor& bt = *bias;
    TORCH_CHECK(bt.dim() == 2 && bt.size(0) == H && bt.size(1) == N && bt.is_contiguous() &&
                    bt.scalar_type() == w.scalar_type() && bt.device() == w.device(),
                op, ": bias must be a contiguous (H, N) tensor of w's dtype");
  }
  TORCH_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
}

void check_like(const char* op, const char* name, const Tensor& t, at::IntArrayRef shape,
                at::ScalarType dtype) {
  TORCH_CHECK(t.sizes() == shape && t.is_contiguous() && t.scalar_type() == dtype && t.device().is_cpu(),
              op, ": ", name, " must be a contiguous ", dtype, " tensor of shape ", shape, ", got ",
              t.scalar_type(), " ", t.sizes());
}

// ---------------------------------------------------------------------------------------------------
// exp of float32, the memberships' softmax. The kernels' own exp, written out so that no libm decides
// its bits: the algorithm of glibc's expf since 2.28 (Arm's optimized routines) in the form glibc runs
// on CPUs with FMA: x * 32 / ln 2 = k + r, 2^(k/32) from a 32-entry table, 2^(r/32) from a cubic in r,
// in float64, rounded to float32 once. Same algorithm, same constants, same fused multiply-adds, so
// exp_f(x) == std::exp(x) bit for bit where the C library is glibc on an x86-64 CPU with FMA (every
// float32 checked, tssa_cpu::exp_mismatches; before these kernels the softmax called std::exp, so the
// core's results did not change). exp8 computes 8 lanes at once with the same operations (AVX2 + FMA
// build); the baseline build runs exp_f, whose std::fma is exact on every CPU, so both builds agree.
// float64 inputs keep std::exp.

constexpr double kExp2Tab[32] = {  // 2^(i/32), rounded to nearest
    0x1.0000000000000p+0, 0x1.059b0d3158574p+0, 0x1.0b5586cf9890fp+0, 0x1.11301d0125b51p+0,
    0x1.172b83c7d517bp+0, 0x1.1d4873168b9aap+0, 0x1.2387a6e756238p+0, 0x1.29e9df51fdee1p+0,
    0x1.306fe0a31b715p+0, 0x1.371a7373aa9cbp+0, 0x1.3dea64c123422p+0, 0x1.44e086061892dp+0,
    0x1.4bfdad5362a27p+0, 0x1.5342b569d4f82p+0, 0x1.5ab07dd485429p+0, 0x1.6247eb03a5585p+0,
    0x1.6a09e667f3bcdp+0, 0x1.71f75e8ec5f74p+0, 0x1.7a11473eb0187p+0, 0x1.82589994cce13p+0,
    0x1.8ace5422aa0dbp+0, 0x1.93737b0cdc5e5p+0, 0x1.9c49182a3f090p+0, 0x1.a5503b23e255dp+0,
    0x1.ae89f995ad3adp+0, 0x1.b7f76f2fb5e47p+0, 0x1.c199bdd85529cp+0, 0x1.cb720dcef9069p+0,
    0x1.d5818dcfba487p+0, 0x1.dfc97337b9b5fp+0, 0x1.ea4afa2a490dap+0, 0x1.f50765b6e4540p+0,
};

struct ExpTable {  // bits of 2^(i/32) less i << 47, so that adding k << 47 scales by 2^floor(k/32)
  uint64_t bits[32];
  constexpr ExpTable() : bits() {
    for (int i = 0; i < 32; ++i) bits[i] = std::bit_cast<uint64_t>(kExp2Tab[i]) - (uint64_t(i) << 47);
  }
};
constexpr ExpTable kExpTab{};
constexpr double kExpInvLn2N = 0x1.71547652b82fep+5;  // 32 / ln 2
constexpr double kExpShift = 0x1.8p+52;                // rounds k to an integer in the low bits
constexpr double kExpC0 = 0x1.c6af84b912394p-20, kExpC1 = 0x1.ebfce50fac4f3p-13, kExpC2 = 0x1.62e42ff0c52d6p-6;

inline float exp_f(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t abstop = (u >> 20) & 0x7ff;
  if (abstop >= 0x42b) [[unlikely]] {  // |x| >= 88, inf or nan
    if (u == 0xff800000u) return 0.0f;                              // exp(-inf)
    if (abstop >= 0x7f8) return x + x;                              // nan, +inf
    if (x > 0x1.62e42ep6f) return std::numeric_limits<float>::infinity();  // overflow
    if (x < -0x1.9fe368p6f) return 0.0f;                            // underflow
  }
  const double xd = x;
  double kd = std::fma(kExpInvLn2N, xd, kExpShift);
  const uint64_t ki = std::bit_cast<uint64_t>(kd);
  kd -= kExpShift;
  const double r = std::fma(kExpInvLn2N, xd, -kd);
  const double sc = std::bit_cast<double>(kExpTab.bits[ki & 31] + (ki << 47));
  const double z = std::fma(kExpC0, r, kExpC1);
  const double r2 = r * r;
  double y = std::fma(kExpC2, r, 1.0);
  y = std::fma(z, r2, y);
  return static_cast<float>(y * sc);
}

#ifdef TSSA_VECTOR_EXP
inline __m128 exp4_main(__m128 x) {  // exp_f's main path for 4 lanes with |x| < 88
  const __m256d xd = _mm256_cvtps_pd(x);
  const __m256d inv = _mm256_set1_pd(kExpInvLn2N), shift = _mm256_set1_pd(kExpShift);
  __m256d kd = _mm256_fmadd_pd(inv, xd, shift);
  const __m256i ki = _mm256_castpd_si256(kd);
  kd = _mm256_sub_pd(kd, shift);
  const __m256d r = _mm256_fmsub_pd(inv, xd, kd);
  const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
  __m256i t = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(kExpTab.bits), idx, 8);
  t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 47));
  const __m256d z = _mm256_fmadd_pd(_mm256_set1_pd(kExpC0), r, _mm256_set1_pd(kExpC1));
  const __m256d r2 = _mm256_mul_pd(r, r);
  __m256d y = _mm256_fmadd_pd(_mm256_set1_pd(kExpC2), r, _mm256_set1_pd(1.0));
  y = _mm256_fmadd_pd(z, r2, y);
  return _mm256_cvtpd_ps(_mm256_mul_pd(y, _mm256_castsi256_pd(t)));
}

inline void exp8(float* __restrict__ v) {
  const __m256 x = _mm256_loadu_ps(v);
  const __m256i abstop = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20), _mm256_set1_epi32(0x7ff));
  const int special = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(abstop, _mm256_set1_epi32(0x42a))));
  float in[8];
  if (special) [[unlikely]] _mm256_storeu_ps(in, x);
  _mm_storeu_ps(v, exp4_main(_mm256_castps256_ps128(x)));
  _mm_storeu_ps(v + 4, exp4_main(_mm256_extractf128_ps(x, 1)));
  if (special) [[unlikely]] {
    for (int l = 0; l < 8; ++l) {
      if (special & (1 << l)) v[l] = exp_f(in[l]);
    }
  }
}
#endif

// v[i] = exp(v[i]), i < n
template <typename T>
inline void exp_row(T* __restrict__ v, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    int64_t i = 0;
#ifdef TSSA_VECTOR_EXP
    for (; i + 8 <= n; i += 8) exp8(v + i);
#endif
    for (; i < n; ++i) v[i] = exp_f(v[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) v[i] = std::exp(v[i]);
  }
}

// ---------------------------------------------------------------------------------------------------
// Per-token kernels. x: one token's C = H * D values; `bias` is null or the token's column of bias
// with stride N (bias[h * N]).

// acc += x^2
template <typename T>
inline void tok_sq_acc(const T* __restrict__ x, T* __restrict__ acc, int64_t C) {
  for (int64_t c = 0; c < C; ++c) acc[c] += x[c] * x[c];
}

// forward pass 2: sq = x^2; q = sum_d sq r (+ D bias); pi = softmax_h(tau q); acc += pi sq; acc_t += pi
template <typename T, int KD>
inline void tok_membership(const T* __restrict__ x, const T* __restrict__ r, const T* __restrict__ tau,
                           const T* __restrict__ bias, int64_t N, int64_t H, int64_t Drt,
                           T* __restrict__ pi, T* __restrict__ acc, T* __restrict__ acc_t,
                           T* __restrict__ sq, T* __restrict__ s) {
  const int64_t D = KD > 0 ? KD : Drt, C = H * D;
  const T Dt = static_cast<T>(D);
  for (int64_t c = 0; c < C; ++c) sq[c] = x[c] * x[c];
  T smax = -std::numeric_limits<T>::infinity();
  for (int64_t h = 0; h < H; ++h) {
    T q = lane_dot<T>(sq + h * D, r + h * D, D);
    if (bias) q += Dt * bias[h * N];
    s[h] = tau[h] * q;
    smax = std::max(smax, s[h]);
  }
  for (int64_t h = 0; h < H; ++h) s[h] -= smax;
  exp_row<T>(s, H);
  T den = 0;
  for (int64_t h = 0; h < H; ++h) den += s[h];
  for (int64_t h = 0; h < H; ++h) {
    const T p = s[h] / den;
    pi[h] = p;
    acc_t[h] += p;
    T* __restrict__ a = acc + h * D;
    const T* __restrict__ sqh = sq + h * D;
    for (int64_t d = 0; d < D; ++d) a[d] += p * sqh[d];
  }
}

// The blocked kernels below run kTok consecutive tokens (rows x + j * C, j < kTok) at once: the same
// operations in the same order as kTok calls of the one-token kernel (every sum over tokens still adds
// token j before token j + 1), so the results are bit-identical; the accumulator row and the per-head
// constants are loaded once per kTok tokens instead of once per token.
constexpr int kTok = 4;

// lane_dot of kTok rows a + j * stride with the same b: out[j] = lane_dot(a + j * stride, b, n)
template <typename T>
inline void lane_dot_rows(const T* __restrict__ a, int64_t stride, const T* __restrict__ b, int64_t n,
                          T* __restrict__ out) {
  T lane[kTok][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kTok; ++j) {
      for (int l = 0; l < kLanes; ++l) lane[j][l] += a[j * stride + i + l] * b[i + l];
    }
  }
  for (int j = 0; j < kTok; ++j) {
    for (int64_t ii = i, l = 0; ii < n; ++ii, ++l) lane[j][l] += a[j * stride + ii] * b[ii];
    const T* v = lane[j];
    out[j] = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
  }
}

// a[d] += c[j] * rows[j * stride + d] for j < kTok in token order, d < D: kTok tokens' rows added
// to one row of partial sums, loaded and stored once
template <typename T>
inline void acc_rows(T* __restrict__ a, const T* __restrict__ c, const T* __restrict__ rows, int64_t stride,
                     int64_t D) {
  for (int64_t d = 0; d < D; ++d) {
    T v = a[d];
    for (int j = 0; j < kTok; ++j) v += c[j] * rows[j * stride + d];
    a[d] = v;
  }
}

// acc += x_j^2, j < kTok, in token order
template <typename T>
inline void toks_sq_acc(const T* __restrict__ x, T* __restrict__ acc, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    T a = acc[c];
    for (int j = 0; j < kTok; ++j) a += x[j * C + c] * x[j * C + c];
    acc[c] = a;
  }
}

// tok_membership for kTok tokens: pi rows pi + j * H, bias columns bias + j (or null); sq: kTok * C, s: kTok * H
template <typename T, int KD>
inline void toks_membership(const T* __restrict__ x, const T* __restrict__ r, const T* __restrict__ tau,
                            const T* __restrict__ bias, int64_t N, int64_t H, int64_t Drt,
                            T* __restrict__ pi, T* __restrict__ acc, T* __restrict__ acc_t,
                            T* __restrict__ sq, T* __restrict__ s) {
  const int64_t D = KD > 0 ? KD : Drt, C = H * D;
  const T Dt = static_cast<T>(D);
  for (int64_t c = 0; c < kTok * C; ++c) sq[c] = x[c] * x[c];
  T q[kTok];
  for (int64_t h = 0; h < H; ++h) {
    lane_dot_rows<T>(sq + h * D, C, r + h * D, D, q);
    for (int j = 0; j < kTok; ++j) {
      T qj = q[j];
      if (bias) qj += Dt * bias[j + h * N];
      s[j * H + h] = tau[h] * qj;
    }
  }
  for (int j = 0; j < kTok; ++j) {
    T* __restrict__ sj = s + j * H;
    T smax = -std::numeric_limits<T>::infinity();
    for (int64_t h = 0; h < H; ++h) smax = std::max(smax, sj[h]);
    for (int64_t h = 0; h < H; ++h) sj[h] -= smax;
  }
  exp_row<T>(s, kTok * H);
  for (int j = 0; j < kTok; ++j) {
    const T* __restrict__ sj = s + j * H;
    T den = 0;
    for (int64_t h = 0; h < H; ++h) den += sj[h];
    for (int64_t h = 0; h < H; ++h) pi[j * H + h] = sj[h] / den;
  }
  for (int64_t h = 0; h < H; ++h) {
    T p[kTok];
    T at = acc_t[h];
    for (int j = 0; j < kTok; ++j) {
      p[j] = pi[j * H + h];
      at += p[j];
    }
    acc_t[h] = at;
    acc_rows<T>(acc + h * D, p, sq + h * D, C, D);
  }
}

// forward pass 3: y = pi x (-g)
template <typename T, int KD>
inline void tok_output(const T* __restrict__ x, const T* __restrict__ pi, const T* __restrict__ neg_g,
                       int64_t H, int64_t Drt, T* __restrict__ y) {
  const int64_t D = KD > 0 ? KD : Drt;
  for (int64_t h = 0; h < H; ++h) {
    const T p = pi[h];
    const T* __restrict__ xh = x + h * D;
    const T* __restrict__ gh = neg_g + h * D;
    T* __restrict__ yh = y + h * D;
    for (int64_t d = 0; d < D; ++d) yh[d] = p * xh[d] * gh[d];
  }
}

// backward pass A: gw = G x; dpi1[h] = -sum_d gw g; acc += pi gw
template <typename T, int KD>
inline void tok_grad_a(const T* __restrict__ x, const T* __restrict__ gr, const T* __restrict__ g,
                       const T* __restrict__ pi, int64_t H, int64_t Drt, T* __restrict__ dpi1,
                       T* __restrict__ acc, T* __restrict__ gw) {
  const int64_t D = KD > 0 ? KD : Drt, C = H * D;
  for (int64_t c = 0; c < C; ++c) gw[c] = gr[c] * x[c];
  for (int64_t h = 0; h < H; ++h) {
    const T* __restrict__ gwh = gw + h * D;
    dpi1[h] = -lane_dot<T>(gwh, g + h * D, D);
    const T p = pi[h];
    T* __restrict__ a = acc + h * D;
    for (int64_t d = 0; d < D; ++d) a[d] += p * gwh[d];
  }
}

// backward pass B: dp = sum_d da x^2 + dpi1 + dtotal; ds = pi (dp - sum_h pi dp); acc_t += ds q;
// td = tau ds (written over dpi1 in bn); acc += td x^2
template <typename T, int KD>
inline void tok_grad_b(const T* __restrict__ x, const T* __restrict__ pi, const T* __restrict__ r,
                       const T* __restrict__ da, const T* __restrict__ dtot, const T* __restrict__ tau,
                       const T* __restrict__ bias, int64_t N, int64_t H, int64_t Drt, T* __restrict__ bn,
                       T* __restrict__ acc, T* __restrict__ acc_t, T* __restrict__ sq,
                       T* __restrict__ dp, T* __restrict__ q) {
  const int64_t D = KD > 0 ? KD : Drt, C = H * D;
  const T Dt = static_cast<T>(D);
  for (int64_t c = 0; c < C; ++c) sq[c] = x[c] * x[c];
  T sdp = 0;
  for (int64_t h = 0; h < H; ++h) {
    const T* __restrict__ sqh = sq + h * D;
    q[h] = lane_dot<T>(sqh, r + h * D, D);
    if (bias) q[h] += Dt * bias[h * N];
    dp[h] = lane_dot<T>(sqh, da + h * D, D) + bn[h] + dtot[h];
    sdp += pi[h] * dp[h];
  }
  for (int64_t h = 0; h < H; ++h) {
    const T ds = pi[h] * (dp[h] - sdp);
    acc_t[h] += ds * q[h];
    const T td = ds * tau[h];
    bn[h] = td;
    T* __restrict__ a = acc + h * D;
    const T* __restrict__ sqh = sq + h * D;
    for (int64_t d = 0; d < D; ++d) a[d] += td * sqh[d];
  }
}

// tok_grad_a for kTok tokens: dpi1 rows dpi1 + j * H, pi rows pi + j * H; gw: kTok * C
template <typename T, int KD>
inline void toks_grad_a(const T* __restrict__ x, const T* __restrict__ gr, const T* __restrict__ g,
                        const T* __restrict__ pi, int64_t H, int64_t Drt, T* __restrict__ dpi1,
                        T* __restrict__ acc, T* __restrict__ gw) {
  const int64_t D = KD > 0 ? KD : Drt, C = H * D;
  for (int64_t c = 0; c < kTok * C; ++c) gw[c] = gr[c] * x[c];
  T dots[kTok];
  for (int64_t h = 0; h < H; ++h) {
    const T* __restrict__ gwh = gw + h * D;
    lane_dot_rows<T>(gwh, C, g + h * D, D, dots);
    T p[kTok];
    for (int j = 0; j < kTok; ++j) {
      dpi1[j * H + h] = -dots[j];
      p[j] = pi[j * H + h];
    }
    acc_rows<T>(acc + h * D, p, gwh, C, D);
  }
}

// tok_grad_b for kTok tokens: pi and bn rows + j * H, bias columns bias + j; sq: kTok * C; dp, q: kTok * H
template <typename T, int KD>
inline void toks_grad_b(const T* __restrict__ x, const T* __restrict__ pi, const T* __restrict__ r,
                        const T* __restrict__ da, const T* __restrict__ dtot, const T* __restrict__ tau,
                        const T* __restrict__ bias, int64_t N, int64_t H, int64_t Drt, T* __restrict__ bn,
                        T* __restrict__ acc, T* __restrict__ acc_t, T* __restrict__ sq,
                        T* __restrict__ dp, T* __restrict__ q) {
  const int64_t D = KD > 0 ? KD : Drt, C = H * D;
  const T Dt = static_cast<T>(D);
  for (int64_t c = 0; c < kTok * C; ++c) sq[c] = x[c] * x[c];
  T sdp[kTok] = {}, qs[kTok], ds_[kTok];
  for (int64_t h = 0; h < H; ++h) {
    const T* __restrict__ sqh = sq + h * D;
    lane_dot_rows<T>(sqh, C, r + h * D, D, qs);
    lane_dot_rows<T>(sqh, C, da + h * D, D, ds_);
    for (int j = 0; j < kTok; ++j) {
      T qj = qs[j];
      if (bias) qj += Dt * bias[j + h * N];
      q[j * H + h] = qj;
      const T dpj = ds_[j] + bn[j * H + h] + dtot[h];
      dp[j * H + h] = dpj;
      sdp[j] += pi[j * H + h] * dpj;
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    T td[kTok];
    T at = acc_t[h];
    for (int j = 0; j < kTok; ++j) {
      const int64_t i = j * H + h;
      const T ds = pi[i] * (dp[i] - sdp[j]);
      at += ds * q[i];
      td[j] = ds * tau[h];
      bn[i] = td[j];
    }
    acc_t[h] = at;
    acc_rows<T>(acc + h * D, td, sq + h * D, C, D);
  }
}

// backward pass C: dw = x (pi da2 + td r2 + dcol2) + G pi (-g)
template <typename T, int KD>
inline void tok_grad_c(const T* __restrict__ x, const T* __restrict__ gr, const T* __restrict__ pi,
                       const T* __restrict__ td, const T* __restrict__ da2, const T* __restrict__ r2,
                       const T* __restrict__ dcol2, const T* __restrict__ neg_g, int64_t H, int64_t Drt,
                       T* __restrict__ out) {
  const int64_t D = KD > 0 ? KD : Drt;
  for (int64_t h = 0; h < H; ++h) {
    const T p = pi[h], t = td[h];
    const int64_t o = h * D;
    for (int64_t d = 0; d < D; ++d) {
      const T coef = p * da2[o + d] + t * r2[o + d] + dcol2[o + d];
      out[o + d] = x[o + d] * coef + gr[o + d] * p * neg_g[o + d];
    }
  }
}

// tok_grad_c writing dw over x (xo: the token's x on entry, its dw on return): the same operations
template <typename T, int KD>
inline void tok_grad_c_over(T* xo, const T* __restrict__ gr, const T* __restrict__ pi,
                            const T* __restrict__ td, const T* __restrict__ da2, const T* __restrict__ r2,
                            const T* __restrict__ dcol2, const T* __restrict__ neg_g, int64_t H, int64_t Drt) {
  const int64_t D = KD > 0 ? KD : Drt;
  for (int64_t h = 0; h < H; ++h) {
    const T p = pi[h], t = td[h];
    T* __restrict__ xh = xo + h * D;
    const int64_t o = h * D;
    for (int64_t d = 0; d < D; ++d) {
      const T x = xh[d];
      const T coef = p * da2[o + d] + t * r2[o + d] + dcol2[o + d];
      xh[d] = x * coef + gr[o + d] * p * neg_g[o + d];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// forward: Y = -Pi w g, three passes over the tokens.
// Returns [y_tm (B, N, H, D), pi (B, N, H), colsq, r, total, m, g] (statistics float64, (B, H, D) or
// (B, H)).
template <typename T, int KD>
std::vector<Tensor> fwd_impl(const Tensor& w, const Tensor& tau, const std::optional<Tensor>& bias,
                             int64_t step, double sq_eps, double mem_eps) {
  const int64_t B = w.size(0), N = w.size(1), H = w.size(2), D = KD > 0 ? KD : w.size(3), C = H * D;
  const int64_t K = (N + step - 1) / step;
  const T* W = w.data_ptr<T>();
  const T* TAU = tau.data_ptr<T>();
  const T* BIAS = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  const auto f64 = w.options().dtype(at::kDouble);

  // pass 1, the column energies of Eq. 10's normalisation: colsq[b, h, d] = sum_n w^2
  Tensor part = at::empty({B, K, C}, f64);
  double* PART = part.data_ptr<double>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t k, int64_t n0, int64_t n1) {
    std::vector<T> blk(C, T(0));
    double* slot = PART + (b * K + k) * C;
    std::fill(slot, slot + C, 0.0);
    for (int64_t nb = n0; nb < n1; nb += kBlock) {
      const int64_t ne = std::min(n1, nb + kBlock);
      int64_t n = nb;
      for (; n + kTok <= ne; n += kTok) toks_sq_acc<T>(W + (b * N + n) * C, blk.data(), C);
      for (; n < ne; ++n) tok_sq_acc<T>(W + (b * N + n) * C, blk.data(), C);
      flush<T>(blk.data(), slot, C);
    }
  });
  Tensor colsq = at::empty({B, H, D}, f64), r = at::empty({B, H, D}, f64);
  double* COLSQ = colsq.data_ptr<double>();
  double* R = r.data_ptr<double>();
  reduce_slots(PART, B, K, C, COLSQ);
  for (int64_t i = 0; i < B * C; ++i) R[i] = 1.0 / std::max(COLSQ[i], sq_eps);
  const std::vector<T> rT = to_vec<T>(R, B * C);

  // pass 2, memberships and weighted second moment (Eq. 11):
  //   q[h, n] = sum_d w^2 r + D bias[h, n];  Pi[:, n] = softmax_h(tau q);
  //   mnum[h, d] = sum_n Pi w^2;  psum[h] = sum_n Pi
  Tensor pi = at::empty({B, N, H}, w.options());
  T* PI = pi.data_ptr<T>();
  Tensor part_t = at::empty({B, K, H}, f64);
  double* PART_T = part_t.data_ptr<double>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t k, int64_t n0, int64_t n1) {
    std::vector<T> blk(C, T(0)), blk_t(H, T(0)), sq(kTok * C), s(kTok * H);
    double* slot = PART + (b * K + k) * C;
    double* slot_t = PART_T + (b * K + k) * H;
    std::fill(slot, slot + C, 0.0);
    std::fill(slot_t, slot_t + H, 0.0);
    for (int64_t nb = n0; nb < n1; nb += kBlock) {
      const int64_t ne = std::min(n1, nb + kBlock);
      int64_t n = nb;
      for (; n + kTok <= ne; n += kTok) {
        toks_membership<T, KD>(W + (b * N + n) * C, rT.data() + b * C, TAU, BIAS ? BIAS + n : nullptr, N, H, D,
                               PI + (b * N + n) * H, blk.data(), blk_t.data(), sq.data(), s.data());
      }
      for (; n < ne; ++n) {
        tok_membership<T, KD>(W + (b * N + n) * C, rT.data() + b * C, TAU, BIAS ? BIAS + n : nullptr, N, H, D,
                              PI + (b * N + n) * H, blk.data(), blk_t.data(), sq.data(), s.data());
      }
      flush<T>(blk.data(), slot, C);
      flush<T>(blk_t.data(), slot_t, H);
    }
  });
  //   total[h] = sum_n Pi + eps;  m = mnum / total;  g = 1 / (1 + m)
  Tensor total = at::empty({B, H}, f64), m = at::empty({B, H, D}, f64), g = at::empty({B, H, D}, f64);
  double* TOTAL = total.data_ptr<double>();
  double* M = m.data_ptr<double>();
  double* G = g.data_ptr<double>();
  reduce_slots(PART_T, B, K, H, TOTAL);
  reduce_slots(PART, B, K, C, M);
  for (int64_t bh = 0; bh < B * H; ++bh) {
    TOTAL[bh] += mem_eps;
    for (int64_t d = 0; d < D; ++d) {
      M[bh * D + d] /= TOTAL[bh];
      G[bh * D + d] = 1.0 / (1.0 + M[bh * D + d]);
    }
  }
  std::vector<T> neg_g(B * C);
  for (int64_t i = 0; i < B * C; ++i) neg_g[i] = static_cast<T>(-G[i]);

  // pass 3, the output (Eq. 12): y[n, h, d] = -Pi[h, n] w[n, h, d] g[h, d]
  Tensor y = at::empty({B, N, H, D}, w.options());
  T* Y = y.data_ptr<T>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      tok_output<T, KD>(W + (b * N + n) * C, PI + (b * N + n) * H, neg_g.data() + b * C, H, D, Y + (b * N + n) * C);
    }
  });
  return {y, pi, colsq, r, total, m, g};
}

// ---------------------------------------------------------------------------------------------------
// backward, given G = dL/dY (token-major) and forward's Pi and statistics: three passes.
// Returns [dw_tm (B, N, H, D), dtau (H,) float64] plus dbias (H, N) in w's dtype when bias is given.
template <typename T, int KD>
std::vector<Tensor> bwd_impl(const Tensor& grad, const Tensor& w, const Tensor& tau,
                             const std::optional<Tensor>& bias, const Tensor& pi, const Tensor& colsq,
                             const Tensor& r, const Tensor& total, const Tensor& m, const Tensor& g,
                             int64_t step, double sq_eps, bool over_w) {
  const int64_t B = w.size(0), N = w.size(1), H = w.size(2), D = KD > 0 ? KD : w.size(3), C = H * D;
  const int64_t K = (N + step - 1) / step;
  const T* W = w.data_ptr<T>();
  const T* GR = grad.data_ptr<T>();
  const T* TAU = tau.data_ptr<T>();
  const T* BIAS = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  const T* PI = pi.data_ptr<T>();
  const double* COLSQ = colsq.data_ptr<double>();
  const double* R = r.data_ptr<double>();
  const double* TOTAL = total.data_ptr<double>();
  const double* M = m.data_ptr<double>();
  const double* GG = g.data_ptr<double>();
  const auto f64 = w.options().dtype(at::kDouble);
  const std::vector<T> gT = to_vec<T>(GG, B * C), rT = to_vec<T>(R, B * C);

  // pass A: dPi1[h, n] = -sum_d G w g  (into buf);  pgw[h, d] = sum_n Pi G w
  Tensor buf = at::empty({B, N, H}, w.options());
  T* BUF = buf.data_ptr<T>();
  Tensor part = at::empty({B, K, C}, f64);
  double* PART = part.data_ptr<double>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t k, int64_t n0, int64_t n1) {
    std::vector<T> blk(C, T(0)), gw(kTok * C);
    double* slot = PART + (b * K + k) * C;
    std::fill(slot, slot + C, 0.0);
    for (int64_t nb = n0; nb < n1; nb += kBlock) {
      const int64_t ne = std::min(n1, nb + kBlock);
      int64_t n = nb;
      for (; n + kTok <= ne; n += kTok) {
        const int64_t t = b * N + n;
        toks_grad_a<T, KD>(W + t * C, GR + t * C, gT.data() + b * C, PI + t * H, H, D, BUF + t * H, blk.data(),
                           gw.data());
      }
      for (; n < ne; ++n) {
        const int64_t t = b * N + n;
        tok_grad_a<T, KD>(W + t * C, GR + t * C, gT.data() + b * C, PI + t * H, H, D, BUF + t * H, blk.data(),
                          gw.data());
      }
      flush<T>(blk.data(), slot, C);
    }
  });
  //   da = g^2 pgw / total  (dL/dmnum);  dtotal[h] = -sum_d da m
  std::vector<double> da(B * C), dtotal(B * H);
  reduce_slots(PART, B, K, C, da.data());
  for (int64_t bh = 0; bh < B * H; ++bh) {
    double acc = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t i = bh * D + d;
      da[i] = GG[i] * GG[i] * da[i] / TOTAL[bh];
      acc += da[i] * M[i];
    }
    dtotal[bh] = -acc;
  }
  const std::vector<T> daT = to_vec<T>(da.data(), B * C), dtotT = to_vec<T>(dtotal.data(), B * H);

  // pass B, the softmax over heads backward:
  //   dp[h, n] = sum_d da w^2 + dPi1 + dtotal;  ds = Pi (dp - sum_h Pi dp);
  //   dtau[h] = sum_{b, n} ds q;  td = tau ds (into buf);  drm[h, d] = sum_n td w^2
  Tensor part_t = at::empty({B, K, H}, f64);
  double* PART_T = part_t.data_ptr<double>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t k, int64_t n0, int64_t n1) {
    std::vector<T> blk(C, T(0)), blk_t(H, T(0)), sq(kTok * C), dp(kTok * H), q(kTok * H);
    double* slot = PART + (b * K + k) * C;
    double* slot_t = PART_T + (b * K + k) * H;
    std::fill(slot, slot + C, 0.0);
    std::fill(slot_t, slot_t + H, 0.0);
    for (int64_t nb = n0; nb < n1; nb += kBlock) {
      const int64_t ne = std::min(n1, nb + kBlock);
      int64_t n = nb;
      for (; n + kTok <= ne; n += kTok) {
        const int64_t t = b * N + n;
        toks_grad_b<T, KD>(W + t * C, PI + t * H, rT.data() + b * C, daT.data() + b * C, dtotT.data() + b * H, TAU,
                           BIAS ? BIAS + n : nullptr, N, H, D, BUF + t * H, blk.data(), blk_t.data(), sq.data(),
                           dp.data(), q.data());
      }
      for (; n < ne; ++n) {
        const int64_t t = b * N + n;
        tok_grad_b<T, KD>(W + t * C, PI + t * H, rT.data() + b * C, daT.data() + b * C, dtotT.data() + b * H, TAU,
                          BIAS ? BIAS + n : nullptr, N, H, D, BUF + t * H, blk.data(), blk_t.data(), sq.data(),
                          dp.data(), q.data());
      }
      flush<T>(blk.data(), slot, C);
      flush<T>(blk_t.data(), slot_t, H);
    }
  });
  //   dcol = -r^2 drm where colsq > eps^2 (the clamp passes no gradient), else 0;  dtau summed over b
  std::vector<double> drm(B * C);
  reduce_slots(PART, B, K, C, drm.data());
  Tensor dtau = at::zeros({H}, f64);
  double* DTAU = dtau.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t h = 0; h < H; ++h) DTAU[h] += PART_T[(b * K + k) * H + h];
    }
  }
  std::vector<T> da2(B * C), r2(B * C), dcol2(B * C), ng(B * C);
  for (int64_t i = 0; i < B * C; ++i) {
    const double dcol = COLSQ[i] > sq_eps ? -R[i] * R[i] * drm[i] : 0.0;
    da2[i] = static_cast<T>(2.0 * da[i]);
    r2[i] = static_cast<T>(2.0 * R[i]);
    dcol2[i] = static_cast<T>(2.0 * dcol);
    ng[i] = static_cast<T>(-GG[i]);
  }

  // pass C, the gradient of w: dW = 2 w (Pi da + td r + dcol) - G Pi g
  // over_w: dW is written over w (the caller's buffer, which it no longer needs): each token's w is read
  // before its dW is written, and no other token reads it in this pass
  Tensor dw = over_w ? w : at::empty({B, N, H, D}, w.options());
  T* DW = dw.data_ptr<T>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t, int64_t n0, int64_t n1) {
    const int64_t o = b * C;
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t t = b * N + n;
      if (over_w) {
        tok_grad_c_over<T, KD>(DW + t * C, GR + t * C, PI + t * H, BUF + t * H, da2.data() + o, r2.data() + o,
                               dcol2.data() + o, ng.data() + o, H, D);
      } else {
        tok_grad_c<T, KD>(W + t * C, GR + t * C, PI + t * H, BUF + t * H, da2.data() + o, r2.data() + o,
                          dcol2.data() + o, ng.data() + o, H, D, DW + t * C);
      }
    }
  });
  std::vector<Tensor> outs{dw, dtau};

  // the bias gradient: dbias[h, n] = D sum_b td[b, n, h]  (float64 sum over b in order)
  if (bias.has_value()) {
    Tensor dbias = at::empty({H, N}, w.options());
    T* DB = dbias.data_ptr<T>();
    at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t h = 0; h < H; ++h) {
          double acc = 0.0;
          for (int64_t b = 0; b < B; ++b) acc += static_cast<double>(BUF[(b * N + n) * H + h]);
          DB[h * N + n] = static_cast<T>(static_cast<double>(D) * acc);
        }
      }
    });
    outs.push_back(dbias);
  }
  return outs;
}

// Calls f.template operator()<KD>() with KD = d for the head sizes compiled as constants, else 0.
template <typename F>
decltype(auto) with_head_size(int64_t d, const F& f) {
  switch (d) {
    case 16: return f.template operator()<16>();
    case 32: return f.template operator()<32>();
    case 48: return f.template operator()<48>();
    case 64: return f.template operator()<64>();
    default: return f.template operator()<0>();
  }
}

std::vector<Tensor> fwd(const Tensor& w_tm, const Tensor& tau, const std::optional<Tensor>& bias,
                        int64_t chunk, double sq_eps, double membership_eps) {
  check_inputs("tssa_cpu::fwd", w_tm, tau, bias, chunk);
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(w_tm.scalar_type(), "tssa_cpu_fwd", [&] {
    out = with_head_size(w_tm.size(3), [&]<int KD>() {
      return fwd_impl<scalar_t, KD>(w_tm, tau, bias, chunk, sq_eps, membership_eps);
    });
  });
  return out;
}

std::vector<Tensor> bwd(const Tensor& grad_tm, const Tensor& w_tm, const Tensor& tau,
                        const std::optional<Tensor>& bias, const Tensor& pi, const Tensor& colsq,
                        const Tensor& r, const Tensor& total, const Tensor& m, const Tensor& g,
                        int64_t chunk, double sq_eps, bool over_w = false) {
  const char* op = over_w ? "tssa_cpu::bwd_over_w" : "tssa_cpu::bwd";
  check_inputs(op, w_tm, tau, bias, chunk);
  const int64_t B = w_tm.size(0), N = w_tm.size(1), H = w_tm.size(2), D = w_tm.size(3);
  check_like(op, "grad_tm", grad_tm, w_tm.sizes(), w_tm.scalar_type());
  check_like(op, "pi", pi, {B, N, H}, w_tm.scalar_type());
  check_like(op, "colsq", colsq, {B, H, D}, at::kDouble);
  check_like(op, "r", r, {B, H, D}, at::kDouble);
  check_like(op, "total", total, {B, H}, at::kDouble);
  check_like(op, "m", m, {B, H, D}, at::kDouble);
  check_like(op, "g", g, {B, H, D}, at::kDouble);
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(w_tm.scalar_type(), "tssa_cpu_bwd", [&] {
    out = with_head_size(w_tm.size(3), [&]<int KD>() {
      return bwd_impl<scalar_t, KD>(grad_tm, w_tm, tau, bias, pi, colsq, r, total, m, g, chunk, sq_eps, over_w);
    });
  });
  return out;
}

std::vector<Tensor> bwd_over_w(const Tensor& grad_tm, const Tensor& w_tm, const Tensor& tau,
                               const std::optional<Tensor>& bias, const Tensor& pi, const Tensor& colsq,
                               const Tensor& r, const Tensor& total, const Tensor& m, const Tensor& g,
                               int64_t chunk, double sq_eps) {
  std::vector<Tensor> out = bwd(grad_tm, w_tm, tau, bias, pi, colsq, r, total, m, g, chunk, sq_eps, true);
  out.erase(out.begin());  // dW is w_tm now
  return out;
}

// Float32 bit patterns in [lo, hi) (as uint32) whose exp_f or exp_row differs from std::exp in any bit
// (a nan matching a nan counts as equal): the check that the kernels' exp is the C library's here.
int64_t exp_mismatches(int64_t lo, int64_t hi) {
  TORCH_CHECK(0 <= lo && lo <= hi && hi <= (int64_t(1) << 32), "exp_mismatches: need 0 <= lo <= hi <= 2^32");
  std::atomic<int64_t> bad{0};
  at::parallel_for(lo, hi, 1 << 16, [&](int64_t b, int64_t e) {
    int64_t local = 0;
    float v[64], x[64];
    for (int64_t i = b; i < e; i += 64) {
      const int64_t n = std::min<int64_t>(64, e - i);
      for (int64_t k = 0; k < n; ++k) x[k] = v[k] = std::bit_cast<float>(static_cast<uint32_t>(i + k));
      exp_row<float>(v, n);
      for (int64_t k = 0; k < n; ++k) {
        const float ref = std::exp(x[k]), one = exp_f(x[k]);
        const bool both_nan = std::isnan(ref) && std::isnan(v[k]) && std::isnan(one);
        if (!both_nan && (std::bit_cast<uint32_t>(ref) != std::bit_cast<uint32_t>(v[k]) ||
                          std::bit_cast<uint32_t>(ref) != std::bit_cast<uint32_t>(one)))
          ++local;
      }
    }
    bad += local;
  });
  return bad.load();
}

}  // namespace

TORCH_LIBRARY(tssa_cpu, m) {
  m.def(
      "fwd(Tensor w_tm, Tensor tau, Tensor? bias, int chunk, float sq_eps, float membership_eps) "
      "-> Tensor[]");
  m.def(
      "bwd(Tensor grad_tm, Tensor w_tm, Tensor tau, Tensor? bias, Tensor pi, Tensor colsq, Tensor r, "
      "Tensor total, Tensor m, Tensor g, int chunk, float sq_eps) -> Tensor[]");
  // the same backward with dW written over w_tm (whose values the caller no longer needs): [dtau, dbias?]
  m.def(
      "bwd_over_w(Tensor grad_tm, Tensor(a!) w_tm, Tensor tau, Tensor? bias, Tensor pi, Tensor colsq, "
      "Tensor r, Tensor total, Tensor m, Tensor g, int chunk, float sq_eps) -> Tensor[]");
  m.def("exp_mismatches(int lo, int hi) -> int", &exp_mismatches);
}

TORCH_LIBRARY_IMPL(tssa_cpu, CPU, m) {
  m.impl("fwd", &fwd);
  m.impl("bwd", [](const Tensor& grad_tm, const Tensor& w_tm, const Tensor& tau, const std::optional<Tensor>& bias,
                   const Tensor& pi, const Tensor& colsq, const Tensor& r, const Tensor& total, const Tensor& m,
                   const Tensor& g, int64_t chunk, double sq_eps) {
    return bwd(grad_tm, w_tm, tau, bias, pi, colsq, r, total, m, g, chunk, sq_eps, false);
  });
  m.impl("bwd_over_w", &bwd_over_w);
}
