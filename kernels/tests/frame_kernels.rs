//! The dataframe's kernels on every device: Kleene logic, null tests, row
//! masks and literal columns (`logic`), and the shuffle's row hash
//! (`frame_hash`): the CPU implementation against a plain reference, the
//! device against the CPU, at sizes around the block and grid edges, with
//! and without nulls.
#![allow(clippy::unwrap_used)]

mod common;

use arrow_array::StringArray;
use common::{Dut, SIZES, V, assert_rows, column, rows};
use weft_kernels::segment::{SegmentOp, segment_reduce, segments};
use weft_kernels::select::select as when;
use weft_kernels::strings::{self, StrOp};
use weft_kernels::{Column, DType, cast, concat, frame_hash, join, keys, logic, rows as select, scan, sort, take};

/// A boolean column with some nulls (`nulls`) from a seed.
fn bools(rng: &mut fastrand::Rng, n: usize, nulls: bool) -> (Column, Vec<Option<bool>>) {
    let v: Vec<Option<bool>> = (0..n)
        .map(|_| (!nulls || rng.u8(..4) != 0).then(|| rng.bool()))
        .collect();
    let array = arrow_array::BooleanArray::from(v.clone());
    (Column::from_arrow(&array).unwrap(), v)
}

fn as_rows(v: &[Option<bool>]) -> Vec<Option<V>> {
    v.iter().map(|b| b.map(V::B)).collect()
}

/// Runs `kernel` on the CPU (checked against `want`) and on `d` (checked
/// against the CPU).
fn check(d: &Dut, what: &str, inputs: &[&Column], kernel: impl Fn(&[Column]) -> Column, want: &[Option<V>]) {
    let host: Vec<Column> = inputs.iter().map(|c| (*c).clone()).collect();
    let cpu = rows(&kernel(&host));
    assert_rows(&format!("{what}: cpu vs reference"), &cpu, want, 0.0);
    let out = kernel(&inputs.iter().map(|c| d.put(c)).collect::<Vec<_>>());
    if let Dut::Gpu(g) = d {
        assert_eq!(out.device(), g.device(), "{what}: the result stays on the device");
    }
    assert_rows(&format!("{what}: device vs cpu"), &rows(&out), &cpu, 0.0);
}

fn kleene_and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn kleene_or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn logic_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(11);
    for &n in SIZES {
        for nulls in [false, true] {
            let (a, av) = bools(&mut rng, n, nulls);
            let (b, bv) = bools(&mut rng, n, !nulls);
            let what = |k: &str| format!("{k} n={n} nulls={nulls}");
            let want: Vec<_> = av.iter().zip(&bv).map(|(x, y)| kleene_and(*x, *y)).collect();
            check(
                d,
                &what("and"),
                &[&a, &b],
                |c| logic::and(&c[0], &c[1]).unwrap(),
                &as_rows(&want),
            );
            let want: Vec<_> = av.iter().zip(&bv).map(|(x, y)| kleene_or(*x, *y)).collect();
            check(
                d,
                &what("or"),
                &[&a, &b],
                |c| logic::or(&c[0], &c[1]).unwrap(),
                &as_rows(&want),
            );
            let want: Vec<_> = av.iter().map(|x| x.map(|x| !x)).collect();
            check(d, &what("not"), &[&a], |c| logic::not(&c[0]).unwrap(), &as_rows(&want));
            for negate in [false, true] {
                let want: Vec<_> = av.iter().map(|x| Some(x.is_some() == negate)).collect();
                check(
                    d,
                    &what("is_null"),
                    &[&a],
                    |c| logic::is_null(&c[0], negate).unwrap(),
                    &as_rows(&want),
                );
            }
            let k = n / 3;
            let want: Vec<_> = (0..n).map(|i| Some(i < k)).collect();
            check(
                d,
                &what("prefix"),
                &[&a],
                |c| logic::prefix_mask(&c[0], k).unwrap(),
                &as_rows(&want),
            );
            let ids: Vec<u32> = (0..n).map(|_| rng.u32(..5)).collect();
            let want: Vec<_> = ids.iter().map(|i| Some(*i == 3)).collect();
            let idc = Column::from_vec(ids);
            check(
                d,
                &what("eq_mask"),
                &[&idc],
                |c| logic::eq_mask(&c[0], 3).unwrap(),
                &as_rows(&want),
            );
            let want: Vec<_> = (0..n).map(|_| Some(V::I(-7))).collect();
            check(
                d,
                &what("fill i64"),
                &[&a],
                |c| logic::fill(&c[0], DType::I64, -7i64 as u64).unwrap(),
                &want,
            );
            let want: Vec<_> = (0..n).map(|_| Some(V::F(2.5))).collect();
            check(
                d,
                &what("fill f32"),
                &[&a],
                |c| logic::fill(&c[0], DType::F32, u64::from(2.5f32.to_bits())).unwrap(),
                &want,
            );
        }
    }
}

