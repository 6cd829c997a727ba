//! Hash join of two batches: a table over the build side's keys, probed
//! row by row. One integer key goes through a table of `i64`s; any other
//! key through arrow-row's encoding of both sides (converted with one
//! converter, so equal keys encode equally). Null keys never match.
//! Where the build keys are unique (a dimension table's), each probe row
//! finds at most one build row: the probe side's columns are kept as they
//! are, or filtered, instead of gathered row by row.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow_buffer::{BooleanBuffer, BooleanBufferBuilder, NullBuffer};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::filter::FilterBuilder;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::error::{FrameError, Result};

/// Which rows a join keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinType {
    /// Pairs of matching rows.
    Inner,
    /// Every left row, with the right columns null where nothing matches.
    Left,
    /// Left rows with a match (left columns only).
    Semi,
    /// Left rows without a match (left columns only).
    Anti,
}

/// What to join on and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinSpec {
    /// Key columns of the left side.
    pub left_on: Vec<String>,
    /// Key columns of the right side, pairwise with `left_on`.
    pub right_on: Vec<String>,
    /// Rows kept.
    pub how: JoinType,
    /// Build the table on the left side instead of the right (inner joins
    /// whose left side is the smaller); the output is the same.
    pub build_left: bool,
}

/// The output schema: left columns, then the right columns other than its
/// keys (a name the left side has gets the suffix `_right`); semi and anti
/// joins keep the left columns only.
pub fn join_schema(left: &Schema, right: &Schema, spec: &JoinSpec) -> Result<Schema> {
    if spec.left_on.len() != spec.right_on.len() || spec.left_on.is_empty() {
        return Err(FrameError::Plan(format!(
            "a join needs as many left keys as right keys, at least one: {:?} and {:?}",
            spec.left_on, spec.right_on
        )));
    }
    for (l, r) in spec.left_on.iter().zip(&spec.right_on) {
        let lt = field(left, l)?.data_type();
        let rt = field(right, r)?.data_type();
        crate::eval::common_type(&format!("join key {l} = {r}"), lt, rt)?;
    }
    let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
    if matches!(spec.how, JoinType::Inner | JoinType::Left) {
        for f in right.fields() {
            if spec.right_on.contains(f.name()) {
                continue;
            }
            let name = if left.field_with_name(f.name()).is_ok() {
                format!("{}_right", f.name())
            } else {
                f.name().clone()
            };
            fields.push(Field::new(name, f.data_type().clone(), true));
        }
    }
    Ok(Schema::new(fields))
}

fn field<'a>(schema: &'a Schema, name: &str) -> Result<&'a Field> {
    schema.field_with_name(name).map_err(|_| FrameError::ColumnNotFound {
        name: name.into(),
        schema: schema.clone(),
    })
}

/// The columns `names` of `batch`.
pub(crate) fn key_columns(batch: &RecordBatch, names: &[String]) -> Result<Vec<ArrayRef>> {
    names
        .iter()
        .map(|n| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| FrameError::ColumnNotFound {
                    name: n.clone(),
                    schema: batch.schema_ref().as_ref().clone(),
                })
        })
        .collect()
}

/// Key columns of both sides brought to common types.
fn unify(left: Vec<ArrayRef>, right: Vec<ArrayRef>) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
    let mut l_out = Vec::new();
    let mut r_out = Vec::new();
    for (l, r) in left.into_iter().zip(right) {
        let t = crate::eval::common_type("join key", l.data_type(), r.data_type())?;
        let t = if t == DataType::Date32 || t.is_integer() {
            DataType::Int64
        } else {
            t
        };
        l_out.push(arrow_cast::cast(&l, &t)?);
        r_out.push(arrow_cast::cast(&r, &t)?);
    }
    Ok((l_out, r_out))
}

/// A chained hash table over the build rows: `heads[key]` is the last row
/// with that key, `next[row]` the previous one (`u32::MAX` ends a chain).
struct Table<K> {
    heads: HashMap<K, u32>,
    next: Vec<u32>,
    /// No key is on two rows.
    unique: bool,
}

impl<K: std::hash::Hash + Eq> Table<K> {
    fn build(keys: impl Iterator<Item = Option<K>>, rows: usize) -> Self {
        let mut heads = HashMap::with_capacity(rows);
        let mut next = vec![u32::MAX; rows];
        let mut unique = true;
        for (row, key) in keys.enumerate() {
            if let Some(key) = key {
                let prev = heads.insert(key, row as u32);
                unique &= prev.is_none();
                next[row] = prev.unwrap_or(u32::MAX);
            }
        }
        Table { heads, next, unique }
    }

