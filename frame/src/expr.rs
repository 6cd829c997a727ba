//! Expressions: a small serialisable tree (`col("a").gt(lit(1))`) that the
//! planner reads and rewrites and the workers evaluate on Arrow batches
//! (see [`crate::eval`]).

use std::collections::BTreeSet;
use std::fmt;

use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{FrameError, Result};

/// A literal value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A null (of type Null).
    Null,
    /// A boolean.
    Boolean(bool),
    /// A 64-bit integer.
    Int64(i64),
    /// A 64-bit float.
    Float64(f64),
    /// A string.
    Utf8(String),
    /// Days since 1970-01-01.
    Date32(i32),
}

impl Scalar {
    /// The Arrow type of this literal.
    pub fn data_type(&self) -> DataType {
        match self {
            Scalar::Null => DataType::Null,
            Scalar::Boolean(_) => DataType::Boolean,
            Scalar::Int64(_) => DataType::Int64,
            Scalar::Float64(_) => DataType::Float64,
            Scalar::Utf8(_) => DataType::Utf8,
            Scalar::Date32(_) => DataType::Date32,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => write!(f, "null"),
            Scalar::Boolean(b) => write!(f, "{b}"),
            Scalar::Int64(i) => write!(f, "{i}"),
            Scalar::Float64(x) => write!(f, "{x:?}"),
            Scalar::Utf8(s) => write!(f, "{s:?}"),
            Scalar::Date32(d) => write!(f, "date({})", crate::eval::format_date(*d)),
        }
    }
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `==`
    Eq,
    /// `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// Logical and (Kleene).
    And,
    /// Logical or (Kleene).
    Or,
}

impl BinaryOp {
    /// A comparison (boolean result from two values).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq
        )
    }

    /// An arithmetic operator.
    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem
        )
    }

    /// The comparison with its operands swapped (`a < b` is `b > a`).
    pub fn swapped(self) -> BinaryOp {
        match self {
            BinaryOp::Lt => BinaryOp::Gt,
            BinaryOp::LtEq => BinaryOp::GtEq,
            BinaryOp::Gt => BinaryOp::Lt,
            BinaryOp::GtEq => BinaryOp::LtEq,
            other => other,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Eq => "==",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }
}

/// String predicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringOp {
    /// The value starts with the pattern.
    StartsWith,
    /// The value ends with the pattern.
    EndsWith,
    /// The value contains the pattern.
    Contains,
}

/// Aggregate functions, for [`crate::LazyFrame::group_by`]'s `agg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunc {
    /// Sum of the non-null values (integers as int64, decimals as
    /// decimal128(38, s), floats as float64); null for no values.
    Sum,
    /// Mean of the non-null values, as float64.
    Mean,
    /// Number of non-null values.
    Count,
    /// Number of rows (`count()` / Polars' `len()`).
    Len,
    /// Smallest non-null value.
    Min,
    /// Largest non-null value.
    Max,
    /// Number of distinct values (null counts as one).
    NUnique,
}

impl AggFunc {
    fn name(self) -> &'static str {
        match self {
            AggFunc::Sum => "sum",
            AggFunc::Mean => "mean",
            AggFunc::Count => "count",
            AggFunc::Len => "len",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::NUnique => "n_unique",
        }
    }
}

/// An expression over the columns of a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A column by name.
    Column(String),
    /// A constant.
    Literal(Scalar),
    /// `left op right`.
    Binary {
        /// Left operand.
        left: Box<Expr>,
        /// Operator.
        op: BinaryOp,
        /// Right operand.
        right: Box<Expr>,
    },
    /// Logical not.
    Not(Box<Expr>),
    /// True where the value is null.
    IsNull(Box<Expr>),
    /// True where the value is not null.
    IsNotNull(Box<Expr>),
    /// Conversion to another type (Arrow's `cast`).
    Cast(Box<Expr>, DataType),
    /// The year of a date or timestamp, as int32.
    Year(Box<Expr>),
    /// A string predicate with a constant pattern.
    Str(Box<Expr>, StringOp, String),
    /// `when(c1).then(v1).when(c2).then(v2).otherwise(v)`.
    When {
        /// Conditions and their values, first true wins.
        cases: Vec<(Expr, Expr)>,
        /// Value where no condition holds.
        otherwise: Box<Expr>,
    },
    /// The expression under another name.
    Alias(Box<Expr>, String),
    /// An aggregate (only inside `agg` or a global `select`).
    Agg(AggFunc, Box<Expr>),
}

