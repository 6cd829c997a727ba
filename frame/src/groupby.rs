//! Hash group-by aggregation on one batch, and how an aggregation splits
//! into a partial step per partition, a merge of partial results and a
//! final projection (so it runs as a tree or after a shuffle).
//!
//! Groups are numbered in order of first appearance, one key column at a
//! time (see [`group_rows`]).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema};
use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use crate::error::{FrameError, Result};
use crate::eval::Evaluator;
use crate::expr::{AggFunc, Expr, col};

/// One aggregate of a group-by: `func(input) as name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggSpec {
    /// The function.
    pub func: AggFunc,
    /// What it aggregates (ignored by `Len`).
    pub input: Expr,
    /// The output column.
    pub name: String,
}

impl AggSpec {
    /// Reads `expr.sum().alias("x")` and the like; anything else is an error.
    pub fn from_expr(expr: &Expr) -> Result<AggSpec> {
        match expr.unaliased() {
            Expr::Agg(func, input) if !input.has_agg() => Ok(AggSpec {
                func: *func,
                input: (**input).clone(),
                name: expr.output_name(),
            }),
            _ => Err(FrameError::Plan(format!(
                "{expr} is not an aggregate such as col(\"x\").sum().alias(\"total\")"
            ))),
        }
    }
}

/// The type `func` gives for an input of type `input`.
pub fn agg_type(func: AggFunc, input: &DataType) -> Result<DataType> {
    let unsupported = || FrameError::Unsupported {
        op: format!("{func:?}"),
        data_type: input.clone(),
    };
    Ok(match func {
        AggFunc::Count | AggFunc::Len | AggFunc::NUnique => DataType::Int64,
        AggFunc::Mean if input.is_numeric() || matches!(input, DataType::Null) => DataType::Float64,
        AggFunc::Sum | AggFunc::Min | AggFunc::Max => match input {
            t if t.is_integer() || *t == DataType::Null => DataType::Int64,
            t if t.is_floating() => DataType::Float64,
            DataType::Decimal128(_, s) if func == AggFunc::Sum => DataType::Decimal128(38, *s),
            DataType::Decimal128(..) | DataType::Date32 | DataType::Utf8 if func != AggFunc::Sum => input.clone(),
            _ => return Err(unsupported()),
        },
        AggFunc::Mean => return Err(unsupported()),
    })
}

/// Group numbers of each row and, per group, the first row holding it.
pub struct Groups {
    /// The group of each row.
    pub ids: Vec<u32>,
    /// The first row of each group.
    pub firsts: Vec<u32>,
}

impl Groups {
    /// Number of groups.
    pub fn len(&self) -> usize {
        self.firsts.len()
    }

    /// No groups.
    pub fn is_empty(&self) -> bool {
        self.firsts.is_empty()
    }
}

/// Numbers the distinct key tuples of `keys` (all of `rows` rows): each
/// column's values are numbered on their own (integers and strings
/// hashed as they are, other types through arrow-row's encoding), then
/// the columns' numbers are combined pairwise as one `u64` each, so
/// several keys cost a few integer hash passes rather than a row
/// encoding of every tuple.
pub fn group_rows(keys: &[ArrayRef], rows: usize) -> Result<Groups> {
    let Some((first, rest)) = keys.split_first() else {
        return Ok(Groups {
            ids: vec![0; rows],
            firsts: vec![0],
        });
    };
    let mut groups = column_groups(first)?;
    for key in rest {
        if determined(key, &groups)? {
            continue;
        }
        let next = column_groups(key)?;
        let pairs = groups.ids.iter().zip(&next.ids);
        let (n, m) = (groups.len(), next.len());
        groups = if n * m <= 1 << 16 {
            // Few pairs possible: numbered through a table of them all.
            first_appearance(pairs.map(|(&a, &b)| a as usize * m + b as usize), n * m)
        } else {
            dense(pairs.map(|(&a, &b)| Some((u64::from(a) << 32) | u64::from(b))), rows)
        };
    }
    Ok(groups)
}

/// Whether `key` holds one value per group of `groups` (each row's value
/// equals its group's first row's), so that grouping by it too changes
/// nothing: the customer's name, address and comment after its key in
/// TPC-H q10. Checked row by row, stopping at the first difference, which
/// costs less than numbering the column's values by hash.
fn determined(key: &ArrayRef, groups: &Groups) -> Result<bool> {
    let same = arrow_ord::ord::make_comparator(key.as_ref(), key.as_ref(), arrow_schema::SortOptions::default())?;
    Ok(groups
        .ids
        .iter()
        .enumerate()
        .all(|(row, &g)| same(row, groups.firsts[g as usize] as usize).is_eq()))
}

