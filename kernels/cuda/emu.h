// CPU emulation of the CUDA execution model, for running the kernels in
// kernels/cuda/*.cu as C++ (weft-kernels' build.rs compiles them with this
// header first). A launch runs blocks one after another, in block order;
// each block runs one OS thread per CUDA thread, and __syncthreads() is a
// barrier among the threads of the block that have not yet returned. Warp
// intrinsics (__ballot_sync, __shfl*_sync, __match_any_sync, __syncwarp)
// exchange values among the 32 threads of a warp through a warp barrier
// that waits for the threads named in the mask.
//
// Blocks in order is what makes decoupled look-back correct here: a block
// only ever waits for tiles taken by earlier blocks, which have finished.
// A kernel that waited for a later block would hang, as it could on a GPU.
//
// Global memory traffic is counted per launch: kernels read and write
// global memory through weft_load/weft_store (common.cuh), which add to
// per-thread counters here; the launcher sums them.
#pragma once

#define WEFT_EMU 1

#include <math.h>
#include <stddef.h>
#include <string.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x, y, z;
};
struct uint3 {
    unsigned x, y, z;
};

namespace weft_emu {
extern thread_local uint3 thread_idx;
extern thread_local uint3 block_idx;
extern dim3 block_dim;
extern dim3 grid_dim;
void syncthreads();

// Bytes of global memory read and written by this thread in this launch.
extern thread_local unsigned long long bytes_read;
extern thread_local unsigned long long bytes_written;

// The warp of the calling thread: its lane and the exchange through which
// the warp intrinsics pass values.
unsigned lane_id();
// Every thread named in `mask` offers `v`; once all have, each gets the
// 32 offered slots (slots of lanes outside `mask` are unspecified).
void warp_exchange(unsigned mask, unsigned long long v, unsigned long long *slots);
void warp_sync(unsigned mask);

typedef void (*Invoker)(void (*)(), void **);

template <typename... A, size_t... I>
void invoke_impl(void (*k)(), void **args, std::index_sequence<I...>) {
    reinterpret_cast<void (*)(A...)>(k)(*static_cast<std::remove_reference_t<A> *>(args[I])...);
}

template <typename... A>
void invoke(void (*k)(), void **args) {
    invoke_impl<A...>(k, args, std::index_sequence_for<A...>{});
}

void register_kernel(const char *name, void (*k)(), Invoker invoker);

struct Registrar {
    template <typename... A>
    Registrar(const char *name, void (*k)(A...)) {
        register_kernel(name, reinterpret_cast<void (*)()>(k), &invoke<A...>);
    }
};
}  // namespace weft_emu

#define threadIdx (weft_emu::thread_idx)
#define blockIdx (weft_emu::block_idx)
#define blockDim (weft_emu::block_dim)
#define gridDim (weft_emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Blocks run one at a time, so a function-local static is exactly one
// block's shared memory.
#define __shared__ static

#define WEFT_KERNEL(name, ...)                                              \
    extern "C" void name(__VA_ARGS__);                                      \
    static weft_emu::Registrar weft_registrar_##name(#name, &name);         \
    extern "C" void name(__VA_ARGS__)

inline void __syncthreads() { weft_emu::syncthreads(); }

inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicOr(unsigned *p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned *p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(unsigned v) { return v == 0 ? 32 : __builtin_clz(v); }
inline int __ffs(unsigned v) { return __builtin_ffs((int)v); }

inline void __syncwarp(unsigned mask = 0xffffffffu) { weft_emu::warp_sync(mask); }

inline unsigned __ballot_sync(unsigned mask, int pred) {
    unsigned long long slots[32];
    weft_emu::warp_exchange(mask, pred ? 1 : 0, slots);
    unsigned r = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (((mask >> l) & 1u) && slots[l]) r |= 1u << l;
    return r;
}

inline unsigned __match_any_sync(unsigned mask, unsigned long long v) {
    unsigned long long slots[32];
    weft_emu::warp_exchange(mask, v, slots);
    unsigned r = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (((mask >> l) & 1u) && slots[l] == v) r |= 1u << l;
    return r;
}

// Shuffles of any trivially copyable value up to 8 bytes.
template <typename T>
inline T weft_emu_shfl(unsigned mask, T v, int src, bool valid) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    unsigned long long bits = 0;
    memcpy(&bits, &v, sizeof v);
    unsigned long long slots[32];
    weft_emu::warp_exchange(mask, bits, slots);
    if (!valid) return v;
    T out;
    memcpy(&out, &slots[src], sizeof out);
    return out;
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    unsigned lane = weft_emu::lane_id();
    int s = (int)(lane & ~(unsigned)(width - 1)) + (src & (width - 1));
    return weft_emu_shfl(mask, v, s, true);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    unsigned lane = weft_emu::lane_id();
    unsigned in = lane & (unsigned)(width - 1);
    return weft_emu_shfl(mask, v, (int)(lane - delta), in >= delta);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    unsigned lane = weft_emu::lane_id();
    unsigned in = lane & (unsigned)(width - 1);
    return weft_emu_shfl(mask, v, (int)(lane + delta), in + delta < (unsigned)width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    unsigned lane = weft_emu::lane_id();
    return weft_emu_shfl(mask, v, (int)(lane ^ (unsigned)lane_mask), true);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline double __longlong_as_double(long long v) {
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long v;
    memcpy(&v, &d, sizeof v);
    return v;
}
inline float __int_as_float(int v) {
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}
