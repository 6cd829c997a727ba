// The launcher behind emu.h: kernel registry, grid loop and block barrier.
#include "emu.h"

#include <stdio.h>
#include <stdlib.h>

#include <atomic>

namespace weft_emu {
thread_local uint3 thread_idx;
thread_local uint3 block_idx;
dim3 block_dim;
dim3 grid_dim;
thread_local unsigned long long bytes_read = 0;
thread_local unsigned long long bytes_written = 0;

namespace {
struct Entry {
    void (*kernel)();
    Invoker invoker;
};

std::map<std::string, Entry> &registry() {
    static std::map<std::string, Entry> r;
    return r;
}

// __syncthreads among the threads of a block that are still running the
// kernel: a thread that returns drops out, so an early return does not hang
// the others (as on Volta and later GPUs). Counting is under a mutex;
// waiting is on the generation word (a futex), so a release does not make
// all the block's threads fight for the mutex.
struct BlockBarrier {
    std::mutex m;
    unsigned active = 0;
    unsigned waiting = 0;
    std::atomic<unsigned> generation{0};

    void sync() {
        unsigned g;
        {
            std::lock_guard<std::mutex> lk(m);
            g = generation.load();
            if (++waiting == active) {
                waiting = 0;
                generation.store(g + 1);
                generation.notify_all();
                return;
            }
        }
        while (generation.load() == g) generation.wait(g);
    }
    void drop() {
        std::lock_guard<std::mutex> lk(m);
        --active;
        if (waiting > 0 && waiting == active) {
            waiting = 0;
            generation.fetch_add(1);
            generation.notify_all();
        }
    }
};

// Separates blocks: the last thread to finish a block resets the block
// barrier before anyone starts the next block.
struct EndBarrier {
    std::mutex m;
    unsigned count = 0;
    unsigned arrived = 0;
    std::atomic<unsigned> generation{0};

    template <typename F>
    void arrive_and_wait(F on_last) {
        unsigned g;
        {
            std::lock_guard<std::mutex> lk(m);
            g = generation.load();
            if (++arrived == count) {
                on_last();
                arrived = 0;
                generation.store(g + 1);
                generation.notify_all();
                return;
            }
        }
        while (generation.load() == g) generation.wait(g);
    }
};

// A barrier among the 32 threads of one warp, with the slots the warp
// intrinsics exchange values through. Exchanges alternate between
// two sets of slots: a thread cannot write a set again before every other
// thread has passed the next exchange's barrier, hence read this one's.
struct WarpState {
    std::mutex m;
    unsigned waiting = 0;
    std::atomic<unsigned> generation{0};
    unsigned long long slots[2][32];

    void sync(unsigned count) {
        unsigned g;
        {
            std::lock_guard<std::mutex> lk(m);
            g = generation.load();
            if (++waiting == count) {
                waiting = 0;
                generation.store(g + 1);
                generation.notify_all();
                return;
            }
        }
        while (generation.load() == g) generation.wait(g);
    }
};

thread_local BlockBarrier *current_barrier = nullptr;
thread_local WarpState *current_warp = nullptr;
thread_local unsigned current_lane = 0;
std::mutex launch_mutex;

// Worker threads kept across launches (starting 256 threads per launch
// dominated the cost of small launches). Leaked on purpose: joinable
// threads must not be destroyed at exit.
struct Workers {
    std::mutex m;
    std::condition_variable start;
    std::condition_variable done;
    unsigned long generation = 0;
    unsigned running = 0;
    unsigned wanted = 0;
    std::function<void(unsigned)> job;
    unsigned started = 0;

    void worker(unsigned t) {
        unsigned long seen = 0;
        std::unique_lock<std::mutex> lk(m);
        for (;;) {
            start.wait(lk, [&] { return generation != seen; });
            seen = generation;
            if (t >= wanted) continue;
            std::function<void(unsigned)> f = job;
            lk.unlock();
            f(t);
            lk.lock();
            if (--running == 0) done.notify_all();
        }
    }

