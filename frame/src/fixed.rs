//! Parquet columns of fixed-width values decoded straight into Arrow
//! arrays, for the rows a selection keeps: `INT32` (as int32 or date32),
//! `INT64` (as int64) and decimals stored as `FIXED_LEN_BYTE_ARRAY` (as
//! TPC-H's files, Spark and Hive write them).
//!
//! parquet-rs expands every dictionary index into a value for every row
//! and, for decimals, converts each value byte by byte: on TPC-H's
//! `lineitem` its four decimal columns took 7x as long as a date column of
//! the same rows each. Here a dictionary is converted once and its indices
//! unpacked and gathered for the kept rows only; plain pages convert each
//! kept value with integer shifts. This covers flat columns (no
//! repetition, at most one definition level), PLAIN and dictionary
//! encodings, v1 and v2 data pages and decimals up to 16 bytes wide;
//! [`leaf`] says when it applies, and everything else is read by
//! parquet-rs.

use std::sync::Arc;

use arrow_array::types::{Date32Type, Int32Type, Int64Type};
use arrow_array::{ArrayRef, ArrowPrimitiveType, Decimal128Array, PrimitiveArray};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, BooleanBufferBuilder, NullBuffer};
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::serialized_reader::SerializedPageReader;

/// The leaf column of root field `root` when this module decodes it as
/// `data_type`: a flat column of the physical type that type comes from
/// (decimals 1 to 16 bytes wide), with only the encodings decoded here.
pub fn leaf(meta: &ParquetMetaData, root: usize, data_type: &DataType) -> Option<usize> {
    let physical = match data_type {
        DataType::Decimal128(..) => PhysicalType::FIXED_LEN_BYTE_ARRAY,
        DataType::Int32 | DataType::Date32 => PhysicalType::INT32,
        DataType::Int64 => PhysicalType::INT64,
        _ => return None,
    };
    let schema = meta.file_metadata().schema_descr();
    let mut leaves = (0..schema.num_columns()).filter(|&i| schema.get_column_root_idx(i) == root);
    let leaf = leaves.next()?;
    let column = schema.column(leaf);
    let flat = leaves.next().is_none() && column.max_rep_level() == 0 && column.max_def_level() <= 1;
    let fixed = column.physical_type() == physical
        && (physical != PhysicalType::FIXED_LEN_BYTE_ARRAY || (1..=16).contains(&column.type_length()));
    let encodings = meta.row_groups().iter().all(|g| {
        g.column(leaf).encodings().all(|e| {
            matches!(
                e,
                Encoding::PLAIN | Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY | Encoding::RLE
            )
        })
    });
    (flat && fixed && encodings).then_some(leaf)
}

/// Leaf column `leaf` (see [`leaf`]) of row groups `row_groups` of the
/// file, as `data_type`: the rows `selection` keeps (all when `None`). A
/// page's values are decoded next to those kept so far and only the kept
/// ones stay, so the dropped rows never leave the cache (TPC-H q6 keeps 2%
/// of the prices it reads).
pub fn read(
    file: &Arc<Bytes>,
    meta: &ParquetMetaData,
    row_groups: &[usize],
    leaf: usize,
    data_type: &DataType,
    selection: Option<&BooleanBuffer>,
) -> Result<ArrayRef, String> {
    let column = (file, meta, row_groups, leaf, selection);
    match *data_type {
        DataType::Decimal128(precision, scale) => {
            let (values, nulls) = values::<i128>(column)?;
            let array = Decimal128Array::try_new(values.into(), nulls)
                .and_then(|a| a.with_precision_and_scale(precision, scale))
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(array))
        }
        DataType::Int32 => array::<Int32Type>(column),
        DataType::Date32 => array::<Date32Type>(column),
        DataType::Int64 => array::<Int64Type>(column),
        ref other => Err(format!("{other} is not decoded here")),
    }
}

/// Where [`read`] reads: the file, its footer, the row groups, the leaf
/// column and the selection.
type Source<'a> = (
    &'a Arc<Bytes>,
    &'a ParquetMetaData,
    &'a [usize],
    usize,
    Option<&'a BooleanBuffer>,
);

