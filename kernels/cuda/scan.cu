// Exclusive prefix sum of u32 counts (wrapping) in one pass over them, by
// decoupled look-back (Merrill & Garland 2016): blocks take tiles of
// WEFT_BLOCK * ITEMS counts in the order they ask for them (so a tile only
// ever waits for tiles of blocks that are running or done), scan the tile
// in registers and shared memory, publish its sum, add up the published
// sums of the tiles before it until one that knows its inclusive prefix,
// publish that prefix, and write out[i] = counts before i. in may be out.
// *total receives the sum of all counts. Any grid size works: a block
// loops until the tiles run out, so the grid comes from the device's
// resident blocks. Used by filter (per-block counts), segments (segment
// flags), the join (pair counts per probe row) and the utf8 gather
// (lengths into offsets).
//
// status: one zeroed u64 per tile, then a zeroed u32 tile counter. A status
// word carries its tag in the high half and the value in the low half, so
// a reader never sees one without the other.

#define SCAN_AGGREGATE 1ULL  // the tile's own sum
#define SCAN_INCLUSIVE 2ULL  // the sum of this tile and every tile before it

template <int ITEMS>
__device__ void scan_tiles(const u32 *in, u32 *out, u64 n, u64 *status, u32 *tile_counter, u32 *total) {
    const u32 TILE = WEFT_BLOCK * ITEMS;
    __shared__ u32 s_tile;
    __shared__ u32 s_prefix;
    __shared__ u32 s_warp[WEFT_BLOCK / 32];
    const u32 t = threadIdx.x;
    const u64 tiles = (n + TILE - 1) / TILE;
    for (;;) {
        if (t == 0) s_tile = weft_atomic_add(tile_counter, 1u);
        __syncthreads();
        const u32 tile = s_tile;
        if (tile >= tiles) return;
        // Thread t holds ITEMS consecutive counts.
        const u64 first = (u64)tile * TILE + (u64)t * ITEMS;
        u32 v[ITEMS];
        u32 sum = 0;
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            v[j] = first + j < n ? weft_load(&in[first + j]) : 0u;
            sum += v[j];
        }
        const u32 before = weft_block_exclusive_sum(sum, s_warp);
        if (t == WEFT_BLOCK - 1) {
            const u32 mine = before + sum;
            u64 *my = status + tile;
            u32 prefix = 0;
            if (tile == 0) {
                weft_store_volatile(my, (SCAN_INCLUSIVE << 32) | mine);
            } else {
                weft_store_volatile(my, (SCAN_AGGREGATE << 32) | mine);
                for (u32 k = tile - 1;; --k) {
                    u64 s;
                    do {
                        s = weft_load_volatile(status + k);
                    } while ((s >> 32) == 0);
                    prefix += (u32)s;
                    if ((s >> 32) == SCAN_INCLUSIVE) break;
                }
#ifdef WEFT_EMU
                // The emulation runs one block at a time, so every tile
                // before this one is done; leaving odd tiles at "aggregate"
                // makes the next tile's look-back walk further, as it must
                // when a GPU block is slow (a valid schedule there too).
                if ((tile & 1) == 0)
#endif
                    weft_store_volatile(my, (SCAN_INCLUSIVE << 32) | (prefix + mine));
            }
            s_prefix = prefix;
            if (tile + 1 == tiles) weft_store(total, prefix + mine);
        }
        __syncthreads();
        u32 run = s_prefix + before;
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            if (first + j < n) weft_store(&out[first + j], run);
            run += v[j];
        }
        // s_tile, s_prefix and s_warp are rewritten by the next tile.
        __syncthreads();
    }
}

// Two tile sizes: 8 counts per thread on GPUs; 1 on small emulated inputs,
// so that test sizes span many tiles and the look-back between them.
#define SCAN_KERNEL(ITEMS)                                                                           \
    WEFT_KERNEL(scan_exclusive_u32_##ITEMS, const u32 *in, u32 *out, u64 n, u64 *status, u32 *tile_counter, \
                u32 *total) {                                                                        \
        scan_tiles<ITEMS>(in, out, n, status, tile_counter, total);                                  \
    }

SCAN_KERNEL(1)
SCAN_KERNEL(8)
