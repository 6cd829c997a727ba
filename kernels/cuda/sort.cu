// LSD radix sort of (key, row) pairs in the style of CUB's onesweep
// (Adinets & Merrill 2022), and the stable counting pass of hash
// partitioning, which is one such pass with the partition id as its digit.
//
// radix_histogram reads the keys once and counts the digits of every digit
// position (8 bits each) at once, so the host can scan them into the start
// of each digit's bin and skip the positions where every row has the same
// digit. Each onesweep pass then reads (key, row) pairs, ranks each tile of
// WEFT_BLOCK * ITEMS rows stably in shared memory, learns where its rows of
// each digit go from the tiles before it by decoupled look-back, and writes
// keys and rows to their place (through shared memory, so the writes of a
// digit's run are contiguous). Keys and rows move together: nothing is read
// back through the permutation.
//
// Keys are order-preserving u64: integers with the sign bit flipped; doubles
// with all bits flipped when negative and the sign bit set otherwise (the
// order of f64::total_cmp). A null row gets key 0, so nulls keep their row
// order among themselves; a last pass on the 1-bit "is null" digit moves
// them after the valid rows.

#define RADIX_BITS 8
#define RADIX 256
#define SORT_WARPS (WEFT_BLOCK / 32)

// Where a pass's keys come from.
#define KEY_BUFFER 0  // u64 keys written by the previous pass
#define KEY_I64 1     // an int64 column (first pass; position = row)
#define KEY_F64 2     // a float64 column (likewise)
#define KEY_U32 3     // u32 values (partition ids), used as keys
#define KEY_NULLS 4   // 0 for a valid row, 1 for a null one (by row number)

__device__ __forceinline__ u64 sort_key(u32 mode, const void *src, const u32 *validity, u64 i, u32 row) {
    switch (mode) {
        case KEY_BUFFER:
            return weft_load((const u64 *)src + i);
        case KEY_I64: {
            u64 b = (u64)weft_load((const i64 *)src + i);
            return weft_valid(validity, i) ? b ^ 0x8000000000000000ULL : 0;
        }
        case KEY_F64: {
            u64 b = weft_load((const u64 *)src + i);
            u64 k = (b >> 63) ? ~b : (b | 0x8000000000000000ULL);
            return weft_valid(validity, i) ? k : 0;
        }
        case KEY_U32:
            return weft_load((const u32 *)src + i);
        default:
            return weft_valid(validity, row) ? 0 : 1;
    }
}

// The digit counts of `passes` digit positions of every key, in one read:
// hist[p * RADIX + d] += rows whose digit p is d; hist[passes * RADIX] +=
// null rows. `hist` is zeroed by the caller; any grid size works.
WEFT_KERNEL(radix_histogram, u32 mode, const void *src, const u32 *validity, u64 n, u32 passes, u32 *hist) {
    __shared__ u32 counts[8 * RADIX];
    __shared__ u32 nulls;
    for (u32 k = threadIdx.x; k < 8 * RADIX; k += blockDim.x) counts[k] = 0;
    if (threadIdx.x == 0) nulls = 0;
    __syncthreads();
    u32 my_nulls = 0;
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        u64 key = sort_key(mode, src, validity, i, (u32)i);
        if (!weft_valid(validity, i)) ++my_nulls;
        for (u32 p = 0; p < passes; ++p) atomicAdd(&counts[p * RADIX + (u32)((key >> (8 * p)) & 0xff)], 1u);
    }
    if (my_nulls) atomicAdd(&nulls, my_nulls);
    __syncthreads();
    for (u32 k = threadIdx.x; k < passes * RADIX; k += blockDim.x) {
        if (counts[k]) weft_atomic_add(&hist[k], counts[k]);
    }
    if (threadIdx.x == 0 && nulls) weft_atomic_add(&hist[passes * RADIX], nulls);
}

