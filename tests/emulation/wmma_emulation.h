// The tensor-core subset of CUDA the engine's bf16 / tf32 products use
// (csrc/sampler/engine_mma.cuh), emulated on the host: __nv_bfloat16 with round-to-nearest-even
// conversion, and nvcuda::wmma's fragments, load_matrix_sync, store_matrix_sync, fill_fragment,
// mma_sync and __float_to_tf32. Included by cuda_emulation.h.
//
// Fragments are shared out as on a GPU: each lane owns some of a tile's elements (element (r, c) is
// lane (r % 8) x 4 + (c % 8) / 2's, a layout like the device's and unlike a staging loop's), and
// a load or a store moves only the lane's own elements, when the lane arrives (before the warp
// meets, if it does), as a lane of a GPU may. So a missing __syncwarp between lanes filling a
// shared tile and the warp loading it, or between a store and lanes reading the result, gives a
// wrong result under the forward schedule. After a load each lane holds the whole tile (the lanes'
// shares gathered when they meet), so products and element-wise ops on every element compute the
// same here as on a GPU. The rules a GPU enforces by faulting or by garbage are checked and
// reported by the launch: a pointer not 256-bit aligned, a leading dimension that is not a multiple
// of 16 bytes, a warp whose lanes do not all take part.
//
// mma_sync sums in float32, k in ascending order, from operands that are exact in float32 (bf16
// and tf32 values): a GPU's tensor cores may add in another order, so results agree to float32
// rounding, not bit for bit.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

struct __nv_bfloat16 {
  uint16_t bits;
};

// float -> bf16, round to nearest even (a NaN stays a quiet NaN), as the device's conversion does.
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return __nv_bfloat16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  return __nv_bfloat16{static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

// float -> tf32 (10 explicit mantissa bits), round to nearest with ties away from zero, as the
// device's cvt.rna.tf32.f32; the result is a float whose low 13 bits are zero.
inline float __float_to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) >= 0x7f800000u) return x;  // inf and NaN unchanged
  u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

namespace detail {

template <typename Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

// What a fragment's elements are (a tf32 fragment holds floats).
template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<precision::tf32> {
  using type = float;
};

inline float to_float(float x) { return x; }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// The lane of a warp that holds element (r, c) of a fragment.
inline int owner(int r, int c) { return (r % 8) * 4 + (c % 8) / 2; }

// A GPU faults on (or loads garbage from) a pointer not aligned to 256 bits, and needs a leading
// dimension of a multiple of 16 bytes.
inline void check_access(const void* pointer, unsigned ldm, size_t element_bytes,
                         const char* call) {
  if (reinterpret_cast<uintptr_t>(pointer) % 32 != 0)
    ::pf_emu::fail(std::string(call) + ": the pointer is not 256-bit aligned");
  if ((ldm * element_bytes) % 16 != 0)
    ::pf_emu::fail(std::string(call) + ": the leading dimension is not a multiple of 16 bytes");
}

// The warp meets; then every lane copies the elements other lanes own from their fragments
// (published through the shuffle slots, as a shuffle does), and the warp meets again before any
// lane changes its fragment.
template <typename E>
void gather_owned(E* x, int rows, int cols) {
  ::pf_emu::Run& r = ::pf_emu::run();
  const int64_t self = r.current->linear, base = r.current->block * r.threads_per_block();
  r.shuffle_slots[base + self] = reinterpret_cast<uintptr_t>(x);
  ::pf_emu::warp_meet();
  const int64_t warp_base = self - self % ::pf_emu::kWarpSize;
  if (r.error.empty()) {  // (after an error the lanes run on unmatched: copy nothing)
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < cols; ++j) {
        const int64_t lane = warp_base + owner(i, j);
        if (lane != self)
          x[i * cols + j] = reinterpret_cast<const E*>(r.shuffle_slots[base + lane])[i * cols + j];
      }
    }
  }
  ::pf_emu::warp_meet();
}

inline int lane() {
  return static_cast<int>(::pf_emu::run().current->linear % ::pf_emu::kWarpSize);
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  using element_type = typename detail::Storage<T>::type;
  static constexpr int rows = detail::Shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];  // the whole tile, row-major, in every lane
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f,
                   typename fragment<Use, M, N, K, T, Layout>::element_type value) {
  for (auto& e : f.x) e = value;
}

// A or B from memory, laid out as the fragment's Layout says.
template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f,
                      const typename fragment<Use, M, N, K, T, Layout>::element_type* p,
                      unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  detail::check_access(p, ldm, sizeof(typename F::element_type), "wmma::load_matrix_sync");
  constexpr bool column_major = std::is_same<Layout, col_major>::value;
  for (int r = 0; r < F::rows; ++r) {
    for (int c = 0; c < F::cols; ++c) {
      if (detail::owner(r, c) == detail::lane())
        f.x[r * F::cols + c] = column_major ? p[c * ldm + r] : p[r * ldm + c];
    }
  }
  detail::gather_owned(f.x, F::rows, F::cols);
}

// The accumulator to float memory.
template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  detail::check_access(p, ldm, sizeof(float), "wmma::store_matrix_sync");
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) {
      if (detail::owner(r, c) == detail::lane())
        (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * N + c];
    }
  }
  // No meeting here: a lane reads what the others stored only after a __syncwarp of its own.
}

// d = a . b + c, in float32 (d may be c).
template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d,
              const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      float sum = c.x[m * N + n];
      for (int k = 0; k < K; ++k)
        sum += detail::to_float(a.x[m * K + k]) * detail::to_float(b.x[k * N + n]);
      out[m * N + n] = sum;
    }
  }
  std::memcpy(d.x, out, sizeof out);
  ::pf_emu::warp_meet();
}

}  // namespace wmma
}  // namespace nvcuda
