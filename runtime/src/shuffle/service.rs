//! A worker's side of the shuffle: pushing the pieces of its inputs to
//! their owners, receiving pieces (kept in the store, so they count
//! against the worker's memory and spill), and handing an output's
//! pieces to its unpack task.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_transport::Buffer;

use crate::data::PeerPool;
use crate::ids::{FxHashMap, SharedStr, TaskId};
use crate::ops::{OpContext, OpError, Registry};
use crate::store::{Pressure, Store};
use crate::value::Value;

use super::ops::Pushed;
use super::{Call, ShuffleSpec};

/// Most bytes of pieces in one push message (Dask's 50 MiB a message); a
/// larger piece goes alone.
pub const MAX_PUSH_BYTES: u64 = 50 << 20;

/// Push messages one transfer has in flight at once.
pub const PUSHES_IN_FLIGHT: usize = 4;

/// How long one push may take before the pusher gives up on its peer: a
/// peer that vanished mid-push is an error, never a hang.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a receiver past its pause threshold holds the acknowledgement
/// of a push back while its spilling catches up (backpressure on the
/// pushers), at most.
pub const BACKPRESSURE_WAIT: Duration = Duration::from_secs(10);

/// Pieces for one worker, from one input of one shuffle run: sent to the
/// worker's data server, the pieces' frames following the envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The shuffle.
    pub id: u64,
    /// Its run.
    pub run: u64,
    /// Its input partitions.
    pub inputs: u32,
    /// Its output partitions.
    pub outputs: u32,
    /// The input the pieces come from.
    pub input: u32,
    /// The data address the pusher meant to reach.
    pub to: SharedStr,
    /// Per piece: its output, its value's header and frame count.
    pub pieces: Vec<(u32, Bytes, u32)>,
}

/// The answer to a [`Push`]: the pieces kept, or why none were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReply(pub Result<u32, String>);

/// The pieces one worker holds for one shuffle.
struct Run {
    run: u64,
    inputs: u32,
    outputs: u32,
    /// By (output, input): the store's id of the piece.
    pieces: BTreeMap<(u32, u32), TaskId>,
}