/// The reference: the CPU shuffle's fold over value words (see
/// `weft-frame`'s shuffle.rs), written out row by row.
fn reference_hash(words: &[Vec<u64>]) -> Vec<u64> {
    (0..words[0].len())
        .map(|i| words.iter().fold(0u64, |h, w| frame_hash::combine(h, w[i])))
        .collect()
}

fn frame_hash_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(5);
    for &n in SIZES {
        let ints: Vec<Option<i64>> = (0..n).map(|_| (rng.u8(..8) != 0).then(|| rng.i64(-50..50))).collect();
        let small: Vec<Option<i32>> = ints.iter().map(|v| v.map(|v| v as i32)).collect();
        let floats: Vec<Option<f64>> = (0..n)
            .map(|i| (i % 7 != 3).then(|| if i % 5 == 0 { -0.0 } else { rng.f64() * 100.0 }))
            .collect();
        let strings: Vec<Option<String>> = (0..n)
            .map(|i| (i % 9 != 4).then(|| "k".repeat(rng.usize(..20)) + &format!("{}", i % 13)))
            .collect();
        let s = Column::from_arrow(&StringArray::from(strings.clone())).unwrap();
        let (i64c, i32c, f64c) = (column(&ints), column(&small), column(&floats));
        let word_i = |v: &Option<i64>| v.map_or(0, |v| v as u64);
        let words = vec![
            ints.iter().map(word_i).collect::<Vec<_>>(),
            floats.iter().map(|v| v.map_or(0, frame_hash::float_word)).collect(),
            strings
                .iter()
                .map(|v| v.as_ref().map_or(0, |v| frame_hash::bytes_word(v.as_bytes())))
                .collect(),
        ];
        let want: Vec<_> = reference_hash(&words).into_iter().map(|h| Some(V::U(h))).collect();
        check(
            d,
            &format!("row hash n={n}"),
            &[&i64c, &f64c, &s],
            |c| frame_hash::row_hash(&[&c[0], &c[1], &c[2]]).unwrap(),
            &want,
        );
        // int32 keys hash as the int64 of the same value.
        let want64 = rows(&frame_hash::row_hash(&[&i64c]).unwrap());
        check(
            d,
            &format!("int32 as int64 n={n}"),
            &[&i32c],
            |c| frame_hash::row_hash(&[&c[0]]).unwrap(),
            &want64,
        );
        // Decimals (unscaled int64) hash by their 128-bit values, negative
        // ones sign-extended.
        let unscaled: Vec<Option<i64>> = (0..n)
            .map(|_| (rng.u8(..6) != 0).then(|| rng.i64(-(1 << 40)..1 << 40)))
            .collect();
        let words = vec![
            unscaled
                .iter()
                .map(|v| {
                    v.map_or(0, |v| {
                        let wide = i128::from(v) as u128;
                        frame_hash::mix(wide as u64) ^ (wide >> 64) as u64
                    })
                })
                .collect::<Vec<_>>(),
        ];
        let want: Vec<_> = reference_hash(&words).into_iter().map(|h| Some(V::U(h))).collect();
        check(
            d,
            &format!("decimal row hash n={n}"),
            &[&column(&unscaled)],
            |c| frame_hash::row_hash(&[&frame_hash::decimal_words(&c[0]).unwrap()]).unwrap(),
            &want,
        );
        let hashes: Vec<u64> = (0..n).map(|_| rng.u64(..)).collect();
        let want: Vec<_> = hashes
            .iter()
            .map(|h| Some(V::U(u64::from(frame_hash::bucket(*h, 7)))))
            .collect();
        check(
            d,
            &format!("buckets n={n}"),
            &[&Column::from_vec(hashes)],
            |c| frame_hash::buckets(&c[0], 7).unwrap(),
            &want,
        );
    }
}

