//! The virtual client: it submits, gathers every output it is told is in
//! memory (checking the value against the reference), reports what it
//! cannot read, and releases.

use weft_runtime::graph::Graph;
use weft_runtime::ids::{Key, WorkerId};
use weft_runtime::protocol::{FromClient, TaskError, ToClient};
use weft_runtime::scheduler::Event;

use super::{Sim, SimEvent};
use crate::config::SimError;
use crate::reference::{Expected, SimGraph};
use crate::wire::Link;

impl Sim {
    /// Submits a graph from the client now.
    pub fn submit(&mut self, g: SimGraph) -> Result<(), SimError> {
        self.expected.extend(g.expected);
        self.graphs.push(g.graph.clone());
        let msg = self
            .wire
            .round_trip_client_up(FromClient::SubmitGraph(g.graph))
            .or_else(|e| self.err(e))?;
        let client = self.client;
        self.sched_event(Event::Client { client, msg })
    }

    pub(super) fn client_receive(&mut self, msg: ToClient) -> Result<(), SimError> {
        match msg {
            ToClient::GraphAccepted { .. } => {}
            ToClient::GraphRejected { reason } => {
                return self.err(format!("graph rejected: {reason}"));
            }
            ToClient::ScatterRejected { reason, .. } => {
                return self.err(format!("scatter rejected: {reason}"));
            }
            // Answers to queries the virtual client never makes.
            msg @ (ToClient::Workers { .. }
            | ToClient::WhoHas { .. }
            | ToClient::Observed { .. }
            | ToClient::ObserveRefused { .. }) => {
                return self.err(format!("unexpected message to the client: {msg:?}"));
            }
            // Gathered before, now being recomputed: wanted again (unless
            // the client released it already, its release in flight).
            ToClient::Lost { key } => {
                if !self.cfg.release_on_receipt {
                    self.outcomes.remove(&key);
                    self.stats.outputs_lost += 1;
                }
            }
            ToClient::InMemory { key, who_has, .. } => {
                let holders: Vec<WorkerId> = who_has.iter().map(|p| p.worker).collect();
                self.gather(key, &holders, true)?;
            }
            ToClient::Erred { key, error } => {
                match (self.expected.get(&key), error.root_cause()) {
                    (Some(Expected::Error), TaskError::OpFailed { error, .. })
                        if error.to_string() == "sim op fail failed" =>
                    {
                        self.stats.outputs_erred += 1
                    }
                    (Some(_), TaskError::KilledWorkers { .. }) => self.stats.outputs_killed += 1,
                    (e, _) => {
                        return self.err(format!("{key} erred ({error}) but expected {e:?}"));
                    }
                }
                self.outcomes.insert(key.clone(), Err(error));
                if self.cfg.release_on_receipt {
                    self.client_send(FromClient::Release { keys: vec![key] })?;
                }
            }
        }
        Ok(())
    }

    /// The client reads `key` from `holders`: a live one that has it gives
    /// the value, checked against the reference (`reported`: on an
    /// `InMemory`, counted, released or read again later); with none, the
    /// client reports missing data, as the real one does, and waits.
    pub(super) fn gather(&mut self, key: Key, holders: &[WorkerId], reported: bool) -> Result<(), SimError> {
        let Some(id) = self.sched.task_id(&key) else {
            return self.err(format!("{key} reported in memory but unknown"));
        };
        let value = holders.iter().find_map(|w| {
            let vw = &self.workers[w.index()];
            if vw.alive {
                vw.get(id, Some(&key)).map(|s| s.value)
            } else {
                None
            }
        });
        let Some(value) = value else {
            self.stats.outputs_missing += 1;
            self.outcomes.remove(&key);
            let keys = vec![(key, holders.to_vec())];
            return self.client_send(FromClient::MissingData { keys });
        };
        match self.expected.get(&key) {
            Some(Expected::Value(v)) if *v == value => {}
            e => return self.err(format!("{key}: gathered {value:#x}, expected {e:?}")),
        }
        if !reported {
            return Ok(());
        }
        self.stats.outputs_ok += 1;
        self.arrivals.insert(key.clone(), self.now);
        self.outcomes.insert(key.clone(), Ok(value));
        if self.cfg.release_on_receipt {
            self.client_send(FromClient::Release { keys: vec![key] })?;
        } else {
            let later = self.now + self.rng.range(1, 50) * self.cfg.latency_us.max(1);
            self.push(later, SimEvent::Gather(key, holders.to_vec()));
        }
        Ok(())
    }

    /// After a scheduler crash: resubmits each graph for the outputs still
    /// expected (all of them while the client holds what it gathered, else
    /// those not gathered yet), in the order first submitted.
    pub(super) fn resubmit(&mut self) -> Result<(), SimError> {
        let graphs = std::mem::take(&mut self.graphs);
        let keep_held = !self.cfg.release_on_receipt;
        let mut result = Ok(());
        for graph in &graphs {
            let outputs: Vec<Key> = graph
                .outputs
                .iter()
                .filter(|k| self.expected.contains_key(*k) && (keep_held || !self.outcomes.contains_key(*k)))
                .cloned()
                .collect();
            if outputs.is_empty() {
                continue;
            }
            let graph = Graph {
                tasks: graph.tasks.clone(),
                outputs,
            };
            let client = self.client;
            result = self
                .wire
                .round_trip_client_up(FromClient::SubmitGraph(graph))
                .or_else(|e| self.err(e))
                .and_then(|msg| self.sched_event(Event::Client { client, msg }));
            if result.is_err() {
                break;
            }
        }
        self.graphs = graphs;
        result
    }

    /// The client sends `msg` to the scheduler, arriving after the latency.
    pub(super) fn client_send(&mut self, msg: FromClient) -> Result<(), SimError> {
        self.wire.post_client(&vec![msg]).or_else(|e| self.err(e))?;
        self.push(self.now + self.cfg.latency_us, SimEvent::Deliver(Link::ClientUp));
        Ok(())
    }

    /// The client releases `keys` now (their outcomes are no longer
    /// expected).
    pub fn release(&mut self, keys: Vec<Key>) -> Result<(), SimError> {
        for key in &keys {
            self.expected.remove(key);
        }
        self.client_send(FromClient::Release { keys })
    }

    /// When the client last gathered `key` (logical time, microseconds).
    pub fn arrived_at(&self, key: &str) -> Option<u64> {
        self.arrivals.get(key).copied()
    }
}
