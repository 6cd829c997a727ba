//! Expressions on device columns, with the CPU's types and coercions
//! ([`crate::eval`]): columns, literals, `and`/`or`/`not` (Kleene),
//! `is_null`/`is_not_null`, comparisons of two values of one numeric or
//! date or decimal type (a literal taking the other side's type where it
//! converts exactly, as on the CPU), utf8 columns compared with a
//! literal, `starts_with`/`ends_with`/`contains` of utf8 columns, `year()`
//! of dates, `+ - * / %` on int64 or float64 (an integer division by
//! zero runs on the host, which reports it),
//! `when/then/otherwise` of booleans, integers, float64, dates and
//! decimals, and the casts these need (int32 to int64; integers and
//! decimals to float64, also as `cast()`). Anything else (other casts,
//! comparisons of two utf8 columns, utf8 results of `when`) is
//! [`Outcome::Host`]: the caller runs that step on the host. Integer `+ - *` wrap on overflow, and
//! `i64::MIN / -1` gives `i64::MIN`, where arrow-rs reports an error.

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use weft_kernels::elementwise::{self, CmpOp};
use weft_kernels::strings::{self, StrOp};
use weft_kernels::{Column, DType, cast, logic, select};

use super::batch::{DeviceBatch, kernel_error};
use crate::error::FrameError;
use crate::expr::{BinaryOp, Expr, Scalar, StringOp};

/// Why an expression did not evaluate on the device.
#[derive(Debug)]
pub enum Outcome {
    /// The device lacks a kernel for it: run it on the host (the reason).
    Host(String),
    /// It failed (as it would on the host).
    Failed(FrameError),
}

impl From<FrameError> for Outcome {
    fn from(e: FrameError) -> Self {
        Outcome::Failed(e)
    }
}

impl From<weft_kernels::KernelError> for Outcome {
    fn from(e: weft_kernels::KernelError) -> Self {
        Outcome::Failed(kernel_error(e))
    }
}

/// Result of a device evaluation.
pub type Eval<T> = std::result::Result<T, Outcome>;

fn host<T>(why: impl Into<String>) -> Eval<T> {
    Err(Outcome::Host(why.into()))
}

/// A value: a device column with its arrow type, or a literal.
enum Value {
    Array(Column, DataType),
    Scalar(ArrayRef),
}

/// Evaluates `expr` to a device column of the batch's length and its arrow type.
pub fn evaluate(expr: &Expr, batch: &DeviceBatch) -> Eval<(Column, DataType)> {
    match eval(expr, batch)? {
        Value::Array(c, t) => Ok((c, t)),
        Value::Scalar(s) => Ok((broadcast(&s, batch)?, s.data_type().clone())),
    }
}

/// A literal as a one-row array (the CPU's); a null literal has no type
/// the kernels can hold.
fn scalar_array(s: &Scalar) -> Eval<ArrayRef> {
    match s {
        Scalar::Null => host("a null literal"),
        s => Ok(crate::eval::scalar_array(s)),
    }
}

/// Any column of the batch, to take its length and device.
fn like(batch: &DeviceBatch) -> Eval<&Column> {
    match batch.columns().first() {
        Some(c) => Ok(c),
        None => host("a literal over a batch without columns"),
    }
}

/// A literal (one non-null value) as a column of the batch's length.
fn broadcast(s: &ArrayRef, batch: &DeviceBatch) -> Eval<Column> {
    let like = like(batch)?;
    if s.is_null(0) {
        return host("a null literal");
    }
    Ok(match s.data_type() {
        DataType::Boolean => logic::prefix_mask(like, if s.as_boolean().value(0) { like.len() } else { 0 })?,
        DataType::Int32 => logic::fill(like, DType::I32, s.as_primitive::<Int32Type>().value(0) as u32 as u64)?,
        DataType::Date32 => logic::fill(like, DType::I32, s.as_primitive::<Date32Type>().value(0) as u32 as u64)?,
        DataType::Int64 => logic::fill(like, DType::I64, s.as_primitive::<Int64Type>().value(0) as u64)?,
        DataType::Float32 => logic::fill(
            like,
            DType::F32,
            u64::from(s.as_primitive::<Float32Type>().value(0).to_bits()),
        )?,
        DataType::Float64 => logic::fill(like, DType::F64, s.as_primitive::<Float64Type>().value(0).to_bits())?,
        DataType::Decimal128(..) => match i64::try_from(s.as_primitive::<Decimal128Type>().value(0)) {
            Ok(v) => logic::fill(like, DType::I64, v as u64)?,
            Err(_) => return host("a decimal literal beyond 18 digits"),
        },
        other => return host(format!("a literal of type {other}")),
    })
}