/// The exclusive scan at sizes spanning many of its tiles (256 counts on
/// small emulated inputs, 2048 past 8192 counts), with counts large enough
/// to wrap.
fn scan_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(31);
    for &n in SIZES.iter().chain(&[5000, 8192, 12_289]) {
        for max in [3u32, u32::MAX] {
            let counts: Vec<u32> = (0..n).map(|_| rng.u32(..=max)).collect();
            let mut run = 0u32;
            let want: Vec<Option<V>> = counts
                .iter()
                .map(|c| {
                    let s = run;
                    run = run.wrapping_add(*c);
                    Some(V::U(u64::from(s)))
                })
                .collect();
            let x = Column::from_vec(counts);
            let (sums, total) = scan::exclusive_sum(&d.put(&x)).unwrap();
            assert_rows(&format!("scan n={n} max={max}"), &rows(&sums), &want, 0.0);
            assert_eq!(total, run, "scan n={n} max={max}: total");
        }
    }
}

/// The permutation that sorts by the order keys of `x` (every utf8
/// chunk), least significant chunk first, each pass stable.
fn order_perm(x: &Column, descending: bool) -> Column {
    let chunks = if x.dtype() == DType::Utf8 {
        keys::utf8_chunks(x).unwrap()
    } else {
        1
    };
    let mut perm: Option<Column> = None;
    for j in (0..chunks).rev() {
        let key = keys::order_key(x, j, descending).unwrap();
        let key = match &perm {
            Some(p) => take::take(&key, p).unwrap(),
            None => key,
        };
        let pass = sort::argsort(&key).unwrap();
        perm = Some(match perm {
            Some(p) => take::take(&p, &pass).unwrap(),
            None => pass,
        });
    }
    perm.unwrap()
}

