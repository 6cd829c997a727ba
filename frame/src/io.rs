//! Files: listing a path or glob, Parquet metadata and row-group pruning
//! (client side, at plan time), reading a Parquet row group range or a
//! CSV file into one batch and writing a partition as a Parquet file
//! (worker side).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, StringViewArray};
use arrow_buffer::{BooleanBuffer, OffsetBuffer};
use arrow_data::ByteView;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::ChunkReader;

use crate::broadcast::KeyFilter;
use crate::error::{FrameError, Result};
use crate::expr::{BinaryOp, Expr};

/// Which file names a pattern takes.
type Matcher = Box<dyn Fn(&str) -> bool>;

/// The files a path names: the file itself, the files of a directory with
/// the extension `ext`, or the files matching a `*` pattern in the last
/// component; sorted.
pub fn list_files(pattern: &str, ext: &str) -> Result<Vec<String>> {
    let path = Path::new(pattern);
    let (dir, matcher): (&Path, Matcher) = if pattern.contains('*') {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| FrameError::file(pattern, "not a file pattern"))?
            .to_string();
        (dir, Box::new(move |f: &str| glob_match(&name, f)))
    } else if path.is_dir() {
        let ext = ext.to_string();
        (path, Box::new(move |f: &str| f.ends_with(&ext)))
    } else if path.is_file() {
        return Ok(vec![pattern.to_string()]);
    } else {
        return Err(FrameError::file(pattern, "no such file or directory"));
    };
    let entries = std::fs::read_dir(dir).map_err(|e| FrameError::file(dir.display().to_string(), e))?;
    let mut files: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter(|e| e.file_name().to_str().is_some_and(&matcher))
        .map(|e| e.path().display().to_string())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(FrameError::file(pattern, "matches no files"));
    }
    Ok(files)
}

/// `*` matches any run of characters; everything else itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == name;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A schema without field or schema metadata (so schemas from files and
/// from computed batches compare equal).
pub fn plain_schema(schema: &Schema) -> Schema {
    Schema::new(schema.fields().iter().map(|f| plain_field(f)).collect::<Vec<_>>())
}

/// `field` without metadata.
fn plain_field(field: &Field) -> Field {
    Field::new(field.name(), field.data_type().clone(), field.is_nullable())
}

/// One Parquet file as the planner sees it.
#[derive(Debug, Clone)]
pub struct ParquetFile {
    /// Its path.
    pub path: String,
    /// Its footer.
    pub metadata: Arc<ParquetMetaData>,
}

/// A set of Parquet files with one schema.
#[derive(Debug, Clone)]
pub struct ParquetDataset {
    /// The path or pattern it was opened with.
    pub pattern: String,
    /// The files, sorted.
    pub files: Vec<ParquetFile>,
    /// The common schema.
    pub schema: SchemaRef,
}

/// Reads the footers of the files `pattern` names.
pub fn open_parquet(pattern: &str) -> Result<ParquetDataset> {
    let mut files = Vec::new();
    let mut schema: Option<SchemaRef> = None;
    for path in list_files(pattern, ".parquet")? {
        let file = File::open(&path).map_err(|e| FrameError::file(&path, e))?;
        let meta = footer(&path, &file)?;
        let this = Arc::new(plain_schema(meta.schema()));
        match &schema {
            None => schema = Some(this),
            Some(s) if s.fields() != this.fields() => {
                return Err(FrameError::file(
                    &path,
                    format!("its schema {this:?} differs from the first file's {s:?}"),
                ));
            }
            Some(_) => {}
        }
        files.push(ParquetFile {
            path,
            metadata: meta.metadata().clone(),
        });
    }
    let schema = schema.ok_or_else(|| FrameError::file(pattern, "matches no files"))?;
    Ok(ParquetDataset {
        pattern: pattern.into(),
        files,
        schema,
    })
}

/// A conjunct the statistics can decide: `column op literal`.
fn stat_condition(e: &Expr) -> Option<(&str, BinaryOp, &Expr)> {
    let Expr::Binary { left, op, right } = e else {
        return None;
    };
    if !op.is_comparison() || *op == BinaryOp::NotEq {
        return None;
    }
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), lit @ Expr::Literal(_)) => Some((c, *op, lit)),
        (lit @ Expr::Literal(_), Expr::Column(c)) => Some((c, op.swapped(), lit)),
        _ => None,
    }
}

