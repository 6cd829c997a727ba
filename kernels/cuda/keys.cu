// Order keys: any column the dataframe sorts or groups by, as int64
// columns whose radix order (sort.cu's KEY_I64) is the column's order, so
// one argsort per key column, least significant first, sorts by all of
// them, and runs of equal keys are the groups. int32 widens; int64 stays;
// float64 takes f64::total_cmp's order; a utf8 value is cut into chunks of
// 7 bytes, chunk j holding bytes 7j..7j+7 big-endian (zero padded) above
// min(len - 7j, 8) (0 past the end), so chunks compare as the strings do
// byte by byte and a prefix sorts first. `flip` (all ones) reverses the
// order for a descending sort. A null row's key is 0 (the argsort looks at
// the validity, which the key column shares with its input).

#define ORDER_I32 0
#define ORDER_I64 1
#define ORDER_F64 2
#define ORDER_UTF8 3

__device__ __forceinline__ u64 order_utf8_chunk(const unsigned char *data, i32 start, i32 len, u32 chunk) {
    i64 from = (i64)chunk * 7;
    i64 left = (i64)len - from;
    if (left <= 0) return 0;
    u64 k = 0;
    for (i64 b = 0; b < 7; ++b) {
        u64 byte = b < left ? (u64)weft_load(&data[start + from + b]) : 0;
        k = (k << 8) | byte;
    }
    return (k << 8) | (u64)(left > 7 ? 8 : left);
}

WEFT_KERNEL(order_key, u32 mode, const void *x, const i32 *offsets, const u32 *xv, u64 n, u32 chunk, u64 flip,
            i64 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        u64 k = 0;
        if (weft_valid(xv, i)) {
            if (mode == ORDER_I32) {
                k = (u64)(i64)weft_load((const i32 *)x + i) ^ 0x8000000000000000ULL;
            } else if (mode == ORDER_I64) {
                k = (u64)weft_load((const i64 *)x + i) ^ 0x8000000000000000ULL;
            } else if (mode == ORDER_F64) {
                u64 b = weft_load((const u64 *)x + i);
                k = (b >> 63) ? ~b : (b | 0x8000000000000000ULL);
            } else {
                i32 start = weft_load(&offsets[i]);
                k = order_utf8_chunk((const unsigned char *)x, start, weft_load(&offsets[i + 1]) - start, chunk);
            }
            k ^= flip;
        }
        // Stored so that the argsort's int64 key (bits ^ sign) is k.
        weft_store(&out[i], (i64)(k ^ 0x8000000000000000ULL));
    }
}

// The byte length of each utf8 value, as int32.
WEFT_KERNEL(utf8_value_lengths, const i32 *offsets, u64 n, i32 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        weft_store(&out[i], weft_load(&offsets[i + 1]) - weft_load(&offsets[i]));
    }
}