/// Order keys sort int32, int64, float64 and utf8 columns (strings of
/// several chunks, prefixes, empty strings, zero bytes) ascending and
/// descending, stable, nulls last, as a plain sort does.
fn order_key_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(41);
    for &n in SIZES {
        let ints: Vec<Option<i32>> = common::random_options(&mut rng, n, common::Nulls::Some);
        let longs: Vec<Option<i64>> = common::random_options(&mut rng, n, common::Nulls::Some);
        let floats: Vec<Option<f64>> = (0..n)
            .map(|_| (rng.u8(..5) != 0).then(|| [-0.0, 0.0, 1.5, -2.0, f64::INFINITY][rng.usize(..5)]))
            .collect();
        let words: Vec<Option<String>> = (0..n)
            .map(|_| {
                (rng.u8(..6) != 0).then(|| {
                    let stem = ["", "a", "a\0", "ab", "abcdefg", "abcdefgh", "abcdefghijklmno"][rng.usize(..7)];
                    format!("{stem}{}", ["", "x", "\u{e9}"][rng.usize(..3)])
                })
            })
            .collect();
        let strings = Column::from_arrow(&StringArray::from(words.clone())).unwrap();
        for descending in [false, true] {
            let check_order = |what: &str,
                               x: &Column,
                               cmp: &dyn Fn(usize, usize) -> std::cmp::Ordering,
                               valid: &dyn Fn(usize) -> bool| {
                let mut want: Vec<u32> = (0..n as u32).collect();
                want.sort_by(|&a, &b| {
                    let (a, b) = (a as usize, b as usize);
                    match (valid(a), valid(b)) {
                        (true, true) if descending => cmp(b, a),
                        (true, true) => cmp(a, b),
                        (va, vb) => vb.cmp(&va),
                    }
                });
                let want: Vec<Option<V>> = want.iter().map(|r| Some(V::U(u64::from(*r)))).collect();
                let got = order_perm(&d.put(x), descending);
                assert_rows(
                    &format!("{what} n={n} descending={descending}"),
                    &rows(&got),
                    &want,
                    0.0,
                );
            };
            check_order("int32", &column(&ints), &|a, b| ints[a].cmp(&ints[b]), &|i| {
                ints[i].is_some()
            });
            check_order("int64", &column(&longs), &|a, b| longs[a].cmp(&longs[b]), &|i| {
                longs[i].is_some()
            });
            check_order(
                "float64",
                &column(&floats),
                &|a, b| floats[a].unwrap().total_cmp(&floats[b].unwrap()),
                &|i| floats[i].is_some(),
            );
            check_order("utf8", &strings, &|a, b| words[a].cmp(&words[b]), &|i| {
                words[i].is_some()
            });
        }
    }
}

/// when/then/otherwise: a row from the first column where the mask is
/// true, from the second where it is false or null, with that side's
/// validity; int32, int64 and boolean values.
fn select_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(51);
    for &n in SIZES {
        for nulls in [common::Nulls::None, common::Nulls::Some] {
            let (mask, mv) = bools(&mut rng, n, nulls == common::Nulls::Some);
            let pick = |i: usize| mv[i] == Some(true);
            let what = |t: &str| format!("select {t} n={n} nulls={nulls:?}");
            let a: Vec<Option<i64>> = common::random_options(&mut rng, n, nulls);
            let b: Vec<Option<i64>> = common::random_options(&mut rng, n, common::Nulls::Some);
            let want: Vec<_> = (0..n).map(|i| if pick(i) { a[i] } else { b[i] }.map(V::I)).collect();
            check(
                d,
                &what("i64"),
                &[&mask, &column(&a), &column(&b)],
                |c| when(&c[0], &c[1], &c[2]).unwrap(),
                &want,
            );
            let a: Vec<Option<i32>> = common::random_options(&mut rng, n, common::Nulls::Some);
            let b: Vec<Option<i32>> = common::random_options(&mut rng, n, nulls);
            let want: Vec<_> = (0..n)
                .map(|i| if pick(i) { a[i] } else { b[i] }.map(|v| V::I(i64::from(v))))
                .collect();
            check(
                d,
                &what("i32"),
                &[&mask, &column(&a), &column(&b)],
                |c| when(&c[0], &c[1], &c[2]).unwrap(),
                &want,
            );
            let (a, av) = bools(&mut rng, n, true);
            let (b, bv) = bools(&mut rng, n, nulls == common::Nulls::Some);
            let want: Vec<_> = (0..n).map(|i| if pick(i) { av[i] } else { bv[i] }).collect();
            check(
                d,
                &what("bool"),
                &[&mask, &a, &b],
                |c| when(&c[0], &c[1], &c[2]).unwrap(),
                &as_rows(&want),
            );
        }
    }
}