    /// The last build row with `key` (`u32::MAX`: none).
    fn last(&self, key: &K) -> u32 {
        self.heads.get(key).copied().unwrap_or(u32::MAX)
    }

    /// Calls `f(build_row)` for each build row matching `key`.
    fn probe(&self, key: &K, f: impl FnMut(u32)) {
        walk(&self.next, self.last(key), f);
    }
}

/// Calls `f` for `row` and each row chained before it in `next`.
fn walk(next: &[u32], mut row: u32, mut f: impl FnMut(u32)) {
    while row != u32::MAX {
        f(row);
        row = next[row as usize];
    }
}

/// Build rows chained by slot: `heads[slot]` is the last row in it,
/// `next[row]` the one before (`u32::MAX` ends a chain), so a slot's rows
/// come last first, as from [`Table`].
struct Chains {
    heads: Vec<u32>,
    next: Vec<u32>,
    /// No slot holds two rows.
    unique: bool,
}

impl Chains {
    /// The rows of `slots` slots, each row in the slot it maps to (none
    /// for a null key).
    fn build(slots: usize, rows: impl ExactSizeIterator<Item = Option<usize>>) -> Self {
        let mut heads = vec![u32::MAX; slots];
        let mut next = vec![u32::MAX; rows.len()];
        let mut unique = true;
        for (row, slot) in rows.enumerate() {
            if let Some(slot) = slot {
                next[row] = std::mem::replace(&mut heads[slot], row as u32);
                unique &= next[row] == u32::MAX;
            }
        }
        Chains { heads, next, unique }
    }
}

/// The least and greatest of `keys`, `None` when all are null.
fn key_range(keys: &Int64Array) -> Option<(i64, i64)> {
    keys.iter().flatten().fold(None, |range, k| match range {
        None => Some((k, k)),
        Some((lo, hi)) => Some((k.min(lo), k.max(hi))),
    })
}

/// The table over a build side whose keys are integers (or dates), built
/// once and probed by every batch joined with it: a broadcast side is
/// probed by each partition of the other side ([`crate::broadcast`]).
/// Several keys are combined into one (see [`Radix`]).
pub struct IntIndex {
    radix: Option<Radix>,
    table: IntTable,
}

impl IntIndex {
    /// The table over `batch`'s key columns `key`, if they are integer or
    /// date columns (the keys every join brings to int64) whose ranges
    /// combine into one int64; `None` otherwise.
    pub fn build(batch: &RecordBatch, key: &[String]) -> Result<Option<IntIndex>> {
        let mut columns = Vec::with_capacity(key.len());
        for name in key {
            let Some(column) = batch.column_by_name(name) else {
                return Ok(None);
            };
            let t = column.data_type();
            if !(t.is_integer() || *t == DataType::Date32) {
                return Ok(None);
            }
            columns.push(arrow_cast::cast(column, &DataType::Int64)?);
        }
        Ok(IntIndex::over(&columns, None))
    }

    /// The index over int64 key columns `keys`, with `radix` when it is
    /// known; `None` where several keys' ranges do not combine.
    fn over(keys: &[ArrayRef], radix: Option<Radix>) -> Option<IntIndex> {
        let columns: Vec<&Int64Array> = keys.iter().map(|k| k.as_primitive::<Int64Type>()).collect();
        match columns[..] {
            [] => None,
            [one] => Some(IntIndex {
                radix: None,
                table: IntTable::build(one),
            }),
            _ => {
                let radix = radix.or_else(|| Radix::of(&columns))?;
                let table = IntTable::build(&radix.combine(&columns));
                Some(IntIndex {
                    radix: Some(radix),
                    table,
                })
            }
        }
    }

    /// Which rows of the probe side's int64 key columns `keys` have a
    /// match (null keys never do), among the rows `among` keeps (all when
    /// `None`).
    pub fn holds(&self, keys: &[ArrayRef], among: Option<&BooleanBuffer>) -> BooleanBuffer {
        let keys = self.probe_keys(keys);
        let values = keys.values();
        let held = match among {
            None => self.table.contains_each(values),
            Some(among) => {
                let mut held = BooleanBufferBuilder::new(keys.len());
                held.append_n(keys.len(), false);
                for row in among.set_indices().filter(|&row| self.table.contains(values[row])) {
                    held.set_bit(row, true);
                }
                held.finish()
            }
        };
        match keys.nulls() {
            Some(nulls) => &held & nulls.inner(),
            None => held,
        }
    }

    /// The probe side's keys as this index numbers them.
    fn probe_keys(&self, keys: &[ArrayRef]) -> Int64Array {
        let columns: Vec<&Int64Array> = keys.iter().map(|k| k.as_primitive::<Int64Type>()).collect();
        match &self.radix {
            Some(radix) => radix.combine(&columns),
            None => columns[0].clone(),
        }
    }
}