/// The row groups of `file` that may hold rows where all `conjuncts`
/// hold, judged by their min/max statistics (kept when unknown).
pub fn prune_row_groups(file: &ParquetFile, schema: &Schema, conjuncts: &[Expr]) -> Vec<usize> {
    let groups = file.metadata.row_groups();
    let mut keep = vec![true; groups.len()];
    for c in conjuncts {
        let Some((column, op, literal)) = stat_condition(c) else {
            continue;
        };
        let Ok(converter) = StatisticsConverter::try_new(column, schema, file.metadata.file_metadata().schema_descr())
        else {
            continue;
        };
        let (Ok(mins), Ok(maxs)) = (converter.row_group_mins(groups), converter.row_group_maxes(groups)) else {
            continue;
        };
        let stats = match RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("min", mins.data_type().clone(), true),
                Field::new("max", maxs.data_type().clone(), true),
            ])),
            vec![mins, maxs],
        ) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let (min, max) = (crate::expr::col("min"), crate::expr::col("max"));
        let lit = literal.clone();
        let test = match op {
            BinaryOp::Eq => min.lt_eq(lit.clone()).and(max.gt_eq(lit)),
            BinaryOp::Lt => min.lt(lit),
            BinaryOp::LtEq => min.lt_eq(lit),
            BinaryOp::Gt => max.gt(lit),
            BinaryOp::GtEq => max.gt_eq(lit),
            _ => continue,
        };
        let Ok(mask) = crate::eval::predicate(&test, &stats) else {
            continue;
        };
        for (i, k) in keep.iter_mut().enumerate() {
            // Unknown statistics (null) keep the group.
            *k &= !mask.is_valid(i) || mask.value(i);
        }
    }
    (0..groups.len()).filter(|&i| keep[i]).collect()
}

/// Reads row groups `row_groups` of the Parquet file at `path`: the
/// `columns` (all when `None`) of the rows where `predicate` holds and
/// whose keys `keys` (a join's build side) holds.
///
/// The predicate is applied while decoding (late materialisation, as
/// DuckDB's scan does): the columns its conjuncts read, and the key
/// columns, are decoded first, and the other columns only for the rows
/// they keep. Integer, date and decimal columns are decoded by
/// [`crate::fixed`], the others by parquet-rs.
pub fn read_parquet(
    path: &str,
    row_groups: &[usize],
    columns: Option<&[String]>,
    predicate: Option<&Expr>,
    keys: Option<&KeyFilter>,
) -> Result<RecordBatch> {
    let scanned = scan(path, row_groups, columns, predicate, &[], keys)?;
    let batch = match scanned.filter {
        Some(p) => crate::eval::filter(&scanned.batch, &p)?,
        None => scanned.batch,
    };
    project_names(&plain_strings(batch)?, &scanned.wanted)
}

/// As [`read_parquet`], for an aggregate that applies the predicate itself
/// (skipping the rows it drops rather than copying those it keeps): every
/// row read, the columns the predicate reads too, and the part of the
/// predicate not applied yet. String columns named in `dictionaries` that
/// the predicate does not read come as dictionaries of their Parquet
/// pages (group keys: TPC-H q1's flags, numbered by their few values).
pub fn read_parquet_unfiltered(
    path: &str,
    row_groups: &[usize],
    columns: Option<&[String]>,
    predicate: Option<&Expr>,
    dictionaries: &[String],
) -> Result<(RecordBatch, Option<Expr>)> {
    let scanned = scan(path, row_groups, columns, predicate, dictionaries, None)?;
    Ok((plain_strings(scanned.batch)?, scanned.filter))
}

/// What [`scan`] read.
struct Scanned {
    /// The columns wanted and those the predicate reads.
    batch: RecordBatch,
    /// The conjuncts of the predicate not applied while reading.
    filter: Option<Expr>,
    /// The columns wanted.
    wanted: Vec<String>,
}