fn eval(expr: &Expr, batch: &DeviceBatch) -> Eval<Value> {
    Ok(match expr {
        Expr::Column(name) => {
            let i = batch.schema().index_of(name).map_err(|_| FrameError::ColumnNotFound {
                name: name.clone(),
                schema: batch.schema().as_ref().clone(),
            })?;
            Value::Array(batch.columns()[i].clone(), batch.schema().field(i).data_type().clone())
        }
        Expr::Literal(s) => Value::Scalar(scalar_array(s)?),
        Expr::Alias(e, _) => eval(e, batch)?,
        Expr::Not(e) => Value::Array(logic::not(&boolean(eval(e, batch)?, batch)?)?, DataType::Boolean),
        Expr::IsNull(e) | Expr::IsNotNull(e) => match eval(e, batch)? {
            Value::Array(c, _) => Value::Array(
                logic::is_null(&c, matches!(expr, Expr::IsNotNull(_)))?,
                DataType::Boolean,
            ),
            Value::Scalar(_) => return host("is_null of a literal"),
        },
        Expr::Binary { left, op, right } => binary(eval(left, batch)?, *op, eval(right, batch)?, batch)?,
        Expr::Str(e, op, pattern) => match eval(e, batch)? {
            Value::Array(c, DataType::Utf8) => {
                let op = match op {
                    StringOp::StartsWith => StrOp::StartsWith,
                    StringOp::EndsWith => StrOp::EndsWith,
                    StringOp::Contains => StrOp::Contains,
                };
                Value::Array(strings::matches(&c, op, pattern)?, DataType::Boolean)
            }
            _ => return host(format!("{expr} of a value that is not a utf8 column")),
        },
        Expr::Cast(e, to) => match eval(e, batch)? {
            Value::Scalar(s) => Value::Scalar(crate::eval::cast(&s, to)?),
            v => Value::Array(to_column(v, to, batch)?, to.clone()),
        },
        Expr::Year(e) => match eval(e, batch)? {
            Value::Array(c, DataType::Date32) => Value::Array(strings::year(&c)?, DataType::Int32),
            _ => return host(format!("{expr} of a value that is not a date column")),
        },
        Expr::When { cases, otherwise } => {
            let out = expr.data_type(batch.schema())?;
            if !matches!(
                out,
                DataType::Boolean
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::Float64
                    | DataType::Date32
                    | DataType::Decimal128(..)
            ) {
                return host(format!("when/then/otherwise of {out}"));
            }
            // The last case first, as the CPU: an earlier case wins.
            let mut result = to_column(eval(otherwise, batch)?, &out, batch)?;
            for (condition, value) in cases.iter().rev() {
                let mask = boolean(eval(condition, batch)?, batch)?;
                let value = to_column(eval(value, batch)?, &out, batch)?;
                result = select::select(&mask, &value, &result)?;
            }
            Value::Array(result, out)
        }
        other => return host(format!("{other}")),
    })
}

fn boolean(v: Value, batch: &DeviceBatch) -> Eval<Column> {
    let (c, t) = match v {
        Value::Array(c, t) => (c, t),
        Value::Scalar(s) => {
            let t = s.data_type().clone();
            (broadcast(&s, batch)?, t)
        }
    };
    if t == DataType::Boolean {
        Ok(c)
    } else {
        Err(Outcome::Failed(FrameError::TypeMismatch {
            op: "a logical operator".into(),
            left: t,
            right: DataType::Boolean,
        }))
    }
}

fn cmp_op(op: BinaryOp) -> Option<CmpOp> {
    Some(match op {
        BinaryOp::Eq => CmpOp::Eq,
        BinaryOp::NotEq => CmpOp::Ne,
        BinaryOp::Lt => CmpOp::Lt,
        BinaryOp::LtEq => CmpOp::Le,
        BinaryOp::Gt => CmpOp::Gt,
        BinaryOp::GtEq => CmpOp::Ge,
        _ => return None,
    })
}

/// Brings a value to type `to`: a literal is cast on the host; a column
/// keeps its type, or goes from int32 to int64, or from an integer or a
/// decimal to float64 ([`weft_kernels::cast`], as [`crate::eval::cast`]).
fn to_column(v: Value, to: &DataType, batch: &DeviceBatch) -> Eval<Column> {
    match v {
        Value::Array(c, t) if &t == to => Ok(c),
        Value::Array(c, t) => Ok(match (&t, to) {
            (DataType::Int32, DataType::Int64) => cast::widen(&c)?,
            (DataType::Int32 | DataType::Int64, DataType::Float64) => cast::to_f64(&c, 1.0)?,
            (DataType::Decimal128(_, scale), DataType::Float64) => cast::to_f64(&c, 10f64.powi(i32::from(*scale)))?,
            _ => return host(format!("a cast of a column from {t} to {to}")),
        }),
        Value::Scalar(s) => {
            let s = if s.data_type() == to {
                s
            } else {
                crate::eval::cast(&s, to)?
            };
            broadcast(&s, batch)
        }
    }
}