/// Several int64 keys as one: each key's offset from the build side's
/// least value, digits of a mixed radix whose bases are the build side's
/// ranges (TPC-H q5's supplier key and nation key: suppkey * 25 + nation).
/// A probe key outside the build side's range cannot match and combines
/// to null.
#[derive(Clone, Debug)]
struct Radix {
    mins: Vec<i64>,
    spans: Vec<i64>,
}

impl Radix {
    /// The radix of build keys `columns`; `None` when the product of their
    /// ranges passes 2^62.
    fn of(columns: &[&Int64Array]) -> Option<Radix> {
        let mut product: i128 = 1;
        let (mut mins, mut spans) = (Vec::new(), Vec::new());
        for c in columns {
            let (min, span) = match key_range(c) {
                Some((min, max)) => (min, i128::from(max) - i128::from(min) + 1),
                None => (i64::MAX, 0),
            };
            product *= span.max(1);
            if product > 1 << 62 {
                return None;
            }
            mins.push(min);
            spans.push(span as i64);
        }
        Some(Radix { mins, spans })
    }

    /// Each row's keys combined; null where one is null or out of range.
    fn combine(&self, columns: &[&Int64Array]) -> Int64Array {
        let rows = columns.first().map_or(0, |c| c.len());
        (0..rows)
            .map(|row| {
                let mut combined = 0i64;
                for ((c, &min), &span) in columns.iter().zip(&self.mins).zip(&self.spans) {
                    if c.is_null(row) {
                        return None;
                    }
                    let digit = i128::from(c.value(row)) - i128::from(min);
                    if digit < 0 || digit >= i128::from(span) {
                        return None;
                    }
                    combined = combined * span + digit as i64;
                }
                Some(combined)
            })
            .collect()
    }
}

/// A table over int64 build keys, by how densely they fill their range:
/// - at most [`DIRECT_SPREAD`] slots per row (TPC-H's keys): an array
///   indexed by `key - min`;
/// - at most [`BITMAP_SPREAD`] bits per row (TPC-H's keys after a filter):
///   a bitmap of the range, where a key's rank among the set bits indexes
///   an array of rows. A probe that misses reads one bit; one that hits,
///   one prefix count and one slot. A probe side in key order (`lineitem`
///   by order key) reads all three in order, where a hash table that
///   outgrew the cache costs a miss per hit;
/// - sparser: hashed.
enum IntTable {
    Direct {
        min: i64,
        /// Slot `k - min` for key `k`.
        chains: Chains,
    },
    Ranked {
        min: i64,
        /// Bit `k - min` set for each key `k`.
        bits: Vec<u64>,
        /// Set bits before each word.
        before: Vec<u32>,
        /// Slot: a key's rank among the set bits.
        chains: Chains,
    },
    Hashed(Table<i64>),
}

/// Most slots per build row of a direct table.
const DIRECT_SPREAD: u64 = 4;

/// Most bits per build row of a ranked table.
const BITMAP_SPREAD: u64 = 256;

impl IntTable {
    fn build(keys: &Int64Array) -> Self {
        let rows = keys.len() as u64;
        let Some((min, slots)) = key_range(keys)
            .map(|(min, max)| (min, (i128::from(max) - i128::from(min) + 1) as u64))
            .filter(|&(_, slots)| slots <= BITMAP_SPREAD * rows + 1024)
        else {
            return IntTable::Hashed(Table::build(keys.iter(), keys.len()));
        };
        let offsets = keys.iter().map(|k| k.map(|k| (k - min) as usize));
        if slots <= DIRECT_SPREAD * rows + 1024 {
            return IntTable::Direct {
                min,
                chains: Chains::build(slots as usize, offsets),
            };
        }
        let mut bits = vec![0u64; slots.div_ceil(64) as usize];
        for slot in offsets.clone().flatten() {
            bits[slot / 64] |= 1 << (slot % 64);
        }
        let mut before = Vec::with_capacity(bits.len());
        let mut set = 0u32;
        for w in &bits {
            before.push(set);
            set += w.count_ones();
        }
        let chains = Chains::build(set as usize, offsets.map(|o| o.map(|slot| rank(&bits, &before, slot))));
        IntTable::Ranked {
            min,
            bits,
            before,
            chains,
        }
    }

    /// Whether a build row has key `key`.
    fn contains(&self, key: i64) -> bool {
        // `key - min` as an unsigned offset: a key below `min` wraps past
        // every slot (the difference of two i64s is under 2^64 apart).
        let offset = |min: i64| key.wrapping_sub(min) as u64 as usize;
        match self {
            IntTable::Hashed(table) => table.heads.contains_key(&key),
            IntTable::Direct { min, chains } => chains.heads.get(offset(*min)).is_some_and(|&h| h != u32::MAX),
            IntTable::Ranked { min, bits, .. } => {
                let slot = offset(*min);
                bits.get(slot / 64).is_some_and(|w| w & (1 << (slot % 64)) != 0)
            }
        }
    }