fn scan(
    path: &str,
    row_groups: &[usize],
    columns: Option<&[String]>,
    predicate: Option<&Expr>,
    dictionaries: &[String],
    keys: Option<&KeyFilter>,
) -> Result<Scanned> {
    let file = File::open(path).map_err(|e| FrameError::file(path, e))?;
    let footer = footer(path, &file)?;
    let file = Arc::new(mapped(path, &file)?);
    let file_schema = footer.schema().clone();
    let index = |name: &String| {
        file_schema.index_of(name).map_err(|_| FrameError::ColumnNotFound {
            name: name.clone(),
            schema: plain_schema(&file_schema),
        })
    };
    let wanted: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => file_schema.fields().iter().map(|f| f.name().clone()).collect(),
    };
    // A key filter tests integer (or date) columns the scan returns.
    let keys = keys.filter(|k| {
        k.columns.iter().all(|c| {
            wanted.contains(c)
                && file_schema
                    .field_with_name(c)
                    .is_ok_and(|f| f.data_type().is_integer() || *f.data_type() == DataType::Date32)
        })
    });
    let conjuncts = predicate.cloned().map(Expr::conjuncts).unwrap_or_default();
    // Strings the predicate does not read are decoded as views and made
    // plain strings once the predicate has dropped its rows: one copy of
    // their bytes instead of two (decoding, then filtering).
    let predicate_reads: Vec<String> = conjuncts.iter().flat_map(Expr::columns).collect();
    let strings: Vec<(usize, &String)> = wanted
        .iter()
        .filter(|name| !predicate_reads.contains(name))
        .filter_map(|name| file_schema.index_of(name).ok().map(|i| (i, name)))
        .filter(|&(i, _)| *file_schema.field(i).data_type() == DataType::Utf8)
        .collect();
    let (mut dictionaries, views): (Vec<_>, Vec<_>) = strings.into_iter().partition(|(_, n)| dictionaries.contains(n));
    // Strings the predicate only compares with a value, and that are not
    // wanted, come as dictionaries too: compared once per distinct value
    // (TPC-H q10's return flag, 6M rows and three values at SF1).
    for (i, field) in file_schema.fields().iter().enumerate() {
        let name = field.name();
        let compared = || {
            conjuncts
                .iter()
                .filter(|c| c.columns().contains(name))
                .all(|c| compares_with_value(c, name))
        };
        if *field.data_type() == DataType::Utf8
            && predicate_reads.contains(name)
            && !wanted.contains(name)
            && compared()
        {
            dictionaries.push((i, name));
        }
    }
    let footer = if views.is_empty() && dictionaries.is_empty() {
        footer
    } else {
        let indices = |columns: Vec<(usize, &String)>| columns.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        decoded_as(path, &footer, &indices(views), &indices(dictionaries))?
    };
    let mut read = wanted.clone();
    for c in predicate_reads {
        if !read.contains(&c) {
            read.push(c);
        }
    }
    let mut read = read.iter().map(index).collect::<Result<Vec<_>>>()?;
    let meta = footer.metadata().clone();
    let fast: Vec<(usize, usize)> = read
        .iter()
        .filter_map(|&root| crate::fixed::leaf(&meta, root, file_schema.field(root).data_type()).map(|l| (root, l)))
        .collect();
    // A batch needs a column to count its rows: with none read, the
    // file's first is decoded.
    if read.is_empty() {
        read.push(0);
    }
    let reading = Reading {
        path,
        file: &file,
        footer: &footer,
        row_groups,
    };
    let (batch, after) = reading.columns(&read, &fast, conjuncts, keys)?;
    Ok(Scanned {
        batch,
        filter: after.into_iter().reduce(Expr::and),
        wanted,
    })
}

/// Whether `conjunct` compares column `name` with a value.
fn compares_with_value(conjunct: &Expr, name: &str) -> bool {
    let Expr::Binary { left, op, right } = conjunct else {
        return false;
    };
    let column = |e: &Expr| matches!(e, Expr::Column(n) if n == name);
    let value = |e: &Expr| matches!(e, Expr::Literal(_));
    op.is_comparison() && ((column(left) && value(right)) || (value(left) && column(right)))
}

/// `builder` reading row groups `row_groups`, in one batch where it can.
fn of_row_groups<R: ChunkReader>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    row_groups: &[usize],
) -> ParquetRecordBatchReaderBuilder<R> {
    let rows: i64 = row_groups
        .iter()
        .filter_map(|&g| builder.metadata().row_groups().get(g))
        .map(|g| g.num_rows())
        .sum();
    builder
        .with_row_groups(row_groups.to_vec())
        .with_batch_size(usize::try_from(rows).unwrap_or(1 << 20).clamp(1, 1 << 20))
}

/// Row groups of one Parquet file being read.
struct Reading<'a> {
    path: &'a str,
    file: &'a Arc<Bytes>,
    footer: &'a ArrowReaderMetadata,
    row_groups: &'a [usize],
}

