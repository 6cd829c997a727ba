// filter by a boolean mask (a null mask row counts as false): stream
// compaction in three launches. filter_count counts the selected rows of
// each block's contiguous range of words; scan_exclusive_u32 turns the counts
// into output offsets; filter_<type> writes each block's rows in order, using
// a scan over the words of each tile to place every thread's rows.

__device__ __forceinline__ u32 filter_sel(const u32 *mask, const u32 *mv, u64 n, u64 w) {
    return mask[w] & weft_word(mv, w) & weft_tail_mask(n, w);
}

WEFT_KERNEL(filter_count, const u32 *mask, const u32 *mv, u64 n, u64 words_per_block,
            u32 *block_counts) {
    __shared__ u32 counts[WEFT_BLOCK];
    u64 words = (n + 31) / 32;
    u64 begin = blockIdx.x * words_per_block;
    u64 end = begin + words_per_block < words ? begin + words_per_block : words;
    u32 c = 0;
    for (u64 w = begin + threadIdx.x; w < end; w += blockDim.x) c += __popc(filter_sel(mask, mv, n, w));
    counts[threadIdx.x] = c;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) counts[threadIdx.x] += counts[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) block_counts[blockIdx.x] = counts[0];
}

// out_valid must be zeroed (bits are set with atomicOr); it may be null when
// x has no nulls.
template <typename T>
__device__ void filter_rows(const T *x, const u32 *xv, const u32 *mask, const u32 *mv, u64 n,
                            u64 words_per_block, const u32 *block_offsets, T *out, u32 *out_valid) {
    __shared__ u32 scan[WEFT_BLOCK];
    __shared__ u32 base;
    u64 words = (n + 31) / 32;
    u64 begin = blockIdx.x * words_per_block;
    u64 end = begin + words_per_block < words ? begin + words_per_block : words;
    u32 t = threadIdx.x;
    if (t == 0) base = block_offsets[blockIdx.x];
    __syncthreads();
    for (u64 tile = begin; tile < end; tile += blockDim.x) {
        u64 w = tile + t;
        u32 sel = w < end ? filter_sel(mask, mv, n, w) : 0;
        scan[t] = __popc(sel);
        __syncthreads();
        for (u32 off = 1; off < blockDim.x; off <<= 1) {
            u32 v = t >= off ? scan[t - off] : 0;
            __syncthreads();
            scan[t] += v;
            __syncthreads();
        }
        u32 pos = base + scan[t] - __popc(sel);
        for (u32 b = 0; b < 32; ++b) {
            if ((sel >> b) & 1u) {
                u64 i = w * 32 + b;
                out[pos] = x[i];
                if (out_valid && weft_valid(xv, i)) atomicOr(&out_valid[pos >> 5], 1u << (pos & 31));
                ++pos;
            }
        }
        __syncthreads();
        if (t == blockDim.x - 1) base += scan[t];
        __syncthreads();
    }
}

#define FILTER_KERNEL(T, SUF)                                                                  \
    WEFT_KERNEL(filter_##SUF, const T *x, const u32 *xv, const u32 *mask, const u32 *mv, u64 n, \
                u64 words_per_block, const u32 *block_offsets, T *out, u32 *out_valid) {       \
        filter_rows<T>(x, xv, mask, mv, n, words_per_block, block_offsets, out, out_valid);    \
    }

FILTER_KERNEL(i32, i32)
FILTER_KERNEL(i64, i64)
FILTER_KERNEL(float, f32)
FILTER_KERNEL(double, f64)