    /// [`IntTable::contains`] for each of `keys`, as bits: one loop per
    /// kind of table, with its fields in registers and no branch per key
    /// in the direct and ranked tables (TPC-H q5 tests every order key of
    /// `lineitem`).
    fn contains_each(&self, keys: &[i64]) -> BooleanBuffer {
        // The slot of `key`, clamped to slot 0 where it falls outside (the
        // caller masks it out): a select, not a jump. A direct or ranked
        // table has at least one slot (`build` makes them from a range).
        let slot = |key: i64, min: i64, slots: usize| {
            let slot = key.wrapping_sub(min) as u64 as usize;
            (slot < slots, if slot < slots { slot } else { 0 })
        };
        let n = keys.len();
        match self {
            IntTable::Hashed(table) => BooleanBuffer::collect_bool(n, |i| table.heads.contains_key(&keys[i])),
            IntTable::Direct { min, chains } => {
                let (min, heads) = (*min, &chains.heads[..]);
                BooleanBuffer::collect_bool(n, |i| {
                    let (inside, s) = slot(keys[i], min, heads.len());
                    inside & (heads[s] != u32::MAX)
                })
            }
            IntTable::Ranked { min, bits, .. } => {
                let (min, bits) = (*min, &bits[..]);
                BooleanBuffer::collect_bool(n, |i| {
                    let (inside, s) = slot(keys[i], min, bits.len() * 64);
                    inside & ((bits[s / 64] >> (s % 64)) & 1 != 0)
                })
            }
        }
    }

    /// The last build row with key `key` (`u32::MAX`: none).
    fn last(&self, key: i64) -> u32 {
        let offset = |min: i64| key.wrapping_sub(min) as u64 as usize;
        match self {
            IntTable::Hashed(table) => table.last(&key),
            IntTable::Direct { min, chains } => chains.heads.get(offset(*min)).copied().unwrap_or(u32::MAX),
            IntTable::Ranked {
                min,
                bits,
                before,
                chains,
            } => {
                let slot = offset(*min);
                match bits.get(slot / 64) {
                    Some(w) if w & (1 << (slot % 64)) != 0 => chains.heads[rank(bits, before, slot)],
                    _ => u32::MAX,
                }
            }
        }
    }

    /// Calls `f(build_row)` for each build row matching `key`.
    fn probe(&self, key: i64, f: impl FnMut(u32)) {
        let next = match self {
            IntTable::Hashed(table) => &table.next,
            IntTable::Direct { chains, .. } | IntTable::Ranked { chains, .. } => &chains.next,
        };
        walk(next, self.last(key), f);
    }

    /// No key is on two build rows.
    fn unique(&self) -> bool {
        match self {
            IntTable::Hashed(table) => table.unique,
            IntTable::Direct { chains, .. } | IntTable::Ranked { chains, .. } => chains.unique,
        }
    }
}

/// The number of set bits of `bits` before bit `slot`.
fn rank(bits: &[u64], before: &[u32], slot: usize) -> usize {
    let below = bits[slot / 64] & ((1u64 << (slot % 64)) - 1);
    before[slot / 64] as usize + below.count_ones() as usize
}

/// The build rows matching each probe row.
enum Matches {
    /// The build keys are unique: each probe row's build row (`u32::MAX`
    /// for none).
    Each(Vec<u32>),
    /// Matching (probe row, build row) pairs, in probe order.
    Pairs(Vec<u32>, Vec<u32>),
}

