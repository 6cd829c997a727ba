// CPU emulation of the CUDA execution model, for running the kernels in
// kernels/cuda/*.cu as C++ (weft-kernels' build.rs compiles them with this
// header first). A launch runs blocks one after another; each block runs one
// OS thread per CUDA thread, and __syncthreads() is a barrier among the
// threads of the block that have not yet returned.
#pragma once

#include <math.h>
#include <stddef.h>
#include <string.h>

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

inline int __popc(unsigned v) { return __builtin_popcount(v); }
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
