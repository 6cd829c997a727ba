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
use weft_gpu::{Buffer, Device, DeviceBuffer, Gpu, GpuError, Stream};

use crate::ids::Key;
pub use crate::protocol::OpError;
use crate::value::Value;

/// An op as the executor calls it: its context, serialized arguments and
/// the input values, in the order of the task's dependencies.
pub type OpFn = Arc<dyn Fn(&OpContext, &[u8], &[Arc<Value>]) -> Result<Value, OpError> + Send + Sync>;

/// Where an op runs and what it may use there: the worker's GPU (if it has
/// one) with this compute thread's stream on it, and the worker's memory
/// limits. Device memory taken through [`alloc`](Self::alloc) (or by
/// kernels, which allocate from the same pool) spills other results off
/// the device when it is full, so an op sees out-of-memory only when
/// spilling could not make room. Kernels and copies queue on the op's
/// stream and need not be waited for: the worker synchronises it when the
/// op returns, before the result leaves the compute thread.
///
/// ```
/// use std::sync::Arc;
/// use weft_runtime::ops::{OpContext, OpError};
/// use weft_runtime::{Registry, Value};
///
/// let mut registry = Registry::empty();
/// registry.raw_op("zeros_on_device", |ctx: &OpContext, args: &[u8], _inputs: &[Arc<Value>]| {
///     let len: usize = weft_runtime::ops::decode_args(args)?;
///     let buffer = ctx.alloc(len)?; // the worker's GPU, or an error on a CPU worker
///     ctx.stream()?.memset_zero(&buffer, len)?;
///     Ok(Value { header: Default::default(), frames: vec![weft_gpu::Buffer::device(buffer)] })
/// });
/// ```
pub struct OpContext<'a> {
    site: &'a Site,
    key: &'a Key,
}

/// What every op on one worker shares: see [`OpContext`].
#[derive(Clone, Debug, Default)]
pub struct Site {
    /// The worker's name.
    pub worker: String,
    /// The worker's GPU, if it has one.
    pub gpu: Option<Arc<Gpu>>,
    /// Host memory the worker may use, in bytes (0: no limit).
    pub memory_limit: u64,
    /// Device memory the worker keeps results in, in bytes (0: none).
    pub device_limit: u64,
    /// The worker's shuffle service (`None` outside a worker).
    pub shuffle: Option<Arc<crate::shuffle::Service>>,
}

impl Site {
    /// A site with `gpu` and nothing else, named after its device: where
    /// ops run outside a worker (tests, local evaluation).
    pub fn with_gpu(gpu: Arc<Gpu>) -> Site {
        Site {
            worker: gpu.device().to_string(),
            gpu: Some(gpu),
            ..Site::default()
        }
    }
}

impl<'a> OpContext<'a> {
    /// The context of the task `key` on `site`.
    pub fn new(site: &'a Site, key: &'a Key) -> Self {
        OpContext { site, key }
    }

    /// The task's key.
    pub fn key(&self) -> &Key {
        self.key
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.site.worker
    }

    /// The worker's GPU; `None` on a CPU worker.
    pub fn gpu(&self) -> Option<&Arc<Gpu>> {
        self.site.gpu.as_ref()
    }

    /// Where the op's results belong: the worker's GPU, or the CPU.
    pub fn device(&self) -> Device {
        self.gpu().map_or(Device::Cpu, |g| g.device())
    }

    /// Host memory the worker may use, in bytes (0: no limit).
    pub fn memory_limit(&self) -> u64 {
        self.site.memory_limit
    }

    /// Device memory the worker keeps results in, in bytes (0: no GPU).
    pub fn device_limit(&self) -> u64 {
        self.site.device_limit
    }

    /// The worker's shuffle service; an error outside a worker.
    pub fn shuffle(&self) -> Result<&crate::shuffle::Service, OpError> {
        self.site.shuffle.as_deref().ok_or_else(|| {
            OpError::Failed(format!(
                "task {} is a shuffle's and {} has no shuffle service (it is not a worker)",
                self.key,
                self.worker()
            ))
        })
    }

    fn need_gpu(&self) -> Result<&Arc<Gpu>, OpError> {
        self.gpu().ok_or_else(|| {
            OpError::BadInput(format!(
                "task {} needs a GPU and worker {} has none (give the task a `gpu` resource)",
                self.key,
                self.worker()
            ))
        })
    }