/// A column.
pub fn col(name: impl Into<String>) -> Expr {
    Expr::Column(name.into())
}

/// A literal: `lit(1)`, `lit(0.5)`, `lit("x")`, `lit(true)`.
pub fn lit(value: impl Into<Scalar>) -> Expr {
    Expr::Literal(value.into())
}

/// A date literal from `YYYY-MM-DD`.
pub fn lit_date(date: &str) -> Result<Expr> {
    crate::eval::parse_date(date)
        .map(|d| Expr::Literal(Scalar::Date32(d)))
        .ok_or_else(|| FrameError::Plan(format!("{date:?} is not a date (YYYY-MM-DD)")))
}

/// The number of rows of the group (or frame), as int64.
pub fn len() -> Expr {
    Expr::Agg(AggFunc::Len, Box::new(Expr::Literal(Scalar::Null)))
}

/// Starts a `when(cond).then(value)...otherwise(value)` chain.
pub fn when(condition: Expr) -> When {
    When {
        cases: Vec::new(),
        condition,
    }
}

/// A `when` whose `then` is still to come.
#[derive(Debug, Clone)]
pub struct When {
    cases: Vec<(Expr, Expr)>,
    condition: Expr,
}

/// A `when(..).then(..)` chain that takes more cases or its `otherwise`.
#[derive(Debug, Clone)]
pub struct Then {
    cases: Vec<(Expr, Expr)>,
}

impl When {
    /// The value where the condition holds.
    pub fn then(mut self, value: Expr) -> Then {
        self.cases.push((self.condition, value));
        Then { cases: self.cases }
    }
}

impl Then {
    /// Another case, tried when the earlier ones do not hold.
    pub fn when(self, condition: Expr) -> When {
        When {
            cases: self.cases,
            condition,
        }
    }

    /// The value where no condition holds.
    pub fn otherwise(self, value: Expr) -> Expr {
        Expr::When {
            cases: self.cases,
            otherwise: Box::new(value),
        }
    }
}

macro_rules! scalar_from {
    ($($t:ty => $v:ident as $as:ty),*) => {$(
        impl From<$t> for Scalar {
            fn from(x: $t) -> Self {
                Scalar::$v(x as $as)
            }
        }
    )*};
}
scalar_from!(i64 => Int64 as i64, i32 => Int64 as i64, u32 => Int64 as i64, f64 => Float64 as f64, f32 => Float64 as f64);

impl From<bool> for Scalar {
    fn from(x: bool) -> Self {
        Scalar::Boolean(x)
    }
}

impl From<&str> for Scalar {
    fn from(x: &str) -> Self {
        Scalar::Utf8(x.to_string())
    }
}

impl From<String> for Scalar {
    fn from(x: String) -> Self {
        Scalar::Utf8(x)
    }
}

macro_rules! binary_methods {
    ($($name:ident => $op:ident, $doc:literal;)*) => {
        impl Expr {
            $(
                #[doc = $doc]
                pub fn $name(self, other: impl Into<Expr>) -> Expr {
                    Expr::Binary { left: Box::new(self), op: BinaryOp::$op, right: Box::new(other.into()) }
                }
            )*
        }
    };
}

binary_methods! {
    eq => Eq, "`self == other`";
    neq => NotEq, "`self != other`";
    lt => Lt, "`self < other`";
    lt_eq => LtEq, "`self <= other`";
    gt => Gt, "`self > other`";
    gt_eq => GtEq, "`self >= other`";
    and => And, "Logical and";
    or => Or, "Logical or";
}