    // Runs f(0) .. f(n - 1) on n threads at once and waits for all of them.
    // A launch cannot finish without every one of its n threads, so no
    // worker below n misses a generation.
    void run(unsigned n, std::function<void(unsigned)> f) {
        std::unique_lock<std::mutex> lk(m);
        while (started < n) {
            unsigned t = started++;
            std::thread([this, t] { worker(t); }).detach();
        }
        job = std::move(f);
        wanted = n;
        running = n;
        ++generation;
        start.notify_all();
        done.wait(lk, [&] { return running == 0; });
    }
};

Workers &workers() {
    static Workers *w = new Workers();
    return *w;
}
}  // namespace
void register_kernel(const char *name, void (*k)(), Invoker invoker) { registry()[name] = Entry{k, invoker}; }

void syncthreads() { current_barrier->sync(); }

unsigned lane_id() { return current_lane; }

// The emulation supports warp intrinsics of whole warps only (every lane
// in the mask, as all of our kernels use them): the two sets of slots
// alternate per exchange, which holds when all lanes take part in each.
static void whole_warp(unsigned mask) {
    if (mask != 0xffffffffu) {
        fprintf(stderr, "weft emulation: warp intrinsic with mask %08x (only whole warps are emulated)\n", mask);
        abort();
    }
}

void warp_sync(unsigned mask) {
    whole_warp(mask);
    current_warp->sync(32);
}

thread_local unsigned current_parity = 0;

void warp_exchange(unsigned mask, unsigned long long v, unsigned long long *slots) {
    whole_warp(mask);
    WarpState &w = *current_warp;
    unsigned long long *set = w.slots[current_parity];
    current_parity ^= 1;
    set[current_lane] = v;
    w.sync(32);
    memcpy(slots, set, sizeof w.slots[0]);
}
}  // namespace weft_emu

// Runs kernel `name` over the grid; `args` is laid out as for cuLaunchKernel
// (one pointer per parameter, pointing at its value). `bytes` receives the
// global memory bytes the launch read and wrote (through weft_load and
// weft_store). Returns 0 on success, 1 when no kernel has that name.
// (Failing to start a thread aborts.)
extern "C" int weft_emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               unsigned by, unsigned bz, void **args, unsigned long long *bytes) {
    using namespace weft_emu;
    auto it = registry().find(name);
    if (it == registry().end()) return 1;
    Entry entry = it->second;
    // One launch at a time: grid and block dimensions and every kernel's
    // shared memory are process-wide.
    std::lock_guard<std::mutex> guard(launch_mutex);
    grid_dim = dim3{gx, gy, gz};
    block_dim = dim3{bx, by, bz};
    const unsigned nthreads = bx * by * bz;
    const unsigned long nblocks = (unsigned long)gx * gy * gz;
    bytes[0] = bytes[1] = 0;
    if (nthreads == 0 || nblocks == 0) return 0;
    BlockBarrier barrier;
    barrier.active = nthreads;
    EndBarrier end;
    end.count = nthreads;
    std::vector<WarpState> warps((nthreads + 31) / 32);
    std::atomic<unsigned long long> total_read{0}, total_written{0};
    workers().run(nthreads, [&](unsigned t) {
        thread_idx = uint3{t % bx, (t / bx) % by, t / (bx * by)};
        current_barrier = &barrier;
        current_warp = &warps[t / 32];
        current_lane = t % 32;
        bytes_read = 0;
        bytes_written = 0;
        for (unsigned long b = 0; b < nblocks; ++b) {
            block_idx = uint3{(unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / ((unsigned long)gx * gy))};
            current_parity = 0;
            entry.invoker(entry.kernel, args);
            barrier.drop();
            end.arrive_and_wait([&] {
                barrier.active = nthreads;
                barrier.waiting = 0;
            });
        }
        total_read += bytes_read;
        total_written += bytes_written;
    });
    bytes[0] = total_read.load();
    bytes[1] = total_written.load();
    return 0;
}