fn segment_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(8);
    for &n in SIZES {
        // Sorted keys with runs (nulls last), a second key splitting runs.
        let mut a: Vec<Option<i64>> = (0..n).map(|_| (rng.u8(..9) != 0).then(|| rng.i64(0..6))).collect();
        a.sort_by_key(|v| (v.is_none(), *v));
        let b: Vec<Option<f64>> = (0..n).map(|i| Some(((i / 7) % 2) as f64)).collect();
        let (ac, bc) = (column(&a), column(&b));
        let mut want_starts = Vec::new();
        for i in 0..n {
            if i == 0 || a[i] != a[i - 1] || b[i] != b[i - 1] {
                want_starts.push(i);
            }
        }
        let want: Vec<_> = want_starts.iter().map(|&i| Some(V::U(i as u64))).collect();
        check(
            d,
            &format!("segments n={n}"),
            &[&ac, &bc],
            |c| segments(&[&c[0], &c[1]]).unwrap(),
            &want,
        );
        let starts = segments(&[&ac, &bc]).unwrap();
        let ints: Vec<Option<i32>> = (0..n)
            .map(|_| (rng.u8(..4) != 0).then(|| rng.i32(-1000..1000)))
            .collect();
        let floats: Vec<Option<f64>> = (0..n).map(|_| (rng.u8(..4) != 0).then(|| rng.f64() - 0.5)).collect();
        let bounds = |g: usize| (want_starts[g], want_starts.get(g + 1).copied().unwrap_or(n));
        for op in [
            SegmentOp::Sum,
            SegmentOp::Min,
            SegmentOp::Max,
            SegmentOp::Count,
            SegmentOp::Rows,
            SegmentOp::Mean,
        ] {
            let reference = |vals: Vec<Option<f64>>, g: usize| -> Option<V> {
                let (lo, hi) = bounds(g);
                let valid: Vec<f64> = vals[lo..hi].iter().flatten().copied().collect();
                match op {
                    SegmentOp::Count => Some(V::I(valid.len() as i64)),
                    SegmentOp::Rows => Some(V::I((hi - lo) as i64)),
                    _ if valid.is_empty() => None,
                    SegmentOp::Sum => Some(V::F(valid[1..].iter().fold(valid[0], |s, v| s + v))),
                    SegmentOp::Min => Some(V::F(valid.iter().copied().fold(f64::INFINITY, f64::min))),
                    SegmentOp::Max => Some(V::F(valid.iter().copied().fold(f64::NEG_INFINITY, f64::max))),
                    SegmentOp::Mean => Some(V::F(valid.iter().sum::<f64>() / valid.len() as f64)),
                }
            };
            let as_int = |v: Option<V>| match (op, v) {
                (SegmentOp::Mean, v) => v,
                (_, Some(V::F(x))) => Some(V::I(x as i64)),
                (_, v) => v,
            };
            let iv: Vec<Option<f64>> = ints.iter().map(|v| v.map(f64::from)).collect();
            let want: Vec<_> = (0..want_starts.len())
                .map(|g| as_int(reference(iv.clone(), g)))
                .collect();
            let ic = column(&ints);
            check(
                d,
                &format!("{op:?} i32 n={n}"),
                &[&ic, &starts],
                |c| segment_reduce(&c[0], &c[1], op).unwrap(),
                &want,
            );
            let want: Vec<_> = (0..want_starts.len()).map(|g| reference(floats.clone(), g)).collect();
            let fc = column(&floats);
            check(
                d,
                &format!("{op:?} f64 n={n}"),
                &[&fc, &starts],
                |c| segment_reduce(&c[0], &c[1], op).unwrap(),
                &want,
            );
        }
    }
}