macro_rules! agg_methods {
    ($($name:ident => $f:ident, $doc:literal;)*) => {
        impl Expr {
            $(
                #[doc = $doc]
                pub fn $name(self) -> Expr {
                    Expr::Agg(AggFunc::$f, Box::new(self))
                }
            )*
        }
    };
}

agg_methods! {
    sum => Sum, "Sum per group.";
    mean => Mean, "Mean per group.";
    count => Count, "Non-null count per group.";
    min => Min, "Minimum per group.";
    max => Max, "Maximum per group.";
    n_unique => NUnique, "Distinct values per group.";
}

impl<T: Into<Scalar>> From<T> for Expr {
    fn from(x: T) -> Self {
        Expr::Literal(x.into())
    }
}

impl std::ops::Not for Expr {
    type Output = Expr;
    fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
}

macro_rules! std_ops {
    ($($trait:ident $method:ident => $op:ident),*) => {$(
        impl<T: Into<Expr>> std::ops::$trait<T> for Expr {
            type Output = Expr;
            fn $method(self, rhs: T) -> Expr {
                Expr::Binary { left: Box::new(self), op: BinaryOp::$op, right: Box::new(rhs.into()) }
            }
        }
    )*};
}
std_ops!(Add add => Add, Sub sub => Sub, Mul mul => Mul, Div div => Div, Rem rem => Rem);

impl Expr {
    /// The same expression named `name` in the output.
    pub fn alias(self, name: impl Into<String>) -> Expr {
        Expr::Alias(Box::new(self), name.into())
    }