// One stable counting pass over the digit (key >> shift) & 0xff. Row i of
// the input is (key from `mode`/`src`, rows_in[i], or i when rows_in is
// null); it goes to bin_start[digit] + (rows of that digit before it).
// keys_out (may be null: the last pass needs no keys) and rows_out receive
// the pairs in order. `status` holds RADIX words per tile and
// `tile_counter` a zeroed counter, both shared by the passes of one sort;
// `epoch` tells this pass's status words from an earlier pass's (and from
// zero), so they are zeroed once per sort. Launched with one block per tile.
template <int ITEMS>
__device__ void onesweep(u32 mode, const void *src, const u32 *validity, const u32 *rows_in, u64 n, u32 shift,
                         const u32 *bin_start, u64 *status, u32 *tile_counter, u32 epoch, u64 *keys_out,
                         u32 *rows_out) {
    const u32 TILE = WEFT_BLOCK * ITEMS;
    __shared__ u32 s_tile;
    __shared__ u32 s_warp[SORT_WARPS][RADIX];
    __shared__ u32 s_base[RADIX];
    __shared__ u32 s_sums[SORT_WARPS];
    __shared__ u64 s_exchange[WEFT_BLOCK * ITEMS];
    const u32 t = threadIdx.x, lane = t & 31, warp = t >> 5;

    // Tiles are taken in the order blocks start, so every tile this one
    // waits for belongs to a block that is running or done.
    if (t == 0) s_tile = weft_atomic_add(tile_counter, 1u);
    for (u32 k = t; k < SORT_WARPS * RADIX; k += WEFT_BLOCK) s_warp[k / RADIX][k % RADIX] = 0;
    __syncthreads();
    const u32 tile = s_tile;
    const u64 first = (u64)tile * TILE;
    const u32 valid = n - first < TILE ? (u32)(n - first) : TILE;

    // Each warp owns a contiguous run of 32 * ITEMS rows; round j holds the
    // next 32, one per lane, so loads are coalesced and (round, lane) is
    // row order. Rows past the end get the largest digit and rank last.
    u64 keys[ITEMS];
    u32 rows[ITEMS];
    u32 pos[ITEMS];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        u32 off = warp * 32 * ITEMS + j * 32 + lane;
        u64 i = first + off;
        if (off < valid) {
            rows[j] = rows_in ? weft_load(&rows_in[i]) : (u32)i;
            keys[j] = sort_key(mode, src, validity, i, rows[j]);
        } else {
            rows[j] = 0;
            keys[j] = ~0ULL;
        }
    }

    // Stable rank within the warp: the lanes holding the same digit (found
    // with one ballot per digit bit) count themselves in lane order, and
    // the highest of them advances the warp's counter for the digit.
    const u32 lower = (1u << lane) - 1u;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        u32 d = (u32)(keys[j] >> shift) & (RADIX - 1);
        // (Measured on an H200: eight ballots beat __match_any_sync, 3.54
        // against 4.41 ms for 32M keys.)
        u32 peers = 0xffffffffu;
#pragma unroll
        for (u32 b = 0; b < RADIX_BITS; ++b) {
            u32 bit = (d >> b) & 1u;
            u32 vote = __ballot_sync(0xffffffffu, bit);
            peers &= bit ? vote : ~vote;
        }
        u32 before = s_warp[warp][d];
        __syncwarp();
        if ((peers >> lane) == 1u) s_warp[warp][d] = before + __popc(peers);
        __syncwarp();
        pos[j] = before + __popc(peers & lower);
    }
    __syncthreads();

    // Thread t now stands for digit t: the tile's count of it, and each
    // warp's start within the tile's run of it.
    const u32 d = t;
    u32 count = 0;
    for (u32 w = 0; w < SORT_WARPS; ++w) {
        u32 c = s_warp[w][d];
        s_warp[w][d] = count;
        count += c;
    }
    u32 mine = d == RADIX - 1 ? count - (TILE - valid) : count;

    // Decoupled look-back: publish this tile's count ("aggregate"), add up
    // the tiles before it until one that knows its inclusive prefix, then
    // publish ours. One 64-bit word carries tag and value, so a reader
    // never sees one without the other.
    const u64 agg_tag = (u64)(2 * epoch), inc_tag = (u64)(2 * epoch + 1);
    u64 *my_status = status + (u64)tile * RADIX + d;
    u32 prefix = 0;
    if (tile == 0) {
        weft_store_volatile(my_status, (inc_tag << 32) | mine);
    } else {
        weft_store_volatile(my_status, (agg_tag << 32) | mine);
        for (u32 k = tile - 1;; --k) {
            u64 s;
            do {
                s = weft_load_volatile(status + (u64)k * RADIX + d);
            } while ((s >> 32) != agg_tag && (s >> 32) != inc_tag);
            prefix += (u32)s;
            if ((s >> 32) == inc_tag) break;
        }
#ifdef WEFT_EMU
        // The emulation runs blocks in order, so every predecessor is done
        // and has published its inclusive prefix; leaving odd tiles at
        // "aggregate" makes the look-back of the next tile walk further,
        // as it must when a GPU block is slow (a valid schedule there too).
        if ((tile & 1) == 0)
#endif
            weft_store_volatile(my_status, (inc_tag << 32) | (prefix + mine));
    }
    u32 tile_start = weft_block_exclusive_sum(count, s_sums);
    for (u32 w = 0; w < SORT_WARPS; ++w) s_warp[w][d] += tile_start;
    // Global place = s_base[digit] + place in the tile (wrapping u32 sums).
    s_base[d] = weft_load(&bin_start[d]) + prefix - tile_start;
    __syncthreads();

    // Keys to their place in the tile, then out in tile order: consecutive
    // threads write consecutive places of a digit's run.
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        u32 dj = (u32)(keys[j] >> shift) & (RADIX - 1);
        pos[j] += s_warp[warp][dj];
        s_exchange[pos[j]] = keys[j];
    }
    __syncthreads();
    u32 dest[ITEMS];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        u32 p = j * WEFT_BLOCK + t;
        u64 k = s_exchange[p];
        dest[j] = s_base[(u32)(k >> shift) & (RADIX - 1)] + p;
        if (keys_out && p < valid) weft_store(&keys_out[dest[j]], k);
    }
    __syncthreads();
    u32 *s_rows = (u32 *)s_exchange;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) s_rows[pos[j]] = rows[j];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        u32 p = j * WEFT_BLOCK + t;
        if (p < valid) weft_store(&rows_out[dest[j]], s_rows[p]);
    }
}

