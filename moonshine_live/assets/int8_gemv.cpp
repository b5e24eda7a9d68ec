// Decode-step linears from int8 weights: y[M, N] = x[M, K] @ W[N, K]^T + bias[N] for a few rows
// of x (one per utterance of a batch), W[n, k] = (q[n, k] - zero_point) * scale.
//
// A decode step is bound by weight traffic: it streams 38.5 MB of int8 weights from memory. The
// hardware prefetcher stops at every 4 KB page, so each thread asks for the weights a few pages
// ahead of its rows itself, four weight rows share each load of x, and each widened weight
// vector serves up to kTile rows of x (a beam's hypotheses) before it is dropped. The zero point leaves the
// sum once per row: sum_k x_k (q_k - z) = sum_k x_k q_k - z sum_k x_k. AVX-512 where the CPU has
// it (built with -march=native), else AVX2 with FMA.
#include <ATen/ATen.h>
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <torch/library.h>

namespace {

constexpr int64_t kRows = 4;          // weight rows per block: one load of x serves four
constexpr int64_t kAhead = 4096;      // bytes prefetched ahead of the rows being read
constexpr int64_t kMaxBatch = 8;      // rows of x kept in one pass over the weights

void check(bool ok, const char *what) { TORCH_CHECK(ok, "moonshine_live::int8_linear: ", what); }

#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr int64_t kLanes = 16;
using Vec = __m512;
inline Vec zeros() { return _mm512_setzero_ps(); }
inline Vec load(const float *at) { return _mm512_loadu_ps(at); }
inline Vec widen(const int8_t *at) {  // 16 int8 -> 16 float
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(at))));
}
inline Vec multiply_add(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float total(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kLanes = 8;
using Vec = __m256;
inline Vec zeros() { return _mm256_setzero_ps(); }
inline Vec load(const float *at) { return _mm256_loadu_ps(at); }
inline Vec widen(const int8_t *at) {  // 8 int8 -> 8 float
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(at))));
}
inline Vec multiply_add(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float total(Vec v) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
}
#else
#error "int8_gemv.cpp needs AVX-512 (F and BW) or AVX2 with FMA"
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr int64_t kRegisters = 32;
#else
constexpr int64_t kRegisters = 16;
#endif
constexpr int64_t kTile = 6;  // rows of x per pass over a weight block (kMaxBatch 8: 6 + 2)

// whether M rows of x and R weight rows keep their accumulators, widened weights and x in
// registers (a spill costs more than widening the weights again)
constexpr bool fits(int64_t m, int64_t r) { return m * r + r + 1 <= kRegisters; }

// dots[i][r] = sum_k x[i][k] q[r][k] for M rows of x (stride k) and R weight rows starting at
// q: each weight vector is widened once and serves the M rows of x (a beam's hypotheses),
// instead of once per row.
template <int64_t M, int64_t R>
inline void dot_block(const float *x, const int8_t *q, int64_t k, float dots[][kRows]) {
    Vec acc[M][R];
    for (int64_t i = 0; i < M; i++)
        for (int64_t r = 0; r < R; r++) acc[i][r] = zeros();
    int64_t j = 0;
    for (; j + kLanes <= k; j += kLanes) {
        Vec w[R];
        for (int64_t r = 0; r < R; r++) w[r] = widen(q + r * k + j);
        for (int64_t i = 0; i < M; i++) {
            const Vec xv = load(x + i * k + j);
            for (int64_t r = 0; r < R; r++) acc[i][r] = multiply_add(w[r], xv, acc[i][r]);
        }
    }
    for (int64_t i = 0; i < M; i++)
        for (int64_t r = 0; r < R; r++) {
            float dot = total(acc[i][r]);
            for (int64_t tail = j; tail < k; tail++)
                dot += x[i * k + tail] * static_cast<float>(q[r * k + tail]);
            dots[i][r] = dot;
        }
}