fn join_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(21);
    for &n in SIZES {
        let nb = n / 2 + rng.usize(..3);
        let build: Vec<Option<i64>> = (0..nb).map(|_| (rng.u8(..6) != 0).then(|| rng.i64(-10..10))).collect();
        let probe: Vec<Option<i64>> = (0..n).map(|_| (rng.u8(..6) != 0).then(|| rng.i64(-12..12))).collect();
        let (bc, pc) = (column(&build), column(&probe));
        let hits = |k: &Option<i64>| -> Vec<u32> {
            (0..nb as u32)
                .filter(|&r| k.is_some() && build[r as usize] == *k)
                .collect()
        };
        let want: Vec<_> = probe.iter().map(|k| Some(V::U(hits(k).len() as u64))).collect();
        check(
            d,
            &format!("join counts n={n}"),
            &[&bc, &pc],
            |c| join::counts(&c[0], &c[1]).unwrap(),
            &want,
        );
        for keep in [false, true] {
            let mut wp = Vec::new();
            let mut wb = Vec::new();
            for (i, k) in probe.iter().enumerate() {
                let h = hits(k);
                if h.is_empty() && keep {
                    wp.push(Some(V::U(i as u64)));
                    wb.push(Some(V::U(u64::from(join::NO_ROW))));
                }
                for r in h {
                    wp.push(Some(V::U(i as u64)));
                    wb.push(Some(V::U(u64::from(r))));
                }
            }
            let what = format!("join pairs n={n} left={keep}");
            check(
                d,
                &format!("{what} probe rows"),
                &[&bc, &pc],
                |c| join::pairs(&c[0], &c[1], keep).unwrap().0,
                &wp,
            );
            check(
                d,
                &format!("{what} build rows"),
                &[&bc, &pc],
                |c| join::pairs(&c[0], &c[1], keep).unwrap().1,
                &wb,
            );
        }
        let idx: Vec<u32> = (0..n)
            .map(|_| {
                if rng.u8(..5) == 0 {
                    join::NO_ROW
                } else {
                    rng.u32(..nb.max(1) as u32)
                }
            })
            .collect();
        if nb > 0 {
            let vals: Vec<Option<f64>> = (0..nb).map(|_| (rng.u8(..4) != 0).then(|| rng.f64())).collect();
            let want: Vec<_> = idx
                .iter()
                .map(|&r| {
                    if r == join::NO_ROW {
                        None
                    } else {
                        vals[r as usize].map(V::F)
                    }
                })
                .collect();
            let (vc, ic) = (column(&vals), Column::from_vec(idx));
            check(
                d,
                &format!("take_or_null n={n}"),
                &[&vc, &ic],
                |c| join::take_or_null(&c[0], &c[1]).unwrap(),
                &want,
            );
        }
    }
}

fn concat_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(31);
    // Pieces of awkward lengths (empty, one row, across word edges).
    let lens = [0usize, 1, 31, 33, 70, 0, 257];
    let ints: Vec<Vec<Option<i64>>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| (rng.u8(..5) != 0).then(|| rng.i64(..))).collect())
        .collect();
    let dense: Vec<Vec<Option<i32>>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| Some(rng.i32(..))).collect())
        .collect();
    let flags: Vec<Vec<Option<bool>>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| (rng.u8(..4) != 0).then(|| rng.bool())).collect())
        .collect();
    let want: Vec<_> = ints.iter().flatten().map(|v| v.map(V::I)).collect();
    let cols: Vec<Column> = ints.iter().map(|v| column(v)).collect();
    check(
        d,
        "concat i64",
        &cols.iter().collect::<Vec<_>>(),
        |c| concat::concat(&c.iter().collect::<Vec<_>>()).unwrap(),
        &want,
    );
    let want: Vec<_> = dense.iter().flatten().map(|v| v.map(|x| V::I(i64::from(x)))).collect();
    let cols: Vec<Column> = dense.iter().map(|v| column(v)).collect();
    check(
        d,
        "concat i32",
        &cols.iter().collect::<Vec<_>>(),
        |c| concat::concat(&c.iter().collect::<Vec<_>>()).unwrap(),
        &want,
    );
    let want: Vec<_> = flags.iter().flatten().map(|v| v.map(V::B)).collect();
    let cols: Vec<Column> = flags
        .iter()
        .map(|v| Column::from_arrow(&arrow_array::BooleanArray::from(v.clone())).unwrap())
        .collect();
    check(
        d,
        "concat bool",
        &cols.iter().collect::<Vec<_>>(),
        |c| concat::concat(&c.iter().collect::<Vec<_>>()).unwrap(),
        &want,
    );
    // Utf8, one piece a slice that starts mid-buffer: compared as arrow arrays.
    let strings: Vec<Vec<Option<String>>> = lens
        .iter()
        .map(|&n| {
            (0..n)
                .map(|i| (i % 6 != 2).then(|| "x".repeat(rng.usize(..9))))
                .collect()
        })
        .collect();
    let mut cols: Vec<Column> = strings
        .iter()
        .map(|v| Column::from_arrow(&StringArray::from(v.clone())).unwrap())
        .collect();
    let sliced = StringArray::from(vec![Some("skip"), Some("kept"), None, Some("also")]).slice(1, 3);
    cols.push(Column::from_arrow(&sliced).unwrap());
    let want: Vec<Option<String>> = strings
        .iter()
        .flatten()
        .cloned()
        .chain([Some("kept".to_string()), None, Some("also".to_string())])
        .collect();
    let dev: Vec<Column> = cols.iter().map(|c| d.put(c)).collect();
    let out = concat::concat(&dev.iter().collect::<Vec<_>>())
        .unwrap()
        .to_host()
        .unwrap();
    let got = out.to_arrow().unwrap();
    assert_eq!(
        got.as_ref(),
        &StringArray::from(want) as &dyn arrow_array::Array,
        "concat utf8"
    );
}