/// The distinct values of one key column, numbered (null is one value).
fn column_groups(key: &ArrayRef) -> Result<Groups> {
    let rows = key.len();
    let t = key.data_type();
    if let Some(dictionary) = key.as_any_dictionary_opt() {
        // The dictionary's values numbered once, then each row's by its
        // index (nulls, of index or value, after them).
        let values = column_groups(dictionary.values())?;
        let null = values.len();
        let nulls = key.logical_nulls();
        if let (None, Some(dictionary)) = (&nulls, key.as_dictionary_opt::<Int32Type>()) {
            // Parquet's dictionaries without nulls: each row's index read
            // as it is (TPC-H q1's flags, 6M rows at SF1).
            let codes = dictionary
                .keys()
                .values()
                .iter()
                .map(|&i| values.ids[i as usize] as usize);
            return Ok(first_appearance(codes, null));
        }
        let codes = dictionary
            .normalized_keys()
            .into_iter()
            .enumerate()
            .map(|(row, index)| {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    null
                } else {
                    values.ids[index] as usize
                }
            });
        return Ok(first_appearance(codes, null + 1));
    }
    if t.is_integer() || *t == DataType::Date32 {
        let ints = arrow_cast::cast(key, &DataType::Int64)?;
        return Ok(dense(ints.as_primitive::<Int64Type>().iter(), rows));
    }
    if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        let strings = arrow_cast::cast(key, &DataType::Utf8)?;
        let strings = strings.as_string::<i32>();
        if let Some(packed) = packed(strings) {
            let valid = |row: usize| strings.is_valid(row);
            return Ok(dense(
                packed.into_iter().enumerate().map(|(row, k)| valid(row).then_some(k)),
                rows,
            ));
        }
        return Ok(dense(strings.iter(), rows));
    }
    let converter = RowConverter::new(vec![SortField::new(t.clone())])?;
    let encoded = converter.convert_columns(std::slice::from_ref(key))?;
    Ok(dense((0..rows).map(|row| Some(encoded.row(row).data())), rows))
}

/// Strings of at most 7 bytes as one `u64` each (the bytes, and the length
/// in the top byte, so no two strings share one), to be numbered as
/// integers are: flags and codes such as TPC-H's `l_returnflag`. `None`
/// when a string is longer.
fn packed(strings: &arrow_array::StringArray) -> Option<Vec<u64>> {
    let offsets = strings.value_offsets();
    if offsets.windows(2).any(|w| w[1] - w[0] > 7) {
        return None;
    }
    let bytes = strings.value_data();
    Some(
        offsets
            .windows(2)
            .map(|w| {
                let (start, len) = (w[0] as usize, (w[1] - w[0]) as usize);
                // Eight bytes read at once where the buffer has them (no
                // copy call per row), the string's own bytes kept.
                let word = match bytes.get(start..start + 8) {
                    Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")) & ((1u64 << (8 * len)) - 1),
                    None => bytes[start..start + len]
                        .iter()
                        .rev()
                        .fold(0, |word, &b| (word << 8) | u64::from(b)),
                };
                word | ((len as u64) << 56)
            })
            .collect(),
    )
}

/// Numbers `codes`, each below `range`, in order of first appearance,
/// through a table rather than a hash.
fn first_appearance(codes: impl Iterator<Item = usize>, range: usize) -> Groups {
    let mut numbers = vec![u32::MAX; range];
    let mut firsts = Vec::new();
    let ids = codes
        .enumerate()
        .map(|(row, code)| {
            let number = &mut numbers[code];
            if *number == u32::MAX {
                *number = firsts.len() as u32;
                firsts.push(row as u32);
            }
            *number
        })
        .collect();
    Groups { ids, firsts }
}

/// Numbers `values` in order of first appearance (`None` is one value).
fn dense<K: std::hash::Hash + Eq>(values: impl Iterator<Item = Option<K>>, rows: usize) -> Groups {
    let mut table: HashMap<K, u32> = HashMap::with_capacity(1024);
    let mut null_group = None;
    let mut ids = Vec::with_capacity(rows);
    let mut firsts = Vec::new();
    for (row, v) in values.enumerate() {
        let new = || {
            firsts.push(row as u32);
            (firsts.len() - 1) as u32
        };
        let id = match v {
            Some(v) => *table.entry(v).or_insert_with(new),
            None => *null_group.get_or_insert_with(new),
        };
        ids.push(id);
    }
    Groups { ids, firsts }
}

/// `group_by(keys).agg(aggs)` of one batch: the key columns (first row of
/// each group, in order of first appearance) then one column per aggregate.
pub fn aggregate(batch: &RecordBatch, keys: &[Expr], aggs: &[AggSpec]) -> Result<RecordBatch> {
    aggregate_selected(batch, None, keys, aggs)
}

/// [`aggregate`] of the rows of `batch` where `predicate` holds. Where it
/// keeps most rows, they are not copied out: the aggregates run over every
/// row, those dropped counted in a group of their own that is left out
/// (TPC-H q1 keeps 98% of `lineitem`). Should an expression fail on a
/// dropped row, the kept rows are aggregated alone.
pub fn aggregate_where(batch: &RecordBatch, predicate: &Expr, keys: &[Expr], aggs: &[AggSpec]) -> Result<RecordBatch> {
    let (batch, mask) = crate::eval::narrow(batch, predicate)?;
    let Some(mask) = mask else {
        return aggregate(&batch, keys, aggs);
    };
    if mask.true_count() * 2 >= mask.len()
        && let Ok(out) = aggregate_selected(&batch, Some(&mask), keys, aggs)
    {
        return Ok(out);
    }
    aggregate(&arrow_select::filter::filter_record_batch(&batch, &mask)?, keys, aggs)
}

