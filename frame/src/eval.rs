//! Evaluating expressions on a `RecordBatch` with arrow-rs compute, and
//! the type rules they follow: integers widen to int64; arithmetic with a
//! float or decimal is done in float64 (decimal products would overflow
//! decimal128's precision in a few steps); a literal compared with a
//! column takes the column's type when it converts back unchanged.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, BooleanArray, Datum, RecordBatch, Scalar as ArrowScalar, new_null_array};
use arrow_schema::DataType;

use crate::error::{FrameError, Result};
use crate::expr::{BinaryOp, Expr, Scalar, StringOp};

/// A value during evaluation: a column or one value for every row.
#[derive(Debug, Clone)]
pub enum Columnar {
    /// One value per row.
    Array(ArrayRef),
    /// One value (an array of length one) standing for every row.
    Scalar(ArrayRef),
}

impl Columnar {
    fn data_type(&self) -> &DataType {
        match self {
            Columnar::Array(a) | Columnar::Scalar(a) => a.data_type(),
        }
    }

    fn datum(&self) -> Box<dyn Datum + '_> {
        match self {
            Columnar::Array(a) => Box::new(a),
            Columnar::Scalar(a) => Box::new(ArrowScalar::new(a)),
        }
    }

    /// As an array of `rows` rows.
    pub fn into_array(self, rows: usize) -> Result<ArrayRef> {
        match self {
            Columnar::Array(a) => Ok(a),
            Columnar::Scalar(a) => {
                if a.is_null(0) {
                    return Ok(new_null_array(a.data_type(), rows));
                }
                let indices = arrow_array::UInt32Array::from(vec![0u32; rows]);
                Ok(arrow_select::take::take(&a, &indices, None)?)
            }
        }
    }

    fn cast(self, to: &DataType) -> Result<Columnar> {
        if self.data_type() == to {
            return Ok(self);
        }
        Ok(match self {
            Columnar::Array(a) => Columnar::Array(cast(&a, to)?),
            Columnar::Scalar(a) => Columnar::Scalar(cast(&a, to)?),
        })
    }
}

/// `arrow_cast::cast`, with decimal128 to float64 converting each value
/// of at most 53 bits through i64 (one instruction, not a 128-bit software
/// conversion, and the same single rounding): TPC-H's prices and
/// discounts go through it in every query.
pub fn cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if let (DataType::Decimal128(_, scale), DataType::Float64) = (array.data_type(), to) {
        let (scale, div) = (i32::from(*scale), 10f64.powi(i32::from(*scale)));
        let decimals = array.as_primitive::<arrow_array::types::Decimal128Type>();
        let floats: arrow_array::Float64Array = decimals.unary(|v| {
            let low = v as i64;
            if i128::from(low) == v && low.unsigned_abs() < 1 << 53 && (0..=22).contains(&scale) {
                low as f64 / div
            } else {
                wide_decimal(v, scale)
            }
        });
        return Ok(Arc::new(floats));
    }
    Ok(arrow_cast::cast(array, to)?)
}

/// A decimal beyond 53 bits, converted as arrow converts it, out of line:
/// inlined, the compiler would convert every value from i128 (a software
/// routine) and keep the result only where it is needed.
#[cold]
#[inline(never)]
fn wide_decimal(v: i128, scale: i32) -> f64 {
    arrow_cast::cast::single_decimal_to_float_lossy::<arrow_array::types::Decimal128Type, _>(&|x| x as f64, v, scale)
}

/// Evaluates `expr` on `batch` to an array of the batch's length.
pub fn evaluate(expr: &Expr, batch: &RecordBatch) -> Result<ArrayRef> {
    Evaluator::new(batch).evaluate(expr)
}

/// Evaluates a predicate to a boolean mask (nulls count as false in filters).
pub fn predicate(expr: &Expr, batch: &RecordBatch) -> Result<BooleanArray> {
    let array = evaluate(expr, batch)?;
    array
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| FrameError::TypeMismatch {
            op: format!("filter {expr}"),
            left: array.data_type().clone(),
            right: DataType::Boolean,
        })
}