/// The year of a day count, counting years from 1970 (the reference).
fn year_of(mut days: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let len = |y: i64| if leap(y) { 366 } else { 365 };
    let mut y = 1970;
    while days < 0 {
        y -= 1;
        days += len(y);
    }
    while days >= len(y) {
        days -= len(y);
        y += 1;
    }
    y
}

fn string_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(41);
    for &n in SIZES {
        let words = ["", "a", "ab", "abc", "bab", "zzab", "héllo", "ab ab"];
        let v: Vec<Option<&str>> = (0..n)
            .map(|_| (rng.u8(..6) != 0).then(|| words[rng.usize(..words.len())]))
            .collect();
        let x = Column::from_arrow(&StringArray::from(v.clone())).unwrap();
        for (op, pattern) in [
            (StrOp::Eq, "ab"),
            (StrOp::StartsWith, "ab"),
            (StrOp::EndsWith, "ab"),
            (StrOp::Contains, "b a"),
            (StrOp::Contains, ""),
            (StrOp::Eq, "héllo"),
            (StrOp::Lt, "ab"),
            (StrOp::Le, "ab"),
            (StrOp::Gt, "h"),
            (StrOp::Ge, ""),
            (StrOp::Lt, "hé"),
        ] {
            let want: Vec<_> = v
                .iter()
                .map(|s| {
                    s.map(|s| {
                        V::B(match op {
                            StrOp::Eq => s == pattern,
                            StrOp::StartsWith => s.starts_with(pattern),
                            StrOp::EndsWith => s.ends_with(pattern),
                            StrOp::Contains => s.contains(pattern),
                            StrOp::Lt => s < pattern,
                            StrOp::Le => s <= pattern,
                            StrOp::Gt => s > pattern,
                            StrOp::Ge => s >= pattern,
                        })
                    })
                })
                .collect();
            let what = format!("{op:?} {pattern:?} n={n}");
            check(
                d,
                &what,
                &[&x],
                |c| strings::matches(&c[0], op, pattern).unwrap(),
                &want,
            );
        }
        let days: Vec<Option<i32>> = (0..n)
            .map(|_| (rng.u8(..7) != 0).then(|| rng.i32(-800_000..800_000)))
            .collect();
        let want: Vec<_> = days.iter().map(|d| d.map(|d| V::I(year_of(i64::from(d))))).collect();
        check(
            d,
            &format!("year n={n}"),
            &[&column(&days)],
            |c| strings::year(&c[0]).unwrap(),
            &want,
        );
        // Compaction of utf8, boolean and u32 columns by a mask with nulls.
        let (mask, mv) = bools(&mut rng, n, true);
        let keep: Vec<bool> = mv.iter().map(|m| *m == Some(true)).collect();
        let dev_mask = d.put(&mask);
        let want: Vec<Option<&str>> = v.iter().zip(&keep).filter(|(_, k)| **k).map(|(s, _)| *s).collect();
        let got = select::compact(&d.put(&x), &dev_mask)
            .unwrap()
            .to_host()
            .unwrap()
            .to_arrow()
            .unwrap();
        assert_eq!(
            got.as_ref(),
            &StringArray::from(want) as &dyn arrow_array::Array,
            "compact utf8 n={n}"
        );
        let (b, bv) = bools(&mut rng, n, true);
        let want: Vec<_> = bv
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(x, _)| x.map(V::B))
            .collect();
        let got = select::compact(&d.put(&b), &dev_mask).unwrap();
        assert_rows(&format!("compact bool n={n}"), &rows(&got), &want, 0.0);
        let ids: Vec<u32> = (0..n as u32).map(|i| i * 3).collect();
        let want: Vec<_> = ids
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(x, _)| Some(V::U(u64::from(*x))))
            .collect();
        let got = select::compact(&d.put(&Column::from_vec(ids)), &dev_mask).unwrap();
        assert_rows(&format!("compact u32 n={n}"), &rows(&got), &want, 0.0);
    }
}