impl Reading<'_> {
    /// Root columns `roots` of the rows `selection` keeps (all when
    /// `None`), in the file's order: those of `fast` (root, leaf) decoded
    /// by [`crate::fixed`], the others by parquet-rs.
    fn decode(
        &self,
        roots: &[usize],
        fast: &[(usize, usize)],
        selection: Option<&BooleanBuffer>,
    ) -> Result<Vec<(usize, ArrayRef)>> {
        let leaf = |root: usize| fast.iter().find(|f| f.0 == root).map(|f| f.1);
        let (own, theirs): (Vec<usize>, Vec<usize>) = roots.iter().partition(|&&r| leaf(r).is_some());
        let mut columns = Vec::with_capacity(roots.len());
        if !theirs.is_empty() {
            let builder =
                ParquetRecordBatchReaderBuilder::new_with_metadata(self.file.as_ref().clone(), self.footer.clone());
            let mask = ProjectionMask::roots(builder.parquet_schema(), theirs.iter().copied());
            let mut builder = of_row_groups(builder.with_projection(mask), self.row_groups);
            if let Some(selection) = selection {
                let keep = BooleanArray::new(selection.clone(), None);
                builder = builder.with_row_selection(RowSelection::from_filters(&[keep]));
            }
            let mut theirs = theirs;
            theirs.sort_unstable();
            let batch = decode(self.path, builder)?;
            columns.extend(theirs.into_iter().zip(batch.columns().iter().cloned()));
        }
        let schema = self.footer.schema();
        for root in own {
            let leaf = leaf(root).expect("one of fast");
            let field = schema.field(root);
            let array = crate::fixed::read(
                self.file,
                self.footer.metadata(),
                self.row_groups,
                leaf,
                field.data_type(),
                selection,
            )
            .map_err(|e| FrameError::file(self.path, format!("column {}: {e}", field.name())))?;
            columns.push((root, array));
        }
        columns.sort_unstable_by_key(|c| c.0);
        Ok(columns)
    }

    /// Root columns `columns` (in the file's order) as a batch.
    fn batch(&self, columns: Vec<(usize, ArrayRef)>) -> Result<RecordBatch> {
        let schema = self.footer.schema();
        let fields: Vec<Field> = columns.iter().map(|(r, _)| plain_field(schema.field(*r))).collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|c| c.1).collect(),
        )?)
    }

    /// Root columns `read` (those of `fast` decoded by [`crate::fixed`]),
    /// and the `conjuncts` still to apply. The conjuncts that read no
    /// decimal, and the key filter `keys`, are applied first, on their
    /// columns alone, each decoded once; where they keep under nine tenths
    /// of the rows, the other columns are decoded for the kept rows only:
    /// picking them from the dictionary or the page costs less than
    /// decoding every row and copying the kept ones afterwards (TPC-H q3's
    /// `lineitem` keeps 54% by its date and 3% once its orders are known).
    /// The conjuncts on decimals then apply to the kept rows (q6's discount
    /// and quantity, on the 15% of rows its dates keep), decoding their
    /// columns for those rows, and the rest is decoded for the rows left.
    /// parquet-rs' own row filter decodes a column twice when the predicate
    /// reads it and the output has it, as `orders`' dates in q3.
    fn columns(
        &self,
        read: &[usize],
        fast: &[(usize, usize)],
        conjuncts: Vec<Expr>,
        keys: Option<&KeyFilter>,
    ) -> Result<(RecordBatch, Vec<Expr>)> {
        let schema = self.footer.schema().clone();
        let name = |root: usize| schema.field(root).name();
        let decimal = |n: &String| {
            fast.iter()
                .any(|&(r, _)| name(r) == n && matches!(schema.field(r).data_type(), DataType::Decimal128(..)))
        };
        let (early, mut after): (Vec<Expr>, Vec<Expr>) = conjuncts.into_iter().partition(|c| {
            let read = c.columns();
            !read.is_empty() && !read.iter().any(decimal)
        });
        // The columns that decide which rows are kept, then the rest.
        let (first, rest): (Vec<usize>, Vec<usize>) = read.iter().partition(|&&r| {
            early.iter().any(|c| c.columns().contains(name(r))) || keys.is_some_and(|k| k.columns.contains(name(r)))
        });
        let mut columns: Vec<(usize, ArrayRef)> = Vec::with_capacity(read.len());
        let mut selection = None;
        if !first.is_empty() {
            let decoded = self.decode(&first, fast, None)?;
            let roots: Vec<usize> = decoded.iter().map(|c| c.0).collect();
            let mut batch = self.batch(decoded)?;
            let mut keep = match early.iter().cloned().reduce(Expr::and) {
                Some(test) => Some(crate::eval::keeps(&test, &batch)?.values().clone()),
                None => None,
            };
            if let Some(keys) = keys {
                keep = Some(keys.keeps(&batch, keep.as_ref())?.values().clone());
            }
            let keep = keep.expect("a conjunct or a key filter decides");
            if keep.count_set_bits() * 10 < keep.len() * 9 {
                batch = arrow_select::filter::filter_record_batch(&batch, &BooleanArray::new(keep.clone(), None))?;
                selection = Some(keep);
            } else {
                after.extend(early);
            }
            columns.extend(roots.into_iter().zip(batch.columns().iter().cloned()));
        }
        let mut rest = rest;
        if let Some(among) = selection.clone() {
            // The conjuncts that read only columns not decoded yet (those on
            // decimals) narrow the kept rows once more before the others are
            // decoded: q6's discount and quantity keep an eighth of the rows
            // its dates keep, so its prices are decoded for 2% of the rows.
            let unread = |c: &Expr| {
                let read = c.columns();
                !read.is_empty() && read.iter().all(|n| rest.iter().any(|&r| name(r) == n))
            };
            let second;
            (second, after) = after.into_iter().partition(unread);
            if let Some(test) = second.into_iter().reduce(Expr::and) {
                let deciding;
                (deciding, rest) = rest.iter().partition(|&&r| test.columns().contains(name(r)));
                let decoded = self.decode(&deciding, fast, Some(&among))?;
                let roots: Vec<usize> = decoded.iter().map(|c| c.0).collect();
                let batch = self.batch(decoded)?;
                let keep = crate::eval::keeps(&test, &batch)?;
                columns = columns
                    .into_iter()
                    .map(|(r, a)| Ok((r, arrow_select::filter::filter(&a, &keep)?)))
                    .collect::<Result<_>>()?;
                let batch = arrow_select::filter::filter_record_batch(&batch, &keep)?;
                columns.extend(roots.into_iter().zip(batch.columns().iter().cloned()));
                selection = Some(spread(&among, keep.values()));
            }
        }
        if !rest.is_empty() {
            columns.extend(self.decode(&rest, fast, selection.as_ref())?);
        }
        columns.sort_unstable_by_key(|c| c.0);
        Ok((self.batch(columns)?, after))
    }
}

