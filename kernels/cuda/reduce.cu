// Reductions: sum, min, max and count of a column (nulls skipped), in two
// launches (per-block partials, then one block combining them), and
// reductions along an axis of a row-major 2-D block.

// Integer sums wrap in 64 bits; float sums accumulate in double.
struct ReduceI64 {
    typedef i64 Acc;
    __device__ static Acc add(Acc a, Acc b) { return (Acc)((u64)a + (u64)b); }
    __device__ static Acc lo(Acc a, Acc b) { return b < a ? b : a; }
    __device__ static Acc hi(Acc a, Acc b) { return b > a ? b : a; }
    __device__ static Acc min_identity() { return (Acc)0x7fffffffffffffffLL; }
    __device__ static Acc max_identity() { return (Acc)(-0x7fffffffffffffffLL - 1); }
};

// NaN loses to a number, as fmin/fmax (and Rust's f64::min/max).
struct ReduceF64 {
    typedef double Acc;
    __device__ static Acc add(Acc a, Acc b) { return a + b; }
    __device__ static Acc lo(Acc a, Acc b) { return (b < a || a != a) ? b : a; }
    __device__ static Acc hi(Acc a, Acc b) { return (b > a || a != a) ? b : a; }
    __device__ static Acc min_identity() { return __longlong_as_double(0x7ff0000000000000LL); }
    __device__ static Acc max_identity() { return __longlong_as_double((long long)0xfff0000000000000ULL); }
};

template <typename R>
__device__ void reduce_block(typename R::Acc sum, typename R::Acc mn, typename R::Acc mx, u64 cnt,
                             typename R::Acc *out_sum, typename R::Acc *out_min,
                             typename R::Acc *out_max, u64 *out_count) {
    typedef typename R::Acc Acc;
    __shared__ Acc s_sum[WEFT_BLOCK];
    __shared__ Acc s_min[WEFT_BLOCK];
    __shared__ Acc s_max[WEFT_BLOCK];
    __shared__ u64 s_cnt[WEFT_BLOCK];
    u32 t = threadIdx.x;
    s_sum[t] = sum;
    s_min[t] = mn;
    s_max[t] = mx;
    s_cnt[t] = cnt;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) {
            s_sum[t] = R::add(s_sum[t], s_sum[t + s]);
            s_min[t] = R::lo(s_min[t], s_min[t + s]);
            s_max[t] = R::hi(s_max[t], s_max[t + s]);
            s_cnt[t] += s_cnt[t + s];
        }
        __syncthreads();
    }
    if (t == 0) {
        out_sum[blockIdx.x] = s_sum[0];
        out_min[blockIdx.x] = s_min[0];
        out_max[blockIdx.x] = s_max[0];
        out_count[blockIdx.x] = s_cnt[0];
    }
}

// 16 bytes of values, loaded as one.
template <typename T>
struct alignas(16) Vec16 {
    T v[16 / sizeof(T)];
};

template <typename T, typename R>
__device__ void reduce_partials(const T *x, const u32 *xv, u64 n, typename R::Acc *psum,
                                typename R::Acc *pmin, typename R::Acc *pmax, u64 *pcount) {
    typedef typename R::Acc Acc;
    Acc sum = 0, mn = R::min_identity(), mx = R::max_identity();
    u64 cnt = 0;
    u64 scalar_from = 0;
    // Without nulls, 16-byte loads (two doubles, four ints...): fewer,
    // wider memory transactions in flight per thread.
    if (xv == 0 && ((u64)x & 15) == 0) {
        const u32 W = 16 / sizeof(T);
        const Vec16<T> *xs = (const Vec16<T> *)x;
        u64 nv = n / W;
        const u64 g = weft_grid_size();
        // Four loads in flight per thread before any is used.
        u64 i = weft_global_id();
        for (; i + 3 * g < nv; i += 4 * g) {
            Vec16<T> v[4];
#pragma unroll
            for (u32 u = 0; u < 4; ++u) v[u] = weft_load(&xs[i + u * g]);
#pragma unroll
            for (u32 u = 0; u < 4; ++u) {
#pragma unroll
                for (u32 k = 0; k < W; ++k) {
                    Acc a = (Acc)v[u].v[k];
                    sum = R::add(sum, a);
                    mn = R::lo(mn, a);
                    mx = R::hi(mx, a);
                }
            }
            cnt += 4 * W;
        }
        for (; i < nv; i += g) {
            Vec16<T> v = weft_load(&xs[i]);
#pragma unroll
            for (u32 k = 0; k < W; ++k) {
                Acc a = (Acc)v.v[k];
                sum = R::add(sum, a);
                mn = R::lo(mn, a);
                mx = R::hi(mx, a);
            }
            cnt += W;
        }
        scalar_from = nv * W;
    }
    for (u64 i = scalar_from + weft_global_id(); i < n; i += weft_grid_size()) {
        if (weft_valid(xv, i)) {
            Acc v = (Acc)weft_load(&x[i]);
            sum = R::add(sum, v);
            mn = R::lo(mn, v);
            mx = R::hi(mx, v);
            ++cnt;
        }
    }
    reduce_block<R>(sum, mn, mx, cnt, psum, pmin, pmax, pcount);
}