    /// True where null.
    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }

    /// True where not null.
    pub fn is_not_null(self) -> Expr {
        Expr::IsNotNull(Box::new(self))
    }

    /// Converts to `to`.
    pub fn cast(self, to: DataType) -> Expr {
        Expr::Cast(Box::new(self), to)
    }

    /// The year of a date.
    pub fn year(self) -> Expr {
        Expr::Year(Box::new(self))
    }

    /// `low <= self <= high`.
    pub fn is_between(self, low: impl Into<Expr>, high: impl Into<Expr>) -> Expr {
        self.clone().gt_eq(low).and(self.lt_eq(high))
    }

    /// The string starts with `pattern`.
    pub fn starts_with(self, pattern: &str) -> Expr {
        Expr::Str(Box::new(self), StringOp::StartsWith, pattern.into())
    }

    /// The string ends with `pattern`.
    pub fn ends_with(self, pattern: &str) -> Expr {
        Expr::Str(Box::new(self), StringOp::EndsWith, pattern.into())
    }

    /// The string contains `pattern`.
    pub fn contains(self, pattern: &str) -> Expr {
        Expr::Str(Box::new(self), StringOp::Contains, pattern.into())
    }

    /// The name of the output column: the alias, else the first column
    /// the expression reads (as Polars names them), else `literal`.
    pub fn output_name(&self) -> String {
        match self {
            Expr::Alias(_, name) => name.clone(),
            Expr::Column(name) => name.clone(),
            Expr::Agg(AggFunc::Len, _) => "len".into(),
            _ => self.first_column().unwrap_or_else(|| "literal".into()),
        }
    }

    fn first_column(&self) -> Option<String> {
        let mut found = None;
        self.visit(&mut |e| {
            if let (None, Expr::Column(c)) = (&found, e) {
                found = Some(c.clone());
            }
        });
        found
    }

    /// Calls `f` on this node and every node below it, parents first.
    pub fn visit(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Column(_) | Expr::Literal(_) => {}
            Expr::Binary { left, right, .. } => {
                left.visit(f);
                right.visit(f);
            }
            Expr::Not(e)
            | Expr::IsNull(e)
            | Expr::IsNotNull(e)
            | Expr::Cast(e, _)
            | Expr::Year(e)
            | Expr::Str(e, _, _)
            | Expr::Alias(e, _)
            | Expr::Agg(_, e) => e.visit(f),
            Expr::When { cases, otherwise } => {
                for (c, v) in cases {
                    c.visit(f);
                    v.visit(f);
                }
                otherwise.visit(f);
            }
        }
    }

    /// The columns the expression reads.
    pub fn columns(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.visit(&mut |e| {
            if let Expr::Column(c) = e {
                out.insert(c.clone());
            }
        });
        out
    }

    /// Whether an aggregate appears in the expression.
    pub fn has_agg(&self) -> bool {
        let mut found = false;
        self.visit(&mut |e| found |= matches!(e, Expr::Agg(..)));
        found
    }

    /// The expression without its aliases at the top.
    pub fn unaliased(&self) -> &Expr {
        match self {
            Expr::Alias(e, _) => e.unaliased(),
            e => e,
        }
    }

    /// The output field over `schema`: its name, type and nullability;
    /// an error names a missing column or mismatched types.
    pub fn to_field(&self, schema: &Schema) -> Result<Field> {
        Ok(Field::new(self.output_name(), self.data_type(schema)?, true))
    }

    /// The output type over `schema`.
    pub fn data_type(&self, schema: &Schema) -> Result<DataType> {
        match self {
            Expr::Column(name) => schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|_| FrameError::ColumnNotFound {
                    name: name.clone(),
                    schema: schema.clone(),
                }),
            Expr::Literal(s) => Ok(s.data_type()),
            Expr::Binary { left, op, right } => {
                let (l, r) = (left.data_type(schema)?, right.data_type(schema)?);
                crate::eval::binary_type(*op, &l, &r).map_err(|e| e.in_expr(self))
            }
            Expr::Not(e) => expect_type(e, schema, "not", &DataType::Boolean).map_err(|err| err.in_expr(self)),
            Expr::IsNull(e) | Expr::IsNotNull(e) => e.data_type(schema).map(|_| DataType::Boolean),
            Expr::Cast(e, to) => {
                let from = e.data_type(schema)?;
                if arrow_cast::can_cast_types(&from, to) {
                    Ok(to.clone())
                } else {
                    Err(FrameError::TypeMismatch {
                        op: self.to_string(),
                        left: from,
                        right: to.clone(),
                    })
                }
            }
            Expr::Year(e) => match e.data_type(schema)? {
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => Ok(DataType::Int32),
                other => Err(FrameError::Unsupported {
                    op: self.to_string(),
                    data_type: other,
                }),
            },
            Expr::Str(e, _, _) => match e.data_type(schema)? {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(DataType::Boolean),
                other => Err(FrameError::Unsupported {
                    op: self.to_string(),
                    data_type: other,
                }),
            },
            Expr::When { cases, otherwise } => {
                let mut out = otherwise.data_type(schema)?;
                for (c, v) in cases {
                    expect_type(c, schema, "when", &DataType::Boolean).map_err(|e| e.in_expr(&format!("when({c})")))?;
                    let t = v.data_type(schema)?;
                    out = crate::eval::common_type("when/then/otherwise", &t, &out).map_err(|e| e.in_expr(self))?;
                }
                Ok(out)
            }
            Expr::Alias(e, _) => e.data_type(schema),
            Expr::Agg(func, e) => {
                crate::groupby::agg_type(*func, &e.data_type(schema)?).map_err(|err| err.in_expr(self))
            }
        }
    }

    /// Rewrites bottom-up with `f` (children first, then the node).
    pub fn transform(self, f: &mut impl FnMut(Expr) -> Expr) -> Expr {
        let node = match self {
            Expr::Binary { left, op, right } => Expr::Binary {
                left: Box::new(left.transform(f)),
                op,
                right: Box::new(right.transform(f)),
            },
            Expr::Not(e) => Expr::Not(Box::new(e.transform(f))),
            Expr::IsNull(e) => Expr::IsNull(Box::new(e.transform(f))),
            Expr::IsNotNull(e) => Expr::IsNotNull(Box::new(e.transform(f))),
            Expr::Cast(e, t) => Expr::Cast(Box::new(e.transform(f)), t),
            Expr::Year(e) => Expr::Year(Box::new(e.transform(f))),
            Expr::Str(e, op, p) => Expr::Str(Box::new(e.transform(f)), op, p),
            Expr::Alias(e, n) => Expr::Alias(Box::new(e.transform(f)), n),
            Expr::Agg(func, e) => Expr::Agg(func, Box::new(e.transform(f))),
            Expr::When { cases, otherwise } => Expr::When {
                cases: cases
                    .into_iter()
                    .map(|(c, v)| (c.transform(f), v.transform(f)))
                    .collect(),
                otherwise: Box::new(otherwise.transform(f)),
            },
            leaf => leaf,
        };
        f(node)
    }

    /// Splits a conjunction into its parts (`a and (b and c)` -> a, b, c).
    pub fn conjuncts(self) -> Vec<Expr> {
        match self {
            Expr::Binary {
                left,
                op: BinaryOp::And,
                right,
            } => {
                let mut out = left.conjuncts();
                out.extend(right.conjuncts());
                out
            }
            e => vec![e],
        }
    }

    /// The conjunction of `parts` (None when empty).
    pub fn conjunction(parts: impl IntoIterator<Item = Expr>) -> Option<Expr> {
        parts.into_iter().reduce(|a, b| a.and(b))
    }
}