/// [`values`] as an array of `P`.
fn array<P: ArrowPrimitiveType>(column: Source) -> Result<ArrayRef, String>
where
    P::Native: Physical,
{
    let (values, nulls) = values::<P::Native>(column)?;
    Ok(Arc::new(
        PrimitiveArray::<P>::try_new(values.into(), nulls).map_err(|e| e.to_string())?,
    ))
}

/// The values of the kept rows, and their nulls.
fn values<T: Physical>(
    (file, meta, row_groups, leaf, selection): Source,
) -> Result<(Vec<T>, Option<NullBuffer>), String> {
    let column = meta.file_metadata().schema_descr().column(leaf);
    let width = match column.physical_type() {
        PhysicalType::INT32 => 4,
        PhysicalType::INT64 => 8,
        _ => usize::try_from(column.type_length()).map_err(|_| "negative width".to_string())?,
    };
    let rows: usize = row_groups
        .iter()
        .map(|&g| meta.row_group(g).num_rows().max(0) as usize)
        .sum();
    if selection.is_some_and(|s| s.len() != rows) {
        return Err(format!(
            "a selection of {} rows for {rows}",
            selection.map_or(0, |s| s.len())
        ));
    }
    let kept = selection.map_or(rows, |s| s.count_set_bits());
    let mut out = Column {
        width,
        nullable: column.max_def_level() == 1,
        values: Vec::with_capacity(kept),
        valid: BooleanBufferBuilder::new(if column.max_def_level() == 1 { kept } else { 0 }),
        dictionary: Vec::new(),
        levels: Vec::new(),
        indices: Vec::new(),
        selection,
        row: 0,
        kept_in_group: 0,
        raw_dictionary: None,
    };
    // The first row of the current row group.
    let mut start = 0;
    for &g in row_groups {
        let group = meta.row_group(g);
        let rows = group.num_rows().max(0) as usize;
        let mut pages =
            SerializedPageReader::new(file.clone(), group.column(leaf), rows, None).map_err(|e| e.to_string())?;
        out.dictionary.clear();
        out.raw_dictionary = None;
        out.kept_in_group = selection.map_or(rows, |s| s.slice(start, rows).count_set_bits());
        start += rows;
        while let Some(page) = pages.get_next_page().map_err(|e| e.to_string())? {
            out.page(page)?;
        }
    }
    let nulls = out.nullable.then(|| NullBuffer::new(out.valid.finish()));
    Ok((out.values, nulls))
}

/// A column being decoded.
struct Column<'a, T> {
    width: usize,
    nullable: bool,
    values: Vec<T>,
    valid: BooleanBufferBuilder,
    /// The rows to keep (all when `None`), and the first row of the next
    /// page.
    selection: Option<&'a BooleanBuffer>,
    row: usize,
    /// Rows of the current row group kept.
    kept_in_group: usize,
    /// The current row group's dictionary, converted.
    dictionary: Vec<T>,
    /// Or its page, where the row group keeps fewer rows than half its
    /// entries: only the entries kept rows use are converted (TPC-H's
    /// prices, about one entry per row).
    raw_dictionary: Option<(bytes::Bytes, usize)>,
    /// One page's definition levels.
    levels: Vec<u32>,
    /// One page's dictionary indices.
    indices: Vec<u32>,
}