template <typename R>
__device__ void reduce_combine(const typename R::Acc *psum, const typename R::Acc *pmin,
                               const typename R::Acc *pmax, const u64 *pcount, u64 parts,
                               typename R::Acc *out_sum, typename R::Acc *out_min,
                               typename R::Acc *out_max, u64 *out_count) {
    typedef typename R::Acc Acc;
    Acc sum = 0, mn = R::min_identity(), mx = R::max_identity();
    u64 cnt = 0;
    for (u64 i = threadIdx.x; i < parts; i += blockDim.x) {
        sum = R::add(sum, psum[i]);
        mn = R::lo(mn, pmin[i]);
        mx = R::hi(mx, pmax[i]);
        cnt += pcount[i];
    }
    reduce_block<R>(sum, mn, mx, cnt, out_sum, out_min, out_max, out_count);
}

#define REDUCE_KERNELS(T, SUF, R)                                                              \
    WEFT_KERNEL(reduce_##SUF, const T *x, const u32 *xv, u64 n, R::Acc *psum, R::Acc *pmin,    \
                R::Acc *pmax, u64 *pcount) {                                                   \
        reduce_partials<T, R>(x, xv, n, psum, pmin, pmax, pcount);                             \
    }

REDUCE_KERNELS(i32, i32, ReduceI64)
REDUCE_KERNELS(i64, i64, ReduceI64)
REDUCE_KERNELS(float, f32, ReduceF64)
REDUCE_KERNELS(double, f64, ReduceF64)

// Launched with one block over the partials of the kernels above.
WEFT_KERNEL(reduce_final_int, const i64 *psum, const i64 *pmin, const i64 *pmax, const u64 *pcount,
            u64 parts, i64 *out_sum, i64 *out_min, i64 *out_max, u64 *out_count) {
    reduce_combine<ReduceI64>(psum, pmin, pmax, pcount, parts, out_sum, out_min, out_max, out_count);
}

WEFT_KERNEL(reduce_final_float, const double *psum, const double *pmin, const double *pmax,
            const u64 *pcount, u64 parts, double *out_sum, double *out_min, double *out_max,
            u64 *out_count) {
    reduce_combine<ReduceF64>(psum, pmin, pmax, pcount, parts, out_sum, out_min, out_max, out_count);
}

// Along an axis of a rows x cols row-major block: axis 0 reduces each column
// (cols outputs), axis 1 each row (rows outputs). One thread per output,
// walking its line in order, so the result matches the CPU bit for bit.
// op: 0 sum, 1 min, 2 max (output Acc), 3 mean (output double).
template <typename T, typename R>
__device__ void reduce_axis(const T *x, u64 rows, u64 cols, u32 axis, u32 op, void *out) {
    typedef typename R::Acc Acc;
    u64 outputs = axis == 0 ? cols : rows;
    u64 len = axis == 0 ? rows : cols;
    u64 stride = axis == 0 ? cols : 1;
    for (u64 j = weft_global_id(); j < outputs; j += weft_grid_size()) {
        const T *line = axis == 0 ? x + j : x + j * cols;
        Acc acc = op == 1 ? R::min_identity() : op == 2 ? R::max_identity() : (Acc)0;
        for (u64 i = 0; i < len; ++i) {
            Acc v = (Acc)line[i * stride];
            acc = op == 1 ? R::lo(acc, v) : op == 2 ? R::hi(acc, v) : R::add(acc, v);
        }
        if (op == 3) {
            ((double *)out)[j] = (double)acc / (double)len;
        } else {
            ((Acc *)out)[j] = acc;
        }
    }
}

#define REDUCE_AXIS_KERNEL(T, SUF, R)                                                         \
    WEFT_KERNEL(reduce_axis_##SUF, const T *x, u64 rows, u64 cols, u32 axis, u32 op, void *out) { \
        reduce_axis<T, R>(x, rows, cols, axis, op, out);                                       \
    }

REDUCE_AXIS_KERNEL(i32, i32, ReduceI64)
REDUCE_AXIS_KERNEL(i64, i64, ReduceI64)
REDUCE_AXIS_KERNEL(float, f32, ReduceF64)
REDUCE_AXIS_KERNEL(double, f64, ReduceF64)
