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
// Memory: besides the output (Y or dW) the only token-sized buffers are (B, N, H): the memberships Pi
// kept from forward, and one buffer in backward (dPi1, then overwritten by tau * dS).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

namespace {

using at::Tensor;

constexpr int64_t kBlock = 32;  // tokens summed in the input type before joining a float64 slot
constexpr int kLanes = 8;       // independent partial sums of a reduction over d

// sum_{i < n} term(i), with kLanes fixed lanes combined pairwise: a deterministic order.
template <typename T, typename F>
inline T lane_sum(int64_t n, const F& term) {
  T lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += term(i + l);
  }
  for (int l = 0; i < n; ++i, ++l) lane[l] += term(i);
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

// Runs f(b, k, n0, n1) for every chunk [n0, n1) of every batch element b, in parallel.
template <typename F>
void for_each_chunk(int64_t B, int64_t N, int64_t step, const F& f) {
  const int64_t K = (N + step - 1) / step;
  at::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / K, k = i % K, n0 = k * step;
      f(b, k, n0, std::min(N, n0 + step));
    }
  });
}

// Per-chunk token sums: `add(n, blk)` adds token n's terms into blk (width values of type T); blocks of
// kBlock tokens are flushed into the float64 slot, which is zeroed first.
template <typename T, typename F>
void chunk_sum(int64_t n0, int64_t n1, int64_t width, double* slot, std::vector<T>& blk, const F& add) {
  std::fill(slot, slot + width, 0.0);
  for (int64_t nb = n0; nb < n1; nb += kBlock) {
    std::fill(blk.begin(), blk.end(), T(0));
    const int64_t ne = std::min(n1, nb + kBlock);
    for (int64_t n = nb; n < ne; ++n) add(n, blk.data());
    for (int64_t c = 0; c < width; ++c) slot[c] += static_cast<double>(blk[c]);
  }
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
// forward: Y = -Pi w g, three passes over the tokens.
// Returns [y_tm (B, N, H, D), pi (B, N, H), colsq, r, total, m, g] (statistics float64, (B, H, D) or
// (B, H)).
template <typename T>
std::vector<Tensor> fwd_impl(const Tensor& w, const Tensor& tau, const std::optional<Tensor>& bias,
                             int64_t step, double sq_eps, double mem_eps) {
  const int64_t B = w.size(0), N = w.size(1), H = w.size(2), D = w.size(3), C = H * D;
  const int64_t K = (N + step - 1) / step;
  const T* W = w.data_ptr<T>();
  const T* TAU = tau.data_ptr<T>();
  const T* BIAS = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  const T Dt = static_cast<T>(D);
  const auto f64 = w.options().dtype(at::kDouble);

  // pass 1, the column energies of Eq. 10's normalisation: colsq[b, h, d] = sum_n w^2
  Tensor part = at::empty({B, K, C}, f64);
  double* PART = part.data_ptr<double>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t k, int64_t n0, int64_t n1) {
    std::vector<T> blk(C);
    chunk_sum<T>(n0, n1, C, PART + (b * K + k) * C, blk, [&](int64_t n, T* acc) {
      const T* x = W + (b * N + n) * C;
      for (int64_t c = 0; c < C; ++c) acc[c] += x[c] * x[c];
    });
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
    std::vector<T> blk(C), blk_t(H), sq(C), s(H);
    const T* rb = rT.data() + b * C;
    double* slot = PART + (b * K + k) * C;
    double* slot_t = PART_T + (b * K + k) * H;
    std::fill(slot, slot + C, 0.0);
    std::fill(slot_t, slot_t + H, 0.0);
    for (int64_t nb = n0; nb < n1; nb += kBlock) {
      std::fill(blk.begin(), blk.end(), T(0));
      std::fill(blk_t.begin(), blk_t.end(), T(0));
      for (int64_t n = nb; n < std::min(n1, nb + kBlock); ++n) {
        const T* x = W + (b * N + n) * C;
        for (int64_t c = 0; c < C; ++c) sq[c] = x[c] * x[c];
        T smax = -std::numeric_limits<T>::infinity();
        for (int64_t h = 0; h < H; ++h) {
          const T* sqh = sq.data() + h * D;
          const T* rh = rb + h * D;
          T q = lane_sum<T>(D, [&](int64_t d) { return sqh[d] * rh[d]; });
          if (BIAS) q += Dt * BIAS[h * N + n];
          s[h] = TAU[h] * q;
          smax = std::max(smax, s[h]);
        }
        T den = 0;
        for (int64_t h = 0; h < H; ++h) {
          s[h] = std::exp(s[h] - smax);
          den += s[h];
        }
        T* pin = PI + (b * N + n) * H;
        for (int64_t h = 0; h < H; ++h) {
          const T p = s[h] / den;
          pin[h] = p;
          blk_t[h] += p;
          T* acc = blk.data() + h * D;
          const T* sqh = sq.data() + h * D;
          for (int64_t d = 0; d < D; ++d) acc[d] += p * sqh[d];
        }
      }
      for (int64_t c = 0; c < C; ++c) slot[c] += static_cast<double>(blk[c]);
      for (int64_t h = 0; h < H; ++h) slot_t[h] += static_cast<double>(blk_t[h]);
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
    const T* ng = neg_g.data() + b * C;
    for (int64_t n = n0; n < n1; ++n) {
      const T* x = W + (b * N + n) * C;
      const T* pin = PI + (b * N + n) * H;
      T* yn = Y + (b * N + n) * C;
      for (int64_t h = 0; h < H; ++h) {
        const T p = pin[h];
        for (int64_t d = 0; d < D; ++d) yn[h * D + d] = p * x[h * D + d] * ng[h * D + d];
      }
    }
  });
  return {y, pi, colsq, r, total, m, g};
}