/// The groups of the rows `selection` keeps (some rows dropped): `groups`
/// with the dropped rows moved into one more group, the last, in one
/// branch-free pass; the rows per group; and the groups with a kept row, in
/// order of their first kept row (the order a group-by of the kept rows
/// alone gives), with that row. Renumbering the groups instead would look
/// up every row's new number (TPC-H q1 drops 2% of its rows).
fn select_groups(mut groups: Groups, selection: &BooleanArray) -> (Groups, Vec<i64>, Vec<(u32, u32)>) {
    let keep = selection.values();
    let dropped = groups.len() as u32;
    for (ids, word) in groups.ids.chunks_mut(64).zip(keep.bit_chunks().iter_padded()) {
        for (j, id) in ids.iter_mut().enumerate() {
            *id = if word >> j & 1 == 1 { *id } else { dropped };
        }
    }
    let counts = row_counts(&groups.ids, groups.len() + 1);
    let mut kept: Vec<(u32, u32)> = (0..dropped)
        .filter(|&g| counts[g as usize] > 0)
        .map(|g| {
            let first = groups.firsts[g as usize];
            // A group's first row is its first kept one unless dropped.
            let row = match keep.value(first as usize) {
                true => first,
                false => groups.ids[first as usize..]
                    .iter()
                    .position(|&id| id == g)
                    .map_or(first, |at| first + at as u32),
            };
            (g, row)
        })
        .collect();
    kept.sort_unstable_by_key(|&(_, row)| row);
    let first_dropped = keep.iter().position(|k| !k).unwrap_or(0) as u32;
    groups.firsts.push(first_dropped);
    (groups, counts, kept)
}

/// [`aggregate`] over the rows `selection` keeps (all when `None`).
fn aggregate_selected(
    batch: &RecordBatch,
    selection: Option<&BooleanArray>,
    keys: &[Expr],
    aggs: &[AggSpec],
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut evaluator = Evaluator::new(batch);
    let key_arrays = keys.iter().map(|k| evaluator.evaluate(k)).collect::<Result<Vec<_>>>()?;
    let mut groups = group_rows(&key_arrays, rows)?;
    // The groups with kept rows, in the order a group-by of them alone
    // gives (all of them, or those `select_groups` picks), and a row of each.
    let mut lens: Option<ArrayRef> = None;
    let (order, firsts): (Vec<u32>, Vec<u32>) = match selection.filter(|s| s.true_count() < rows) {
        Some(selection) => {
            let (selected, counts, kept) = select_groups(groups, selection);
            groups = selected;
            lens = Some(Arc::new(Int64Array::from(counts)));
            kept.into_iter().unzip()
        }
        None => ((0..groups.len() as u32).collect(), groups.firsts.clone()),
    };
    let identity = order.iter().enumerate().all(|(i, &g)| i as u32 == g);
    let order = UInt32Array::from(order);
    let pick = |out: &ArrayRef| -> Result<ArrayRef> {
        Ok(match identity {
            true => out.slice(0, order.len()),
            false => arrow_select::take::take(out, &order, None)?,
        })
    };
    let firsts = UInt32Array::from(firsts);
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (k, a) in keys.iter().zip(&key_arrays) {
        let mut column = arrow_select::take::take(a, &firsts, None)?;
        // Keys read as dictionaries leave as the values they stand for.
        if let DataType::Dictionary(_, values) = column.data_type() {
            column = arrow_cast::cast(&column, values)?;
        }
        fields.push(Field::new(k.output_name(), column.data_type().clone(), true));
        columns.push(column);
    }
    // Rows per group, counted once (by `select_groups` where it ran):
    // `len()` and the counts of inputs without nulls.
    let mut rows_per_group = || {
        lens.get_or_insert_with(|| Arc::new(Int64Array::from(row_counts(&groups.ids, groups.len()))))
            .clone()
    };
    for agg in aggs {
        let out = if agg.func == AggFunc::Len {
            rows_per_group()
        } else {
            let input = evaluator.evaluate(&agg.input)?;
            if agg.func == AggFunc::Count && input.logical_nulls().is_none() {
                rows_per_group()
            } else {
                accumulate(agg.func, &input, &groups)?
            }
        };
        fields.push(Field::new(agg.name.clone(), out.data_type().clone(), true));
        columns.push(pick(&out)?);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn accumulate(func: AggFunc, input: &ArrayRef, groups: &Groups) -> Result<ArrayRef> {
    let n = groups.len();
    let ids = &groups.ids;
    let out_type = agg_type(func, input.data_type())?;
    match func {
        AggFunc::Count => {
            // The validity bitmap read directly (logical nulls: a null-typed
            // input counts nothing), not one dynamic call per row.
            let counts = match input.logical_nulls() {
                None => row_counts(ids, n),
                Some(nulls) => {
                    let mut counts = vec![0i64; n];
                    for (&g, valid) in ids.iter().zip(nulls.iter()) {
                        counts[g as usize] += i64::from(valid);
                    }
                    counts
                }
            };
            Ok(Arc::new(Int64Array::from(counts)))
        }
        AggFunc::Len => unreachable!("counted from the groups"),
        AggFunc::NUnique => {
            let converter = RowConverter::new(vec![SortField::new(input.data_type().clone())])?;
            let rows = converter.convert_columns(std::slice::from_ref(input))?;
            let mut seen: HashSet<(u32, &[u8])> = HashSet::new();
            let mut counts = vec![0i64; n];
            for (row, &g) in ids.iter().enumerate() {
                if seen.insert((g, rows.row(row).data())) {
                    counts[g as usize] += 1;
                }
            }
            Ok(Arc::new(Int64Array::from(counts)))
        }
        AggFunc::Mean => {
            let values = crate::eval::cast(input, &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            let (mut sums, mut counts) = (vec![0f64; n], vec![0u64; n]);
            fold(values, ids, |g, v| {
                sums[g] += v;
                counts[g] += 1;
            });
            Ok(Arc::new(Float64Array::from_iter(
                sums.iter().zip(&counts).map(|(s, &c)| (c > 0).then(|| s / c as f64)),
            )))
        }
        AggFunc::Sum | AggFunc::Min | AggFunc::Max => match &out_type {
            DataType::Int64 => {
                let values = arrow_cast::cast(input, &DataType::Int64)?;
                let acc = reduce(values.as_primitive::<Int64Type>(), ids, n, func);
                Ok(Arc::new(Int64Array::from(acc)))
            }
            DataType::Float64 => {
                let values = crate::eval::cast(input, &DataType::Float64)?;
                let acc = reduce(values.as_primitive::<Float64Type>(), ids, n, func);
                Ok(Arc::new(Float64Array::from(acc)))
            }
            DataType::Decimal128(p, s) => {
                let values = input.as_primitive::<Decimal128Type>();
                let acc = match input.data_type() {
                    DataType::Decimal128(digits, _) if func == AggFunc::Sum && *digits <= 18 => {
                        narrow_sum(values, ids, n)
                    }
                    _ => reduce(values, ids, n, func),
                };
                Ok(Arc::new(Decimal128Array::from(acc).with_precision_and_scale(*p, *s)?))
            }
            DataType::Date32 => {
                let acc = reduce(input.as_primitive::<Date32Type>(), ids, n, func);
                Ok(Arc::new(Date32Array::from(acc)))
            }
            DataType::Utf8 => {
                let values = arrow_cast::cast(input, &DataType::Utf8)?;
                let values = values.as_string::<i32>();
                let mut acc: Vec<Option<&str>> = vec![None; n];
                for (row, &g) in ids.iter().enumerate() {
                    if values.is_valid(row) {
                        let v = values.value(row);
                        let slot = &mut acc[g as usize];
                        let better = match slot {
                            None => true,
                            Some(cur) => (func == AggFunc::Min) == (v < *cur),
                        };
                        if better {
                            *slot = Some(v);
                        }
                    }
                }
                Ok(Arc::new(StringArray::from(acc)))
            }
            other => Err(FrameError::Unsupported {
                op: format!("{func:?}"),
                data_type: other.clone(),
            }),
        },
    }
}

fn fold<T: arrow_array::ArrowPrimitiveType>(
    values: &arrow_array::PrimitiveArray<T>,
    ids: &[u32],
    mut f: impl FnMut(usize, T::Native),
) {
    let raw = values.values();
    match values.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for (&g, &v) in ids.iter().zip(raw.iter()) {
                f(g as usize, v);
            }
        }
        Some(nulls) => {
            for (row, (&g, &v)) in ids.iter().zip(raw.iter()).enumerate() {
                if nulls.is_valid(row) {
                    f(g as usize, v);
                }
            }
        }
    }
}

/// Interleaved copies of the groups' states taken per row when there are
/// few groups: consecutive rows of one group (TPC-H q1 has four groups)
/// update different copies, so an add does not wait for the one before.
/// Only for exact states (integer and decimal sums, counts): the copies
/// regroup the additions.
const LANES: usize = 4;

/// Most groups for which [`lanes`] keeps copies of the states.
const LANE_GROUPS: usize = 256;

/// [`LANES`] copies of `n` group states, over rows without nulls.
struct Lanes<'a, V, S> {
    ids: &'a [u32],
    values: &'a [V],
    n: usize,
    states: Vec<S>,
}