/// The rows of `among` that `keep` (a bit per row `among` keeps) keeps.
fn spread(among: &BooleanBuffer, keep: &BooleanBuffer) -> BooleanBuffer {
    let mut words = vec![0u64; among.len().div_ceil(64)];
    for (j, row) in among.set_indices().enumerate() {
        words[row / 64] |= u64::from(keep.value(j)) << (row % 64);
    }
    BooleanBuffer::new(words.into(), 0, among.len())
}

/// `footer` reading columns `views` (utf8) as string views and columns
/// `dictionaries` (utf8) as dictionaries.
fn decoded_as(
    path: &str,
    footer: &ArrowReaderMetadata,
    views: &[usize],
    dictionaries: &[usize],
) -> Result<ArrowReaderMetadata> {
    let fields: Vec<Field> = footer
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.as_ref().clone();
            if views.contains(&i) {
                f.with_data_type(DataType::Utf8View)
            } else if dictionaries.contains(&i) {
                f.with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                ))
            } else {
                f
            }
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
    ArrowReaderMetadata::try_new(footer.metadata().clone(), options).map_err(|e| FrameError::file(path, e))
}

/// `batch` with its string-view columns as plain strings.
fn plain_strings(batch: RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| *f.data_type() == DataType::Utf8View)
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match c.as_any().downcast_ref::<StringViewArray>() {
            Some(views) => {
                fields.push(f.as_ref().clone().with_data_type(DataType::Utf8));
                columns.push(Arc::new(strings_of_views(views)?) as ArrayRef);
            }
            None => {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// String views as plain strings. A string of up to 12 bytes lies in its
/// view; it is copied as a fixed 12 bytes (the next string overwrites the
/// excess), without a copy call of its own length per row.
fn strings_of_views(views: &StringViewArray) -> Result<StringArray> {
    let nulls = views.nulls().filter(|n| n.null_count() > 0);
    let len = |row: usize, view: u128| {
        if nulls.is_some_and(|n| n.is_null(row)) {
            0
        } else {
            view as u32 as usize
        }
    };
    let total: usize = views.views().iter().enumerate().map(|(row, &v)| len(row, v)).sum();
    if i32::try_from(total).is_err() {
        return Ok(arrow_cast::cast(views, &DataType::Utf8)?.as_string::<i32>().clone());
    }
    let mut bytes = vec![0u8; total + 12];
    let mut offsets = Vec::with_capacity(views.len() + 1);
    offsets.push(0i32);
    let mut at = 0;
    for (row, &view) in views.views().iter().enumerate() {
        let n = len(row, view);
        if n <= 12 {
            let inline: [u8; 12] = view.to_le_bytes()[4..].try_into().expect("12 bytes");
            let slot: &mut [u8; 12] = (&mut bytes[at..at + 12]).try_into().expect("12 bytes");
            *slot = inline;
        } else {
            let view = ByteView::from(view);
            let buffer = &views.data_buffers()[view.buffer_index as usize];
            bytes[at..at + n].copy_from_slice(&buffer[view.offset as usize..][..n]);
        }
        at += n;
        offsets.push(at as i32);
    }
    bytes.truncate(total);
    let offsets = OffsetBuffer::new(offsets.into());
    // SAFETY: the offsets rise from 0 to the bytes' length, and the bytes
    // between two offsets are one value of a string-view array, valid
    // UTF-8 (arrow checks that when a view array is made), so every value
    // is valid UTF-8; the nulls are the views' own, of the same length.
    Ok(unsafe { StringArray::new_unchecked(offsets, bytes.into(), views.nulls().cloned()) })
}

/// Footers kept by [`footer`]: a file's are parsed once per process, not
/// once per task (a task reads a few of its row groups) nor once per query
/// planned (TPC-H q5 at SF1 names 34 files: 1.25 ms of planning, 0.3 with
/// their footers kept).
const FOOTERS_KEPT: usize = 64;

/// The footer of the file at `path`, open as `file`: kept from an earlier
/// read while the file's length and modification time are unchanged.
fn footer(path: &str, file: &File) -> Result<ArrowReaderMetadata> {
    type Footers = Vec<(String, (u64, std::time::SystemTime), ArrowReaderMetadata)>;
    static KEPT: std::sync::Mutex<Footers> = std::sync::Mutex::new(Vec::new());
    let stat = file.metadata().map_err(|e| FrameError::file(path, e))?;
    let version = (stat.len(), stat.modified().map_err(|e| FrameError::file(path, e))?);
    let mut kept = KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, _, meta)) = kept.iter().find(|(p, v, _)| p == path && *v == version) {
        return Ok(meta.clone());
    }
    let meta = ArrowReaderMetadata::load(file, ArrowReaderOptions::new())
        .map_err(|e| FrameError::file(path, format!("not a readable Parquet file: {e}")))?;
    kept.retain(|(p, _, _)| p != path);
    if kept.len() >= FOOTERS_KEPT {
        kept.remove(0);
    }
    kept.push((path.to_string(), version, meta.clone()));
    Ok(meta)
}