/// The matches of `probe`'s keys among `build`'s; `index` is the build
/// side's table when it was built before.
fn matches(build: &[ArrayRef], probe: &[ArrayRef], index: Option<&IntIndex>) -> Result<Matches> {
    let ints = |keys: &[ArrayRef]| keys.iter().all(|k| *k.data_type() == DataType::Int64);
    if ints(build) && ints(probe) {
        let built;
        let index = match index {
            Some(index) => Some(index),
            None => {
                built = IntIndex::over(build, None);
                built.as_ref()
            }
        };
        if let Some(index) = index {
            let keys = index.probe_keys(probe);
            let table = &index.table;
            if table.unique() {
                let each = keys.values().iter().map(|&k| table.last(k)).collect();
                return Ok(Matches::Each(unmatch_nulls(each, keys.nulls())));
            }
            let (mut p_idx, mut b_idx) = (Vec::new(), Vec::new());
            for (row, key) in keys.iter().enumerate() {
                if let Some(key) = key {
                    table.probe(key, |m| {
                        p_idx.push(row as u32);
                        b_idx.push(m);
                    });
                }
            }
            return Ok(Matches::Pairs(p_idx, b_idx));
        }
    }
    let converter = RowConverter::new(build.iter().map(|k| SortField::new(k.data_type().clone())).collect())?;
    let b_rows = converter.convert_columns(build)?;
    let p_rows = converter.convert_columns(probe)?;
    let valid = |cols: &[ArrayRef], row: usize| cols.iter().all(|c| c.is_valid(row));
    let b_len = build.first().map_or(0, |c| c.len());
    let table = Table::build(
        (0..b_len).map(|row| valid(build, row).then(|| b_rows.row(row).data())),
        b_len,
    );
    let p_len = probe.first().map_or(0, |c| c.len());
    if table.unique {
        let each = (0..p_len)
            .map(|row| {
                if valid(probe, row) {
                    table.last(&p_rows.row(row).data())
                } else {
                    u32::MAX
                }
            })
            .collect();
        return Ok(Matches::Each(each));
    }
    let (mut p_idx, mut b_idx) = (Vec::new(), Vec::new());
    for row in (0..p_len).filter(|&row| valid(probe, row)) {
        table.probe(&p_rows.row(row).data(), |m| {
            p_idx.push(row as u32);
            b_idx.push(m);
        });
    }
    Ok(Matches::Pairs(p_idx, b_idx))
}

/// `each` with no match where `nulls` says the probe key is null.
fn unmatch_nulls(mut each: Vec<u32>, nulls: Option<&NullBuffer>) -> Vec<u32> {
    for row in nulls
        .into_iter()
        .flat_map(|n| n.iter().enumerate().filter(|&(_, valid)| !valid))
    {
        each[row.0] = u32::MAX;
    }
    each
}

/// The rows of one side a join's output holds, in order.
enum Rows {
    /// Every row, as it is.
    All,
    /// The rows whose bit is set.
    Kept(BooleanBuffer),
    /// These rows (a null index: a row of nulls).
    Taken(UInt32Array),
}

