// Exact int8-weight linears on AMX: y[M, N] = (x[M, K] @ W[N, K]^T) * scales[N] + bias[N].
//
// W holds the checkpoint's integers q - zero_point (|w| <= 152: exact in bfloat16). x (float32)
// is split into three bfloat16 parts whose sum is x exactly (8 + 8 + 8 significant bits), so every
// product the tiles form is exact and only the float32 sums round, as in a float32 GEMM. Built
// by `amx.py` on the machine that runs it and loaded as the torch op `moonshine_live::amx_linear`.
#include <ATen/ATen.h>
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <torch/library.h>
#include <unistd.h>

namespace {

constexpr int64_t kTile = 16;    // rows of a tile; output columns of a weight tile
constexpr int64_t kStep = 32;    // bfloat16 values per tile row: the k of one tile product
constexpr int64_t kBlock = 32;   // rows and columns of the output block one thread computes
constexpr int64_t kTileSize = kTile * kStep;
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

// Row i of x -> three bfloat16 rows (truncated parts): hi + mid + lo == x exactly.
void split_row(const float *row, int64_t k, uint16_t *hi, uint16_t *mid, uint16_t *lo) {
    const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (int64_t j = 0; j < k; j += 16) {
        const __m512 x = _mm512_loadu_ps(row + j);
        const __m512i u0 = _mm512_castps_si512(x);
        const __m512 r1 = _mm512_sub_ps(x, _mm512_castsi512_ps(_mm512_and_si512(u0, top)));
        const __m512i u1 = _mm512_castps_si512(r1);
        const __m512 r2 = _mm512_sub_ps(r1, _mm512_castsi512_ps(_mm512_and_si512(u1, top)));
        const __m512i u2 = _mm512_castps_si512(r2);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(hi + j),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(u0, 16)));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(mid + j),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(u1, 16)));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(lo + j),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(u2, 16)));
    }
}

void linear(const float *x, int64_t m, int64_t k, const uint16_t *packed, int64_t n,
            const float *scales, const float *bias, float *y, uint16_t *parts) {
    const int64_t m_pad = (m + kBlock - 1) / kBlock * kBlock;
    const int64_t k_tiles = k / kStep, m_blocks = m_pad / kBlock, n_blocks = n / kBlock;
    const int64_t part_stride = m_pad * k;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < m_pad; i++) {
            uint16_t *hi = parts + i * k;
            if (i < m) {
                split_row(x + i * k, k, hi, hi + part_stride, hi + 2 * part_stride);
            } else {
                for (int p = 0; p < 3; p++) memset(hi + p * part_stride, 0, k * 2);
            }
        }
        configure_tiles();
        alignas(64) float c[kBlock * kBlock];
        // Output blocks row-block-major: a thread's rows of x stay in its cache while the
        // weights stream past (conv2 at 2 s: K = 2912).
#pragma omp for schedule(static)
        for (int64_t block = 0; block < m_blocks * n_blocks; block++) {
            const int64_t m0 = block / n_blocks * kBlock, nb = block % n_blocks;
            const uint16_t *b0 = packed + 2 * nb * k_tiles * kTileSize;
            const uint16_t *b1 = b0 + k_tiles * kTileSize;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t kt = 0; kt < k_tiles; kt++) {
                _tile_loadd(6, b0 + kt * kTileSize, 64);
                _tile_loadd(7, b1 + kt * kTileSize, 64);
                for (int p = 0; p < 3; p++) {
                    const uint16_t *a = parts + p * part_stride + m0 * k + kt * kStep;
                    _tile_loadd(4, a, k * 2);
                    _tile_loadd(5, a + kTile * k, k * 2);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 4, 7);
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
            }
            _tile_stored(0, c, kBlock * 4);
            _tile_stored(1, c + kTile, kBlock * 4);
            _tile_stored(2, c + kTile * kBlock, kBlock * 4);
            _tile_stored(3, c + kTile * kBlock + kTile, kBlock * 4);
            const int64_t rows = std::min(kBlock, m - m0);
            const float *s = scales + nb * kBlock;
            const float *b = bias ? bias + nb * kBlock : nullptr;
            for (int64_t i = 0; i < rows; i++) {
                float *out = y + (m0 + i) * n + nb * kBlock;
                for (int64_t j = 0; j < kBlock; j++)
                    out[j] = c[i * kBlock + j] * s[j] + (b ? b[j] : 0.0f);
            }
        }
        _tile_release();
    }
}