/// Which rows of `batch` `expr` keeps: [`predicate`] with nulls false.
pub fn keeps(expr: &Expr, batch: &RecordBatch) -> Result<BooleanArray> {
    let mask = predicate(expr, batch)?;
    Ok(match mask.null_count() {
        0 => mask,
        _ => arrow_select::filter::prep_null_mask_filter(&mask),
    })
}

/// The batch's rows where `expr` is true.
pub fn filter(batch: &RecordBatch, expr: &Expr) -> Result<RecordBatch> {
    let (batch, mask) = narrow(batch, expr)?;
    Ok(match mask {
        Some(mask) => arrow_select::filter::filter_record_batch(&batch, &mask)?,
        None => batch,
    })
}

/// The rows of `batch` where `expr` is true, as a batch holding them and
/// the mask of them in it (`None`: all its rows; a null counts as false).
/// A conjunction is evaluated one conjunct at a time, and once fewer than
/// a quarter of the rows remain they are taken out, so the conjuncts after
/// read only them: TPC-H q6's year of ship dates keeps 15% of `lineitem`,
/// and its discount and quantity tests read those.
pub fn narrow(batch: &RecordBatch, expr: &Expr) -> Result<(RecordBatch, Option<BooleanArray>)> {
    let mut batch = batch.clone();
    let mut mask: Option<BooleanArray> = None;
    for conjunct in expr.clone().conjuncts() {
        let mut test = keeps(&conjunct, &batch)?;
        if let Some(before) = mask.take() {
            test = arrow_arith::boolean::and(&before, &test)?;
        }
        if test.true_count() * 4 < test.len() {
            batch = arrow_select::filter::filter_record_batch(&batch, &test)?;
        } else {
            mask = Some(test);
        }
    }
    Ok((batch, mask.filter(|m| m.true_count() < m.len())))
}

/// A literal as a one-row array.
pub(crate) fn scalar_array(s: &Scalar) -> ArrayRef {
    use arrow_array::{Date32Array, Float64Array, Int64Array, StringArray};
    match s {
        Scalar::Null => new_null_array(&DataType::Null, 1),
        Scalar::Boolean(b) => Arc::new(BooleanArray::from(vec![*b])),
        Scalar::Int64(i) => Arc::new(Int64Array::from(vec![*i])),
        Scalar::Float64(x) => Arc::new(Float64Array::from(vec![*x])),
        Scalar::Utf8(x) => Arc::new(StringArray::from(vec![x.as_str()])),
        Scalar::Date32(d) => Arc::new(Date32Array::from(vec![*d])),
    }
}

/// Evaluates expressions on one batch, computing each shared
/// subexpression once: `revenue` in `sum(revenue)` and
/// `sum(revenue * (1 + tax))`, and the casts inside it, are computed once
/// for the batch.
pub struct Evaluator<'b> {
    batch: &'b RecordBatch,
    memo: Vec<(Expr, Columnar)>,
}

impl<'b> Evaluator<'b> {
    /// An evaluator over `batch`, remembering nothing yet.
    pub fn new(batch: &'b RecordBatch) -> Self {
        Evaluator {
            batch,
            memo: Vec::new(),
        }
    }

    /// Evaluates `expr` to an array of the batch's length.
    pub fn evaluate(&mut self, expr: &Expr) -> Result<ArrayRef> {
        self.eval(expr)?.into_array(self.batch.num_rows())
    }