/// The bytes of `file` (at `path`), mapped: its pages are read where the
/// page cache holds them, without a copy.
fn mapped(path: &str, file: &File) -> Result<Bytes> {
    // SAFETY: the map is read only. A file truncated while mapped would
    // fault on the lost pages (as with every reader that maps its input).
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| FrameError::file(path, e))?;
    Ok(Bytes::from_owner(map))
}

/// Every batch `builder` reads, as one.
fn decode<R: ChunkReader + 'static>(path: &str, builder: ParquetRecordBatchReaderBuilder<R>) -> Result<RecordBatch> {
    let reader = builder.build().map_err(|e| FrameError::file(path, e))?;
    let schema = Arc::new(plain_schema(&arrow_array::RecordBatchReader::schema(&reader)));
    let batches = reader
        .map(|b| b.map_err(|e| FrameError::file(path, e)))
        .collect::<Result<Vec<_>>>()?;
    Ok(match batches.len() {
        1 => RecordBatch::try_new(schema.clone(), batches[0].columns().to_vec())?,
        _ => arrow_select::concat::concat_batches(&schema, &batches)?,
    })
}

/// The named columns of `batch`, in that order.
pub fn project_names(batch: &RecordBatch, names: &[String]) -> Result<RecordBatch> {
    let mut indices = Vec::with_capacity(names.len());
    for n in names {
        indices.push(batch.schema_ref().index_of(n).map_err(|_| FrameError::ColumnNotFound {
            name: n.clone(),
            schema: batch.schema_ref().as_ref().clone(),
        })?);
    }
    Ok(batch.project(&indices)?)
}

/// The schema of a CSV file with a header row, inferred from its first
/// 1000 rows.
pub fn infer_csv_schema(path: &str) -> Result<Schema> {
    let file = File::open(path).map_err(|e| FrameError::file(path, e))?;
    let (schema, _) = arrow_csv::reader::Format::default()
        .with_header(true)
        .infer_schema(file, Some(1000))
        .map_err(|e| FrameError::file(path, e))?;
    Ok(schema)
}

/// Reads a CSV file with a header row as `schema`.
pub fn read_csv(path: &str, schema: SchemaRef) -> Result<RecordBatch> {
    let file = File::open(path).map_err(|e| FrameError::file(path, e))?;
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .with_batch_size(1 << 16)
        .build(file)
        .map_err(|e| FrameError::file(path, e))?;
    let batches = reader
        .map(|b| b.map_err(|e| FrameError::file(path, e)))
        .collect::<Result<Vec<_>>>()?;
    Ok(arrow_select::concat::concat_batches(&schema, &batches)?)
}