/// Lanes for `values` (no nulls) grouped by `ids` into `n` groups, where
/// they pay: `None` for many groups or where values are null. Every group
/// then has a value: groups are made from rows, and the one group of a
/// global aggregate over no rows is left to the one-pass path.
fn lanes<'a, T: arrow_array::ArrowPrimitiveType, S: Copy>(
    values: &'a arrow_array::PrimitiveArray<T>,
    ids: &'a [u32],
    n: usize,
    zero: S,
) -> Option<Lanes<'a, T::Native, S>> {
    (values.null_count() == 0)
        .then(|| Lanes::new(ids, values.values(), n, zero))
        .flatten()
}

impl<'a, V: Copy, S: Copy> Lanes<'a, V, S> {
    /// Lanes over `values` grouped by `ids`; `None` for many groups or no rows.
    fn new(ids: &'a [u32], values: &'a [V], n: usize, zero: S) -> Option<Self> {
        (n <= LANE_GROUPS && !ids.is_empty()).then(|| Lanes {
            ids,
            values,
            n,
            states: vec![zero; LANES * n],
        })
    }

    /// Calls `f(state, group, value)` for each row, row `i` on copy `i % LANES`.
    fn fold(&mut self, mut f: impl FnMut(&mut S, usize, V)) {
        let n = self.n;
        let mut ids = self.ids.chunks_exact(LANES);
        let mut values = self.values.chunks_exact(LANES);
        for (g, v) in (&mut ids).zip(&mut values) {
            for lane in 0..LANES {
                let group = g[lane] as usize;
                f(&mut self.states[lane * n + group], group, v[lane]);
            }
        }
        for (&g, &v) in ids.remainder().iter().zip(values.remainder()) {
            f(&mut self.states[g as usize], g as usize, v);
        }
    }