impl<T: Physical> Column<'_, T> {
    fn page(&mut self, page: Page) -> Result<(), String> {
        match page {
            Page::DictionaryPage { buf, num_values, .. } => {
                self.dictionary.clear();
                self.raw_dictionary = None;
                let entries = num_values as usize;
                if self.kept_in_group * 2 < entries {
                    page_values(&buf, self.width, entries)?;
                    self.raw_dictionary = Some((buf, entries));
                    return Ok(());
                }
                T::plain(&buf, self.width, entries, &mut self.dictionary)
            }
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                ..
            } => {
                let (levels, values) = if self.nullable {
                    if def_level_encoding != Encoding::RLE {
                        return Err(format!("definition levels encoded as {def_level_encoding}"));
                    }
                    let len = buf
                        .get(..4)
                        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                        .ok_or("a data page shorter than its level length")?;
                    let levels = buf.get(4..4 + len).ok_or("definition levels past the page's end")?;
                    (levels, &buf[4 + len..])
                } else {
                    (&buf[..0], &buf[..])
                };
                self.data(num_values as usize, levels, values, encoding)
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let start = rep_levels_byte_len as usize;
                let end = start + def_levels_byte_len as usize;
                let levels = buf.get(start..end).ok_or("definition levels past the page's end")?;
                self.data(num_values as usize, levels, &buf[end..], encoding)
            }
        }
    }

    /// A data page of `n` slots: `levels` their definition levels (nullable
    /// columns), `values` the values of the defined ones.
    fn data(&mut self, n: usize, levels: &[u8], values: &[u8], encoding: Encoding) -> Result<(), String> {
        let start = self.values.len();
        let first = self.row;
        self.row += n;
        let kept = |slot: usize| self.selection.is_none_or(|s| s.value(first + slot));
        let defined = if self.nullable {
            self.levels.clear();
            hybrid(levels, 1, n, &mut self.levels)?;
            for (slot, &l) in self.levels.iter().enumerate() {
                if kept(slot) {
                    self.valid.append(l == 1);
                }
            }
            self.levels.iter().filter(|&&l| l == 1).count()
        } else {
            n
        };
        match encoding {
            Encoding::PLAIN => match self.selection {
                // Every slot defined: only the kept ones converted.
                Some(selection) if defined == n => {
                    let width = self.width;
                    let bytes = page_values(values, width, n)?;
                    let slots = selection.slice(first, n);
                    self.values
                        .extend(slots.set_indices().map(|slot| T::plain_at(bytes, slot, width)));
                    return Ok(());
                }
                _ => T::plain(values, self.width, defined, &mut self.values)?,
            },
            Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY => {
                let (&bits, indices) = values.split_first().ok_or("an empty dictionary-encoded page")?;
                self.indices.clear();
                // Every slot defined: only the kept ones' indices unpacked.
                let kept = self.selection.filter(|_| defined == n).map(|s| s.slice(first, n));
                match &kept {
                    Some(slots) => hybrid_at(indices, bits, slots.set_indices(), &mut self.indices)?,
                    None => hybrid(indices, bits, defined, &mut self.indices)?,
                }
                // A slice, not the vector, so that its address stays in a
                // register while the values grow; the largest index checked
                // in one pass that vectorises, not one early exit per index.
                let dictionary: &[T] = &self.dictionary;
                let entries = self.raw_dictionary.as_ref().map_or(dictionary.len(), |d| d.1);
                let largest = self.indices.iter().copied().max().unwrap_or(0) as usize;
                if !self.indices.is_empty() && largest >= entries {
                    return Err(format!("a dictionary index past its {entries} entries"));
                }
                match &self.raw_dictionary {
                    Some((raw, _)) => {
                        let width = self.width;
                        let raw: &[u8] = raw;
                        self.values
                            .extend(self.indices.iter().map(|&i| T::plain_at(raw, i as usize, width)));
                    }
                    None => self.values.extend(self.indices.iter().map(|&i| dictionary[i as usize])),
                }
                if kept.is_some() {
                    return Ok(());
                }
            }
            other => return Err(format!("values encoded as {other}")),
        }
        if defined < n {
            // Spread the defined values over the page's slots, nulls as 0.
            self.values.resize(start + n, T::default());
            let mut next = start + defined;
            for slot in (0..n).rev() {
                if self.levels[slot] == 1 {
                    next -= 1;
                    self.values[start + slot] = self.values[next];
                } else {
                    self.values[start + slot] = T::default();
                }
            }
        }
        if let Some(selection) = self.selection {
            // Keep the selected slots, moved down over the others.
            let mut to = start;
            for slot in selection.slice(first, n).set_indices() {
                self.values[to] = self.values[start + slot];
                to += 1;
            }
            self.values.truncate(to);
        }
        Ok(())
    }
}

/// A Parquet physical type decoded here, as the Arrow native type it
/// becomes.
trait Physical: ArrowNativeType {
    /// Appends the first `n` plain-encoded values of `width` bytes of
    /// `bytes`.
    fn plain(bytes: &[u8], width: usize, n: usize, out: &mut Vec<Self>) -> Result<(), String>;

    /// Plain-encoded value `index` of `width` bytes of `bytes`, which the
    /// caller has checked holds it.
    fn plain_at(bytes: &[u8], index: usize, width: usize) -> Self;
}