/// One worker's shuffle service (every worker has one).
pub struct Service {
    /// This worker's data address, as the scheduler knows it.
    address: SharedStr,
    store: Arc<Store>,
    peers: PeerPool,
    runtime: tokio::runtime::Handle,
    registry: Arc<Registry>,
    runs: Mutex<FxHashMap<u64, Run>>,
    next_piece: AtomicU32,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// The service of the worker at data address `address`, keeping pieces
    /// in `store`, pushing through `peers` on `runtime`, and calling the
    /// collections' ops from `registry`.
    pub fn new(
        address: SharedStr,
        store: Arc<Store>,
        peers: PeerPool,
        runtime: tokio::runtime::Handle,
        registry: Arc<Registry>,
    ) -> Self {
        Service {
            address,
            store,
            peers,
            runtime,
            registry,
            runs: Mutex::default(),
            next_piece: AtomicU32::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FxHashMap<u64, Run>> {
        // Every update keeps the map consistent before it can panic.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls a collection's op on `inputs` in the context of the shuffle's
    /// task.
    pub(super) fn call(&self, ctx: &OpContext, call: &Call, inputs: &[Arc<Value>]) -> Result<Value, OpError> {
        let op = self.registry.get(&call.op).ok_or_else(|| {
            OpError::Failed(format!(
                "task {} calls op {:?}, which worker {} does not have",
                ctx.key(),
                call.op,
                ctx.worker()
            ))
        })?;
        op(ctx, &call.args, inputs)
    }

    /// Pushes piece `j` of `input` to the owner of output `j`, batched per
    /// owner, a few messages in flight at once; returns once every piece
    /// is acknowledged. Called on a compute thread.
    pub(super) fn push(&self, spec: &ShuffleSpec, input: u32, pieces: Vec<Value>) -> Result<Pushed, OpError> {
        if spec.workers.is_empty() {
            return Err(OpError::BadInput(format!(
                "shuffle {} names no workers to own its outputs",
                spec.id
            )));
        }
        // Per owner (by its index in the spec), batches of pieces.
        let mut by_owner: Vec<Vec<Vec<(u32, Value)>>> = spec.workers.iter().map(|_| Vec::new()).collect();
        let mut pushed = Pushed { pieces: 0, bytes: 0 };
        let bytes = |b: &Vec<(u32, Value)>| b.iter().map(|(_, v)| v.nbytes()).sum::<u64>();
        for (output, piece) in (0u32..).zip(pieces) {
            pushed.pieces += 1;
            pushed.bytes += piece.nbytes();
            let batches = &mut by_owner[output as usize % spec.workers.len()];
            match batches.last_mut() {
                Some(last) if bytes(last) + piece.nbytes() <= MAX_PUSH_BYTES => last.push((output, piece)),
                _ => batches.push(vec![(output, piece)]),
            }
        }
        let messages: Vec<(SharedStr, Push, Vec<Buffer>)> = spec
            .workers
            .iter()
            .zip(by_owner)
            .flat_map(|(to, batches)| batches.into_iter().map(move |batch| (to.clone(), batch)))
            .map(|(to, batch)| {
                let mut frames = Vec::new();
                let pieces = batch
                    .into_iter()
                    .map(|(output, value)| {
                        let count = value.frames.len() as u32;
                        frames.extend(value.frames);
                        (output, value.header, count)
                    })
                    .collect();
                let push = Push {
                    id: spec.id,
                    run: spec.run,
                    inputs: spec.inputs,
                    outputs: spec.outputs,
                    input,
                    to: to.clone(),
                    pieces,
                };
                (to, push, frames)
            })
            .collect();
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(OpError::Failed(format!(
                "shuffle {}: a transfer must run on a compute thread, not an event loop",
                spec.id
            )));
        }
        self.runtime.block_on(self.send_all(messages))?;
        Ok(pushed)
    }

    /// Sends the push messages, [`PUSHES_IN_FLIGHT`] at a time; the first
    /// failure stops the rest.
    async fn send_all(&self, messages: Vec<(SharedStr, Push, Vec<Buffer>)>) -> Result<(), OpError> {
        let mut in_flight = tokio::task::JoinSet::new();
        for (to, push, frames) in messages {
            if to == self.address {
                // Our own outputs: no network.
                let (id, run, input, count) = (push.id, push.run, push.input, push.pieces.len());
                self.receive(push, frames)
                    .await
                    .0
                    .map_err(|reason| push_error(id, run, input, count, to.as_str(), &reason))?;
                continue;
            }
            if in_flight.len() >= PUSHES_IN_FLIGHT
                && let Some(done) = in_flight.join_next().await
            {
                flatten(done)?;
            }
            let peers = self.peers.clone();
            in_flight.spawn(async move {
                let (id, run, input, count) = (push.id, push.run, push.input, push.pieces.len());
                let reply = tokio::time::timeout(PUSH_TIMEOUT, peers.push(to.as_str(), push, frames)).await;
                let reason = match reply {
                    Ok(Ok(PushReply(Ok(kept)))) if kept as usize == count => return Ok(()),
                    Ok(Ok(PushReply(Ok(kept)))) => format!("it kept {kept}"),
                    Ok(Ok(PushReply(Err(reason)))) => format!("it refused them: {reason}"),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {PUSH_TIMEOUT:?}"),
                };
                Err(push_error(id, run, input, count, to.as_str(), &reason))
            });
        }
        while let Some(done) = in_flight.join_next().await {
            flatten(done)?;
        }
        Ok(())
    }

    /// Keeps the pieces of a push (validated), then holds the answer back
    /// while this worker is past its pause threshold, for a while at most.
    pub async fn receive(&self, push: Push, frames: Vec<Buffer>) -> PushReply {
        let kept = self.accept(push, frames);
        if kept.is_ok() {
            let deadline = tokio::time::Instant::now() + BACKPRESSURE_WAIT;
            while self.store.pressure() == Pressure::Pause && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        PushReply(kept)
    }

    /// Checks a push and stores its pieces; pieces of an older run of the
    /// shuffle are dropped first, pushes of an older run refused.
    fn accept(&self, push: Push, frames: Vec<Buffer>) -> Result<u32, String> {
        let what = format!(
            "a push of shuffle {} run {} from input {}",
            push.id, push.run, push.input
        );
        if push.to != self.address {
            return Err(format!("{what} meant for {} reached {}", push.to, self.address));
        }
        if push.input >= push.inputs {
            return Err(format!("{what}: the shuffle has {} inputs", push.inputs));
        }
        let announced: u64 = push.pieces.iter().map(|(_, _, n)| u64::from(*n)).sum();
        if announced != frames.len() as u64 {
            return Err(format!(
                "{what} announces {announced} frames and carries {}",
                frames.len()
            ));
        }
        if let Some((output, _, _)) = push.pieces.iter().find(|(o, _, _)| *o >= push.outputs) {
            return Err(format!("{what}: output {output} of {}", push.outputs));
        }
        let mut runs = self.lock();
        if let Some(held) = runs.get(&push.id) {
            if held.run > push.run {
                return Err(format!("{what}: run {} replaced it", held.run));
            }
            if held.run == push.run && (held.inputs, held.outputs) != (push.inputs, push.outputs) {
                return Err(format!(
                    "{what} says {} inputs and {} outputs; its other pushes said {} and {}",
                    push.inputs, push.outputs, held.inputs, held.outputs
                ));
            }
        }
        if runs.get(&push.id).is_none_or(|held| held.run != push.run) {
            if let Some(stale) = runs.remove(&push.id) {
                tracing::info!(
                    shuffle = push.id,
                    run = stale.run,
                    pieces = stale.pieces.len(),
                    "a newer run: dropping the pieces of the old one"
                );
                stale.pieces.values().for_each(|t| self.store.remove(*t));
            }
            let fresh = Run {
                run: push.run,
                inputs: push.inputs,
                outputs: push.outputs,
                pieces: BTreeMap::new(),
            };
            runs.insert(push.id, fresh);
        }
        let run = runs
            .get_mut(&push.id)
            .ok_or_else(|| format!("{what}: no run to keep it in"))?;
        let mut frames = frames.into_iter();
        let count = push.pieces.len() as u32;
        for (output, header, n) in push.pieces {
            let value = Value {
                header,
                frames: frames.by_ref().take(n as usize).collect(),
            };
            // Ids of a generation the scheduler never mints.
            let id = TaskId::piece(self.next_piece.fetch_add(1, Ordering::Relaxed));
            self.store.insert(id, Arc::new(value));
            // A transfer run again (its worker was lost) sends the same piece.
            if let Some(old) = run.pieces.insert((output, push.input), id) {
                self.store.remove(old);
            }
        }
        Ok(count)
    }

    /// The pieces of `output` that arrived here for `run` of shuffle `id`,
    /// in input order (read back from disk where they spilled); an error
    /// unless every one of the `inputs` delivered. Called on a compute
    /// thread.
    pub(super) fn take(&self, id: u64, run: u64, inputs: u32, output: u32) -> Result<Vec<Arc<Value>>, OpError> {
        let what = format!("output {output} of shuffle {id} run {run} on {}", self.address);
        let pieces: Vec<(u32, TaskId)> = {
            let runs = self.lock();
            let held = runs.get(&id).filter(|r| r.run == run).ok_or_else(|| {
                OpError::Failed(format!(
                    "{what}: no pieces arrived here (held: {}); was its owner lost? the shuffle restarts",
                    runs.get(&id).map_or("none".into(), |r| format!("run {}", r.run))
                ))
            })?;
            held.pieces
                .range((output, 0)..=(output, u32::MAX))
                .map(|(&(_, input), &task)| (input, task))
                .collect()
        };
        if pieces.len() != inputs as usize {
            let mut missing = (0..inputs).filter(|i| pieces.binary_search_by_key(i, |(input, _)| *input).is_err());
            let first: Vec<String> = missing.by_ref().take(5).map(|i| i.to_string()).collect();
            return Err(OpError::Failed(format!(
                "{what}: {} of {inputs} pieces arrived (missing inputs {}{})",
                pieces.len(),
                first.join(", "),
                if missing.next().is_some() { ", ..." } else { "" }
            )));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(OpError::Failed(format!(
                "{what}: an unpack must run on a compute thread"
            )));
        }
        pieces
            .into_iter()
            .map(|(input, task)| {
                self.runtime.block_on(self.store.load(task)).ok_or_else(|| {
                    OpError::Failed(format!("{what}: the piece of input {input} could not be read back"))
                })
            })
            .collect()
    }

    /// Drops the pieces of `output` (combined into its result); the run is
    /// forgotten with its last piece.
    pub(super) fn release(&self, id: u64, run: u64, output: u32) {
        let mut runs = self.lock();
        let Some(held) = runs.get_mut(&id).filter(|r| r.run == run) else {
            return;
        };
        let taken: Vec<(u32, u32)> = held
            .pieces
            .range((output, 0)..=(output, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in taken {
            if let Some(task) = held.pieces.remove(&key) {
                self.store.remove(task);
            }
        }
        if held.pieces.is_empty() {
            runs.remove(&id);
        }
    }

    /// The scheduler went away, and the store dropped every piece with it
    /// (`Store::orphan`): forgets them; a resubmitted shuffle starts over.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Shuffles with pieces here, and how many pieces each holds.
    pub fn held(&self) -> Vec<(u64, u64, usize)> {
        let mut held: Vec<(u64, u64, usize)> = self.lock().iter().map(|(id, r)| (*id, r.run, r.pieces.len())).collect();
        held.sort_unstable();
        held
    }
}

fn push_error(id: u64, run: u64, input: u32, count: usize, to: &str, reason: &str) -> OpError {
    OpError::Failed(format!(
        "shuffle {id} run {run}: input {input} could not push {count} pieces to {to}: {reason}"
    ))
}

fn flatten(done: Result<Result<(), OpError>, tokio::task::JoinError>) -> Result<(), OpError> {
    done.map_err(|e| OpError::Failed(format!("a shuffle push stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(store: &Arc<Store>) -> Service {
        Service::new(
            "tcp://me:1".into(),
            store.clone(),
            PeerPool::new(weft_transport::Config::default()),
            tokio::runtime::Handle::current(),
            Arc::new(Registry::builtin()),
        )
    }

    /// A push of one-frame pieces `(output, byte)` from `input` of run `run`.
    fn push(run: u64, input: u32, pieces: &[(u32, u8)]) -> (Push, Vec<Buffer>) {
        let push = Push {
            id: 1,
            run,
            inputs: 3,
            outputs: 4,
            input,
            to: "tcp://me:1".into(),
            pieces: pieces.iter().map(|(o, _)| (*o, Bytes::from_static(b"h"), 1)).collect(),
        };
        let frames = pieces.iter().map(|(_, b)| Buffer::host(vec![*b; 8])).collect();
        (push, frames)
    }

    /// Output 1 of run `run` of shuffle 1 (of 3 inputs), taken on a thread
    /// outside the runtime, as a compute thread does.
    fn take_on_a_thread(service: &Arc<Service>, run: u64) -> Result<Vec<Arc<Value>>, OpError> {
        let service = service.clone();
        std::thread::spawn(move || service.take(1, run, 3, 1)).join().unwrap()
    }

    async fn receive(service: &Service, (push, frames): (Push, Vec<Buffer>)) -> Result<u32, String> {
        service.receive(push, frames).await.0
    }

    #[tokio::test]
    async fn malformed_and_foreign_pushes_are_refused_with_the_reason() {
        let store = Store::unlimited();
        let service = service(&store);
        let (mut elsewhere, frames) = push(0, 0, &[(0, 1)]);
        elsewhere.to = "tcp://other:2".into();
        let error = service.receive(elsewhere, frames).await.0.unwrap_err();
        assert!(error.contains("meant for tcp://other:2 reached tcp://me:1"), "{error}");
        let (short, mut frames) = push(0, 0, &[(0, 1), (1, 2)]);
        frames.pop();
        let error = service.receive(short, frames).await.0.unwrap_err();
        assert!(error.contains("announces 2 frames and carries 1"), "{error}");
        let error = receive(&service, push(0, 0, &[(4, 1)])).await.unwrap_err();
        assert!(error.contains("output 4 of 4"), "{error}");
        let error = receive(&service, push(0, 3, &[(0, 1)])).await.unwrap_err();
        assert!(error.contains("has 3 inputs"), "{error}");
        assert_eq!(receive(&service, push(0, 0, &[(0, 1)])).await, Ok(1));
        let (mut other_shape, frames) = push(0, 1, &[(0, 1)]);
        other_shape.outputs = 5;
        let error = service.receive(other_shape, frames).await.0.unwrap_err();
        assert!(error.contains("its other pushes said 3 and 4"), "{error}");
        assert_eq!(store.usage().0, 1, "only the good piece is kept");
    }

    #[tokio::test]
    async fn a_newer_run_drops_the_old_pieces_and_refuses_late_ones() {
        let store = Store::unlimited();
        let service = service(&store);
        assert_eq!(receive(&service, push(0, 0, &[(0, 1), (2, 1)])).await, Ok(2));
        assert_eq!(service.held(), [(1, 0, 2)]);
        assert_eq!(receive(&service, push(1, 2, &[(0, 9)])).await, Ok(1));
        assert_eq!(service.held(), [(1, 1, 1)], "run 0's pieces are gone");
        assert_eq!(store.usage().0, 1);
        let error = receive(&service, push(0, 1, &[(0, 1)])).await.unwrap_err();
        assert!(error.contains("run 1 replaced it"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_output_gets_its_pieces_in_input_order_once_all_arrived() {
        let store = Store::unlimited();
        let service = Arc::new(service(&store));
        for input in [2, 0] {
            let pieces = [(1, input as u8), (3, 100 + input as u8)];
            assert_eq!(receive(&service, push(0, input, &pieces)).await, Ok(2));
        }
        // A transfer run again sends the same pieces: they replace the old.
        assert_eq!(receive(&service, push(0, 0, &[(1, 0), (3, 100)])).await, Ok(2));
        assert_eq!(store.usage().0, 4);
        let error = take_on_a_thread(&service, 0).unwrap_err();
        assert!(
            error.to_string().contains("2 of 3 pieces arrived (missing inputs 1)"),
            "{error}"
        );
        assert_eq!(receive(&service, push(0, 1, &[(1, 1), (3, 101)])).await, Ok(2));
        let pieces = take_on_a_thread(&service, 0).unwrap();
        let firsts: Vec<u8> = pieces.iter().map(|p| p.frames[0].as_host().unwrap()[0]).collect();
        assert_eq!(firsts, [0, 1, 2]);
        let error = take_on_a_thread(&service, 7).unwrap_err();
        assert!(
            error.to_string().contains("no pieces arrived here (held: run 0)"),
            "{error}"
        );
        service.release(1, 0, 1);
        assert_eq!(service.held(), [(1, 0, 3)]);
        service.release(1, 0, 3);
        assert!(service.held().is_empty(), "the run is forgotten with its last piece");
        assert_eq!(store.usage().0, 0);
    }
}