    /// The copies of each group combined with `merge`, after `out`.
    fn merged<O>(&self, merge: impl Fn(O, O) -> O, out: impl Fn(S) -> O) -> Vec<O> {
        (0..self.n)
            .map(|g| {
                (1..LANES).fold(out(self.states[g]), |acc, lane| {
                    merge(acc, out(self.states[lane * self.n + g]))
                })
            })
            .collect()
    }
}

/// Rows per group.
fn row_counts(ids: &[u32], n: usize) -> Vec<i64> {
    let Some(mut lanes) = Lanes::new(ids, ids, n, 0i64) else {
        let mut counts = vec![0i64; n];
        ids.iter().for_each(|&g| counts[g as usize] += 1);
        return counts;
    };
    lanes.fold(|count, _, _| *count += 1);
    lanes.merged(|a, b| a + b, |c| c)
}

/// Adds `v` to a group's 64-bit `sum`, moved into `carried` first where
/// the add would overflow.
fn add_carrying(sum: &mut i64, carried: &mut i128, v: i64) {
    match sum.checked_add(v) {
        Some(s) => *sum = s,
        None => {
            *carried += i128::from(*sum) + i128::from(v);
            *sum = 0;
        }
    }
}

/// Sums per group of decimals of at most 18 digits (each fits an i64):
/// added as i64, carried into an i128 where a sum would overflow, so a
/// row costs a 64-bit add rather than a 128-bit one.
fn narrow_sum(values: &Decimal128Array, ids: &[u32], n: usize) -> Vec<Option<i128>> {
    if let Some(mut lanes) = lanes(values, ids, n, 0i64) {
        let mut carried = vec![0i128; n];
        lanes.fold(|sum, g, v| add_carrying(sum, &mut carried[g], v as i64));
        for (g, sum) in lanes.merged(|a, b| a + b, i128::from).into_iter().enumerate() {
            carried[g] += sum;
        }
        return carried.into_iter().map(Some).collect();
    }
    let mut sums = vec![0i64; n];
    let mut carried = vec![0i128; n];
    let mut seen = vec![false; n];
    fold(values, ids, |g, v| {
        add_carrying(&mut sums[g], &mut carried[g], v as i64);
        seen[g] = true;
    });
    (0..n)
        .map(|g| seen[g].then(|| carried[g] + i128::from(sums[g])))
        .collect()
}

/// Sum, min or max per group (None where a group has no values).
fn reduce<T>(values: &arrow_array::PrimitiveArray<T>, ids: &[u32], n: usize, func: AggFunc) -> Vec<Option<T::Native>>
where
    T: arrow_array::ArrowPrimitiveType,
    T::Native: arrow_array::ArrowNativeTypeOp + PartialOrd,
{
    use arrow_array::ArrowNativeTypeOp;
    // Integer sums only: float sums keep the rows' order, so a group's
    // total does not depend on the other groups or rows beside it (the
    // same whether the frame was filtered first or not).
    if func == AggFunc::Sum
        && !T::DATA_TYPE.is_floating()
        && let Some(mut lanes) = lanes(values, ids, n, T::Native::ZERO)
    {
        lanes.fold(|sum, _, v| *sum = sum.add_wrapping(v));
        return lanes
            .merged(|a: T::Native, b| a.add_wrapping(b), |s| s)
            .into_iter()
            .map(Some)
            .collect();
    }
    let mut acc: Vec<Option<T::Native>> = vec![None; n];
    match func {
        AggFunc::Sum => fold(values, ids, |g, v| {
            let slot = &mut acc[g];
            *slot = Some(slot.map_or(v, |s| s.add_wrapping(v)));
        }),
        AggFunc::Min => fold(values, ids, |g, v| {
            let slot = &mut acc[g];
            if slot.is_none_or(|s| v < s) {
                *slot = Some(v);
            }
        }),
        _ => fold(values, ids, |g, v| {
            let slot = &mut acc[g];
            if slot.is_none_or(|s| v > s) {
                *slot = Some(v);
            }
        }),
    }
    acc
}

/// An aggregation split for distributed execution: `partial` runs on each
/// partition, `merge` on concatenated partial results (any number of
/// times, as in a tree), and `finals` projects the merged states to the
/// requested columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoPhase {
    /// Aggregates of the raw rows.
    pub partial: Vec<AggSpec>,
    /// Aggregates of partial states (keys are the key columns' names).
    pub merge: Vec<AggSpec>,
    /// The output columns, over the merged states.
    pub finals: Vec<Expr>,
}