fn cast_kernels(d: &Dut) {
    let mut rng = fastrand::Rng::with_seed(51);
    for &n in SIZES {
        let small: Vec<Option<i32>> = (0..n).map(|_| (rng.u8(..5) != 0).then(|| rng.i32(..))).collect();
        let big: Vec<Option<i64>> = (0..n)
            .map(|_| (rng.u8(..5) != 0).then(|| rng.i64(-(1 << 60)..1 << 60)))
            .collect();
        let want: Vec<_> = small.iter().map(|v| v.map(|v| V::I(i64::from(v)))).collect();
        check(
            d,
            &format!("widen n={n}"),
            &[&column(&small)],
            |c| cast::widen(&c[0]).unwrap(),
            &want,
        );
        let wide: Vec<Option<i64>> = small.iter().map(|v| v.map(i64::from)).collect();
        let want: Vec<_> = small.iter().map(|v| v.map(|v| V::I(i64::from(v)))).collect();
        check(
            d,
            &format!("narrow n={n}"),
            &[&column(&wide)],
            |c| cast::narrow(&c[0]).unwrap(),
            &want,
        );
        if n > 0 {
            let mut past = wide.clone();
            past[n / 2] = Some(1 << 40);
            assert!(
                cast::narrow(&d.put(&column(&past))).is_err(),
                "narrow n={n}: 2^40 does not fit"
            );
        }
        let want: Vec<_> = small.iter().map(|v| v.map(|v| V::F(f64::from(v)))).collect();
        check(
            d,
            &format!("i32 to f64 n={n}"),
            &[&column(&small)],
            |c| cast::to_f64(&c[0], 1.0).unwrap(),
            &want,
        );
        let want: Vec<_> = big.iter().map(|v| v.map(|v| V::F(v as f64 / 100.0))).collect();
        check(
            d,
            &format!("decimal to f64 n={n}"),
            &[&column(&big)],
            |c| cast::to_f64(&c[0], 100.0).unwrap(),
            &want,
        );
    }
}

test_device!(
    cast_kernels,
    logic_kernels,
    frame_hash_kernels,
    scan_kernels,
    order_key_kernels,
    select_kernels,
    segment_kernels,
    join_kernels,
    concat_kernels,
    string_kernels
);
