//! The array's worker ops, registered into a runtime [`Registry`]. On a
//! worker with a GPU, `array.fused` and `array.matmul` run there and leave
//! their chunks in device memory (see [`crate::device`]); the others read
//! device chunks through a copy to the host.
//!
//! | op | args | inputs | result |
//! |---|---|---|---|
//! | `array.fused` | [`FusedArgs`] | chunks the program reads | a chunk, or its partial reduction |
//! | `array.combine` | [`CombineArgs`] | partials | a merged partial, or the final chunk |
//! | `array.from_bytes` | [`FromBytes`] | none | the chunk in the arguments |
//! | `array.matmul` | [`MatmulArgs`] | blocks of A and B | the sum of their products |
//! | `array.assemble` | [`AssembleArgs`] | chunks holding the pieces | the chunk they make up |
//! | `array.rechunk_split` | [`SplitArgs`] | one chunk | its regions for the output chunks, one frame each |
//! | `array.rechunk_piece` | an output index (`u32`) | a split | that output's region, a chunk |
//! | `array.reshape` | [`ReshapeArgs`] | one chunk | the same frame under a new shape |
//! | `array.write_npy` | [`WriteNpy`] | one chunk | writes it as a `.npy` file; its byte count |
//! | `array.read_npy` | [`ReadNpy`] | none | the chunk read from a `.npy` file |

use std::sync::Arc;

use weft_runtime::ops::{OpContext, OpError, decode_args};
use weft_runtime::{Registry, Value};

use crate::block::decode;
use crate::create::FromBytes;
use crate::device;
use crate::error::ArrayError;
use crate::fuse::{FusedArgs, from_bytes, run_fused};
use crate::matmul::{MatmulArgs, run_matmul};
use crate::npy::{ReadNpy, WriteNpy};
use crate::p2p::{PIECE_OP, SPLIT_OP, SplitArgs, run_piece, run_split};
use crate::rechunk::{AssembleArgs, run_assemble};
use crate::reduce::combine;
use crate::reshape::{ReshapeArgs, run_reshape};
use crate::tree::CombineArgs;

/// Registers the array's ops.
pub fn register(registry: &mut Registry) -> &mut Registry {
    registry
        .raw_op("array.fused", |ctx: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
            let args: FusedArgs = decode_args(a)?;
            match ctx.gpu() {
                Some(_) => device::fused(ctx, &args, inputs),
                None => Ok(run_fused(&args, inputs)?),
            }
        })
        .raw_op("array.combine", |_: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
            let args: CombineArgs = decode_args(a)?;
            let parts = inputs.iter().map(|v| decode(v)).collect::<Result<Vec<_>, _>>()?;
            Ok(combine(args.op, args.dtype, &parts, args.last)?)
        })
        .raw_op("array.from_bytes", |_: &OpContext<'_>, a: &[u8], _: &[Arc<Value>]| {
            let args: FromBytes = decode_args(a)?;
            Ok(from_bytes(args.dtype, &args.shape, &args.bytes)?)
        })
        .raw_op(
            "array.matmul",
            |ctx: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
                let args: MatmulArgs = decode_args(a)?;
                match ctx.gpu() {
                    Some(_) => device::matmul(ctx, &args, inputs),
                    None => Ok(run_matmul(&args, inputs)?),
                }
            },
        )
        .raw_op(
            "array.assemble",
            |_: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
                let args: AssembleArgs = decode_args(a)?;
                Ok(run_assemble(&args, inputs)?)
            },
        )
        .raw_op(SPLIT_OP, |_: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
            let args: SplitArgs = decode_args(a)?;
            let [input] = inputs else {
                return Err(OpError::BadInput(format!(
                    "{SPLIT_OP} takes one chunk, not {}",
                    inputs.len()
                )));
            };
            Ok(run_split(&args, input)?)
        })
        .raw_op(PIECE_OP, |_: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
            let output: u32 = decode_args(a)?;
            let [split] = inputs else {
                return Err(OpError::BadInput(format!(
                    "{PIECE_OP} takes one split, not {}",
                    inputs.len()
                )));
            };
            Ok(run_piece(output, split)?)
        })
        .raw_op("array.reshape", |_: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
            let args: ReshapeArgs = decode_args(a)?;
            let input = inputs
                .first()
                .ok_or(OpError::BadInput("reshape takes one chunk".into()))?;
            Ok(run_reshape(&args, input)?)
        })
        .raw_op(
            "array.write_npy",
            |_: &OpContext<'_>, a: &[u8], inputs: &[Arc<Value>]| {
                let args: WriteNpy = decode_args(a)?;
                let input = inputs
                    .first()
                    .ok_or(OpError::BadInput("write_npy takes one chunk".into()))?;
                Ok(args.run(input)?)
            },
        )
        .raw_op("array.read_npy", |_: &OpContext<'_>, a: &[u8], _: &[Arc<Value>]| {
            let args: ReadNpy = decode_args(a)?;
            Ok(args.run()?)
        })
}

impl From<ArrayError> for OpError {
    fn from(error: ArrayError) -> Self {
        match error {
            ArrayError::Io { .. } | ArrayError::Runtime(_) => OpError::Failed(error.to_string()),
            other => OpError::BadInput(other.to_string()),
        }
    }
}

/// The built-in runtime ops plus the array's.
pub fn registry() -> Registry {
    let mut registry = Registry::builtin();
    register(&mut registry);
    registry
}
