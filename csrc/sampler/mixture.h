// The discretized logistic mixture of PixelCNN++ at one pixel (pixelfast/nn/logistic_mixture.py is
// the reference): the log-probability of each level of colour g given the pixel's earlier colours,
// shared by the CPU and CUDA engines (the kMixture op).
//
// Parameters at one position, K components: K weight logits, the means [C][K], the log-scales
// [C][K] and, for RGB, the coupling coefficients [3][K] before their tanh:
//     mean_R = mu_R,  mean_G = mu_G + alpha r,  mean_B = mu_B + beta r + gamma g
// Colour g's logits: log sum_k pi_k prod_{c < g} P_ck(x_c) P_gk(l), normalised over the levels l.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/activations.h"
#include "../common/host_device.h"

namespace pixelfast {
namespace sampler {

constexpr double kMinLogScale = -7.0;  // the paper's floor on the log-scales
constexpr double kThinBin = 1e-5;      // below it a bin's probability is density x width

// The parameters' channels for C colours and K components (pixelfast's mixture_channels).
PF_HD_INLINE int64_t mixture_channels(int64_t channels, int64_t components) {
  return components * (1 + 2 * channels + (channels == 3 ? 3 : 0));
}

// exp, log and log1p of float and double, on the host and the device.
PF_HD_INLINE float exp_(float x) { return expf(x); }
PF_HD_INLINE double exp_(double x) { return exp(x); }
PF_HD_INLINE float log_(float x) { return logf(x); }
PF_HD_INLINE double log_(double x) { return log(x); }
PF_HD_INLINE float log1p_(float x) { return log1pf(x); }
PF_HD_INLINE double log1p_(double x) { return log1p(x); }

// log(1 + exp(x)) as torch's softplus (linear above 20).
template <typename T>
PF_HD_INLINE T softplus(T x) {
  return x > T(20) ? x : log1p_(exp_(x));
}

// log sum over i < n of exp(x[i]): the components' weights' normaliser, and colour g's joint's.
template <typename T>
PF_HD T log_sum_exp(const T* x, int64_t n) {
  T top = x[0];
  for (int64_t i = 1; i < n; ++i) top = x[i] > top ? x[i] : top;
  T total = T(0);
  for (int64_t i = 0; i < n; ++i) total += exp_(x[i] - top);
  return top + log_(total);
}

// One logistic of a component: its mean, its log-scale (floored) and the inverse of its scale.
template <typename T>
struct Logistic {
  T mean, log_scale, inv_scale;
};

template <typename T>
PF_HD Logistic<T> logistic(T mean, T log_scale) {
  const T floor = T(kMinLogScale);
  const T ls = log_scale < floor ? floor : log_scale;  // NaN stays NaN
  return {mean, ls, exp_(-ls)};
}

// log P(level l) of a logistic discretized to `levels` bins over [-1, 1]; the first and last bins
// run out to -inf and +inf.
template <typename T>
PF_HD T bin_log_prob(const Logistic<T>& d, int64_t l, int64_t levels) {
  const T centred = (T(l) * T(2.0 / double(levels - 1)) - T(1)) - d.mean;
  const T half = T(1.0 / double(levels - 1));
  const T plus = d.inv_scale * (centred + half);
  const T minus = d.inv_scale * (centred - half);
  if (l == 0) return plus - softplus(plus);      // log CDF(upper edge)
  if (l == levels - 1) return -softplus(minus);  // log (1 - CDF(lower edge))
  // CDF(upper) - CDF(lower); right of the mean from the upper tails 1 - CDF = sigmoid(-x), which
  // are small there and exact to float rounding, where 1 - ... would cancel.
  const T delta = minus > T(0) ? sigmoid(-minus) - sigmoid(-plus) : sigmoid(plus) - sigmoid(minus);
  if (delta > T(kThinBin)) return log_(delta);
  const T mid = d.inv_scale * centred;
  return mid - d.log_scale - T(2) * softplus(mid) - T(log(double(levels - 1) / 2.0));
}

// One pixel's mixture: `params` its parameters, `pixel` its scaled colours (buffer 0) and `level`
// its levels (the engine's output image, `level_stride` apart), of which colours < g are known.
template <typename T>
struct MixtureAt {
  const T* params;
  const T* pixel;
  const int64_t* level;
  int64_t level_stride;
  int64_t channels, components, levels, g;
};

// Colour c's logistic in component k, its mean coupled to the pixel's earlier colours (RGB).
template <typename T>
PF_HD Logistic<T> mixture_logistic(const MixtureAt<T>& m, int64_t c, int64_t k) {
  const int64_t K = m.components;
  T mean = m.params[K + c * K + k];
  if (m.channels == 3 && c > 0) {
    const T* coeff = m.params + K * (1 + 2 * m.channels);  // alpha, beta, gamma
    mean = c == 1
               ? mean + tanh_(coeff[k]) * m.pixel[0]
               : (mean + tanh_(coeff[K + k]) * m.pixel[0]) + tanh_(coeff[2 * K + k]) * m.pixel[1];
  }
  return logistic(mean, m.params[K * (1 + m.channels) + c * K + k]);
}

// The doubles mixture_weights writes per component into the engine's scratch.
constexpr int64_t kMixtureScratch = 4;

// Per component k, into scratch[4k .. 4k + 3]: log pi_k + sum over c < g of log P_ck(x_c) (the
// unnormalised log-posterior over the components given the earlier colours), then colour g's
// logistic (mean, log-scale, inverse scale).
template <typename T>
PF_HD void mixture_weights(const MixtureAt<T>& m, double* scratch) {
  const int64_t K = m.components;
  const T log_norm = log_sum_exp(m.params, K);
  for (int64_t k = 0; k < K; ++k) {
    T earlier = T(0);
    for (int64_t c = 0; c < m.g; ++c)
      earlier += bin_log_prob(mixture_logistic(m, c, k), m.level[c * m.level_stride], m.levels);
    const Logistic<T> d = mixture_logistic(m, m.g, k);
    double* own = scratch + kMixtureScratch * k;
    own[0] = double((m.params[k] - log_norm) + earlier);
    own[1] = double(d.mean);
    own[2] = double(d.log_scale);
    own[3] = double(d.inv_scale);
  }
}

// out[l] = log sum_k exp(weight_k + log P_gk(l)) for l in [l0, l1) by `step` (not normalised),
// from mixture_weights' scratch.
template <typename T>
PF_HD void mixture_joint(const MixtureAt<T>& m, const double* scratch, T* out, int64_t l0,
                         int64_t l1, int64_t step) {
  for (int64_t l = l0; l < l1; l += step) {
    T top = T(-INFINITY), total = T(0);  // a running log-sum-exp over the components
    for (int64_t k = 0; k < m.components; ++k) {
      const double* own = scratch + kMixtureScratch * k;
      const Logistic<T> d{T(own[1]), T(own[2]), T(own[3])};
      const T value = T(own[0]) + bin_log_prob(d, l, m.levels);
      if (value > top) {
        total = total * exp_(top - value) + T(1);
        top = value;
      } else if (!(value == T(-INFINITY))) {  // a zero term adds nothing; NaN propagates
        total += exp_(value - top);
      }
    }
    out[l] = top + log_(total);
  }
}

}  // namespace sampler
}  // namespace pixelfast
