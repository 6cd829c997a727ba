//! Element types: the [`DType`] tag carried in every chunk's header, the
//! [`Element`] trait tying Rust types to it, [`Scalar`] constants, and
//! NumPy's promotion rules.

use serde::{Deserialize, Serialize};

/// An array's element type. `Bool` is stored as one byte, 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Boolean, one byte per element.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::Bool => 1,
        }
    }

    /// Whether it is a float type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// NumPy's name for it (`float64`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::Bool => "bool",
        }
    }

    /// The type both operands of a binary operation are cast to (NumPy's
    /// `result_type` for arrays): bool < int32 < int64, float32 < float64,
    /// and an int mixed with float32 gives float64.
    pub fn promote(self, other: DType) -> DType {
        use DType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Bool, x) | (x, Bool) => x,
            (F64, _) | (_, F64) => F64,
            (F32, I32) | (I32, F32) | (F32, I64) | (I64, F32) => F64,
            (I32, I64) | (I64, I32) => I64,
            _ => F64,
        }
    }

    /// The float type a float-valued function (`exp`, `/`, `mean`) of
    /// this type returns: float32 stays, everything else is float64.
    pub fn to_float(self) -> DType {
        if self == DType::F32 { DType::F32 } else { DType::F64 }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be an array element. `u8` stands for `bool`
/// (0 or 1), the way chunks store it.
pub trait Element: bytemuck::Pod + PartialOrd + Default + Send + Sync + std::fmt::Debug + 'static {
    /// Its dtype.
    const DTYPE: DType;
    /// Converts to f64 (as `as` does).
    fn to_f64(self) -> f64;
    /// Converts from f64 (as `as` does; bool: nonzero is true).
    fn from_f64(x: f64) -> Self;
    /// Converts to i64 (as `as` does).
    fn to_i64(self) -> i64;
    /// Converts from i64 (as `as` does; bool: nonzero is true).
    fn from_i64(x: i64) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_i64(self) -> i64 {
                self as i64
            }
            #[inline(always)]
            fn from_i64(x: i64) -> Self {
                x as $t
            }
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(i32, I32);
element!(i64, I64);

impl Element for u8 {
    const DTYPE: DType = DType::Bool;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        u8::from(x != 0.0)
    }
    #[inline(always)]
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    #[inline(always)]
    fn from_i64(x: i64) -> Self {
        u8::from(x != 0)
    }
}

/// A constant: a Python-like scalar whose type does not widen an array's
/// (`x_f32 + 2.0` stays float32, `x_i32 + 2` stays int32; `x_i32 + 2.5`
/// becomes float64).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A float.
    Float(f64),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The type of an array holding this scalar alone.
    pub fn dtype(self) -> DType {
        match self {
            Scalar::Float(_) => DType::F64,
            Scalar::Int(_) => DType::I64,
            Scalar::Bool(_) => DType::Bool,
        }
    }

    /// The type of `array op scalar` for an array of type `array`.
    pub fn promote_with(self, array: DType) -> DType {
        match (self, array) {
            (Scalar::Bool(_), a) => a,
            (Scalar::Int(_), DType::Bool) => DType::I64,
            (Scalar::Int(_), a) => a,
            (Scalar::Float(_), a) if a.is_float() => a,
            (Scalar::Float(_), _) => DType::F64,
        }
    }

    /// As f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Float(x) => x,
            Scalar::Int(x) => x as f64,
            Scalar::Bool(b) => f64::from(u8::from(b)),
        }
    }

    /// As i64 (floats truncated).
    pub fn as_i64(self) -> i64 {
        match self {
            Scalar::Float(x) => x as i64,
            Scalar::Int(x) => x,
            Scalar::Bool(b) => i64::from(b),
        }
    }
}

impl From<f64> for Scalar {
    fn from(x: f64) -> Self {
        Scalar::Float(x)
    }
}
impl From<f32> for Scalar {
    fn from(x: f32) -> Self {
        Scalar::Float(f64::from(x))
    }
}
impl From<i64> for Scalar {
    fn from(x: i64) -> Self {
        Scalar::Int(x)
    }
}
impl From<i32> for Scalar {
    fn from(x: i32) -> Self {
        Scalar::Int(i64::from(x))
    }
}
impl From<bool> for Scalar {
    fn from(x: bool) -> Self {
        Scalar::Bool(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_follows_numpy() {
        use DType::*;
        assert_eq!(I32.promote(F32), F64);
        assert_eq!(I32.promote(I64), I64);
        assert_eq!(Bool.promote(I32), I32);
        assert_eq!(F32.promote(F64), F64);
        assert_eq!(Scalar::Float(2.0).promote_with(F32), F32);
        assert_eq!(Scalar::Float(2.0).promote_with(I32), F64);
        assert_eq!(Scalar::Int(2).promote_with(I32), I32);
    }
}