/// A utf8 column compared with a utf8 literal (byte-wise, as the CPU
/// orders strings); two utf8 columns run on the host.
fn utf8_compare(l: Value, cmp: CmpOp, r: Value) -> Eval<Value> {
    let (c, s, cmp) = match (l, r) {
        (Value::Array(c, _), Value::Scalar(s)) => (c, s, cmp),
        // `literal < column` is `column > literal`.
        (Value::Scalar(s), Value::Array(c, _)) => (
            c,
            s,
            match cmp {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::Le => CmpOp::Ge,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::Ge => CmpOp::Le,
                same => same,
            },
        ),
        _ => return host("a comparison of two utf8 columns"),
    };
    if s.is_null(0) {
        return host("a comparison with a null literal");
    }
    let pattern = s.as_string::<i32>().value(0);
    let op = match cmp {
        CmpOp::Eq | CmpOp::Ne => StrOp::Eq,
        CmpOp::Lt => StrOp::Lt,
        CmpOp::Le => StrOp::Le,
        CmpOp::Gt => StrOp::Gt,
        CmpOp::Ge => StrOp::Ge,
    };
    let out = strings::matches(&c, op, pattern)?;
    let out = if cmp == CmpOp::Ne { logic::not(&out)? } else { out };
    Ok(Value::Array(out, DataType::Boolean))
}

fn binary(l: Value, op: BinaryOp, r: Value, batch: &DeviceBatch) -> Eval<Value> {
    if matches!(op, BinaryOp::And | BinaryOp::Or) {
        let (a, b) = (boolean(l, batch)?, boolean(r, batch)?);
        let out = if op == BinaryOp::And {
            logic::and(&a, &b)?
        } else {
            logic::or(&a, &b)?
        };
        return Ok(Value::Array(out, DataType::Boolean));
    }
    let ty = |v: &Value| match v {
        Value::Array(_, t) => t.clone(),
        Value::Scalar(s) => s.data_type().clone(),
    };
    let (lt, rt) = (ty(&l), ty(&r));
    if matches!((&l, &r), (Value::Scalar(_), Value::Scalar(_))) {
        return host("an operator on two literals");
    }
    if let Some(cmp) = cmp_op(op) {
        // A literal takes the column's type where exact, as on the CPU.
        let (l, r) = match (l, r) {
            (Value::Array(c, t), Value::Scalar(s)) if lt != rt => {
                let s = crate::eval::literal_as(&s, &t).map_or(Value::Scalar(s), Value::Scalar);
                (Value::Array(c, t), s)
            }
            (Value::Scalar(s), Value::Array(c, t)) if lt != rt => {
                let s = crate::eval::literal_as(&s, &t).map_or(Value::Scalar(s), Value::Scalar);
                (s, Value::Array(c, t))
            }
            pair => pair,
        };
        let target = crate::eval::common_type(&format!("{op:?}"), &ty(&l), &ty(&r))?;
        if target == DataType::Utf8 {
            return utf8_compare(l, cmp, r);
        }
        if !matches!(
            target,
            DataType::Int32
                | DataType::Int64
                | DataType::Float32
                | DataType::Float64
                | DataType::Date32
                | DataType::Decimal128(..)
        ) {
            return host(format!("a comparison of {target}"));
        }
        let (a, b) = (to_column(l, &target, batch)?, to_column(r, &target, batch)?);
        return Ok(Value::Array(elementwise::compare(&a, &b, cmp)?, DataType::Boolean));
    }
    let target = crate::eval::binary_type(op, &lt, &rt)?;
    let kernel_op = match (op, &target) {
        (BinaryOp::Add, _) => elementwise::BinaryOp::Add,
        (BinaryOp::Sub, _) => elementwise::BinaryOp::Sub,
        (BinaryOp::Mul, _) => elementwise::BinaryOp::Mul,
        (BinaryOp::Div, _) => elementwise::BinaryOp::Div,
        (BinaryOp::Rem, _) => elementwise::BinaryOp::Rem,
        _ => return host(format!("{op:?} on {target}")),
    };
    if !matches!(target, DataType::Int64 | DataType::Float64) {
        return host(format!("arithmetic on {target}"));
    }
    let (a, b) = (to_column(l, &target, batch)?, to_column(r, &target, batch)?);
    if target == DataType::Int64 && matches!(kernel_op, elementwise::BinaryOp::Div | elementwise::BinaryOp::Rem) {
        check_no_zero_divisor(&b)?;
    }
    Ok(Value::Array(elementwise::binary(&a, &b, kernel_op)?, target))
}

/// The CPU reports an integer division by zero as an error, where the
/// kernel gives null: with a zero divisor, the step runs on the host.
fn check_no_zero_divisor(divisor: &Column) -> Eval<()> {
    let zero = logic::fill(divisor, DType::I64, 0)?;
    let is_zero = elementwise::compare(divisor, &zero, CmpOp::Eq)?;
    if !weft_kernels::rows::kept_rows(&is_zero)?.is_empty() {
        return host("an integer division by zero (the CPU reports it)");
    }
    Ok(())
}
