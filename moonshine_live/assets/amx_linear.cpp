// Exact int8-weight linears on AMX: y[M, N] = (x[M, K] @ W[N, K]^T) + bias[N], where W is the
// checkpoint's int8 tensor: W[n, k] = (q[n, k] - zero_point[n]) * scale[n].
//
// Each row of x becomes 22-bit integers on a per-row scale (x ~= s_row * x_int, as fine as the
// row's largest value allows) and those integers three signed bytes (x_int = d2 * 2^16 + d1 *
// 2^8 + d0). The tiles form int8 x int8 products in int32, exactly; the three sums combine in
// int64 and leave integer arithmetic once, in double, so the only rounding is the activations'
// 22-bit grid and the final float32 result. Built by `amx.py` on the machine that runs it and
// loaded as the torch op `moonshine_live::amx_linear`.
#include <ATen/ATen.h>
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <torch/library.h>
#include <unistd.h>

#include <algorithm>

namespace {

constexpr int64_t kTile = 16;                // rows of a tile; output columns of a weight tile
constexpr int64_t kStep = 64;                // int8 values per tile row: the k of one product
constexpr int64_t kTileSize = kTile * kStep;  // bytes
constexpr int64_t kColumns = 2 * kTile;      // output columns one block computes
constexpr int kDigits = 3;
constexpr float kGrid = 4194304.0f;  // 2^22: the top digit stays within +-65
constexpr int kArchRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
constexpr int kTileData = 18;                   // XFEATURE_XTILEDATA

struct TileConfig {
    uint8_t palette_id = 1, start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
} __attribute__((packed));

bool enable_tiles() {  // Linux hands out the tile state only on request, once per process
    static const bool granted =
        syscall(SYS_arch_prctl, kArchRequestPermission, kTileData) == 0;
    return granted;
}

void configure_tiles() {
    TileConfig config;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = kTile;
        config.colsb[t] = 64;
    }
    _tile_loadconfig(&config);
}

int64_t padded(int64_t k) { return (k + kStep - 1) / kStep * kStep; }

// One row of x -> its digits, where the tiles read them (digit d, row tile, k tile: one
// contiguous 16 x 64 tile), its grid step and the sum of its integers (for the zero points).
void split_row(const float *row, int64_t k, int64_t k_tiles, int8_t *out, int64_t digit_stride,
               double *step, int64_t *sum) {
    __m512 largest = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) {
        const __mmask16 in = j + 16 <= k ? 0xFFFF : static_cast<__mmask16>((1u << (k - j)) - 1);
        largest = _mm512_max_ps(largest, _mm512_abs_ps(_mm512_maskz_loadu_ps(in, row + j)));
    }
    const float top = _mm512_reduce_max_ps(largest);
    const float scale = top > 0.0f ? kGrid / top : 0.0f;
    *step = top > 0.0f ? static_cast<double>(top) / kGrid : 0.0;
    const __m512 times = _mm512_set1_ps(scale);
    int64_t total = 0;
    for (int64_t j = 0; j < k_tiles * kStep; j += 16) {
        const __mmask16 in = j + 16 <= k ? 0xFFFF
                             : j < k     ? static_cast<__mmask16>((1u << (k - j)) - 1)
                                         : 0;
        const __m512i value = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(in, row + j), times));
        total += _mm512_reduce_add_epi32(value);
        const __m512i d0 = _mm512_srai_epi32(_mm512_slli_epi32(value, 24), 24);
        const __m512i rest = _mm512_srai_epi32(_mm512_sub_epi32(value, d0), 8);
        const __m512i d1 = _mm512_srai_epi32(_mm512_slli_epi32(rest, 24), 24);
        const __m512i d2 = _mm512_srai_epi32(_mm512_sub_epi32(rest, d1), 8);
        int8_t *at = out + (j / kStep) * kTileSize + j % kStep;
        _mm_storeu_si128(reinterpret_cast<__m128i *>(at), _mm512_cvtepi32_epi8(d0));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(at + digit_stride), _mm512_cvtepi32_epi8(d1));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(at + 2 * digit_stride), _mm512_cvtepi32_epi8(d2));
    }
    *sum = total;
}

