//! What virtual workers do: their state machine's commands carried out on
//! virtual time (ops, fetches, releases, reports), and the delivery of
//! messages off the wire.

use weft_runtime::ids::{Key, TaskId, WorkerId};
use weft_runtime::protocol::ToWorker;
use weft_runtime::scheduler::Event;
use weft_runtime::worker::{WorkerCommand, WorkerEvent};

use super::{Sim, SimEvent};
use crate::config::SimError;
use crate::reference::{parse_args, value_of};
use crate::wire::Link;
use crate::worker::{Effect, Stored};

impl Sim {
    /// Feeds worker `w` one event and carries out what its state machine
    /// asks: reports go to the scheduler in one batch, ops and fetches
    /// start on virtual time.
    pub(super) fn worker_event(&mut self, w: WorkerId, event: WorkerEvent) -> Result<(), SimError> {
        let mut out = std::mem::take(&mut self.worker_out);
        self.workers[w.index()].state.handle(event, &mut out);
        let mut sends = Vec::new();
        let mut r = Ok(());
        for cmd in out.drain(..) {
            r = r.and_then(|()| match cmd {
                WorkerCommand::Send(msg) => {
                    sends.push(msg);
                    Ok(())
                }
                WorkerCommand::Execute {
                    task,
                    key,
                    op,
                    args,
                    inputs,
                    // Never set: simulated workers run every op on a thread.
                    inline: _,
                } => self.execute(w, task, &key, &op, &args, &inputs),
                WorkerCommand::Fetch { peer, tasks, .. } => {
                    self.fetch(w, peer, tasks);
                    Ok(())
                }
                WorkerCommand::Release(task) => {
                    self.workers[w.index()].store.remove(&task);
                    Ok(())
                }
                WorkerCommand::Adopt { task, key } => {
                    let vw = &mut self.workers[w.index()];
                    match vw.orphans.remove(&key) {
                        Some(stored) => {
                            vw.store.insert(task, stored);
                            Ok(())
                        }
                        None => self.err(format!("{w} told to adopt {key}, which it does not keep")),
                    }
                }
                WorkerCommand::Discard(keys) => {
                    let vw = &mut self.workers[w.index()];
                    keys.iter().for_each(|key| {
                        vw.orphans.remove(key);
                    });
                    Ok(())
                }
            });
        }
        self.worker_out = out;
        r?;
        if !sends.is_empty() {
            self.wire.post_up(w, sends).or_else(|e| self.err(e))?;
            self.push(self.now + self.cfg.latency_us, SimEvent::Deliver(Link::Up(w)));
        }
        Ok(())
    }

    /// Runs a sim op: its value comes from inputs in the store now, its
    /// report after the op's duration (with jitter).
    fn execute(
        &mut self,
        w: WorkerId,
        task: TaskId,
        key: &Key,
        op: &str,
        args: &[u8],
        inputs: &[TaskId],
    ) -> Result<(), SimError> {
        self.stats.runs += 1;
        if self.kept.contains(key) {
            self.stats.kept_recomputed += 1;
        }
        let Some((seed, dur, nbytes)) = parse_args(args) else {
            return self.err(format!("{key}: bad sim args"));
        };
        let fail = match op {
            "fail" => true,
            "flaky" => {
                let runs = self.flaky_runs.entry(task).or_default();
                *runs += 1;
                *runs == 1
            }
            "crash" => {
                self.stats.crashes += 1;
                self.push(self.now, SimEvent::Kill(w));
                false
            }
            _ => false,
        };
        let outcome = if fail {
            Err(format!("sim op {op} failed"))
        } else {
            let store = &self.workers[w.index()].store;
            let mut values = Vec::with_capacity(inputs.len());
            for input in inputs {
                match store.get(input) {
                    Some(stored) => values.push(stored.value),
                    None => return self.err(format!("{key} started without its input {input:?} in the store")),
                }
            }
            Ok(Stored {
                value: value_of(seed, values),
                nbytes: u64::from(nbytes),
            })
        };
        let jitter = self.rng.range(0, u64::from(dur) / 4 + 1);
        let effect = Effect::Executed {
            task,
            outcome,
            compute_us: u64::from(dur),
        };
        let session = self.workers[w.index()].session;
        self.push(self.now + u64::from(dur) + jitter, SimEvent::Effect(w, session, effect));
        Ok(())
    }

    /// Fetches from `peer` what it holds now of `tasks`; the transfer takes
    /// a round trip plus its bytes over the bandwidth.
    fn fetch(&mut self, w: WorkerId, peer: WorkerId, tasks: Vec<TaskId>) {
        let (mut got, mut missing, mut bytes) = (Vec::new(), Vec::new(), 0);
        let holder = self.workers.get(peer.index()).filter(|p| p.alive);
        for task in tasks {
            match holder.and_then(|p| p.get(task, self.sched.key_of(task))) {
                Some(stored) => {
                    bytes += stored.nbytes;
                    got.push((task, stored));
                }
                None => missing.push(task),
            }
        }
        let micros = 2 * self.cfg.latency_us + bytes / self.cfg.bytes_per_us.max(1);
        let session = self.workers[w.index()].session;
        let effect = Effect::Fetched {
            peer,
            got,
            missing,
            micros,
        };
        self.push(self.now + micros, SimEvent::Effect(w, session, effect));
    }

    /// Delivers the oldest message on `link`.
    pub(super) fn deliver(&mut self, link: Link) -> Result<(), SimError> {
        match link {
            Link::Down(w) => {
                let batch = self.wire.deliver_down(w).or_else(|e| self.err(e))?;
                let Some(batch) = batch else {
                    return self.err(format!("delivery on {link:?} found its mailbox empty"));
                };
                if !self.workers[w.index()].alive {
                    return Ok(()); // the connection is gone
                }
                for msg in batch {
                    match msg {
                        // The reactor's part of the handshake.
                        ToWorker::Registered { .. } => {}
                        ToWorker::Rejected { reason } => return self.err(format!("{w} rejected: {reason}")),
                        msg => self.worker_event(w, WorkerEvent::Scheduler(msg))?,
                    }
                }
            }
            Link::Up(w) => {
                let batch = self.wire.deliver_up(w).or_else(|e| self.err(e))?;
                let Some(batch) = batch else {
                    return self.err(format!("delivery on {link:?} found its mailbox empty"));
                };
                if !self.workers[w.index()].alive {
                    if !self.cfg.deliver_from_dead {
                        return Ok(());
                    }
                    self.stats.from_dead += 1;
                }
                for msg in batch {
                    self.sched_event(Event::Worker { worker: w, msg })?;
                }
            }
            Link::ClientUp => {
                let batch = self.wire.deliver_client_up().or_else(|e| self.err(e))?;
                let Some(batch) = batch else {
                    return self.err("delivery from the client found its mailbox empty".into());
                };
                for msg in batch {
                    let client = self.client;
                    self.sched_event(Event::Client { client, msg })?;
                }
            }
        }
        Ok(())
    }
}
