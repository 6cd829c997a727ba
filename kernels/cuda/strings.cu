// Utf8 columns: gathering rows (lengths, scanned into offsets, then bytes)
// and predicates against one pattern (equals, starts with, ends with,
// contains, ordering), byte by byte; a predicate's validity is the
// column's.

// lens[i] = byte length of row idx[i].
WEFT_KERNEL(utf8_lengths, const i32 *offsets, const u32 *idx, u64 n, u32 *lens) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        u32 r = weft_load(&idx[i]);
        weft_store(&lens[i], (u32)(offsets[r + 1] - offsets[r]));
    }
}

// Copies row idx[i]'s bytes to out_data[out_offsets[i] ..].
WEFT_KERNEL(utf8_gather, const i32 *offsets, const unsigned char *data, const u32 *idx, u64 n,
            const i32 *out_offsets, unsigned char *out_data) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        u32 r = idx[i];
        i32 from = offsets[r], len = offsets[r + 1] - from, to = out_offsets[i];
        for (i32 b = 0; b < len; ++b) weft_store(&out_data[to + b], weft_load(&data[from + b]));
    }
}

__device__ __forceinline__ bool weft_bytes_at(const unsigned char *s, i32 at, const unsigned char *p, i32 plen) {
    for (i32 b = 0; b < plen; ++b) {
        if (s[at + b] != p[b]) return false;
    }
    return true;
}

// The byte-wise order of s against p: -1, 0 or 1 (a prefix first), as
// Rust orders str.
__device__ __forceinline__ int weft_bytes_cmp(const unsigned char *s, i32 len, const unsigned char *p, i32 plen) {
    i32 m = len < plen ? len : plen;
    for (i32 b = 0; b < m; ++b) {
        if (s[b] != p[b]) return s[b] < p[b] ? -1 : 1;
    }
    return len < plen ? -1 : (len > plen ? 1 : 0);
}

// op: 0 equals, 1 starts with, 2 ends with, 3 contains, 4 less than,
// 5 at most, 6 greater than, 7 at least (the value against the pattern,
// byte by byte). One thread per 32-row word of the result bits.
WEFT_KERNEL(utf8_match, const i32 *offsets, const unsigned char *data, u64 n, const unsigned char *pattern,
            u64 plen64, u32 op, u32 *out) {
    i32 plen = (i32)plen64;
    u64 words = (n + 31) / 32;
    for (u64 w = weft_global_id(); w < words; w += weft_grid_size()) {
        u32 bits = 0;
        u64 end = w * 32 + 32 < n ? w * 32 + 32 : n;
        for (u64 i = w * 32; i < end; ++i) {
            i32 start = offsets[i], len = offsets[i + 1] - start;
            const unsigned char *s = data + start;
            bool hit = false;
            if (op == 0) hit = len == plen && weft_bytes_at(s, 0, pattern, plen);
            else if (op == 1) hit = len >= plen && weft_bytes_at(s, 0, pattern, plen);
            else if (op == 2) hit = len >= plen && weft_bytes_at(s, len - plen, pattern, plen);
            else if (op == 3) {
                for (i32 at = 0; at + plen <= len && !hit; ++at) hit = weft_bytes_at(s, at, pattern, plen);
            } else {
                int c = weft_bytes_cmp(s, len, pattern, plen);
                hit = op == 4 ? c < 0 : op == 5 ? c <= 0 : op == 6 ? c > 0 : c >= 0;
            }
            if (hit) bits |= 1u << (u32)(i - w * 32);
        }
        out[w] = bits;
    }
}

// The year of days since 1970-01-01 (Howard Hinnant's civil_from_days).
WEFT_KERNEL(date_year, const i32 *days, u64 n, i32 *out) {
    for (u64 i = weft_global_id(); i < n; i += weft_grid_size()) {
        i64 z = (i64)weft_load(&days[i]) + 719468;
        i64 era = (z >= 0 ? z : z - 146096) / 146097;
        i64 doe = z - era * 146097;
        i64 yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        i64 doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        i64 mp = (5 * doy + 2) / 153;
        i64 m = mp < 10 ? mp + 3 : mp - 9;
        weft_store(&out[i], (i32)(yoe + era * 400 + (m <= 2 ? 1 : 0)));
    }
}