void linear(const float *x, int64_t m, int64_t k, int64_t ldx, const int8_t *packed, int64_t n,
            const float *scales, const float *zero_points, const float *bias, float *y,
            int8_t *digits, double *steps, int64_t *sums) {
    const int64_t k_tiles = padded(k) / kStep, m_tiles = (m + kTile - 1) / kTile;
    const int64_t n_blocks = n / kColumns;
    const int64_t digit_stride = m_tiles * k_tiles * kTileSize;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < m_tiles * kTile; i++) {  // row i: row i % 16 of row tile i / 16
            int8_t *at = digits + (i / kTile) * k_tiles * kTileSize + (i % kTile) * kStep;
            if (i < m) {
                split_row(x + i * ldx, k, k_tiles, at, digit_stride, steps + i, sums + i);
            } else {
                for (int d = 0; d < kDigits; d++)
                    for (int64_t kt = 0; kt < k_tiles; kt++)
                        memset(at + d * digit_stride + kt * kTileSize, 0, kStep);
            }
        }
        configure_tiles();
        alignas(64) int32_t c[kDigits][kTile * kColumns];
        // Blocks row-tile-major: a thread's digits stay in its cache while the weights stream.
#pragma omp for schedule(static)
        for (int64_t block = 0; block < m_tiles * n_blocks; block++) {
            const int64_t mt = block / n_blocks, nb = block % n_blocks;
            const int8_t *b0 = packed + 2 * nb * k_tiles * kTileSize;
            const int8_t *b1 = b0 + k_tiles * kTileSize;
            const int8_t *a = digits + mt * k_tiles * kTileSize;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            _tile_zero(4);
            _tile_zero(5);
            for (int64_t kt = 0; kt < k_tiles; kt++) {
                _tile_loadd(6, b0 + kt * kTileSize, 64);
                _tile_loadd(7, a + kt * kTileSize, 64);
                _tile_dpbssd(0, 7, 6);
                _tile_loadd(7, a + digit_stride + kt * kTileSize, 64);
                _tile_dpbssd(1, 7, 6);
                _tile_loadd(7, a + 2 * digit_stride + kt * kTileSize, 64);
                _tile_dpbssd(2, 7, 6);
                _tile_loadd(6, b1 + kt * kTileSize, 64);
                _tile_dpbssd(5, 7, 6);
                _tile_loadd(7, a + digit_stride + kt * kTileSize, 64);
                _tile_dpbssd(4, 7, 6);
                _tile_loadd(7, a + kt * kTileSize, 64);
                _tile_dpbssd(3, 7, 6);
            }
            _tile_stored(0, c[0], kColumns * 4);
            _tile_stored(1, c[1], kColumns * 4);
            _tile_stored(2, c[2], kColumns * 4);
            _tile_stored(3, c[0] + kTile, kColumns * 4);
            _tile_stored(4, c[1] + kTile, kColumns * 4);
            _tile_stored(5, c[2] + kTile, kColumns * 4);
            const int64_t rows = std::min(kTile, m - mt * kTile);
            const int64_t n0 = nb * kColumns;
            for (int64_t i = 0; i < rows; i++) {
                const int64_t row = mt * kTile + i;
                const __m512d step = _mm512_set1_pd(steps[row]);
                const __m512d sum = _mm512_set1_pd(static_cast<double>(sums[row]));
                float *out = y + row * n + n0;
                for (int64_t j = 0; j < kColumns; j += 8) {  // in double: every step is exact
                    const int64_t at = i * kColumns + j;
                    const __m512d d0 = _mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(c[0] + at)));
                    const __m512d d1 = _mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(c[1] + at)));
                    const __m512d d2 = _mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(c[2] + at)));
                    const __m512d exact = _mm512_add_pd(
                        _mm512_add_pd(_mm512_mul_pd(d2, _mm512_set1_pd(65536.0)),
                                      _mm512_mul_pd(d1, _mm512_set1_pd(256.0))),
                        d0);
                    const __m512d zero = _mm512_cvtps_pd(_mm256_loadu_ps(zero_points + n0 + j));
                    const __m512d scale = _mm512_cvtps_pd(_mm256_loadu_ps(scales + n0 + j));
                    const __m512d value = _mm512_mul_pd(_mm512_sub_pd(exact, _mm512_mul_pd(zero, sum)),
                                                        _mm512_mul_pd(step, scale));
                    __m256 result = _mm512_cvtpd_ps(value);
                    if (bias) result = _mm256_add_ps(result, _mm256_loadu_ps(bias + n0 + j));
                    _mm256_storeu_ps(out + j, result);
                }
            }
        }
        _tile_release();
    }
}