    fn eval(&mut self, expr: &Expr) -> Result<Columnar> {
        let shared = matches!(
            expr,
            Expr::Binary { .. } | Expr::Cast(..) | Expr::Year(_) | Expr::Str(..) | Expr::When { .. }
        );
        if shared && let Some((_, v)) = self.memo.iter().find(|(e, _)| e == expr) {
            return Ok(v.clone());
        }
        let batch = self.batch;
        let value = match expr {
            Expr::Column(name) => {
                let i = batch
                    .schema_ref()
                    .index_of(name)
                    .map_err(|_| FrameError::ColumnNotFound {
                        name: name.clone(),
                        schema: batch.schema_ref().as_ref().clone(),
                    })?;
                Columnar::Array(batch.column(i).clone())
            }
            Expr::Literal(s) => Columnar::Scalar(scalar_array(s)),
            Expr::Alias(e, _) => self.eval(e)?,
            Expr::Binary { left, op, right } => binary(self.eval(left)?, *op, self.eval(right)?, batch.num_rows())?,
            Expr::Not(e) => {
                let v = self.eval(e)?;
                let a = bool_array(v, batch.num_rows(), "not")?;
                Columnar::Array(Arc::new(arrow_arith::boolean::not(&a)?))
            }
            Expr::IsNull(e) => {
                let a = self.eval(e)?.into_array(batch.num_rows())?;
                Columnar::Array(Arc::new(arrow_arith::boolean::is_null(&a)?))
            }
            Expr::IsNotNull(e) => {
                let a = self.eval(e)?.into_array(batch.num_rows())?;
                Columnar::Array(Arc::new(arrow_arith::boolean::is_not_null(&a)?))
            }
            Expr::Cast(e, to) => self.eval(e)?.cast(to)?,
            Expr::Year(e) => {
                let a = self.eval(e)?.into_array(batch.num_rows())?;
                Columnar::Array(arrow_arith::temporal::date_part(
                    &a,
                    arrow_arith::temporal::DatePart::Year,
                )?)
            }
            Expr::Str(e, op, pattern) => {
                let v = self.eval(e)?.cast(&DataType::Utf8)?;
                let a = v.into_array(batch.num_rows())?;
                let p = arrow_array::StringArray::new_scalar(pattern.as_str());
                let out = match op {
                    StringOp::StartsWith => arrow_string::like::starts_with(&a, &p)?,
                    StringOp::EndsWith => arrow_string::like::ends_with(&a, &p)?,
                    StringOp::Contains => arrow_string::like::contains(&a, &p)?,
                };
                Columnar::Array(Arc::new(out))
            }
            Expr::When { cases, otherwise } => {
                let schema = batch.schema();
                let out_type = expr.data_type(&schema)?;
                let rows = batch.num_rows();
                let mut result = self.eval(otherwise)?.cast(&out_type)?.into_array(rows)?;
                for (cond, value) in cases.iter().rev() {
                    let mask = bool_array(self.eval(cond)?, rows, "when")?;
                    let v = self.eval(value)?.cast(&out_type)?.into_array(rows)?;
                    result = arrow_select::zip::zip(&mask, &v, &result)?;
                }
                Columnar::Array(result)
            }
            Expr::Agg(..) => {
                return Err(FrameError::Plan(format!(
                    "the aggregate {expr} can only be used in group_by().agg() or a select of aggregates"
                )));
            }
        };
        if shared {
            self.memo.push((expr.clone(), value.clone()));
        }
        Ok(value)
    }
}

fn bool_array(v: Columnar, rows: usize, op: &str) -> Result<BooleanArray> {
    let t = v.data_type().clone();
    let v = if t == DataType::Null {
        v.cast(&DataType::Boolean)?
    } else {
        v
    };
    let a = v.into_array(rows)?;
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or(FrameError::TypeMismatch {
            op: op.into(),
            left: t,
            right: DataType::Boolean,
        })
}

fn is_int(t: &DataType) -> bool {
    t.is_integer()
}

fn is_numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The type two operands are brought to before `op` compares or combines
/// them; an error names both.
pub fn common_type(op: &str, l: &DataType, r: &DataType) -> Result<DataType> {
    if l == r {
        return Ok(l.clone());
    }
    if *l == DataType::Null {
        return Ok(r.clone());
    }
    if *r == DataType::Null {
        return Ok(l.clone());
    }
    if is_int(l) && is_int(r) {
        return Ok(DataType::Int64);
    }
    if is_numeric(l) && is_numeric(r) {
        return Ok(DataType::Float64);
    }
    if is_string(l) && is_string(r) {
        return Ok(DataType::Utf8);
    }
    // Dates against date strings.
    if matches!(l, DataType::Date32) && is_string(r) || matches!(r, DataType::Date32) && is_string(l) {
        return Ok(DataType::Date32);
    }
    Err(FrameError::TypeMismatch {
        op: op.into(),
        left: l.clone(),
        right: r.clone(),
    })
}