// ---------------------------------------------------------------------------------------------------
// backward, given G = dL/dY (token-major) and forward's Pi and statistics: three passes.
// Returns [dw_tm (B, N, H, D), dtau (H,) float64] plus dbias (H, N) in w's dtype when bias is given.
template <typename T>
std::vector<Tensor> bwd_impl(const Tensor& grad, const Tensor& w, const Tensor& tau,
                             const std::optional<Tensor>& bias, const Tensor& pi, const Tensor& colsq,
                             const Tensor& r, const Tensor& total, const Tensor& m, const Tensor& g,
                             int64_t step, double sq_eps) {
  const int64_t B = w.size(0), N = w.size(1), H = w.size(2), D = w.size(3), C = H * D;
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
  const T Dt = static_cast<T>(D);
  const auto f64 = w.options().dtype(at::kDouble);
  const std::vector<T> gT = to_vec<T>(GG, B * C), rT = to_vec<T>(R, B * C);

  // pass A: dPi1[h, n] = -sum_d G w g  (into buf);  pgw[h, d] = sum_n Pi G w
  Tensor buf = at::empty({B, N, H}, w.options());
  T* BUF = buf.data_ptr<T>();
  Tensor part = at::empty({B, K, C}, f64);
  double* PART = part.data_ptr<double>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t k, int64_t n0, int64_t n1) {
    std::vector<T> blk(C), gw(C);
    const T* gb = gT.data() + b * C;
    chunk_sum<T>(n0, n1, C, PART + (b * K + k) * C, blk, [&](int64_t n, T* acc) {
      const T* x = W + (b * N + n) * C;
      const T* gr = GR + (b * N + n) * C;
      for (int64_t c = 0; c < C; ++c) gw[c] = gr[c] * x[c];
      for (int64_t h = 0; h < H; ++h) {
        const T* gwh = gw.data() + h * D;
        const T* gh = gb + h * D;
        BUF[(b * N + n) * H + h] = -lane_sum<T>(D, [&](int64_t d) { return gwh[d] * gh[d]; });
        const T p = PI[(b * N + n) * H + h];
        T* a = acc + h * D;
        for (int64_t d = 0; d < D; ++d) a[d] += p * gwh[d];
      }
    });
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
    std::vector<T> blk(C), blk_t(H), sq(C), dp(H), q(H);
    const T* rb = rT.data() + b * C;
    const T* dab = daT.data() + b * C;
    const T* dtb = dtotT.data() + b * H;
    double* slot = PART + (b * K + k) * C;
    double* slot_t = PART_T + (b * K + k) * H;
    std::fill(slot, slot + C, 0.0);
    std::fill(slot_t, slot_t + H, 0.0);
    for (int64_t nb = n0; nb < n1; nb += kBlock) {
      std::fill(blk.begin(), blk.end(), T(0));
      std::fill(blk_t.begin(), blk_t.end(), T(0));
      for (int64_t n = nb; n < std::min(n1, nb + kBlock); ++n) {
        const T* x = W + (b * N + n) * C;
        const T* pin = PI + (b * N + n) * H;
        T* bn = BUF + (b * N + n) * H;
        for (int64_t c = 0; c < C; ++c) sq[c] = x[c] * x[c];
        T sdp = 0;
        for (int64_t h = 0; h < H; ++h) {
          const T* sqh = sq.data() + h * D;
          const T* rh = rb + h * D;
          const T* dah = dab + h * D;
          q[h] = lane_sum<T>(D, [&](int64_t d) { return sqh[d] * rh[d]; });
          if (BIAS) q[h] += Dt * BIAS[h * N + n];
          dp[h] = lane_sum<T>(D, [&](int64_t d) { return sqh[d] * dah[d]; }) + bn[h] + dtb[h];
          sdp += pin[h] * dp[h];
        }
        for (int64_t h = 0; h < H; ++h) {
          const T ds = pin[h] * (dp[h] - sdp);
          blk_t[h] += ds * q[h];
          const T td = ds * TAU[h];
          bn[h] = td;
          T* acc = blk.data() + h * D;
          const T* sqh = sq.data() + h * D;
          for (int64_t d = 0; d < D; ++d) acc[d] += td * sqh[d];
        }
      }
      for (int64_t c = 0; c < C; ++c) slot[c] += static_cast<double>(blk[c]);
      for (int64_t h = 0; h < H; ++h) slot_t[h] += static_cast<double>(blk_t[h]);
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
  Tensor dw = at::empty({B, N, H, D}, w.options());
  T* DW = dw.data_ptr<T>();
  for_each_chunk(B, N, step, [&](int64_t b, int64_t, int64_t n0, int64_t n1) {
    const int64_t o = b * C;
    for (int64_t n = n0; n < n1; ++n) {
      const T* x = W + (b * N + n) * C;
      const T* gr = GR + (b * N + n) * C;
      T* out = DW + (b * N + n) * C;
      for (int64_t h = 0; h < H; ++h) {
        const T p = PI[(b * N + n) * H + h];
        const T td = BUF[(b * N + n) * H + h];
        const int64_t j = o + h * D;
        for (int64_t d = 0; d < D; ++d) {
          const T coef = p * da2[j + d] + td * r2[j + d] + dcol2[j + d];
          out[h * D + d] = x[h * D + d] * coef + gr[h * D + d] * p * ng[j + d];
        }
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

std::vector<Tensor> fwd(const Tensor& w_tm, const Tensor& tau, const std::optional<Tensor>& bias,
                        int64_t chunk, double sq_eps, double membership_eps) {
  check_inputs("tssa_cpu::fwd", w_tm, tau, bias, chunk);
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(w_tm.scalar_type(), "tssa_cpu_fwd", [&] {
    out = fwd_impl<scalar_t>(w_tm, tau, bias, chunk, sq_eps, membership_eps);
  });
  return out;
}

std::vector<Tensor> bwd(const Tensor& grad_tm, const Tensor& w_tm, const Tensor& tau,
                        const std::optional<Tensor>& bias, const Tensor& pi, const Tensor& colsq,
                        const Tensor& r, const Tensor& total, const Tensor& m, const Tensor& g,
                        int64_t chunk, double sq_eps) {
  const char* op = "tssa_cpu::bwd";
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
    out = bwd_impl<scalar_t>(grad_tm, w_tm, tau, bias, pi, colsq, r, total, m, g, chunk, sq_eps);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(tssa_cpu, m) {
  m.def(
      "fwd(Tensor w_tm, Tensor tau, Tensor? bias, int chunk, float sq_eps, float membership_eps) "
      "-> Tensor[]");
  m.def(
      "bwd(Tensor grad_tm, Tensor w_tm, Tensor tau, Tensor? bias, Tensor pi, Tensor colsq, Tensor r, "
      "Tensor total, Tensor m, Tensor g, int chunk, float sq_eps) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(tssa_cpu, CPU, m) {
  m.impl("fwd", &fwd);
  m.impl("bwd", &bwd);
}