void check(bool ok, const char *what) { TORCH_CHECK(ok, "moonshine_live::amx: ", what); }

// int8 q [N, K] and its zero point -> the weight tiles `amx_linear` reads: for each 16 output
// rows and 32 inputs, a 16 x 32 bfloat16 tile in pair-interleaved (VNNI) order.
at::Tensor amx_pack(const at::Tensor &q, double zero_point) {
    check(q.scalar_type() == at::kChar && q.dim() == 2 && q.device().is_cpu(), "q must be 2-d int8");
    const int64_t n = q.size(0), k = q.size(1);
    check(n % kBlock == 0 && k % kStep == 0, "sizes must be multiples of 32");
    const at::Tensor qc = q.contiguous();
    const int8_t *src = qc.data_ptr<int8_t>();
    at::Tensor packed = at::empty({n * k}, q.options().dtype(at::kShort));
    uint16_t *dst = reinterpret_cast<uint16_t *>(packed.data_ptr<int16_t>());
    const float zp = static_cast<float>(zero_point);
    for (int64_t nt = 0; nt < n / kTile; nt++)
        for (int64_t kt = 0; kt < k / kStep; kt++) {
            uint16_t *tile = dst + (nt * (k / kStep) + kt) * kTileSize;
            for (int64_t r = 0; r < kTile; r++)
                for (int64_t col = 0; col < kTile; col++)
                    for (int64_t e = 0; e < 2; e++) {
                        const float w = static_cast<float>(src[(nt * kTile + col) * k + kt * kStep + 2 * r + e]) - zp;
                        uint32_t u;
                        memcpy(&u, &w, 4);  // a small integer: its top half is exact
                        tile[r * kStep + col * 2 + e] = static_cast<uint16_t>(u >> 16);
                    }
        }
    return packed;
}

at::Tensor amx_linear(const at::Tensor &x, const at::Tensor &packed, const at::Tensor &scales,
                      const std::optional<at::Tensor> &bias, int64_t out_features) {
    check(x.scalar_type() == at::kFloat && x.device().is_cpu(), "x must be float32 on the CPU");
    const int64_t k = x.size(-1), n = out_features;
    check(k % kStep == 0 && n % kBlock == 0, "sizes must be multiples of 32");
    check(packed.numel() == n * k && packed.scalar_type() == at::kShort, "packed weight does not fit x");
    check(scales.numel() == n && scales.scalar_type() == at::kFloat, "scales must be float32 [N]");
    check(enable_tiles(), "the kernel refused this process the AMX tile state");
    const at::Tensor x2 = x.reshape({-1, k}).contiguous();
    const at::Tensor s = scales.contiguous();
    const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
    check(!b.defined() || (b.numel() == n && b.scalar_type() == at::kFloat), "bias must be float32 [N]");
    auto sizes = x.sizes().vec();
    sizes.back() = n;
    at::Tensor y = at::empty(sizes, x.options());
    const int64_t m = x2.size(0);
    if (m == 0) return y;
    const int64_t m_pad = (m + kBlock - 1) / kBlock * kBlock;
    at::Tensor parts = at::empty({3 * m_pad * k}, x.options().dtype(at::kShort));
    linear(x2.data_ptr<float>(), m, k, reinterpret_cast<const uint16_t *>(packed.data_ptr<int16_t>()),
           n, s.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(),
           reinterpret_cast<uint16_t *>(parts.data_ptr<int16_t>()));
    return y;
}

}  // namespace

TORCH_LIBRARY(moonshine_live, m) {
    m.def("amx_pack(Tensor q, float zero_point) -> Tensor");
    m.def("amx_linear(Tensor x, Tensor packed, Tensor scales, Tensor? bias, int out_features) -> Tensor");
}

TORCH_LIBRARY_IMPL(moonshine_live, CPU, m) {
    m.impl("amx_pack", amx_pack);
    m.impl("amx_linear", amx_linear);
}