// Two tile sizes: 16 rows per thread on GPUs; 2 on small emulated inputs,
// so that test sizes span many tiles. (Measured on an H200 for 32M keys:
// 16 rows 3.54 ms, 12 rows 3.98 ms, 16 rows capped at 85 registers for
// three blocks per multiprocessor 3.62 ms.)
#define ONESWEEP_KERNEL(ITEMS)                                                                            \
    WEFT_KERNEL(onesweep_pass_##ITEMS, u32 mode, const void *src, const u32 *validity, const u32 *rows_in, \
                u64 n, u32 shift, const u32 *bin_start, u64 *status, u32 *tile_counter, u32 epoch,        \
                u64 *keys_out, u32 *rows_out) {                                                           \
        onesweep<ITEMS>(mode, src, validity, rows_in, n, shift, bin_start, status, tile_counter, epoch,   \
                        keys_out, rows_out);                                                              \
    }

ONESWEEP_KERNEL(2)
ONESWEEP_KERNEL(16)

// The identity permutation (a sort with nothing to reorder).
WEFT_KERNEL(sort_iota, u64 n, u32 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) weft_store(&out[i], (u32)i);
}

// Partition ids of every row, and their counts: hist[p] += rows in
// partition p (zeroed by the caller). mode 0: `src` is an int64 column
// (validity xv) hashed with `seed`; mode 1: `src` holds the rows' u64
// hashes. Parts up to PART_SHARED are counted in shared memory first.
#define PART_SHARED 4096
WEFT_KERNEL(partition_histogram, u32 mode, const void *src, const u32 *xv, u64 n, u64 seed, u32 parts, u32 *ids,
            u32 *hist) {
    __shared__ u32 counts[PART_SHARED];
    const bool local = parts <= PART_SHARED;
    if (local) {
        for (u32 k = threadIdx.x; k < parts; k += blockDim.x) counts[k] = 0;
    }
    __syncthreads();
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        u64 h;
        if (mode == 0) {
            i64 v = weft_load((const i64 *)src + i);
            h = weft_valid(xv, i) ? weft_hash_i64(v, seed) : weft_hash_null(seed);
        } else {
            h = weft_load((const u64 *)src + i);
        }
        u32 id = weft_bucket(h, parts);
        weft_store(&ids[i], id);
        if (local) {
            atomicAdd(&counts[id], 1u);
        } else {
            weft_atomic_add(&hist[id], 1u);
        }
    }
    if (local) {
        __syncthreads();
        for (u32 k = threadIdx.x; k < parts; k += blockDim.x) {
            if (counts[k]) weft_atomic_add(&hist[k], counts[k]);
        }
    }
}

// Bin starts of a one-pass partition (parts <= RADIX), on the device so the
// host need not wait for the counts: starts[d] = rows in partitions below d
// (n past `parts`), offsets[0..=parts] the same with n last. One block.
WEFT_KERNEL(partition_starts, const u32 *hist, u32 parts, u64 n, u32 *starts, u32 *offsets) {
    __shared__ u32 sums[SORT_WARPS];
    u32 d = threadIdx.x;
    u32 c = d < parts ? weft_load(&hist[d]) : 0;
    u32 s = weft_block_exclusive_sum(c, sums);
    weft_store(&starts[d], d < parts ? s : (u32)n);
    if (d < parts) weft_store(&offsets[d], s);
    if (d == 0) weft_store(&offsets[parts], (u32)n);
}