// M rows of x against `rows` (1..4) weight rows. Up to two rows of x take the four weight
// rows at once; more take them two at a time, so each widened weight still serves every row of
// x without the accumulators spilling. The rare short block (N not a multiple of four) goes one
// weight row at a time.
template <int64_t M>
inline void dot_tile(const float *x, const int8_t *q, int64_t k, int64_t rows, float dots[][kRows]) {
    if (rows == kRows && fits(M, kRows)) {
        dot_block<M, kRows>(x, q, k, dots);
        return;
    }
    if (rows == kRows && fits(M, 2)) {
        float half[M][kRows];
        dot_block<M, 2>(x, q, k, dots);
        dot_block<M, 2>(x, q + 2 * k, k, half);
        for (int64_t i = 0; i < M; i++) dots[i][2] = half[i][0], dots[i][3] = half[i][1];
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        float one[M][kRows];
        dot_block<M, 1>(x, q + r * k, k, one);
        for (int64_t i = 0; i < M; i++) dots[i][r] = one[i][0];
    }
}

// the rows of x in tiles of kTile (the last one shorter)
inline void dot_rows(const float *x, int64_t m, const int8_t *q, int64_t k, int64_t rows,
                     float dots[][kRows]) {
    int64_t i = 0;
    for (; i + kTile <= m; i += kTile) dot_tile<kTile>(x + i * k, q, k, rows, dots + i);
    switch (m - i) {
        case 1: dot_tile<1>(x + i * k, q, k, rows, dots + i); break;
        case 2: dot_tile<2>(x + i * k, q, k, rows, dots + i); break;
        case 3: dot_tile<3>(x + i * k, q, k, rows, dots + i); break;
        case 4: dot_tile<4>(x + i * k, q, k, rows, dots + i); break;
        case 5: dot_tile<5>(x + i * k, q, k, rows, dots + i); break;
        default: break;
    }
}

void linear(const float *x, int64_t m, int64_t k, const int8_t *q, int64_t n, float scale,
            float zero_point, const float *bias, float *y) {
    float x_sums[kMaxBatch];
    for (int64_t i = 0; i < m; i++) {
        double total = 0.0;
        for (int64_t j = 0; j < k; j++) total += x[i * k + j];
        x_sums[i] = static_cast<float>(total * zero_point);
    }
    const int64_t blocks = (n + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
    for (int64_t block = 0; block < blocks; block++) {
        const int64_t row = block * kRows, rows = std::min(kRows, n - row);
        const int8_t *w = q + row * k;
        for (int64_t at = 0; at < rows * k; at += 64)
            _mm_prefetch(reinterpret_cast<const char *>(w) + kAhead + at, _MM_HINT_T0);
        float dots[kMaxBatch][kRows];
        dot_rows(x, m, w, k, rows, dots);
        for (int64_t i = 0; i < m; i++)
            for (int64_t r = 0; r < rows; r++) {
                const float value = (dots[i][r] - x_sums[i]) * scale;
                y[i * n + row + r] = bias ? value + bias[row + r] : value;
            }
    }
}

at::Tensor int8_linear(const at::Tensor &x, const at::Tensor &q, double scale, double zero_point,
                       const std::optional<at::Tensor> &bias) {
    check(x.scalar_type() == at::kFloat && x.device().is_cpu(), "x must be float32 on the CPU");
    check(q.scalar_type() == at::kChar && q.dim() == 2 && q.is_contiguous(),
          "q must be a contiguous 2-d int8 tensor");
    const int64_t k = x.size(-1), n = q.size(0);
    check(q.size(1) == k, "x and q disagree on the input features");
    const at::Tensor x2 = x.reshape({-1, k}).contiguous();
    const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
    check(!b.defined() || (b.numel() == n && b.scalar_type() == at::kFloat), "bias must be float32 [N]");
    auto sizes = x.sizes().vec();
    sizes.back() = n;
    at::Tensor y = at::empty(sizes, x.options());
    const float *bias_data = b.defined() ? b.data_ptr<float>() : nullptr;
    for (int64_t start = 0; start < x2.size(0); start += kMaxBatch) {
        const int64_t m = std::min(kMaxBatch, x2.size(0) - start);
        linear(x2.data_ptr<float>() + start * k, m, k, q.data_ptr<int8_t>(), n,
               static_cast<float>(scale), static_cast<float>(zero_point), bias_data,
               y.data_ptr<float>() + start * n);
    }
    return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(moonshine_live, m) {
    m.def("int8_linear(Tensor x, Tensor q, float scale, float zero_point, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(moonshine_live, CPU, m) { m.impl("int8_linear", int8_linear); }
