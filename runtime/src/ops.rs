//! The ops registry: named functions compiled into the worker binary.
//!
//! Rust cannot ship closures between processes, so a task names an op and
//! carries serialized arguments. The built-in ops are always registered;
//! a program adds its own to a [`Registry`] and runs its workers from its
//! own binary (see `weft::worker_main`), so a local cluster that spawns
//! the current executable has them too.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::value::Value;

/// An op as the executor calls it: serialized arguments and the input
/// values, in the order of the task's dependencies.
pub type OpFn = Arc<dyn Fn(&[u8], &[Arc<Value>]) -> Result<Value, String> + Send + Sync>;

/// Ops by name.
#[derive(Clone, Default)]
pub struct Registry {
    ops: HashMap<String, OpFn>,
}

impl Registry {
    /// A registry with no ops at all.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// A registry with the built-in ops (see [`builtin`]).
    pub fn builtin() -> Self {
        let mut registry = Registry::empty();
        builtin::register(&mut registry);
        registry
    }

    /// Registers a typed op: `f(args, inputs)`, where the arguments and
    /// every input are decoded from their serialized form and the output
    /// is encoded. Replaces an op of the same name.
    pub fn op<A, I, O, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned,
        I: DeserializeOwned,
        O: Serialize,
        F: Fn(A, Vec<I>) -> Result<O, String> + Send + Sync + 'static,
    {
        self.raw_op(name, move |args, inputs| {
            let args: A = postcard::from_bytes(args)
                .map_err(|e| format!("cannot read the arguments as {}: {e}", std::any::type_name::<A>()))?;
            let inputs = inputs.iter().map(|v| v.decode::<I>()).collect::<Result<Vec<_>, _>>()?;
            Value::encode(&f(args, inputs)?)
        })
    }

    /// Registers an op that works on raw values (to produce or consume
    /// data frames). Replaces an op of the same name.
    pub fn raw_op<F>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(&[u8], &[Arc<Value>]) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.ops.insert(name.to_string(), Arc::new(f));
        self
    }

    /// The op called `name`.
    pub fn get(&self, name: &str) -> Option<&OpFn> {
        self.ops.get(name)
    }

    /// Names of the registered ops, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.ops.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Serializes op arguments the way [`Registry::op`] reads them.
pub fn args<T: Serialize + ?Sized>(args: &T) -> Result<bytes::Bytes, String> {
    postcard::to_stdvec(args)
        .map(Into::into)
        .map_err(|e| format!("cannot serialize op arguments: {e}"))
}

/// The ops every worker has.
pub mod builtin {
    use super::Registry;

    /// Registers the built-in ops:
    ///
    /// | op | args | inputs | result |
    /// |---|---|---|---|
    /// | `const` | `i64` | none | the argument |
    /// | `sum` | `i64` offset | `i64`s | offset plus the sum of the inputs |
    /// | `fail` | `String` | any | an error with that message |
    /// | `panic` | `String` | any | panics with that message |
    /// | `delay` | `(u64, i64)`: milliseconds, value | `i64`s | value plus the sum of the inputs, after sleeping |
    pub fn register(registry: &mut Registry) {
        registry
            .op("const", |value: i64, _: Vec<()>| Ok(value))
            .op("sum", |offset: i64, inputs: Vec<i64>| {
                inputs
                    .iter()
                    .try_fold(offset, |acc, x| acc.checked_add(*x))
                    .ok_or_else(|| "sum overflows i64".to_string())
            })
            .op("fail", |message: String, _: Vec<()>| Err::<(), _>(message))
            .op("panic", |message: String, _: Vec<()>| -> Result<(), String> {
                panic!("{message}")
            })
            .op("delay", |(ms, value): (u64, i64), inputs: Vec<i64>| {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(value + inputs.iter().sum::<i64>())
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(registry: &Registry, op: &str, a: bytes::Bytes, inputs: &[i64]) -> Result<Value, String> {
        let inputs: Vec<Arc<Value>> = inputs.iter().map(|x| Arc::new(Value::encode(x).unwrap())).collect();
        registry.get(op).unwrap()(&a, &inputs)
    }

    #[test]
    fn builtin_ops_compute() {
        let registry = Registry::builtin();
        assert_eq!(
            call(&registry, "const", args(&7i64).unwrap(), &[])
                .unwrap()
                .decode::<i64>()
                .unwrap(),
            7
        );
        assert_eq!(
            call(&registry, "sum", args(&1i64).unwrap(), &[2, 3])
                .unwrap()
                .decode::<i64>()
                .unwrap(),
            6
        );
        assert_eq!(call(&registry, "fail", args("boom").unwrap(), &[]).unwrap_err(), "boom");
        assert!(
            call(&registry, "sum", args(&1i64).unwrap(), &[i64::MAX])
                .unwrap_err()
                .contains("overflow")
        );
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let registry = Registry::builtin();
        let err = call(&registry, "delay", bytes::Bytes::new(), &[]).unwrap_err();
        assert!(err.contains("(u64, i64)"), "{err}");
    }
}