void check(bool ok, const char *what) { TORCH_CHECK(ok, "moonshine_live::amx: ", what); }

// int8 q [N, K] -> the weight tiles `amx_linear` reads: for each 16 output rows and 64 inputs
// (zero-padded to a multiple of 64), a 16 x 64 int8 tile in quad-interleaved (VNNI) order.
at::Tensor amx_pack(const at::Tensor &q) {
    check(q.scalar_type() == at::kChar && q.dim() == 2 && q.device().is_cpu(), "q must be 2-d int8");
    const int64_t n = q.size(0), k = q.size(1), k_tiles = padded(k) / kStep;
    check(n % kColumns == 0, "output sizes must be multiples of 32");
    const at::Tensor qc = q.contiguous();
    const int8_t *src = qc.data_ptr<int8_t>();
    at::Tensor packed = at::zeros({n * k_tiles * kStep}, q.options());
    int8_t *dst = packed.data_ptr<int8_t>();
    for (int64_t nt = 0; nt < n / kTile; nt++)
        for (int64_t kt = 0; kt < k_tiles; kt++) {
            int8_t *tile = dst + (nt * k_tiles + kt) * kTileSize;
            for (int64_t r = 0; r < kTile; r++)
                for (int64_t col = 0; col < kTile; col++)
                    for (int64_t e = 0; e < 4; e++) {
                        const int64_t from = kt * kStep + 4 * r + e;
                        if (from < k) tile[r * kStep + col * 4 + e] = src[(nt * kTile + col) * k + from];
                    }
        }
    return packed;
}

at::Tensor amx_linear(const at::Tensor &x, const at::Tensor &packed, const at::Tensor &scales,
                      const at::Tensor &zero_points, const std::optional<at::Tensor> &bias,
                      int64_t out_features) {
    check(x.scalar_type() == at::kFloat && x.device().is_cpu(), "x must be float32 on the CPU");
    const int64_t k = x.size(-1), n = out_features;
    check(n % kColumns == 0, "output sizes must be multiples of 32");
    check(packed.numel() == n * padded(k) && packed.scalar_type() == at::kChar,
          "packed weight does not fit x");
    check(scales.numel() == n && scales.scalar_type() == at::kFloat, "scales must be float32 [N]");
    check(zero_points.numel() == n && zero_points.scalar_type() == at::kFloat,
          "zero points must be float32 [N]");
    check(enable_tiles(), "the kernel refused this process the AMX tile state");
    // rows may overlap or leave gaps (a conv's windows as a view of its input): only the
    // elements of a row must be adjacent
    at::Tensor x2 = x.reshape({-1, k});
    if (x2.stride(1) != 1 || x2.stride(0) < 0) x2 = x2.contiguous();
    const at::Tensor s = scales.contiguous(), z = zero_points.contiguous();
    const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
    check(!b.defined() || (b.numel() == n && b.scalar_type() == at::kFloat), "bias must be float32 [N]");
    auto sizes = x.sizes().vec();
    sizes.back() = n;
    at::Tensor y = at::empty(sizes, x.options());
    const int64_t m = x2.size(0);
    if (m == 0) return y;
    const int64_t m_pad = (m + kTile - 1) / kTile * kTile;
    at::Tensor digits = at::empty({kDigits * m_pad * padded(k)}, x.options().dtype(at::kChar));
    at::Tensor steps = at::empty({m}, x.options().dtype(at::kDouble));
    at::Tensor sums = at::empty({m}, x.options().dtype(at::kLong));
    linear(x2.data_ptr<float>(), m, k, x2.stride(0), packed.data_ptr<int8_t>(), n, s.data_ptr<float>(),
           z.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(),
           digits.data_ptr<int8_t>(), steps.data_ptr<double>(), sums.data_ptr<int64_t>());
    return y;
}

}  // namespace

TORCH_LIBRARY(moonshine_live, m) {
    m.def("amx_pack(Tensor q) -> Tensor");
    m.def(
        "amx_linear(Tensor x, Tensor packed, Tensor scales, Tensor zero_points, Tensor? bias, "
        "int out_features) -> Tensor");
}

TORCH_LIBRARY_IMPL(moonshine_live, CPU, m) {
    m.impl("amx_pack", amx_pack);
    m.impl("amx_linear", amx_linear);
}