    /// This compute thread's stream on the worker's GPU: an op's kernels
    /// and copies queue on it in order, and the worker synchronises it when
    /// the op returns.
    pub fn stream(&self) -> Result<Stream, OpError> {
        Ok(self.need_gpu()?.thread_stream()?)
    }

    /// `len` bytes of the worker's device memory (spilling other results
    /// to the host first when the device is full).
    pub fn alloc(&self, len: usize) -> Result<DeviceBuffer, OpError> {
        Ok(self.need_gpu()?.alloc(len)?)
    }

    /// `buffer` in the worker's device memory: shared when it is there
    /// already, copied from a peer device or uploaded from the host.
    pub fn to_device(&self, buffer: &Buffer) -> Result<DeviceBuffer, OpError> {
        let moved = crate::device::to_gpu(buffer, self.need_gpu()?)?;
        moved
            .as_device()
            .cloned()
            .ok_or_else(|| OpError::Failed("a buffer did not reach the device".into()))
    }
}

impl From<GpuError> for OpError {
    /// A full device is [`OpError::OutOfMemory`]; other device errors fail the op.
    fn from(error: GpuError) -> Self {
        match error {
            GpuError::OutOfMemory { .. } => OpError::OutOfMemory(error.to_string()),
            other => OpError::Failed(other.to_string()),
        }
    }
}