/// The result type of `l op r`.
pub fn binary_type(op: BinaryOp, l: &DataType, r: &DataType) -> Result<DataType> {
    let name = format!("{op:?}");
    match op {
        BinaryOp::And | BinaryOp::Or => {
            for t in [l, r] {
                if !matches!(t, DataType::Boolean | DataType::Null) {
                    return Err(FrameError::TypeMismatch {
                        op: name,
                        left: l.clone(),
                        right: r.clone(),
                    });
                }
            }
            Ok(DataType::Boolean)
        }
        op if op.is_comparison() => common_type(&name, l, r).map(|_| DataType::Boolean),
        _ => {
            let t = common_type(&name, l, r)?;
            if !is_numeric(&t) && t != DataType::Null {
                return Err(FrameError::TypeMismatch {
                    op: name,
                    left: l.clone(),
                    right: r.clone(),
                });
            }
            Ok(match t {
                DataType::Decimal128(..) | DataType::Decimal256(..) => DataType::Float64,
                t if t.is_integer() => DataType::Int64,
                t if t.is_floating() => DataType::Float64,
                t => t,
            })
        }
    }
}

/// A literal cast to `to` when it converts back to the same value (so
/// `decimal < 24` compares decimals, not floats).
pub(crate) fn literal_as(lit: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    let cast = arrow_cast::cast(lit, to).ok()?;
    if cast.is_null(0) != lit.is_null(0) {
        return None;
    }
    let back = arrow_cast::cast(&cast, lit.data_type()).ok()?;
    (back.to_data() == lit.to_data()).then_some(cast)
}

fn binary(l: Columnar, op: BinaryOp, r: Columnar, rows: usize) -> Result<Columnar> {
    let name = format!("{op:?}");
    if matches!(op, BinaryOp::And | BinaryOp::Or) {
        let (a, b) = (bool_array(l, rows, &name)?, bool_array(r, rows, &name)?);
        let out = if op == BinaryOp::And {
            arrow_arith::boolean::and_kleene(&a, &b)?
        } else {
            arrow_arith::boolean::or_kleene(&a, &b)?
        };
        return Ok(Columnar::Array(Arc::new(out)));
    }
    if op.is_comparison() {
        // A dictionary against one value: compared once per dictionary
        // value, then looked up by each row's key.
        let dictionary = |c: &Columnar| match c {
            Columnar::Array(a) => a
                .as_dictionary_opt::<Int32Type>()
                .map(|d| (d.values().clone(), d.keys().clone())),
            Columnar::Scalar(_) => None,
        };
        let compared = match (&l, &r) {
            (_, Columnar::Scalar(_)) => dictionary(&l).map(|(values, keys)| {
                let n = values.len();
                (binary(Columnar::Array(values), op, r.clone(), n), keys)
            }),
            (Columnar::Scalar(_), _) => dictionary(&r).map(|(values, keys)| {
                let n = values.len();
                (binary(l.clone(), op, Columnar::Array(values), n), keys)
            }),
            _ => None,
        };
        if let Some((on_values, keys)) = compared {
            let on_values = on_values?.into_array(0)?;
            return Ok(Columnar::Array(arrow_select::take::take(&on_values, &keys, None)?));
        }
    }
    let (lt, rt) = (l.data_type().clone(), r.data_type().clone());
    // A literal against a column: the literal takes the column's type where exact.
    let (l, r) = match (&l, &r) {
        (Columnar::Array(_), Columnar::Scalar(s)) if lt != rt && op.is_comparison() => match literal_as(s, &lt) {
            Some(s) => (l, Columnar::Scalar(s)),
            None => (l, r),
        },
        (Columnar::Scalar(s), Columnar::Array(_)) if lt != rt && op.is_comparison() => match literal_as(s, &rt) {
            Some(s) => (Columnar::Scalar(s), r),
            None => (l, r),
        },
        _ => (l, r),
    };
    let (lt, rt) = (l.data_type().clone(), r.data_type().clone());
    let target = if op.is_comparison() {
        common_type(&name, &lt, &rt)?
    } else {
        binary_type(op, &lt, &rt)?
    };
    let (l, r) = (l.cast(&target)?, r.cast(&target)?);
    let both_scalar = matches!((&l, &r), (Columnar::Scalar(_), Columnar::Scalar(_)));
    let (ld, rd) = (l.datum(), r.datum());
    let (ld, rd) = (ld.as_ref(), rd.as_ref());
    use arrow_ord::cmp;
    let out: ArrayRef = match op {
        BinaryOp::Eq => Arc::new(cmp::eq(ld, rd)?),
        BinaryOp::NotEq => Arc::new(cmp::neq(ld, rd)?),
        BinaryOp::Lt => Arc::new(cmp::lt(ld, rd)?),
        BinaryOp::LtEq => Arc::new(cmp::lt_eq(ld, rd)?),
        BinaryOp::Gt => Arc::new(cmp::gt(ld, rd)?),
        BinaryOp::GtEq => Arc::new(cmp::gt_eq(ld, rd)?),
        BinaryOp::Add => arrow_arith::numeric::add(ld, rd)?,
        BinaryOp::Sub => arrow_arith::numeric::sub(ld, rd)?,
        BinaryOp::Mul => arrow_arith::numeric::mul(ld, rd)?,
        BinaryOp::Div => arrow_arith::numeric::div(ld, rd)?,
        BinaryOp::Rem => arrow_arith::numeric::rem(ld, rd)?,
        BinaryOp::And | BinaryOp::Or => unreachable!("handled above"),
    };
    Ok(if both_scalar {
        Columnar::Scalar(out)
    } else {
        Columnar::Array(out)
    })
}