/// Splits `aggs` in two phases; `None` when one of them (`n_unique`) does
/// not decompose. Aggregates that need the same state share it: TPC-H q1's
/// `avg(l_quantity)` sums the column `sum(l_quantity)` already sums.
pub fn two_phase(key_names: &[String], aggs: &[AggSpec]) -> Option<TwoPhase> {
    let mut out = TwoPhase {
        partial: Vec::new(),
        merge: Vec::new(),
        finals: key_names.iter().map(col).collect(),
    };
    // The state of `func` over `input`: the name of one already kept, or
    // `name`, now kept and merged with `merge_func`.
    let mut state = |func: AggFunc, input: &Expr, name: String, merge_func: AggFunc| {
        let same = |a: &&AggSpec| a.func == func && (func == AggFunc::Len || a.input == *input);
        if let Some(kept) = out.partial.iter().find(same) {
            return kept.name.clone();
        }
        out.partial.push(AggSpec {
            func,
            input: input.clone(),
            name: name.clone(),
        });
        out.merge.push(AggSpec {
            func: merge_func,
            input: col(&name),
            name: name.clone(),
        });
        name
    };
    let mut finals = Vec::new();
    for agg in aggs {
        let input = &agg.input;
        match agg.func {
            AggFunc::NUnique => return None,
            AggFunc::Mean => {
                let s = state(AggFunc::Sum, input, format!("{}__sum", agg.name), AggFunc::Sum);
                let c = state(AggFunc::Count, input, format!("{}__count", agg.name), AggFunc::Sum);
                finals
                    .push((col(&s).cast(DataType::Float64) / col(&c).cast(DataType::Float64)).alias(agg.name.clone()));
            }
            func => {
                let merge_func = match func {
                    AggFunc::Count | AggFunc::Len => AggFunc::Sum,
                    f => f,
                };
                let name = state(func, input, agg.name.clone(), merge_func);
                finals.push(if name == agg.name {
                    col(&name)
                } else {
                    col(&name).alias(agg.name.clone())
                });
            }
        }
    }
    out.finals.extend(finals);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::lit;
    use std::collections::BTreeMap;

    fn batch(keys: Vec<Option<i64>>, names: Vec<&str>, values: Vec<Option<f64>>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("n", DataType::Utf8, true),
                Field::new("v", DataType::Float64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(StringArray::from(names)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .unwrap()
    }

    fn specs() -> Vec<AggSpec> {
        [
            col("v").sum().alias("s"),
            col("v").mean().alias("m"),
            col("v").count().alias("c"),
            crate::expr::len().alias("l"),
            col("v").min().alias("lo"),
            col("v").max().alias("hi"),
            col("n").n_unique().alias("u"),
        ]
        .iter()
        .map(|e| AggSpec::from_expr(e).unwrap())
        .collect()
    }

    #[test]
    fn aggregates_match_a_reference() {
        let keys = vec![Some(1), Some(2), Some(1), None, Some(2), Some(1)];
        let names = vec!["a", "b", "a", "c", "x", "z"];
        let values = vec![Some(1.0), Some(2.0), None, Some(4.0), Some(5.0), Some(6.0)];
        let b = batch(keys.clone(), names, values.clone());
        let out = aggregate(&b, &[col("k")], &specs()).unwrap();
        assert_eq!(out.num_rows(), 3);
        let k = out.column(0).as_primitive::<Int64Type>();
        assert_eq!(k.iter().collect::<Vec<_>>(), [Some(1), Some(2), None]);
        let f = |i: usize| out.column(i).as_primitive::<Float64Type>().iter().collect::<Vec<_>>();
        let n = |i: usize| out.column(i).as_primitive::<Int64Type>().iter().collect::<Vec<_>>();
        assert_eq!(f(1), [Some(7.0), Some(7.0), Some(4.0)]);
        assert_eq!(f(2), [Some(3.5), Some(3.5), Some(4.0)]);
        assert_eq!(n(3), [Some(2), Some(2), Some(1)]);
        assert_eq!(n(4), [Some(3), Some(2), Some(1)]);
        assert_eq!(f(5), [Some(1.0), Some(2.0), Some(4.0)]);
        assert_eq!(f(6), [Some(6.0), Some(5.0), Some(4.0)]);
        assert_eq!(n(7), [Some(2), Some(2), Some(1)]);
    }

    #[test]
    fn keys_determined_by_earlier_ones_group_alike() {
        let k: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(1), None, Some(2), None]));
        // A name per key (null for the null key): determined.
        let name: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("b"),
            Some("a"),
            None,
            Some("b"),
            None,
        ]));
        // A flag that splits key 2: not determined.
        let flag: ArrayRef = Arc::new(StringArray::from(vec!["x", "x", "x", "x", "y", "x"]));
        assert!(determined(&name, &group_rows(std::slice::from_ref(&k), 6).unwrap()).unwrap());
        let by_key = group_rows(std::slice::from_ref(&k), 6).unwrap();
        let with_name = group_rows(&[k.clone(), name.clone()], 6).unwrap();
        assert_eq!(
            (with_name.ids.clone(), with_name.firsts.clone()),
            (by_key.ids.clone(), by_key.firsts.clone())
        );
        assert!(!determined(&flag, &by_key).unwrap());
        let with_flag = group_rows(&[k, name, flag], 6).unwrap();
        assert_eq!(with_flag.ids, [0, 1, 0, 2, 3, 2]);
    }

    #[test]
    fn decimal_sums_carry_past_64_bits() {
        // Group 0 sums to 3 * (10^18 - 1), past i64::MAX; group 1 has only
        // a null; group 2 mixes signs.
        let big = 999_999_999_999_999_999i128;
        let values = Decimal128Array::from(vec![Some(big), Some(5), None, Some(big), Some(-7), Some(big)])
            .with_precision_and_scale(18, 2)
            .unwrap();
        let ids = [0, 2, 1, 0, 2, 0];
        assert_eq!(narrow_sum(&values, &ids, 3), [Some(3 * big), None, Some(-2)]);
        assert_eq!(narrow_sum(&values, &ids, 3), reduce(&values, &ids, 3, AggFunc::Sum));
    }

    #[test]
    fn sums_and_counts_over_lanes_match_one_pass() {
        // Without nulls and with few groups the states are kept in lanes;
        // group 0 carries past 64 bits within its lanes.
        let big = 999_999_999_999_999_999i128;
        let rows = 103;
        let ids: Vec<u32> = (0..rows).map(|i| [0, 0, 1, 0, 2, 1, 0][i % 7]).collect();
        let raw: Vec<i128> = (0..rows)
            .map(|i| if ids[i] == 0 { big } else { i as i128 - 40 })
            .collect();
        let decimals = Decimal128Array::from(raw.clone())
            .with_precision_and_scale(18, 2)
            .unwrap();
        let mut want = [0i128; 3];
        for (&g, &v) in ids.iter().zip(&raw) {
            want[g as usize] += v;
        }
        assert!(want[0] > i128::from(i64::MAX));
        assert_eq!(
            narrow_sum(&decimals, &ids, 3),
            want.iter().map(|&s| Some(s)).collect::<Vec<_>>()
        );
        let ints = Int64Array::from_iter_values((0..rows as i64).map(|i| i * 3 - 100));
        let floats = Float64Array::from_iter_values((0..rows).map(|i| i as f64 / 4.0));
        for n in [3, LANE_GROUPS + 1] {
            let (mut int_sums, mut float_sums, mut counts) = (vec![0i64; n], vec![0f64; n], vec![0i64; n]);
            for (row, &g) in ids.iter().enumerate() {
                int_sums[g as usize] += ints.value(row);
                float_sums[g as usize] += floats.value(row);
                counts[g as usize] += 1;
            }
            let some = |v: Vec<i64>| v.into_iter().map(Some).collect::<Vec<_>>();
            let sums = reduce(&ints, &ids, n, AggFunc::Sum);
            // Groups without rows only arise past the lanes' limit.
            assert_eq!(sums[..3], some(int_sums.clone())[..3]);
            assert_eq!(row_counts(&ids, n), counts);
            // Float sums keep the rows' order: the same bits with few
            // groups as with many.
            let got = reduce(&floats, &ids, n, AggFunc::Sum);
            for g in 0..3 {
                assert_eq!(got[g], Some(float_sums[g]));
            }
        }
    }

    #[test]
    fn short_and_long_string_keys_group_alike() {
        // Short strings are packed into integers: prefixes, empty strings,
        // embedded zero bytes and nulls stay distinct.
        let short = vec![
            Some("a"),
            Some(""),
            Some("a\0"),
            None,
            Some("ab"),
            Some("a"),
            Some(""),
            None,
        ];
        let long: Vec<Option<String>> = short.iter().map(|s| s.map(|s| format!("{s}-a-long-tail"))).collect();
        let short = Arc::new(StringArray::from(short)) as ArrayRef;
        let long = Arc::new(StringArray::from(long)) as ArrayRef;
        let (a, b) = (column_groups(&short).unwrap(), column_groups(&long).unwrap());
        assert!(packed(short.as_string::<i32>()).is_some() && packed(long.as_string::<i32>()).is_none());
        assert_eq!(a.ids, b.ids);
        assert_eq!(a.ids, [0, 1, 2, 3, 4, 0, 1, 3]);
    }

    #[test]
    fn an_aggregate_of_the_rows_a_predicate_keeps_matches_one_of_the_filtered_rows() {
        let mut rng = fastrand::Rng::with_seed(11);
        let n = 500;
        let keys = (0..n).map(|_| (rng.u8(..) > 20).then(|| rng.i64(0..9))).collect();
        let names = (0..n).map(|i| ["a", "b", "c"][i % 3]).collect();
        let values = (0..n)
            .map(|_| (rng.u8(..) > 30).then(|| f64::from(rng.u8(0..100))))
            .collect();
        let b = batch(keys, names, values);
        let aggs: Vec<AggSpec> = specs();
        let keys = [col("k"), col("n")];
        // Keeping most rows (aggregated in place), few, all, none; a null
        // where `v` is null drops the row.
        // A conjunction narrowed after its first conjunct, or not.
        let predicates = [
            col("v").gt(lit(10.0)),
            col("v").gt(lit(90.0)),
            lit(true),
            lit(false),
            col("v").gt(lit(90.0)).and(col("k").gt(lit(2))),
            col("v").gt(lit(5.0)).and(col("k").gt(lit(2))),
        ];
        for predicate in predicates {
            let fused = aggregate_where(&b, &predicate, &keys, &aggs).unwrap();
            // The reference: the whole predicate at once, nulls false.
            let mask = crate::eval::predicate(&predicate, &b).unwrap();
            let mask = match mask.null_count() {
                0 => mask,
                _ => arrow_select::filter::prep_null_mask_filter(&mask),
            };
            let filtered = arrow_select::filter::filter_record_batch(&b, &mask).unwrap();
            assert_eq!(crate::eval::filter(&b, &predicate).unwrap(), filtered, "{predicate}");
            assert_eq!(fused, aggregate(&filtered, &keys, &aggs).unwrap(), "{predicate}");
        }
        // An input that fails on a dropped row: the kept rows alone.
        let inverse = [AggSpec::from_expr(&(lit(1) / col("k")).sum().alias("s")).unwrap()];
        let nonzero = col("k").neq(lit(0));
        assert!(aggregate(&b, &[col("n")], &inverse).is_err(), "1 / 0 fails");
        let fused = aggregate_where(&b, &nonzero, &[col("n")], &inverse).unwrap();
        let filtered = crate::eval::filter(&b, &nonzero).unwrap();
        assert_eq!(fused, aggregate(&filtered, &[col("n")], &inverse).unwrap());
    }

    #[test]
    fn keys_read_as_dictionaries_group_as_their_values() {
        let names = StringArray::from(vec![Some("x"), None, Some("y"), Some("x"), Some("z"), None, Some("y")]);
        let as_dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let dictionary = arrow_cast::cast(&names, &as_dictionary).unwrap();
        let mut plain = batch(
            vec![Some(1), Some(1), Some(2), Some(1), None, Some(1), Some(2)],
            vec![""; 7],
            vec![Some(1.0); 7],
        );
        let mut columns = plain.columns().to_vec();
        columns[1] = Arc::new(names);
        plain = RecordBatch::try_new(plain.schema(), columns.clone()).unwrap();
        columns[1] = dictionary;
        let fields = vec![
            plain.schema().field(0).clone(),
            Field::new("n", as_dictionary.clone(), true),
            plain.schema().field(2).clone(),
        ];
        let coded = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let keys = [col("n"), col("k")];
        let aggs = [AggSpec::from_expr(&col("v").sum().alias("s")).unwrap()];
        assert_eq!(
            aggregate(&coded, &keys, &aggs).unwrap(),
            aggregate(&plain, &keys, &aggs).unwrap()
        );
        // Without nulls, the indices are read as they are.
        let names = StringArray::from(vec!["x", "y", "x", "z", "y", "y"]);
        let dictionary = arrow_cast::cast(&names, &as_dictionary).unwrap();
        let (by_name, by_index) = (
            group_rows(&[Arc::new(names)], 6).unwrap(),
            group_rows(&[dictionary], 6).unwrap(),
        );
        assert_eq!((by_index.ids, by_index.firsts), (by_name.ids, by_name.firsts));
    }

    #[test]
    fn two_phases_agree_with_one() {
        let mut rng = fastrand::Rng::with_seed(7);
        let batches: Vec<RecordBatch> = (0..4)
            .map(|_| {
                let n = rng.usize(0..50);
                let keys = (0..n).map(|_| (rng.u8(..) > 20).then(|| rng.i64(0..6))).collect();
                let values = (0..n)
                    .map(|_| (rng.u8(..) > 30).then(|| f64::from(rng.u8(0..100))))
                    .collect();
                batch(keys, vec!["s"; n], values)
            })
            .collect();
        let aggs: Vec<AggSpec> = specs().into_iter().filter(|a| a.func != AggFunc::NUnique).collect();
        let whole = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
        let reference = aggregate(&whole, &[col("k")], &aggs).unwrap();
        let phases = two_phase(&["k".into()], &aggs).unwrap();
        // The mean shares the sum's state, the count the mean's count.
        let states: Vec<&str> = phases.partial.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(states, ["s", "m__count", "l", "lo", "hi"]);
        let partials: Vec<RecordBatch> = batches
            .iter()
            .map(|b| aggregate(b, &[col("k")], &phases.partial).unwrap())
            .collect();
        let merged = aggregate(
            &arrow_select::concat::concat_batches(&partials[0].schema(), &partials).unwrap(),
            &[col("k")],
            &phases.merge,
        )
        .unwrap();
        let finals: Vec<ArrayRef> = phases
            .finals
            .iter()
            .map(|e| crate::eval::evaluate(e, &merged).unwrap())
            .collect();
        // Compare as maps keyed by the group key (orders differ).
        let as_map = |cols: &[ArrayRef]| {
            let mut m = BTreeMap::new();
            for row in 0..cols[0].len() {
                let key = cols[0].as_primitive::<Int64Type>().iter().nth(row).unwrap();
                let rest: Vec<String> = cols[1..]
                    .iter()
                    .map(|c| arrow_cast::display::array_value_to_string(c, row).unwrap())
                    .collect();
                m.insert(key, rest);
            }
            m
        };
        assert_eq!(as_map(&finals), as_map(reference.columns()));
        let _ = lit(1);
    }

    #[test]
    fn count_skips_nulls_of_every_kind() {
        let b = batch(
            vec![Some(1), Some(1), Some(2)],
            vec!["a", "b", "c"],
            vec![Some(1.0), None, None],
        );
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                b.schema().field(0).clone(),
                b.schema().field(2).clone(),
                Field::new("nothing", DataType::Null, true),
            ])),
            vec![
                b.column(0).clone(),
                b.column(2).clone(),
                arrow_array::new_null_array(&DataType::Null, 3),
            ],
        )
        .unwrap();
        let specs: Vec<AggSpec> = [col("v").count().alias("v"), col("nothing").count().alias("n")]
            .iter()
            .map(|e| AggSpec::from_expr(e).unwrap())
            .collect();
        let out = aggregate(&b, &[col("k")], &specs).unwrap();
        let n = |i: usize| out.column(i).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(n(1), [1, 0]);
        // A null-typed column has no validity bitmap, yet every value is null.
        assert_eq!(n(2), [0, 0]);
    }

    #[test]
    fn global_aggregates_of_nothing_give_one_row() {
        let b = batch(vec![], vec![], vec![]);
        let out = aggregate(&b, &[], &specs()).unwrap();
        assert_eq!(out.num_rows(), 1);
        assert!(out.column(0).is_null(0));
        assert_eq!(out.column(2).as_primitive::<Int64Type>().value(0), 0);
    }
}