/// Defines typed ops as plain functions, and a function that registers them
/// in a [`Registry`], each under its function's name or under a name given
/// before it (`"name" => fn ...`, for names that are not identifiers). An
/// op takes its deserialized arguments and inputs and returns its result
/// or an error: anything that converts into an [`OpError`] (a `String` is
/// an op failure), as [`Registry::op`] describes.
///
/// ```
/// use weft_runtime::{Registry, define_ops};
///
/// define_ops! {
///     /// Registers this program's ops.
///     pub fn register_math;
///
///     /// `x * x`.
///     fn square(x: i64, _inputs: Vec<()>) -> Result<i64, String> {
///         Ok(x * x)
///     }
///
///     /// The sum of the inputs, as the op `add-all`.
///     "add-all" => fn add_all(_args: (), inputs: Vec<f64>) -> Result<f64, String> {
///         Ok(inputs.iter().sum())
///     }
/// }
///
/// let mut registry = Registry::builtin();
/// register_math(&mut registry);
/// assert!(registry.get("square").is_some() && registry.get("add-all").is_some());
/// assert_eq!(square(3, Vec::new()), Ok(9));
/// ```
#[macro_export]
macro_rules! define_ops {
    ($(#[$rm:meta])* $rvis:vis fn $register:ident; $($ops:tt)*) => {
        $crate::define_ops!(@ops [$(#[$rm])* $rvis fn $register] [] $($ops)*);
    };
    (@ops $head:tt [$($done:tt)*]
        $(#[$m:meta])* $op:literal => $vis:vis fn $name:ident ($($params:tt)*) -> $ret:ty $body:block
        $($ops:tt)*) => {
        $(#[$m])* $vis fn $name($($params)*) -> $ret $body
        $crate::define_ops!(@ops $head [$($done)* ($op, $name)] $($ops)*);
    };
    (@ops $head:tt [$($done:tt)*]
        $(#[$m:meta])* $vis:vis fn $name:ident ($($params:tt)*) -> $ret:ty $body:block
        $($ops:tt)*) => {
        $(#[$m])* $vis fn $name($($params)*) -> $ret $body
        $crate::define_ops!(@ops $head [$($done)* (stringify!($name), $name)] $($ops)*);
    };
    (@ops [$(#[$rm:meta])* $rvis:vis fn $register:ident] [$(($op:expr, $name:ident))*]) => {
        $(#[$rm])* $rvis fn $register(registry: &mut $crate::Registry) -> &mut $crate::Registry {
            $(registry.op($op, |args, inputs| $name(args, inputs).map_err(::std::convert::Into::into));)*
            registry
        }
    };
}

/// Ops by name.
///
/// A task's op name may carry a label after a `#` (`frame.task#scan
/// lineitem`): the task runs the op named before the `#`, while the
/// scheduler's duration estimates, the worker's choice of ops to run
/// inline and the dashboard keep one record per labelled name, as Dask
/// keeps one per key prefix. A collection whose one op does work of many
/// sizes labels its tasks by what they do.
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
    /// every input are decoded from their serialized form (a value that
    /// does not decode is [`OpError::BadInput`]) and the output is
    /// encoded. Replaces an op of the same name.
    pub fn op<A, I, O, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned,
        I: DeserializeOwned,
        O: Serialize,
        F: Fn(A, Vec<I>) -> Result<O, OpError> + Send + Sync + 'static,
    {
        self.raw_op(name, move |_: &OpContext, args: &[u8], inputs: &[Arc<Value>]| {
            let args: A = decode_args(args)?;
            let inputs = inputs
                .iter()
                .map(|v| v.decode::<I>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(OpError::BadInput)?;
            Ok(Value::encode(&f(args, inputs)?)?)
        })
    }

    /// Registers an op that works on raw values (to produce or consume
    /// data frames) with its [`OpContext`]. Replaces an op of the same
    /// name.
    pub fn raw_op<F>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(&OpContext, &[u8], &[Arc<Value>]) -> Result<Value, OpError> + Send + Sync + 'static,
    {
        self.ops.insert(name.to_string(), Arc::new(f));
        self
    }

    /// The op called `name`, or the op a labelled name (`op#label`)
    /// names.
    pub fn get(&self, name: &str) -> Option<&OpFn> {
        self.ops.get(name).or_else(|| self.ops.get(name.split_once('#')?.0))
    }

    /// Names of the registered ops, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.ops.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Reads op arguments serialized by [`args`] (a mismatch is
/// [`OpError::BadInput`]).
pub fn decode_args<A: DeserializeOwned>(args: &[u8]) -> Result<A, OpError> {
    postcard::from_bytes(args).map_err(|e| {
        OpError::BadInput(format!(
            "cannot read the arguments as {}: {e}",
            std::any::type_name::<A>()
        ))
    })
}

/// Serializes op arguments the way [`Registry::op`] reads them.
pub fn args<T: Serialize + ?Sized>(args: &T) -> Result<bytes::Bytes, String> {
    postcard::to_stdvec(args)
        .map(Into::into)
        .map_err(|e| format!("cannot serialize op arguments: {e}"))
}

/// The ops every worker has.
pub mod builtin {
    use std::sync::Arc;

    use weft_gpu::Buffer;

    use super::{OpContext, OpError, Registry};
    use crate::value::Value;
    use weft_transport::shm;

    /// Registers the built-in ops:
    ///
    /// | op | args | inputs | result |
    /// |---|---|---|---|
    /// | `const` | `i64` | none | the argument |
    /// | `sum` | `i64` offset | `i64`s | offset plus the sum of the inputs |
    /// | `fail` | `String` | any | an error with that message |
    /// | `panic` | `String` | any | panics with that message |
    /// | `delay` | `(u64, i64)`: milliseconds, value | `i64`s | value plus the sum of the inputs, after sleeping |
    /// | `arange_f64` | `u64` n | none | the float64s 0, 1, .., n-1 as one frame (in shared memory when large); header: n |
    /// | `sum_f64` | none | one value whose first frame is float64s | their sum as an `f64` |
    /// | `nbytes` | none | any | the inputs' total size as a `u64`, reading none of their frames |
    ///
    /// and the shuffle's ops ([`crate::shuffle::register`]).
    pub fn register(registry: &mut Registry) {
        crate::shuffle::register(registry);
        registry
            .raw_op("arange_f64", arange_f64)
            .raw_op("sum_f64", sum_f64)
            .raw_op("nbytes", |_: &OpContext, _: &[u8], inputs: &[Arc<Value>]| {
                Ok(Value::encode(&inputs.iter().map(|v| v.nbytes()).sum::<u64>())?)
            });
        register_typed(registry);
    }

    crate::define_ops! {
        /// Registers the built-in ops that take and return typed values.
        fn register_typed;

        "const" => fn constant(value: i64, _: Vec<()>) -> Result<i64, String> {
            Ok(value)
        }

        "sum" => fn sum_i64(offset: i64, inputs: Vec<i64>) -> Result<i64, String> {
            inputs
                .iter()
                .try_fold(offset, |acc, x| acc.checked_add(*x))
                .ok_or_else(|| "sum overflows i64".to_string())
        }

        fn fail(message: String, _: Vec<()>) -> Result<(), String> {
            Err(message)
        }

        "panic" => fn panics(message: String, _: Vec<()>) -> Result<(), String> {
            panic!("{message}")
        }

        fn delay((ms, value): (u64, i64), inputs: Vec<i64>) -> Result<i64, String> {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(value + inputs.iter().sum::<i64>())
        }
    }

    fn arange_f64(_: &OpContext, args: &[u8], _: &[Arc<Value>]) -> Result<Value, OpError> {
        let n: u64 = super::decode_args(args)?;
        let len = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(8))
            .ok_or_else(|| OpError::OutOfMemory(format!("{n} float64s do not fit in memory")))?;
        let mut buf = shm::alloc(len);
        // Buffers start 64-byte aligned, so the cast cannot fail.
        let values: &mut [f64] = bytemuck::try_cast_slice_mut(buf.as_mut_slice()).map_err(|e| e.to_string())?;
        for (i, x) in values.iter_mut().enumerate() {
            *x = i as f64;
        }
        let mut value = Value::encode(&n)?;
        value.frames.push(Buffer::host(buf.freeze()));
        Ok(value)
    }

    fn sum_f64(_: &OpContext, _: &[u8], inputs: &[Arc<Value>]) -> Result<Value, OpError> {
        let bad = |m: String| OpError::BadInput(m);
        let frame = inputs
            .first()
            .and_then(|v| v.frames.first())
            .and_then(Buffer::as_host)
            .ok_or_else(|| bad("sum_f64 takes one input with a frame of float64s".into()))?;
        if frame.len() % 8 != 0 {
            return Err(bad(format!("a frame of {} bytes is not float64s", frame.len())));
        }
        Ok(Value::encode(&sum(frame))?)
    }

    /// How far ahead [`sum`] prefetches, in float64s (16 KiB), into L2: enough
    /// to hide memory latency, and across the 4 KiB page boundaries where
    /// hardware prefetchers stop (shared memory comes in small pages).
    const PREFETCH_AHEAD: usize = 2048;

    /// Partial sums: two cache lines of float64s per step.
    const LANES: usize = 16;

    /// Steps per prefetch: one line in four is asked for, the hardware
    /// fetches the rest. On a 256 MiB mapped region (an AMD EPYC VM) a
    /// prefetch of every line took 15-17 ms, one in four 12-14 ms, none
    /// 13.5-17 ms.
    const STEPS_PER_PREFETCH: usize = 2;

    /// The sum of little-endian float64s, in sixteen interleaved partial
    /// sums (so the additions pipeline and vectorize; exact for integers
    /// below 2^53 whatever the order). Bytes not aligned for f64 are read
    /// through a copy of each block.
    pub fn sum(bytes: &[u8]) -> f64 {
        let mut acc = [0.0; LANES];
        match bytemuck::try_cast_slice::<u8, f64>(bytes) {
            Ok(values) => add(&mut acc, values),
            Err(_) => {
                let mut block = [0f64; 512];
                for chunk in bytes.chunks(block.len() * 8) {
                    let n = chunk.len() / 8;
                    bytemuck::cast_slice_mut::<f64, u8>(&mut block[..n]).copy_from_slice(&chunk[..n * 8]);
                    add(&mut acc, &block[..n]);
                }
            }
        }
        acc.iter().sum()
    }

    /// Adds `values` into `acc`, with AVX2 where the processor has it.
    fn add(acc: &mut [f64; LANES], values: &[f64]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2, checked just above.
            return unsafe { add_avx2(acc, values) };
        }
        add_lanes(acc, values);
    }

    /// [`add_lanes`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn add_avx2(acc: &mut [f64; LANES], values: &[f64]) {
        add_lanes(acc, values);
    }

    #[inline(always)]
    fn add_lanes(acc: &mut [f64; LANES], values: &[f64]) {
        let mut blocks = values.chunks_exact(LANES);
        for (i, block) in (&mut blocks).enumerate() {
            if i % STEPS_PER_PREFETCH == 0
                && let Some(ahead) = values.get(i * LANES + PREFETCH_AHEAD)
            {
                prefetch(ahead);
            }
            for (a, x) in acc.iter_mut().zip(block) {
                *a += x;
            }
        }
        for (a, x) in acc.iter_mut().zip(blocks.remainder()) {
            *a += x;
        }
    }

    #[cfg(test)]
    #[test]
    fn the_vector_and_the_plain_additions_agree() {
        let values: Vec<f64> = (0..5000).map(f64::from).collect();
        let (mut vector, mut plain) = ([0.0; LANES], [0.0; LANES]);
        add(&mut vector, &values);
        add_lanes(&mut plain, &values);
        assert_eq!(vector, plain);
        assert_eq!(plain.iter().sum::<f64>(), 5000.0 * 4999.0 / 2.0);
    }

    /// Asks for the cache line holding `value` into L2, ahead of its use.
    #[cfg(target_arch = "x86_64")]
    fn prefetch(value: &f64) {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        // SAFETY: a prefetch is a hint that never faults, of an address
        // that is valid anyway; SSE is part of every x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(std::ptr::from_ref(value).cast()) }
    }

    /// Elsewhere the hardware's prefetching has to do.
    #[cfg(not(target_arch = "x86_64"))]
    fn prefetch(_: &f64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(registry: &Registry, op: &str, a: bytes::Bytes, inputs: &[i64]) -> Result<Value, OpError> {
        let inputs: Vec<Arc<Value>> = inputs.iter().map(|x| Arc::new(Value::encode(x).unwrap())).collect();
        call_raw(registry, op, &a, &inputs)
    }

    fn call_raw(registry: &Registry, op: &str, a: &[u8], inputs: &[Arc<Value>]) -> Result<Value, OpError> {
        let (site, key) = (Site::default(), Key::from("t"));
        registry.get(op).unwrap()(&OpContext::new(&site, &key), a, inputs)
    }

    #[test]
    fn builtin_ops_compute() {
        let registry = Registry::builtin();
        assert_eq!(
            registry.names(),
            [
                "arange_f64",
                "const",
                "delay",
                "fail",
                "nbytes",
                "panic",
                "shuffle.barrier",
                "shuffle.plan",
                "shuffle.transfer",
                "shuffle.unpack",
                "sum",
                "sum_f64"
            ]
        );
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
        // A label names the same op; an unknown op stays unknown with one.
        assert_eq!(
            call(&registry, "sum#a label", args(&1i64).unwrap(), &[2])
                .unwrap()
                .decode::<i64>()
                .unwrap(),
            3
        );
        assert!(registry.get("nothing#sum").is_none() && registry.get("#sum").is_none());
        assert_eq!(
            call(&registry, "fail", args("boom").unwrap(), &[]).unwrap_err(),
            OpError::Failed("boom".into())
        );
        assert!(
            call(&registry, "sum", args(&1i64).unwrap(), &[i64::MAX])
                .unwrap_err()
                .to_string()
                .contains("overflow")
        );
    }

    #[test]
    fn arange_and_sum_agree_with_the_closed_form_aligned_or_not() {
        let registry = Registry::builtin();
        for n in [0u64, 3, 1000, (weft_transport::shm::MIN_SHARED / 8) as u64 + 5] {
            let array = Arc::new(call_raw(&registry, "arange_f64", &args(&n).unwrap(), &[]).unwrap());
            assert_eq!(array.decode::<u64>().unwrap(), n);
            assert_eq!(array.frames[0].len() as u64, 8 * n);
            let total = call_raw(&registry, "sum_f64", &[], std::slice::from_ref(&array)).unwrap();
            let expected = (n * n.saturating_sub(1) / 2) as f64;
            assert_eq!(total.decode::<f64>().unwrap(), expected);
            // The same bytes one byte off alignment.
            let bytes = array.frames[0].as_host().unwrap();
            let mut shifted = vec![0u8; bytes.len() + 1];
            shifted[1..].copy_from_slice(bytes);
            assert_eq!(builtin::sum(&shifted[1..]), expected);
        }
        let array = Arc::new(call_raw(&registry, "arange_f64", &args(&10u64).unwrap(), &[]).unwrap());
        let nbytes = call_raw(&registry, "nbytes", &[], std::slice::from_ref(&array)).unwrap();
        assert_eq!(nbytes.decode::<u64>().unwrap(), array.nbytes());
        let err = call_raw(&registry, "sum_f64", &[], &[]).unwrap_err();
        assert!(matches!(&err, OpError::BadInput(m) if m.contains("one input")), "{err}");
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let registry = Registry::builtin();
        let err = call(&registry, "delay", bytes::Bytes::new(), &[]).unwrap_err();
        assert!(
            matches!(&err, OpError::BadInput(m) if m.contains("(u64, i64)")),
            "{err}"
        );
        // An input of the wrong type is bad input too.
        let empty = Arc::new(Value::default());
        let err = call_raw(&registry, "sum", &args(&0i64).unwrap(), &[empty]).unwrap_err();
        assert!(matches!(err, OpError::BadInput(_)), "{err}");
    }
}