/// Days since the epoch of a `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Option<i32> {
    let mut parts = s.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

/// `YYYY-MM-DD` of days since the epoch.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    format!("{y:04}-{m:02}-{d:02}")
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{col, lit, lit_date, when};
    use arrow_array::{Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};

    #[test]
    fn a_dictionary_compares_as_its_values() {
        let plain = StringArray::from(vec![Some("R"), None, Some("A"), Some("R"), Some("N")]);
        let as_dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let dictionary = arrow_cast::cast(&plain, &as_dictionary).unwrap();
        let batch = |a: ArrayRef| RecordBatch::try_from_iter([("f", a)]).unwrap();
        for e in [col("f").eq(lit("R")), col("f").gt(lit("B")), lit("N").lt_eq(col("f"))] {
            let on_dictionary = predicate(&e, &batch(dictionary.clone())).unwrap();
            assert_eq!(
                on_dictionary,
                predicate(&e, &batch(Arc::new(plain.clone()))).unwrap(),
                "{e:?}"
            );
        }
    }

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("d", DataType::Decimal128(15, 2), false),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Date32, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3), Some(4)])),
                Arc::new(
                    Decimal128Array::from(vec![5, 6, 7, 2400])
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
                Arc::new(StringArray::from(vec![
                    Some("apple"),
                    Some("banana"),
                    None,
                    Some("cherry"),
                ])),
                Arc::new(Date32Array::from(vec![
                    parse_date("1994-01-01").unwrap(),
                    parse_date("1994-12-31").unwrap(),
                    parse_date("1995-01-01").unwrap(),
                    parse_date("1998-09-02").unwrap(),
                ])),
            ],
        )
        .unwrap()
    }

    fn bools(e: Expr) -> Vec<Option<bool>> {
        predicate(&e, &batch()).unwrap().iter().collect()
    }

    #[test]
    fn dates_round_trip() {
        for s in ["1970-01-01", "1994-01-01", "1998-09-02", "2000-02-29", "1969-12-31"] {
            assert_eq!(format_date(parse_date(s).unwrap()), s);
        }
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("1994-13-01"), None);
    }

    #[test]
    fn arithmetic_and_comparisons_coerce() {
        let a = evaluate(&(col("i") + lit(1)), &batch()).unwrap();
        let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), [Some(2), None, Some(4), Some(5)]);
        let p = evaluate(&(col("d") * (lit(1) - col("d"))), &batch()).unwrap();
        let p = p.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!((p.value(0) - 0.05 * 0.95).abs() < 1e-12);
        assert_eq!(
            bools(col("d").is_between(lit(0.05), lit(0.07))),
            [Some(true), Some(true), Some(true), Some(false)]
        );
        assert_eq!(
            bools(col("d").lt(lit(24))),
            [Some(true), Some(true), Some(true), Some(false)]
        );
        assert_eq!(
            bools(col("i").gt(lit(1.5))),
            [Some(false), None, Some(true), Some(true)]
        );
    }

    #[test]
    fn dates_strings_and_nulls() {
        let t = col("t");
        assert_eq!(
            bools(
                t.clone()
                    .gt_eq(lit_date("1994-01-01").unwrap())
                    .and(t.clone().lt(lit_date("1995-01-01").unwrap()))
            ),
            [Some(true), Some(true), Some(false), Some(false)]
        );
        assert_eq!(
            bools(t.clone().year().eq(lit(1994))),
            [Some(true), Some(true), Some(false), Some(false)]
        );
        assert_eq!(
            bools(t.lt_eq(lit("1994-12-31"))),
            [Some(true), Some(true), Some(false), Some(false)]
        );
        assert_eq!(
            bools(col("s").starts_with("b")),
            [Some(false), Some(true), None, Some(false)]
        );
        assert_eq!(
            bools(col("s").ends_with("y")),
            [Some(false), Some(false), None, Some(true)]
        );
        assert_eq!(
            bools(col("s").contains("an")),
            [Some(false), Some(true), None, Some(false)]
        );
        assert_eq!(
            bools(col("s").eq(lit("apple"))),
            [Some(true), Some(false), None, Some(false)]
        );
        assert_eq!(
            bools(col("i").is_null()),
            [Some(false), Some(true), Some(false), Some(false)]
        );
        assert_eq!(
            bools((!col("i").is_null()).and(col("s").is_not_null())),
            [Some(true), Some(false), Some(false), Some(true)]
        );
        let f = filter(&batch(), &col("i").gt(lit(1))).unwrap();
        assert_eq!(f.num_rows(), 2);
    }

    #[test]
    fn when_then_otherwise_and_cast() {
        let e = when(col("i").gt(lit(2)))
            .then(lit("big"))
            .when(col("i").is_null())
            .then(lit("none"))
            .otherwise(lit("small"));
        let a = evaluate(&e, &batch()).unwrap();
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [Some("small"), Some("none"), Some("big"), Some("big")]
        );
        let c = evaluate(&col("d").cast(DataType::Float64), &batch()).unwrap();
        assert_eq!(c.as_any().downcast_ref::<Float64Array>().unwrap().value(3), 24.0);
    }

    #[test]
    fn an_evaluator_computes_a_shared_subexpression_once() {
        let b = batch();
        let revenue = col("d") * (lit(1) - col("i"));
        let charge = revenue.clone() * (lit(1) + col("d"));
        let mut evaluator = Evaluator::new(&b);
        let first = evaluator.evaluate(&revenue).unwrap();
        let again = evaluator.evaluate(&revenue).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same array, not computed twice");
        assert_eq!(&evaluator.evaluate(&charge).unwrap(), &evaluate(&charge, &b).unwrap());
        assert!(
            !Arc::ptr_eq(&first, &evaluate(&revenue, &b).unwrap()),
            "a new evaluator remembers nothing"
        );
    }

    #[test]
    fn decimals_cast_to_floats_as_arrow_casts_them() {
        let values = [
            0,
            1,
            -1,
            2400,
            -99_999_999_999_999,
            i128::from(i64::MAX) + 7,
            i128::MIN / 3,
        ];
        for scale in [0, 2, 6] {
            let a: ArrayRef = Arc::new(
                Decimal128Array::from_iter(values.iter().map(|v| Some(*v)).chain([None]))
                    .with_precision_and_scale(38, scale)
                    .unwrap(),
            );
            let ours = cast(&a, &DataType::Float64).unwrap();
            assert_eq!(
                &ours,
                &arrow_cast::cast(&a, &DataType::Float64).unwrap(),
                "scale {scale}"
            );
        }
    }

    #[test]
    fn errors_name_columns_and_types() {
        let err = evaluate(&col("zz"), &batch()).unwrap_err().to_string();
        assert!(err.contains("zz") && err.contains("i: Int32"), "{err}");
        let err = evaluate(&(col("s") + lit(1)), &batch()).unwrap_err().to_string();
        assert!(err.contains("Utf8") && err.contains("Int64"), "{err}");
    }
}
