// Row-major GEMM, C = A (m x k) * B (k x n), with 16 x 16 shared-memory
// tiles. Launched with 16 x 16 blocks over a (ceil(n/16), ceil(m/16)) grid.
// Real GPUs use cuBLAS; this kernel backs emulated devices and is checked
// by NVRTC like the others.

#define GEMM_TILE 16

template <typename T>
__device__ void gemm_tiled(const T *a, const T *b, T *c, u64 m, u64 n, u64 k) {
    __shared__ T as[GEMM_TILE][GEMM_TILE];
    __shared__ T bs[GEMM_TILE][GEMM_TILE];
    u32 tx = threadIdx.x, ty = threadIdx.y;
    u64 row = (u64)blockIdx.y * GEMM_TILE + ty;
    u64 col = (u64)blockIdx.x * GEMM_TILE + tx;
    T acc = 0;
    for (u64 k0 = 0; k0 < k; k0 += GEMM_TILE) {
        as[ty][tx] = (row < m && k0 + tx < k) ? a[row * k + k0 + tx] : (T)0;
        bs[ty][tx] = (col < n && k0 + ty < k) ? b[(k0 + ty) * n + col] : (T)0;
        __syncthreads();
        for (u32 j = 0; j < GEMM_TILE; ++j) acc += as[ty][j] * bs[j][tx];
        __syncthreads();
    }
    if (row < m && col < n) c[row * n + col] = acc;
}

WEFT_KERNEL(gemm_f32, const float *a, const float *b, float *c, u64 m, u64 n, u64 k) {
    gemm_tiled<float>(a, b, c, m, n, k);
}

WEFT_KERNEL(gemm_f64, const double *a, const double *b, double *c, u64 m, u64 n, u64 k) {
    gemm_tiled<double>(a, b, c, m, n, k);
}