/// Writes `batch` as the Parquet file `path` (snappy), creating its
/// directory; returns the rows written.
pub fn write_parquet(batch: &RecordBatch, path: &str) -> Result<u64> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| FrameError::file(dir.display().to_string(), e))?;
    }
    let file = File::create(path).map_err(|e| FrameError::file(path, e))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))
        .map_err(|e| FrameError::file(path, e))?;
    writer.write(batch).map_err(|e| FrameError::file(path, e))?;
    writer.close().map_err(|e| FrameError::file(path, e))?;
    Ok(batch.num_rows() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{col, lit};
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::DataType;

    fn batch(range: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("a", DataType::Int64, false),
                Field::new("s", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int64Array::from_iter_values(range.clone())),
                Arc::new(StringArray::from_iter_values(range.map(|i| format!("v{i}")))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn strings_read_as_dictionaries_with_or_without_dictionary_pages() {
        let dir = tempfile::tempdir().unwrap();
        for dictionary in [true, false] {
            let path = dir.path().join(format!("d-{dictionary}.parquet")).display().to_string();
            let props = parquet::file::properties::WriterProperties::builder()
                .set_dictionary_enabled(dictionary)
                .set_max_row_group_row_count(Some(100))
                .build();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), batch(0..1).schema(), Some(props))
                    .unwrap();
            w.write(&batch(0..300)).unwrap();
            w.close().unwrap();
            let names = ["s".to_string()];
            let predicate = col("a").lt(lit(250));
            let (read, filter) = read_parquet_unfiltered(&path, &[0, 1, 2], None, Some(&predicate), &names).unwrap();
            assert!(matches!(
                read.schema().field_with_name("s").unwrap().data_type(),
                DataType::Dictionary(..)
            ));
            let plain = arrow_cast::cast(read.column_by_name("s").unwrap(), &DataType::Utf8).unwrap();
            let kept = match filter {
                Some(p) => crate::eval::predicate(&p, &read).unwrap().true_count(),
                None => read.num_rows(),
            };
            assert_eq!(kept, 250, "dictionary pages: {dictionary}");
            let want: Vec<String> = (0..read.num_rows() as i64).map(|i| format!("v{i}")).collect();
            let got: Vec<&str> = plain.as_string::<i32>().iter().map(|s| s.unwrap()).collect();
            assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    /// `batch` written to `path` in row groups of `rows` rows.
    fn write_row_groups(path: &str, batch: &RecordBatch, rows: usize) {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows))
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn a_key_filter_keeps_the_rows_a_build_side_can_match() {
        use crate::broadcast::Built;
        use crate::join::IntIndex;
        use arrow_array::{Decimal128Array, Int32Array};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.parquet").display().to_string();
        let n = 1000i64;
        let keys = Int64Array::from_iter((0..n).map(|i| (i % 13 != 0).then_some(i / 3)));
        // Precision 20: stored as fixed-size binary, read by `crate::fixed`.
        let prices = Decimal128Array::from_iter_values((0..n).map(|i| i128::from(i) * 7))
            .with_precision_and_scale(20, 2)
            .unwrap();
        let flags = StringArray::from_iter_values((0..n).map(|i| ["A", "N", "R"][i as usize % 3]));
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(keys) as ArrayRef),
            ("p", Arc::new(prices) as _),
            ("f", Arc::new(flags) as _),
        ])
        .unwrap();
        write_row_groups(&path, &batch, 300);
        let build = RecordBatch::try_from_iter([(
            "b",
            Arc::new(Int32Array::from(vec![1, 2, 50, 51, 52, 300, 1000])) as ArrayRef,
        )])
        .unwrap();
        let index = IntIndex::build(&build, &["b".to_string()]).unwrap();
        let built = Arc::new(Built { batch: build, index });
        let filter = KeyFilter::new(&built, &["k".to_string()]).unwrap();
        let groups = [0, 1, 2, 3];
        for columns in [vec!["k"], vec!["k", "p"]] {
            for predicate in [None, Some(col("f").neq(lit("R")))] {
                let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
                let all = read_parquet(&path, &groups, Some(&columns), predicate.as_ref(), None).unwrap();
                let got = read_parquet(&path, &groups, Some(&columns), predicate.as_ref(), Some(&filter)).unwrap();
                let want = arrow_select::filter::filter_record_batch(&all, &filter.keeps(&all, None).unwrap()).unwrap();
                assert_eq!(got, want, "{columns:?} where {predicate:?}");
                assert!(
                    (1..all.num_rows() / 10).contains(&got.num_rows()),
                    "{} rows",
                    got.num_rows()
                );
            }
        }
    }

    #[test]
    fn decimal_conjuncts_narrow_the_rows_before_the_rest_is_decoded() {
        use arrow_array::Decimal128Array;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet").display().to_string();
        let n = 2000i64;
        let decimal = |f: fn(i64) -> i64| {
            Arc::new(
                // Precision 20: stored as fixed-size binary, read by `crate::fixed`.
                Decimal128Array::from_iter_values((0..n).map(|i| i128::from(f(i))))
                    .with_precision_and_scale(20, 2)
                    .unwrap(),
            ) as ArrayRef
        };
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef),
            ("p", decimal(|i| i * 7919 % 10_000)),
            ("q", decimal(|i| i % 11)),
            (
                "s",
                Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("s{i}")))) as _,
            ),
        ])
        .unwrap();
        write_row_groups(&path, &batch, 700);
        // The key keeps a quarter, the decimals a fifth of those: the
        // prices and strings are decoded for the rows all three keep.
        let predicate = (col("k") % lit(4))
            .eq(lit(1))
            .and(col("q").lt_eq(lit(0.03)))
            .and(col("p").gt(lit(12.5)));
        let groups = [0, 1, 2];
        let want = crate::eval::filter(&batch, &predicate).unwrap();
        assert!((50..400).contains(&want.num_rows()), "{} rows", want.num_rows());
        for columns in [vec!["k", "p", "s"], vec!["s"], vec!["p", "q"]] {
            let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
            let got = read_parquet(&path, &groups, Some(&columns), Some(&predicate), None).unwrap();
            assert_eq!(got, project_names(&want, &columns).unwrap(), "{columns:?}");
            let (read, rest) = read_parquet_unfiltered(&path, &groups, Some(&columns), Some(&predicate), &[]).unwrap();
            assert!(rest.is_none(), "{rest:?} left to apply");
            assert_eq!(
                project_names(&read, &columns).unwrap(),
                project_names(&want, &columns).unwrap()
            );
        }
    }

    #[test]
    fn a_rewritten_file_is_planned_from_its_new_footer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.parquet").display().to_string();
        let rows =
            |n: i64| RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef)]);
        write_row_groups(&path, &rows(10).unwrap(), 4);
        let planned = |p: &str| open_parquet(p).unwrap().files[0].metadata.file_metadata().num_rows();
        assert_eq!(planned(&path), 10);
        assert_eq!(planned(&path), 10, "kept");
        write_row_groups(&path, &rows(25).unwrap(), 4);
        assert_eq!(planned(&path), 25);
        let read = read_parquet(&path, &[0, 1, 2, 3, 4, 5, 6], None, None, None).unwrap();
        assert_eq!(read.num_rows(), 25);
    }

    #[test]
    fn globs_match() {
        assert!(glob_match("*.parquet", "a.1.parquet"));
        assert!(glob_match("a.*.parquet", "a.1.parquet"));
        assert!(!glob_match("b*", "a.1.parquet"));
        assert!(glob_match("x", "x"));
    }

    #[test]
    fn parquet_round_trips_with_projection_predicate_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet").display().to_string();
        // Three row groups: 0..100, 100..200, 200..300.
        let file = File::create(&path).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch(0..1).schema(), Some(props)).unwrap();
        w.write(&batch(0..300)).unwrap();
        w.close().unwrap();
        let ds = open_parquet(&dir.path().join("*.parquet").display().to_string()).unwrap();
        assert_eq!(ds.files.len(), 1);
        assert_eq!(ds.files[0].metadata.num_row_groups(), 3);
        let keep = prune_row_groups(
            &ds.files[0],
            &ds.schema,
            &[col("a").gt_eq(lit(150)), lit(250).gt(col("a"))],
        );
        assert_eq!(keep, [1, 2]);
        assert_eq!(
            prune_row_groups(&ds.files[0], &ds.schema, &[col("a").eq(lit(1000))]),
            Vec::<usize>::new()
        );
        let pred = col("a").gt_eq(lit(150));
        let b = read_parquet(&path, &keep, Some(&["s".to_string()]), Some(&pred), None).unwrap();
        assert_eq!(b.num_columns(), 1);
        assert_eq!(b.num_rows(), 150);
        // Read as views (the predicate does not read it), returned as utf8.
        let want: Vec<String> = (150..300).map(|i| format!("v{i}")).collect();
        assert_eq!(
            b.column(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(),
            want
        );
        // Conjuncts on two columns, one on none, applied while decoding;
        // the output in the asked order, a predicate column among it.
        let s_ends_in_7 = col("s").ends_with("7");
        let pred = col("a")
            .lt(lit(120))
            .and(s_ends_in_7)
            .and(lit(true))
            .and(col("a").gt(lit(5)));
        let all = [0, 1, 2];
        let b = read_parquet(
            &path,
            &all,
            Some(&["s".to_string(), "a".to_string()]),
            Some(&pred),
            None,
        )
        .unwrap();
        let a: Vec<i64> = b
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec();
        assert_eq!(a, [7, 17, 27, 37, 47, 57, 67, 77, 87, 97, 107, 117]);
        assert_eq!(b.schema().field(0).name(), "s");
        // No column read: only the count of the rows kept.
        let b = read_parquet(&path, &all, Some(&[]), Some(&col("a").lt(lit(42))), None).unwrap();
        assert_eq!((b.num_columns(), b.num_rows()), (0, 42));
        let err = read_parquet(&path, &[0], Some(&["zz".to_string()]), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("zz") && err.contains("a: Int64"), "{err}");
        let missing = open_parquet("/nonexistent/x.parquet").unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/x.parquet"), "{missing}");
        std::fs::write(dir.path().join("bad.parquet"), b"not parquet").unwrap();
        let bad = open_parquet(&dir.path().join("bad.parquet").display().to_string())
            .unwrap_err()
            .to_string();
        assert!(bad.contains("bad.parquet") && bad.contains("Parquet"), "{bad}");
    }

    #[test]
    fn string_views_become_plain_strings() {
        let values = [
            Some("a"),
            None,
            Some(""),
            Some("twelve bytes"),
            Some("thirteen byte"),
            Some("a string well past the inline twelve bytes"),
            Some("é ü"),
        ];
        let views = StringViewArray::from_iter(values);
        let plain = strings_of_views(&views).unwrap();
        assert_eq!(plain, StringArray::from_iter(values));
        let sliced = strings_of_views(&views.slice(3, 3)).unwrap();
        assert_eq!(sliced, StringArray::from_iter(values[3..6].iter().copied()));
    }

    #[test]
    fn csv_reads_with_inference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv").display().to_string();
        std::fs::write(&path, "a,s\n1,x\n2,y\n").unwrap();
        let schema = Arc::new(infer_csv_schema(&path).unwrap());
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(read_csv(&path, schema).unwrap().num_rows(), 2);
    }
}