impl Rows {
    /// `columns` cut to these rows.
    fn of(&self, columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        Ok(match self {
            Rows::All => columns.to_vec(),
            Rows::Kept(bits) => {
                let filter = FilterBuilder::new(&BooleanArray::new(bits.clone(), None))
                    .optimize()
                    .build();
                columns
                    .iter()
                    .map(|c| filter.filter(c))
                    .collect::<std::result::Result<_, _>>()?
            }
            Rows::Taken(idx) => columns
                .iter()
                .map(|c| arrow_select::take::take(c, idx, None))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    /// How many rows these are of `all`.
    fn len(&self, all: usize) -> usize {
        match self {
            Rows::All => all,
            Rows::Kept(bits) => bits.count_set_bits(),
            Rows::Taken(idx) => idx.len(),
        }
    }
}

/// The probe side's rows and the build side's rows (none for semi and
/// anti joins) that a `how` join of `matches` outputs, for `probe_rows`
/// probe rows.
fn output_rows(matches: Matches, how: JoinType, probe_rows: usize) -> (Rows, Option<Rows>) {
    let all_or = |hit: BooleanBuffer, set: usize| if set == probe_rows { Rows::All } else { Rows::Kept(hit) };
    match matches {
        Matches::Each(each) => {
            let hit = BooleanBuffer::collect_bool(probe_rows, |row| each[row] != u32::MAX);
            let set = hit.count_set_bits();
            match how {
                JoinType::Inner if set == probe_rows => (Rows::All, Some(Rows::Taken(each.into()))),
                JoinType::Inner => {
                    let found: Vec<u32> = each.into_iter().filter(|&b| b != u32::MAX).collect();
                    (Rows::Kept(hit), Some(Rows::Taken(found.into())))
                }
                JoinType::Left => {
                    let nulls = (set < probe_rows).then(|| NullBuffer::new(hit));
                    (Rows::All, Some(Rows::Taken(UInt32Array::new(each.into(), nulls))))
                }
                JoinType::Semi => (all_or(hit, set), None),
                JoinType::Anti => (all_or(!&hit, probe_rows - set), None),
            }
        }
        Matches::Pairs(probe, build) => match how {
            JoinType::Inner => (Rows::Taken(probe.into()), Some(Rows::Taken(build.into()))),
            JoinType::Left => {
                // Pairs come in probe order: fill in the probe rows without one.
                let mut li = Vec::with_capacity(probe.len());
                let mut ri = Vec::with_capacity(probe.len());
                let mut next = 0usize;
                for row in 0..probe_rows as u32 {
                    let start = next;
                    while next < probe.len() && probe[next] == row {
                        li.push(row);
                        ri.push(Some(build[next]));
                        next += 1;
                    }
                    if start == next {
                        li.push(row);
                        ri.push(None);
                    }
                }
                (Rows::Taken(li.into()), Some(Rows::Taken(ri.into())))
            }
            JoinType::Semi | JoinType::Anti => {
                let mut hit = BooleanBufferBuilder::new(probe_rows);
                hit.append_n(probe_rows, false);
                for &row in &probe {
                    hit.set_bit(row as usize, true);
                }
                let hit = hit.finish();
                let hit = if how == JoinType::Semi { hit } else { !&hit };
                let set = hit.count_set_bits();
                (all_or(hit, set), None)
            }
        },
    }
}

/// Joins two batches as `spec` says, into `schema` (from [`join_schema`]);
/// `index` is the build side's table when it was built before (from the
/// same batch and keys).
pub fn hash_join(
    left: &RecordBatch,
    right: &RecordBatch,
    spec: &JoinSpec,
    schema: SchemaRef,
    index: Option<&IntIndex>,
) -> Result<RecordBatch> {
    let (lk, rk) = unify(key_columns(left, &spec.left_on)?, key_columns(right, &spec.right_on)?)?;
    let build_left = spec.build_left && spec.how == JoinType::Inner;
    let (probe, build) = if build_left {
        output_rows(matches(&lk, &rk, index)?, spec.how, right.num_rows())
    } else {
        output_rows(matches(&rk, &lk, index)?, spec.how, left.num_rows())
    };
    let (l_rows, r_rows) = match build {
        Some(build) if build_left => (build, Some(probe)),
        build => (probe, build),
    };
    let mut columns = l_rows.of(left.columns())?;
    if let Some(r_rows) = r_rows {
        let kept: Vec<ArrayRef> = (right.schema_ref().fields().iter().zip(right.columns()))
            .filter(|(f, _)| !spec.right_on.contains(f.name()))
            .map(|(_, c)| c.clone())
            .collect();
        columns.extend(r_rows.of(&kept)?);
    }
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(l_rows.len(left.num_rows())));
    Ok(RecordBatch::try_new_with_options(schema, columns, &options)?)
}

/// [`hash_join`] computing the schema itself.
pub fn join_batches(left: &RecordBatch, right: &RecordBatch, spec: &JoinSpec) -> Result<RecordBatch> {
    let schema = Arc::new(join_schema(left.schema_ref(), right.schema_ref(), spec)?);
    hash_join(left, right, spec, schema, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, Int64Array, StringArray};

    fn left() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
                Field::new("v", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(3), Some(1)])),
                Arc::new(StringArray::from(vec!["a", "b", "c", "d", "a"])),
                Arc::new(Int64Array::from(vec![10, 20, 30, 40, 50])),
            ],
        )
        .unwrap()
    }

    fn right() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("rk", DataType::Int32, true),
                Field::new("rs", DataType::Utf8, true),
                Field::new("v", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(1), Some(3), None, Some(9)])),
                Arc::new(StringArray::from(vec!["a", "x", "d", "c", "z"])),
                Arc::new(Int64Array::from(vec![100, 200, 300, 400, 500])),
            ],
        )
        .unwrap()
    }

    fn spec(how: JoinType, keys: &[(&str, &str)]) -> JoinSpec {
        JoinSpec {
            left_on: keys.iter().map(|k| k.0.to_string()).collect(),
            right_on: keys.iter().map(|k| k.1.to_string()).collect(),
            how,
            build_left: false,
        }
    }

    /// Every (left v, right v) pair, sorted, by nested loops.
    fn reference(keys: &[(&str, &str)], l: &RecordBatch, r: &RecordBatch) -> Vec<(i64, i64)> {
        let cell = |b: &RecordBatch, c: &str, row: usize| {
            let a = b.column_by_name(c).unwrap();
            (!a.is_null(row)).then(|| arrow_cast::display::array_value_to_string(a, row).unwrap())
        };
        let mut out = Vec::new();
        for i in 0..l.num_rows() {
            for j in 0..r.num_rows() {
                if keys.iter().all(|(a, b)| {
                    let (x, y) = (cell(l, a, i), cell(r, b, j));
                    x.is_some() && x == y
                }) {
                    out.push((
                        l.column_by_name("v").unwrap().as_primitive::<Int64Type>().value(i),
                        r.column_by_name("v").unwrap().as_primitive::<Int64Type>().value(j),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    fn pairs(b: &RecordBatch) -> Vec<(i64, i64)> {
        let l = b.column_by_name("v").unwrap().as_primitive::<Int64Type>();
        let r = b.column_by_name("v_right").unwrap().as_primitive::<Int64Type>();
        let mut out: Vec<(i64, i64)> = l
            .iter()
            .zip(r.iter())
            .map(|(a, b)| (a.unwrap(), b.unwrap_or(-1)))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn inner_joins_match_nested_loops_on_one_and_two_keys() {
        for keys in [vec![("k", "rk")], vec![("k", "rk"), ("s", "rs")]] {
            for build_left in [false, true] {
                let mut s = spec(JoinType::Inner, &keys);
                s.build_left = build_left;
                let out = join_batches(&left(), &right(), &s).unwrap();
                assert_eq!(
                    pairs(&out),
                    reference(&keys, &left(), &right()),
                    "{keys:?} {build_left}"
                );
                assert_eq!(out.schema().field(0).name(), "k");
                assert!(out.schema().field_with_name("rk").is_err());
            }
        }
    }

    #[test]
    fn dense_keys_index_directly_and_match_as_hashed_ones() {
        let all = |t: &IntTable, key| {
            let mut rows = Vec::new();
            t.probe(key, |r| rows.push(r));
            rows
        };
        // Dense keys with repeats, a null and negatives: a direct table;
        // one far key makes the same rows hashed.
        let dense = Int64Array::from(vec![Some(-3), Some(5), None, Some(-3), Some(0), Some(5), Some(5)]);
        let mut sparse: Vec<Option<i64>> = dense.iter().collect();
        sparse.push(Some(i64::MAX));
        let sparse = Int64Array::from(sparse);
        let (direct, hashed) = (IntTable::build(&dense), IntTable::build(&sparse));
        assert!(matches!(direct, IntTable::Direct { .. }));
        assert!(matches!(hashed, IntTable::Hashed(_)));
        for key in [-4, -3, 0, 1, 5, 6, i64::MIN, i64::MAX - 1] {
            assert_eq!(all(&direct, key), all(&hashed, key), "key {key}");
        }
        assert_eq!(all(&direct, 5), [6, 5, 1]);
        assert_eq!(all(&hashed, i64::MAX), [7]);
        assert!(matches!(
            IntTable::build(&Int64Array::from(vec![None, None])),
            IntTable::Hashed(_)
        ));
        // Keys 100 apart, one repeated: ranked in a bitmap of their range.
        let spread = Int64Array::from_iter_values((0..50).map(|k| k * 100 - 2000).chain([900]));
        let table = IntTable::build(&spread);
        assert!(matches!(table, IntTable::Ranked { .. }));
        assert_eq!(all(&table, 900), [50, 29]);
        for key in [-2100, -2000, -1999, 0, 100, 900, 2900, 2901, 3000, i64::MIN, i64::MAX] {
            let want: Vec<u32> = (0..50).filter(|k| k * 100 - 2000 == key).map(|k| k as u32).collect();
            let want = if key == 900 { vec![50, 29] } else { want };
            assert_eq!(all(&table, key), want, "key {key}");
        }
    }

    #[test]
    fn keys_tested_together_match_keys_tested_one_by_one() {
        // 150 probe keys (two words and a part) around and far outside
        // each table's range.
        let probes: Vec<i64> = (-60..80)
            .map(|k| k * 50)
            .chain([i64::MIN, i64::MAX, -1, 0, 1, 2999, 3000, 3001, -3000, 7])
            .collect();
        let tables = [
            IntTable::build(&Int64Array::from_iter_values([-3, 5, 0, 5, 7])),
            IntTable::build(&Int64Array::from_iter_values((0..30).map(|k| k * 100))),
            IntTable::build(&Int64Array::from_iter_values([7, i64::MAX, -3000])),
        ];
        assert!(matches!(tables[0], IntTable::Direct { .. }));
        assert!(matches!(tables[1], IntTable::Ranked { .. }));
        assert!(matches!(tables[2], IntTable::Hashed(_)));
        for table in &tables {
            let each = table.contains_each(&probes);
            assert_eq!(each.len(), probes.len());
            for (i, &k) in probes.iter().enumerate() {
                assert_eq!(each.value(i), table.contains(k), "key {k}");
            }
            assert!(each.count_set_bits() > 0);
        }
    }

    #[test]
    fn several_integer_keys_combine_into_one() {
        let batch = |names: [&str; 2], a: Vec<Option<i64>>, b: Vec<i32>| {
            let v: Vec<i64> = (0..a.len() as i64).map(|i| i * 10).collect();
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new(names[0], DataType::Int64, true),
                    Field::new(names[1], DataType::Int32, false),
                    Field::new("v", DataType::Int64, false),
                ])),
                vec![
                    Arc::new(Int64Array::from(a)),
                    Arc::new(Int32Array::from(b)),
                    Arc::new(Int64Array::from(v)),
                ],
            )
            .unwrap()
        };
        let l = batch(
            ["a", "b"],
            vec![Some(1), Some(2), None, Some(3), Some(1), Some(-7), Some(1)],
            vec![5, 6, 5, 5, 5, 5, 1000],
        );
        let r = batch(
            ["ra", "rb"],
            vec![Some(1), Some(1), Some(3), None, Some(9), Some(1)],
            vec![5, 6, 5, 5, 5, 99],
        );
        let keys = [("a", "ra"), ("b", "rb")];
        let index = IntIndex::build(&r, &["ra".into(), "rb".into()]).unwrap().unwrap();
        assert!(index.radix.is_some());
        for how in [JoinType::Inner, JoinType::Left, JoinType::Semi, JoinType::Anti] {
            let s = spec(how, &keys);
            let schema = Arc::new(join_schema(l.schema_ref(), r.schema_ref(), &s).unwrap());
            let plain = join_batches(&l, &r, &s).unwrap();
            let indexed = hash_join(&l, &r, &s, schema, Some(&index)).unwrap();
            assert_eq!(plain, indexed, "{how:?}");
            if how == JoinType::Inner {
                assert_eq!(pairs(&plain), reference(&keys, &l, &r));
            }
        }
        // Ranges whose product passes 2^62 are not combined.
        let wide = batch(["ra", "rb"], vec![Some(i64::MIN), Some(i64::MAX)], vec![0, 1]);
        assert!(IntIndex::build(&wide, &["ra".into(), "rb".into()]).unwrap().is_none());
        let s = spec(JoinType::Inner, &keys);
        assert_eq!(pairs(&join_batches(&l, &wide, &s).unwrap()), Vec::<(i64, i64)>::new());
    }

    #[test]
    fn left_semi_and_anti() {
        let keys = [("k", "rk")];
        let out = join_batches(&left(), &right(), &spec(JoinType::Left, &keys)).unwrap();
        assert_eq!(
            pairs(&out),
            [
                (10, 100),
                (10, 200),
                (20, -1),
                (30, -1),
                (40, 300),
                (50, 100),
                (50, 200)
            ]
        );
        let semi = join_batches(&left(), &right(), &spec(JoinType::Semi, &keys)).unwrap();
        let v = |b: &RecordBatch| b.column(2).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(v(&semi), [10, 40, 50]);
        let anti = join_batches(&left(), &right(), &spec(JoinType::Anti, &keys)).unwrap();
        assert_eq!(v(&anti), [20, 30]);
        assert_eq!(anti.num_columns(), 3);
    }

    #[test]
    fn unique_build_keys_join_as_repeated_ones() {
        // Unique right keys 1, 3, null, 9; `repeated` adds key 1000 twice,
        // matching nothing, so it joins through pairs of rows instead.
        let unique = arrow_select::take::take_record_batch(&right(), &UInt32Array::from(vec![0, 2, 3, 4])).unwrap();
        let extra = RecordBatch::try_new(
            unique.schema(),
            vec![
                Arc::new(Int32Array::from(vec![1000, 1000])),
                Arc::new(StringArray::from(vec!["z", "z"])),
                Arc::new(Int64Array::from(vec![500, 500])),
            ],
        )
        .unwrap();
        let repeated = arrow_select::concat::concat_batches(&unique.schema(), [&unique, &extra]).unwrap();
        let rows = |rows: Vec<u32>| arrow_select::take::take_record_batch(&left(), &UInt32Array::from(rows)).unwrap();
        // All of left (key 1 twice), its rows that all match, its unique keys.
        for l in [left(), rows(vec![3, 0]), rows(vec![0, 1, 2, 3])] {
            for keys in [vec![("k", "rk")], vec![("k", "rk"), ("s", "rs")]] {
                for how in [JoinType::Inner, JoinType::Left, JoinType::Semi, JoinType::Anti] {
                    for build_left in [false, true] {
                        let mut s = spec(how, &keys);
                        s.build_left = build_left;
                        let (got, want) = (join_batches(&l, &unique, &s), join_batches(&l, &repeated, &s));
                        let got = got.unwrap();
                        if how == JoinType::Inner {
                            assert_eq!(pairs(&got), reference(&keys, &l, &unique), "{keys:?} {build_left}");
                        }
                        assert_eq!(got, want.unwrap(), "{keys:?} {how:?} {build_left} {l:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let err = join_batches(&left(), &right(), &spec(JoinType::Inner, &[("k", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("rk"), "{err}");
        let err = join_batches(&left(), &right(), &spec(JoinType::Inner, &[("k", "rs")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Int64") && err.contains("Utf8"), "{err}");
    }
}
