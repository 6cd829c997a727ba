//! The shuffle's built-in ops: `plan`, `transfer`, `barrier` and
//! `unpack` (see the module above for how they fit).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ops::{OpContext, OpError, Registry, args, decode_args};
use crate::value::Value;

use super::{Call, ShuffleSpec};

/// What every shuffle op's name starts with. These ops never run on a
/// worker's event loop (they wait on the network and the disk).
pub const OP_PREFIX: &str = "shuffle.";
/// Holds the spec; args: a [`ShuffleSpec`].
pub const PLAN_OP: &str = "shuffle.plan";
/// Splits one input and pushes its pieces; inputs: the plan, then the
/// split op's inputs.
pub const TRANSFER_OP: &str = "shuffle.transfer";
/// Waits for every transfer; args: the shuffle id.
pub const BARRIER_OP: &str = "shuffle.barrier";
/// Combines the pieces of one output that arrived on this worker.
pub const UNPACK_OP: &str = "shuffle.unpack";

/// Arguments of [`TRANSFER_OP`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TransferArgs {
    /// Which input this is.
    pub input: u32,
    /// The collection's split op.
    pub split: Call,
    /// The collection's op picking one output's piece of a split.
    pub piece: String,
}

/// Arguments of [`UNPACK_OP`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct UnpackArgs {
    /// The shuffle.
    pub id: u64,
    /// Its run.
    pub run: u64,
    /// How many inputs pushed pieces.
    pub inputs: u32,
    /// Which output this is.
    pub output: u32,
    /// The collection's combine op, called with the pieces in input order.
    pub combine: Call,
}

/// What a transfer reports: the pieces and bytes it pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    /// Pieces pushed.
    pub pieces: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Registers the shuffle ops (part of [`Registry::builtin`]).
pub fn register(registry: &mut Registry) {
    registry
        .raw_op(PLAN_OP, |_: &OpContext, a: &[u8], _: &[Arc<Value>]| {
            let spec: ShuffleSpec = decode_args(a)?;
            Ok(Value::encode(&spec)?)
        })
        .raw_op(TRANSFER_OP, transfer)
        .raw_op(BARRIER_OP, |_: &OpContext, _: &[u8], inputs: &[Arc<Value>]| {
            let mut total = Pushed { pieces: 0, bytes: 0 };
            for receipt in inputs {
                let pushed: Pushed = receipt.decode().map_err(OpError::BadInput)?;
                total.pieces += pushed.pieces;
                total.bytes += pushed.bytes;
            }
            Ok(Value::encode(&total)?)
        })
        .raw_op(UNPACK_OP, unpack);
}

fn transfer(ctx: &OpContext, a: &[u8], inputs: &[Arc<Value>]) -> Result<Value, OpError> {
    let task: TransferArgs = decode_args(a)?;
    let (plan, rest) = inputs
        .split_first()
        .ok_or_else(|| OpError::BadInput(format!("{TRANSFER_OP} takes the shuffle's plan as its first input")))?;
    let spec: ShuffleSpec = plan.decode().map_err(OpError::BadInput)?;
    if task.input >= spec.inputs {
        return Err(OpError::BadInput(format!(
            "input {} of shuffle {} that has {}",
            task.input, spec.id, spec.inputs
        )));
    }
    let service = ctx.shuffle()?;
    let split = Arc::new(service.call(ctx, &task.split, rest)?);
    let pieces = (0..spec.outputs)
        .map(|output| {
            let piece = Call {
                op: task.piece.clone(),
                args: args(&output).map_err(OpError::Failed)?,
            };
            service.call(ctx, &piece, std::slice::from_ref(&split))
        })
        .collect::<Result<Vec<Value>, OpError>>()?;
    drop(split);
    let pushed = service.push(&spec, task.input, pieces)?;
    Ok(Value::encode(&pushed)?)
}

fn unpack(ctx: &OpContext, a: &[u8], _: &[Arc<Value>]) -> Result<Value, OpError> {
    let task: UnpackArgs = decode_args(a)?;
    let service = ctx.shuffle()?;
    let pieces = service.take(task.id, task.run, task.inputs, task.output)?;
    let combined = service.call(ctx, &task.combine, &pieces)?;
    service.release(task.id, task.run, task.output);
    Ok(combined)
}