/// Integers: little-endian values of their own width.
macro_rules! little_endian {
    ($($t:ty),*) => {$(
        impl Physical for $t {
            fn plain(bytes: &[u8], width: usize, n: usize, out: &mut Vec<$t>) -> Result<(), String> {
                let bytes = page_values(bytes, width, n)?;
                out.extend(
                    bytes
                        .chunks_exact(std::mem::size_of::<$t>())
                        .map(|b| <$t>::from_le_bytes(b.try_into().expect("the type's width"))),
                );
                Ok(())
            }

            fn plain_at(bytes: &[u8], index: usize, width: usize) -> $t {
                let at = index * width;
                <$t>::from_le_bytes(bytes[at..at + std::mem::size_of::<$t>()].try_into().expect("the type's width"))
            }
        }
    )*};
}

little_endian!(i32, i64);

/// Decimals: big-endian two's complement values of `width` bytes.
impl Physical for i128 {
    fn plain(bytes: &[u8], width: usize, n: usize, out: &mut Vec<i128>) -> Result<(), String> {
        let bytes = page_values(bytes, width, n)?;
        // Values of at most eight bytes: eight bytes read at once where the
        // page has them, the value's big-endian bytes on top, sign-extended
        // by the shift down.
        let whole = if width <= 8 && bytes.len() >= 8 {
            ((bytes.len() - 8) / width + 1).min(n)
        } else {
            0
        };
        let shift = 64u32.saturating_sub(8 * width as u32);
        out.extend((0..whole).map(|i| {
            let word = u64::from_be_bytes(bytes[i * width..i * width + 8].try_into().expect("8 bytes"));
            i128::from((word as i64) >> shift)
        }));
        // The rest (the last few, or wider values) byte by byte.
        out.extend(bytes[whole * width..].chunks_exact(width).map(big_endian));
        Ok(())
    }

    fn plain_at(bytes: &[u8], index: usize, width: usize) -> i128 {
        let end = (index + 1) * width;
        if width <= 8 && end >= 8 {
            // The eight bytes that end with the value: its bytes at the
            // bottom, sign-extended by the shifts.
            let word = u64::from_be_bytes(bytes[end - 8..end].try_into().expect("8 bytes"));
            let shift = 64 - 8 * width as u32;
            i128::from(((word << shift) as i64) >> shift)
        } else {
            big_endian(&bytes[end - width..end])
        }
    }
}

/// A big-endian two's complement value.
fn big_endian(b: &[u8]) -> i128 {
    b[1..]
        .iter()
        .fold(i128::from(b[0] as i8), |v, &x| (v << 8) | i128::from(x))
}

/// The first `n` values of `width` bytes of a page's `bytes`.
fn page_values(bytes: &[u8], width: usize, n: usize) -> Result<&[u8], String> {
    bytes
        .get(..n * width)
        .ok_or_else(|| format!("a page of {} bytes holding {n} values of {width} bytes", bytes.len()))
}

/// Appends `n` values of `bits` bits from Parquet's RLE / bit-packing
/// hybrid encoding.
fn hybrid(mut data: &[u8], bits: u8, n: usize, out: &mut Vec<u32>) -> Result<(), String> {
    if bits > 32 {
        return Err(format!("{bits}-bit values"));
    }
    let bits = usize::from(bits);
    let end = out.len() + n;
    let bytes_per_value = bits.div_ceil(8);
    let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
    while out.len() < end {
        let (header, used) = uleb128(data)?;
        data = &data[used..];
        let want = end - out.len();
        if header & 1 == 0 {
            // A run of one value.
            let count = usize::try_from(header >> 1).map_err(|_| "a run too long")?;
            let raw = data.get(..bytes_per_value).ok_or("a run past the data's end")?;
            data = &data[bytes_per_value..];
            let value = raw.iter().rev().fold(0u32, |v, &b| (v << 8) | u32::from(b));
            out.extend(std::iter::repeat_n(value, count.min(want)));
        } else {
            // Groups of 8 values, bit-packed least significant bit first.
            let groups = usize::try_from(header >> 1).map_err(|_| "a run too long")?;
            let len = groups * bits;
            let packed = data.get(..len).ok_or("bit-packed values past the data's end")?;
            data = &data[len..];
            let count = (groups * 8).min(want);
            // Whole groups while the page holds 8 bytes past them, with
            // each width's offsets and shifts known to the compiler.
            let fast = match bits {
                0 => count / 8,
                _ => (packed.len().saturating_sub(8) / bits).min(count / 8),
            };
            unpack_groups(packed, bits, fast, out);
            out.extend((fast * 8..count).map(|i| packed_value(packed, i * bits, mask)));
        }
    }
    Ok(())
}

