// Shared by every kernel source. NVRTC gets it prepended to each .cu file; the
// CPU emulation includes it after emu.h. No system headers: NVRTC has none.
#pragma once

typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

// Every kernel is launched with this many threads per block (shared arrays
// are sized by it). gemm uses 16 x 16 = 256 as well.
#define WEFT_BLOCK 256

#ifndef WEFT_KERNEL
#define WEFT_KERNEL(name, ...) extern "C" __global__ void name(__VA_ARGS__)
#endif

// Global memory reads and writes of the streaming kernels go through these,
// so the CPU emulation can count the bytes each launch moves (tests bound
// them per row). On a GPU they are plain loads and stores.
template <typename T>
__device__ __forceinline__ T weft_load(const T *p) {
#ifdef WEFT_EMU
    weft_emu::bytes_read += sizeof(T);
#endif
    return *p;
}

template <typename T>
__device__ __forceinline__ void weft_store(T *p, T v) {
#ifdef WEFT_EMU
    weft_emu::bytes_written += sizeof(T);
#endif
    *p = v;
}

// Status words that other blocks poll (decoupled look-back): a 64-bit
// store or load that is never cached in a register or torn, counted as
// global traffic too.
__device__ __forceinline__ u64 weft_load_volatile(const u64 *p) {
#ifdef WEFT_EMU
    weft_emu::bytes_read += 8;
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#else
    return *(const volatile u64 *)p;
#endif
}

__device__ __forceinline__ void weft_store_volatile(u64 *p, u64 v) {
#ifdef WEFT_EMU
    weft_emu::bytes_written += 8;
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
#else
    *(volatile u64 *)p = v;
#endif
}

// A global atomic add, counted as a read and a write by the emulation.
__device__ __forceinline__ u32 weft_atomic_add(u32 *p, u32 v) {
#ifdef WEFT_EMU
    weft_emu::bytes_read += 4;
    weft_emu::bytes_written += 4;
#endif
    return atomicAdd(p, v);
}

// Exclusive sum over the block's threads (WEFT_BLOCK of them): warp scans by
// shuffles, then the warp totals. `warp_sums` holds WEFT_BLOCK / 32 values; the
// caller syncs before reusing it.
__device__ __forceinline__ u32 weft_block_exclusive_sum(u32 v, u32 *warp_sums) {
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u32 inc = v;
    for (u32 o = 1; o < 32; o <<= 1) {
        u32 y = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += y;
    }
    if (lane == 31) warp_sums[warp] = inc;
    __syncthreads();
    u32 before = 0;
    for (u32 w = 0; w < warp; ++w) before += warp_sums[w];
    return before + inc - v;
}

// Validity bitmaps are Arrow's (LSB first), read as little-endian 32-bit
// words; a null pointer means "no nulls".
__device__ __forceinline__ bool weft_valid(const u32 *validity, u64 i) {
    return validity == 0 || ((validity[i >> 5] >> (i & 31)) & 1u);
}

__device__ __forceinline__ u32 weft_word(const u32 *validity, u64 w) {
    return validity == 0 ? 0xffffffffu : validity[w];
}

// Bits of word `w` that are inside a column of `n` rows.
__device__ __forceinline__ u32 weft_tail_mask(u64 n, u64 w) {
    u64 start = w * 32;
    if (start + 32 <= n) return 0xffffffffu;
    if (start >= n) return 0u;
    return (1u << (u32)(n - start)) - 1u;
}

__device__ __forceinline__ u64 weft_global_id() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ u64 weft_grid_size() {
    return (u64)gridDim.x * blockDim.x;
}

// The hash of the partitioning kernels: the same bits on CPU (weft-kernels'
// hash.rs) and GPU. murmur3's 64-bit finaliser over a golden-ratio mix.
#define WEFT_GOLDEN 0x9E3779B97F4A7C15ULL
#define WEFT_NULL_HASH_SALT 0xA5A5A5A5A5A5A5A5ULL

__device__ __forceinline__ u64 weft_fmix64(u64 k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

__device__ __forceinline__ u64 weft_hash_i64(i64 v, u64 seed) {
    return weft_fmix64((u64)v ^ (seed * WEFT_GOLDEN));
}

__device__ __forceinline__ u64 weft_hash_null(u64 seed) {
    return weft_fmix64(seed ^ WEFT_NULL_HASH_SALT);
}

__device__ __forceinline__ u64 weft_hash_bytes(const unsigned char *p, u64 len, u64 seed) {
    u64 h = (seed * WEFT_GOLDEN) ^ (len * 0xff51afd7ed558ccdULL);
    u64 i = 0;
    for (; i + 8 <= len; i += 8) {
        u64 chunk = 0;
        for (int b = 7; b >= 0; --b) chunk = (chunk << 8) | p[i + b];
        h = (h ^ weft_fmix64(chunk)) * WEFT_GOLDEN;
        h ^= h >> 29;
    }
    if (i < len) {
        u64 chunk = 0;
        for (u64 b = len; b > i; --b) chunk = (chunk << 8) | p[b - 1];
        h = (h ^ weft_fmix64(chunk)) * WEFT_GOLDEN;
        h ^= h >> 29;
    }
    return weft_fmix64(h ^ len);
}

// Partition of a hash into `parts` buckets: the high half of hash * parts.
__device__ __forceinline__ u32 weft_bucket(u64 h, u32 parts) {
    return (u32)__umul64hi(h, (u64)parts);
}