fn expect_type(e: &Expr, schema: &Schema, op: &str, want: &DataType) -> Result<DataType> {
    let t = e.data_type(schema)?;
    if &t == want || t == DataType::Null {
        Ok(want.clone())
    } else {
        Err(FrameError::TypeMismatch {
            op: op.into(),
            left: t,
            right: want.clone(),
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(c) => write!(f, "col({c})"),
            Expr::Literal(s) => write!(f, "{s}"),
            Expr::Binary { left, op, right } => write!(f, "({left} {} {right})", op.symbol()),
            Expr::Not(e) => write!(f, "not({e})"),
            Expr::IsNull(e) => write!(f, "{e}.is_null()"),
            Expr::IsNotNull(e) => write!(f, "{e}.is_not_null()"),
            Expr::Cast(e, t) => write!(f, "{e}.cast({t})"),
            Expr::Year(e) => write!(f, "{e}.year()"),
            Expr::Str(e, op, p) => write!(f, "{e}.{op:?}({p:?})"),
            Expr::When { cases, otherwise } => {
                for (c, v) in cases {
                    write!(f, "when({c}).then({v}).")?;
                }
                write!(f, "otherwise({otherwise})")
            }
            Expr::Alias(e, n) => write!(f, "{e} as {n}"),
            Expr::Agg(AggFunc::Len, _) => write!(f, "len()"),
            Expr::Agg(func, e) => write!(f, "{e}.{}()", func.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ])
    }

    #[test]
    fn builds_names_and_types() {
        let e = (col("a") + lit(1)).gt(lit(2)).alias("big");
        assert_eq!(e.output_name(), "big");
        assert_eq!(e.data_type(&schema()).unwrap(), DataType::Boolean);
        assert_eq!((col("a") * lit(0.5)).data_type(&schema()).unwrap(), DataType::Float64);
        assert_eq!(e.columns().into_iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(e.to_string(), "((col(a) + 1) > 2) as big");
    }

    #[test]
    fn a_missing_column_names_it_and_the_schema() {
        let err = col("b").data_type(&schema()).unwrap_err().to_string();
        assert!(
            err.contains("\"b\"") && err.contains("a: Int64") && err.contains("s: Utf8"),
            "{err}"
        );
    }

    #[test]
    fn a_type_mismatch_names_both_types() {
        let err = (col("a") + col("s")).data_type(&schema()).unwrap_err().to_string();
        assert!(err.contains("Int64") && err.contains("Utf8"), "{err}");
    }

    #[test]
    fn conjunctions_split_and_join() {
        let e = col("a").gt(lit(1)).and(col("a").lt(lit(5)).and(col("s").eq(lit("x"))));
        let parts = e.clone().conjuncts();
        assert_eq!(parts.len(), 3);
        assert_eq!(Expr::conjunction(parts).unwrap().conjuncts().len(), 3);
    }
}