/// Appends the first `groups` groups of 8 bit-packed values of `bits` bits
/// (1 to 32; 0 for zeros) of `packed`, which holds 8 bytes past them.
fn unpack_groups(packed: &[u8], bits: usize, groups: usize, out: &mut Vec<u32>) {
    macro_rules! widths {
        ($($b:literal)*) => {
            match bits {
                $($b => unpack::<$b>(packed, groups, out),)*
                _ => out.extend(std::iter::repeat_n(0, groups * 8)),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32);
}

/// [`unpack_groups`] for values of `B` bits: each value one 8-byte load at
/// a constant offset from its group's start, shifted and masked.
fn unpack<const B: usize>(packed: &[u8], groups: usize, out: &mut Vec<u32>) {
    let mask = if B == 32 { u32::MAX } else { (1u32 << B) - 1 };
    for g in 0..groups {
        // The group's B bytes and 8 more: one bounds check per group.
        let bytes = &packed[g * B..g * B + B + 8];
        let mut group = [0u32; 8];
        for (j, v) in group.iter_mut().enumerate() {
            let bit = j * B;
            let word = u64::from_le_bytes(bytes[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
            *v = (word >> (bit % 8)) as u32 & mask;
        }
        out.extend_from_slice(&group);
    }
}

/// The value at bit `bit` of bit-packed `packed`, `mask` its width's bits.
fn packed_value(packed: &[u8], bit: usize, mask: u32) -> u32 {
    let from = bit / 8;
    let word = match packed.get(from..from + 8) {
        Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
        None => {
            let mut w = [0u8; 8];
            let rest = &packed[from.min(packed.len())..];
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
    };
    (word >> (bit % 8)) as u32 & mask
}

/// A run of the RLE / bit-packing hybrid encoding.
enum Run<'a> {
    /// One value repeated.
    Repeated(u32),
    /// Bit-packed values.
    Packed(&'a [u8]),
}

/// Appends the values at `slots` (ascending) of `bits` bits from Parquet's
/// RLE / bit-packing hybrid encoding: each run's header is read, but only
/// the kept slots' values are unpacked (TPC-H q5 keeps 3% of `lineitem`'s
/// rows once its orders are known).
fn hybrid_at(mut data: &[u8], bits: u8, slots: impl Iterator<Item = usize>, out: &mut Vec<u32>) -> Result<(), String> {
    if bits > 32 {
        return Err(format!("{bits}-bit values"));
    }
    let bits = usize::from(bits);
    let bytes_per_value = bits.div_ceil(8);
    let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
    // The current run covers slots `start..end`.
    let (mut start, mut end) = (0usize, 0usize);
    let mut run = Run::Repeated(0);
    for slot in slots {
        while slot >= end {
            let (header, used) = uleb128(data)?;
            data = &data[used..];
            let count = usize::try_from(header >> 1).map_err(|_| "a run too long")?;
            start = end;
            if header & 1 == 0 {
                let raw = data.get(..bytes_per_value).ok_or("a run past the data's end")?;
                data = &data[bytes_per_value..];
                run = Run::Repeated(raw.iter().rev().fold(0u32, |v, &b| (v << 8) | u32::from(b)));
                end = start.saturating_add(count);
            } else {
                let len = count.checked_mul(bits).ok_or("a run too long")?;
                let packed = data.get(..len).ok_or("bit-packed values past the data's end")?;
                data = &data[len..];
                run = Run::Packed(packed);
                end = start.saturating_add(count * 8);
            }
        }
        out.push(match run {
            Run::Repeated(value) => value,
            Run::Packed(packed) => packed_value(packed, (slot - start) * bits, mask),
        });
    }
    Ok(())
}

/// A ULEB128 integer and the bytes it took.
fn uleb128(data: &[u8]) -> Result<(u64, usize), String> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err("a run header past the data's end".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::data_type::{ByteArray, FixedLenByteArray, FixedLenByteArrayType};
    use parquet::file::properties::{WriterProperties, WriterVersion};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::fs::File;

    const SCHEMA: &str = "message m {
        required fixed_len_byte_array(7) a (DECIMAL(15, 2));
        optional fixed_len_byte_array(16) b (DECIMAL(38, 4));
        optional fixed_len_byte_array(1) c (DECIMAL(2, 0));
        optional fixed_len_byte_array(11) d (DECIMAL(25, 3));
    }";
    const WIDTHS: [usize; 4] = [7, 16, 1, 11];

    /// Row `i`'s value of column `c`, or null: few distinct values first
    /// (dictionary pages), then many (the writer falls back to plain).
    fn value(c: usize, i: i128) -> Option<i128> {
        let v = match c {
            0 if i < 3000 => (i % 37 - 18) * 1001,
            0 => i * 7919 - 50_000_000,
            1 => (i - 2500) * 1_000_000_000_000_007,
            2 => i % 201 - 100,
            _ => (i % 5 - 2) * 123_456_789_012_345,
        };
        (c == 0 || i % (c as i128 + 2) != 0).then_some(v)
    }

    /// Small pages and dictionaries, so that the writer falls back to
    /// plain pages after a few distinct values.
    fn small_pages(dictionary: bool, version: WriterVersion) -> parquet::file::properties::WriterPropertiesBuilder {
        WriterProperties::builder()
            .set_writer_version(version)
            .set_dictionary_enabled(dictionary)
            .set_dictionary_page_size_limit(512)
            .set_data_page_row_count_limit(300)
            .set_write_batch_size(100)
    }

    fn write(path: &std::path::Path, dictionary: bool, version: WriterVersion) {
        let props = small_pages(dictionary, version).build();
        let schema = Arc::new(parse_message_type(SCHEMA).unwrap());
        let mut w = SerializedFileWriter::new(File::create(path).unwrap(), schema, Arc::new(props)).unwrap();
        for rows in [0..4000i128, 4000..5000] {
            let mut group = w.next_row_group().unwrap();
            let mut c = 0;
            while let Some(mut column) = group.next_column().unwrap() {
                let cells: Vec<Option<i128>> = rows.clone().map(|i| value(c, i)).collect();
                let values: Vec<FixedLenByteArray> = cells
                    .iter()
                    .flatten()
                    .map(|v| ByteArray::from(v.to_be_bytes()[16 - WIDTHS[c]..].to_vec()).into())
                    .collect();
                let levels: Vec<i16> = cells.iter().map(|v| i16::from(v.is_some())).collect();
                let levels = (c > 0).then_some(&levels[..]);
                column
                    .typed::<FixedLenByteArrayType>()
                    .write_batch(&values, levels, None)
                    .unwrap();
                column.close().unwrap();
                c += 1;
            }
            group.close().unwrap();
        }
        w.close().unwrap();
    }

    /// `batch` written to `path` by parquet-rs with `props`: the file and
    /// its footer.
    fn written(
        path: &std::path::Path,
        batch: &arrow_array::RecordBatch,
        props: Option<WriterProperties>,
    ) -> (Arc<Bytes>, Arc<ParquetMetaData>) {
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), props).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        (Arc::new(Bytes::from(std::fs::read(path).unwrap())), meta)
    }

    /// Whether column `c` of the file, read as `data_type`, is `want`:
    /// every row, every third and every 50th (fewer rows than dictionary
    /// entries: the entries converted as rows use them); its leaf, or
    /// `None` where it is left to parquet-rs for `fallback` pages.
    fn agrees(
        file: &Arc<Bytes>,
        meta: &ParquetMetaData,
        (c, data_type): (usize, &DataType),
        want: &ArrayRef,
        fallback: Encoding,
    ) -> Option<usize> {
        let Some(leaf) = leaf(meta, c, data_type) else {
            let mut encodings = meta.row_groups().iter().flat_map(|g| g.column(c).encodings());
            assert!(encodings.any(|e| e == fallback), "column {c}");
            return None;
        };
        let got = read(file, meta, &[0, 1], leaf, data_type, None).unwrap();
        assert_eq!(got.as_ref(), want.as_ref(), "column {c}");
        for every in [3, 50] {
            let selection = BooleanBuffer::from_iter((0..want.len()).map(|i| i % every == 1));
            let some = read(file, meta, &[0, 1], leaf, data_type, Some(&selection)).unwrap();
            let mask = arrow_array::BooleanArray::new(selection, None);
            let filtered = arrow_select::filter::filter(want, &mask).unwrap();
            assert_eq!(some.as_ref(), filtered.as_ref(), "column {c}, every {every}th row");
        }
        Some(leaf)
    }

    #[test]
    fn decimals_decode_as_parquet_rs_decodes_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut decoded = 0;
        for dictionary in [true, false] {
            for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
                let path = dir.path().join(format!("t-{dictionary}-{version:?}.parquet"));
                write(&path, dictionary, version);
                let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
                let meta = builder.metadata().clone();
                let schema = builder.schema().clone();
                let want = builder
                    .with_batch_size(1 << 20)
                    .build()
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap();
                let file = Arc::new(Bytes::from(std::fs::read(&path).unwrap()));
                for (c, field) in schema.fields().iter().enumerate() {
                    // Version 2 falls back to DELTA_BYTE_ARRAY, left to parquet-rs.
                    let fallback = Encoding::DELTA_BYTE_ARRAY;
                    let Some(leaf) = agrees(&file, &meta, (c, field.data_type()), want.column(c), fallback) else {
                        continue;
                    };
                    decoded += 1;
                    let second = read(&file, &meta, &[1], leaf, field.data_type(), None).unwrap();
                    assert_eq!(second.as_ref(), want.column(c).slice(4000, 1000).as_ref());
                    let short = BooleanBuffer::new_set(3);
                    assert!(read(&file, &meta, &[0, 1], leaf, field.data_type(), Some(&short)).is_err());
                }
            }
        }
        // Both version 1 files, and the version 2 columns without fallback.
        assert!(decoded >= 8, "{decoded} columns decoded");
    }

    #[test]
    fn integers_and_dates_decode_as_parquet_rs_decodes_them() {
        use arrow_array::{Date32Array, Int32Array, Int64Array, RecordBatch};
        let n = 5000;
        // Few distinct values first (dictionary pages), then many (the
        // writer falls back to plain); nulls in the optional columns.
        let value = |i: i64| if i < 3000 { i % 41 - 20 } else { i * 7919 - 50_000_000 };
        let batch = RecordBatch::try_from_iter([
            (
                "i",
                Arc::new(Int32Array::from_iter_values((0..n).map(|i| value(i) as i32))) as ArrayRef,
            ),
            (
                "d",
                Arc::new(Date32Array::from_iter(
                    (0..n).map(|i| (i % 3 != 0).then_some(value(i) as i32)),
                )) as _,
            ),
            (
                "l",
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then_some(value(i) << 20)),
                )) as _,
            ),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut decoded = 0;
        for dictionary in [true, false] {
            for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
                let path = dir.path().join(format!("i-{dictionary}-{version:?}.parquet"));
                let props = small_pages(dictionary, version)
                    .set_max_row_group_row_count(Some(4000))
                    .build();
                let (file, meta) = written(&path, &batch, Some(props));
                for (c, field) in batch.schema().fields().iter().enumerate() {
                    // Version 2 falls back to DELTA_BINARY_PACKED, left to parquet-rs.
                    let fallback = Encoding::DELTA_BINARY_PACKED;
                    decoded +=
                        usize::from(agrees(&file, &meta, (c, field.data_type()), batch.column(c), fallback).is_some());
                }
                // An int32 column is not read as int64.
                assert_eq!(leaf(&meta, 0, &DataType::Int64), None);
            }
        }
        assert!(decoded >= 6, "{decoded} columns decoded");
    }

    #[test]
    fn a_few_rows_convert_only_the_dictionary_entries_they_use() {
        use arrow_array::RecordBatch;
        let n = 2000;
        let prices = Decimal128Array::from_iter_values((0..n).map(|i| (i * 7919 % 1999) - 900))
            .with_precision_and_scale(20, 2)
            .unwrap();
        let batch = RecordBatch::try_from_iter([("p", Arc::new(prices) as ArrayRef)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let (file, meta) = written(&path, &batch, None);
        assert!(meta.row_group(0).column(0).dictionary_page_offset().is_some());
        let data_type = batch.schema().field(0).data_type().clone();
        let selection = BooleanBuffer::from_iter((0..n).map(|i| i % 97 == 5));
        let some = read(
            &file,
            &meta,
            &[0],
            leaf(&meta, 0, &data_type).unwrap(),
            &data_type,
            Some(&selection),
        )
        .unwrap();
        let mask = arrow_array::BooleanArray::new(selection, None);
        assert_eq!(
            some.as_ref(),
            arrow_select::filter::filter(batch.column(0), &mask).unwrap().as_ref()
        );
    }

    #[test]
    fn hybrid_runs_and_bit_packed_groups_decode() {
        // A run of 5 threes (width 2), then one group of 8 bit-packed values
        // 0..8 at width 3 (LSB first), of which 6 are asked for.
        let mut out = Vec::new();
        hybrid(&[5 << 1, 3], 2, 5, &mut out).unwrap();
        assert_eq!(out, [3; 5]);
        out.clear();
        let packed: u32 = (0..8).map(|v| v << (3 * v)).sum();
        let bytes = packed.to_le_bytes();
        hybrid(&[(1 << 1) | 1, bytes[0], bytes[1], bytes[2]], 3, 6, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
        assert!(hybrid(&[(1 << 1) | 1, 0], 3, 8, &mut out).unwrap_err().contains("past"));
        assert!(hybrid(&[0x80], 3, 1, &mut out).unwrap_err().contains("past"));
        assert!(
            hybrid_at(&[(1 << 1) | 1, 0], 3, [9].into_iter(), &mut out)
                .unwrap_err()
                .contains("past")
        );
        // Many groups at each width, some values of the last group not asked.
        let mut rng = fastrand::Rng::with_seed(5);
        for bits in 0..=32u8 {
            let values: Vec<u32> = (0..77).map(|_| (rng.u64(..) & ((1u64 << bits) - 1)) as u32).collect();
            let groups = values.len().div_ceil(8);
            let mut packed = vec![0u8; groups * usize::from(bits)];
            for (i, &v) in values.iter().enumerate() {
                for b in 0..usize::from(bits) {
                    let at = i * usize::from(bits) + b;
                    packed[at / 8] |= (((v >> b) & 1) as u8) << (at % 8);
                }
            }
            let mut data = vec![((groups as u8) << 1) | 1];
            data.extend(packed);
            let mut out = Vec::new();
            hybrid(&data, bits, values.len(), &mut out).unwrap();
            assert_eq!(out, values, "{bits} bits");
            // After a run of one value, every third slot alone.
            let mut runs = vec![4 << 1];
            runs.extend(&1u32.to_le_bytes()[..usize::from(bits).div_ceil(8)]);
            runs.extend(&data);
            let slots = (0..values.len() + 4).filter(|i| i % 3 == 1);
            let mut some = Vec::new();
            hybrid_at(&runs, bits, slots.clone(), &mut some).unwrap();
            let all: Vec<u32> = [u32::from(bits > 0); 4]
                .into_iter()
                .chain(values.iter().copied())
                .collect();
            assert_eq!(some, slots.map(|i| all[i]).collect::<Vec<_>>(), "{bits} bits");
        }
    }

    #[test]
    fn plain_values_sign_extend() {
        let mut out = Vec::new();
        i128::plain(&[0xff, 0xfe, 0x00, 0x01, 0x80, 0x00], 2, 3, &mut out).unwrap();
        assert_eq!(out, [-2, 1, -32768]);
        assert!(i128::plain(&[0; 5], 2, 3, &mut out).unwrap_err().contains("5 bytes"));
        // Long pages, read eight bytes at a time but for the last values.
        let mut rng = fastrand::Rng::with_seed(3);
        for width in 1..=8usize {
            let bits = 8 * width as u32;
            let values: Vec<i64> = (0..100).map(|_| rng.i64(..) >> (64 - bits)).collect();
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|v| v.to_be_bytes()[8 - width..].to_vec())
                .collect();
            let mut out = Vec::new();
            i128::plain(&bytes, width, values.len(), &mut out).unwrap();
            let want: Vec<i128> = values.iter().map(|&v| i128::from(v)).collect();
            assert_eq!(out, want, "width {width}");
            // One value at a time, the first ones from fewer than eight bytes.
            let one: Vec<i128> = (0..values.len()).map(|i| i128::plain_at(&bytes, i, width)).collect();
            assert_eq!(one, want, "width {width}");
        }
        let ints: Vec<u8> = [-5i64, 7, i64::MIN].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(i64::plain_at(&ints, 2, 8), i64::MIN);
        assert_eq!(i128::plain_at(&[0xff, 0xfe, 0x00, 0x01, 0x80, 0x00], 2, 2), -32768);
    }
}
