//! Operator sugar: `&a + &b`, `&a * 2.0` (each a `Result<Array>`, since
//! shapes may not broadcast), and named elementwise methods.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::array::Array;
use crate::dtype::Scalar;
use crate::error::Result;
use crate::expr::{BinaryOp, UnaryOp};

macro_rules! operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl $trait<&Array> for &Array {
            type Output = Result<Array>;
            fn $method(self, rhs: &Array) -> Result<Array> {
                self.binary(rhs, $op)
            }
        }
        impl $trait<f64> for &Array {
            type Output = Result<Array>;
            fn $method(self, rhs: f64) -> Result<Array> {
                self.binary_scalar(rhs, $op, false)
            }
        }
        impl $trait<i64> for &Array {
            type Output = Result<Array>;
            fn $method(self, rhs: i64) -> Result<Array> {
                self.binary_scalar(rhs, $op, false)
            }
        }
        impl $trait<&Array> for f64 {
            type Output = Result<Array>;
            fn $method(self, rhs: &Array) -> Result<Array> {
                rhs.binary_scalar(self, $op, true)
            }
        }
    };
}
operator!(Add, add, BinaryOp::Add);
operator!(Sub, sub, BinaryOp::Sub);
operator!(Mul, mul, BinaryOp::Mul);
operator!(Div, div, BinaryOp::Div);

impl Neg for &Array {
    type Output = Result<Array>;
    fn neg(self) -> Result<Array> {
        self.unary(UnaryOp::Neg)
    }
}

macro_rules! named {
    ($($(#[$m:meta])* $name:ident => $op:expr;)*) => {
        impl Array {
            $(
                $(#[$m])*
                pub fn $name(&self, other: &Array) -> Result<Array> {
                    self.binary(other, $op)
                }
            )*
        }
    };
}
named! {
    /// `self ** other`.
    pow => BinaryOp::Pow;
    /// The larger of each pair (NaN wins).
    maximum => BinaryOp::Maximum;
    /// The smaller of each pair (NaN wins).
    minimum => BinaryOp::Minimum;
    /// `self == other`.
    eq => BinaryOp::Eq;
    /// `self != other`.
    ne => BinaryOp::Ne;
    /// `self < other`.
    lt => BinaryOp::Lt;
    /// `self <= other`.
    le => BinaryOp::Le;
    /// `self > other`.
    gt => BinaryOp::Gt;
    /// `self >= other`.
    ge => BinaryOp::Ge;
    /// Logical and of bools.
    and => BinaryOp::And;
    /// Logical or of bools.
    or => BinaryOp::Or;
}

impl Array {
    /// `self ** exponent` for a scalar exponent.
    pub fn powf(&self, exponent: impl Into<Scalar>) -> Result<Array> {
        self.binary_scalar(exponent, BinaryOp::Pow, false)
    }

    /// `e ** self`.
    pub fn exp(&self) -> Result<Array> {
        self.unary(UnaryOp::Exp)
    }

    /// Natural logarithm.
    pub fn log(&self) -> Result<Array> {
        self.unary(UnaryOp::Log)
    }

    /// Square root.
    pub fn sqrt(&self) -> Result<Array> {
        self.unary(UnaryOp::Sqrt)
    }

    /// Absolute value.
    pub fn abs(&self) -> Result<Array> {
        self.unary(UnaryOp::Abs)
    }

    /// Compares with a scalar: `op` is one of the comparison ops.
    pub fn cmp_scalar(&self, op: BinaryOp, value: impl Into<Scalar>) -> Result<Array> {
        self.binary_scalar(value, op, false)
    }
}
