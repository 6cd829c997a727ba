// filter by a boolean mask (a null mask row counts as false): stream
// compaction in three launches. filter_count counts the selected rows of
// each block's contiguous range of words (reading only the mask);
// scan_exclusive_u32 turns the counts into output offsets; filter_<type>
// writes each block's rows in order, one warp per mask word.

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
// x has no nulls. Each warp takes one mask word (32 rows) at a time, lane l
// row 32w + l, so reads of x are coalesced; a selected row's place is the
// block's base, plus the selected rows of the warps before it in this
// round, plus those of lower lanes in its word.
template <typename T>
__device__ void filter_rows(const T *x, const u32 *xv, const u32 *mask, const u32 *mv, u64 n,
                            u64 words_per_block, const u32 *block_offsets, T *out, u32 *out_valid) {
    __shared__ u32 counts[WEFT_BLOCK / 32];
    __shared__ u32 base;
    u64 words = (n + 31) / 32;
    u64 begin = blockIdx.x * words_per_block;
    u64 end = begin + words_per_block < words ? begin + words_per_block : words;
    const u32 t = threadIdx.x, lane = t & 31, warp = t >> 5, warps = blockDim.x / 32;
    const u32 lower = (1u << lane) - 1u;
    if (t == 0) base = weft_load(&block_offsets[blockIdx.x]);
    __syncthreads();
    for (u64 round = begin; round < end; round += warps) {
        u64 w = round + warp;
        u32 sel = w < end ? filter_sel(mask, mv, n, w) : 0;
        if (lane == 0) counts[warp] = __popc(sel);
        __syncthreads();
        u32 pos = base;
        for (u32 k = 0; k < warp; ++k) pos += counts[k];
        if ((sel >> lane) & 1u) {
            u64 i = w * 32 + lane;
            pos += __popc(sel & lower);
            weft_store(&out[pos], weft_load(&x[i]));
            if (out_valid && weft_valid(xv, i)) atomicOr(&out_valid[pos >> 5], 1u << (pos & 31));
        }
        __syncthreads();
        if (t == 0) {
            for (u32 k = 0; k < warps; ++k) base += counts[k];
        }
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
