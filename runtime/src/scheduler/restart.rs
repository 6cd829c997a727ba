//! What a scheduler does for the computations of the one it replaces
//! (after a crash and a restart on the same address). Workers keep the
//! results they made and report them, by key, when they register again
//! ([`WorkerInfo::held`](crate::protocol::WorkerInfo::held)); clients
//! reconnect and resubmit the graphs they still hold futures from. A held
//! result whose key a graph already defines is claimed at once (it fills
//! the task, which stops waiting or being queued); the others are staged
//! by key, and a graph submitted later that defines the key claims them
//! when its tasks are entered. Nothing is recomputed that a worker still
//! holds. Staged results no graph claims within
//! [`Config::unclaimed_rounds`](super::Config::unclaimed_rounds) balance
//! rounds are dropped from their workers.

use crate::ids::{ClientId, FxHashMap, Key, TaskId, WorkerId};
use crate::protocol::{HeldResult, TaskError, Tier, ToClient, ToWorker};

use super::task::QueueKind;
use super::{Comm, Scheduler, TaskState};

/// Results held on workers under a key no task has (yet).
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Holders, with the size and tier each reported.
    holders: Vec<(WorkerId, u64, Tier)>,
    /// The balance round it was first reported in.
    since: u64,
}

/// How often, in balance rounds, staged results are checked for expiry.
const EXPIRY_EVERY: u64 = 16;

impl Scheduler {
    /// A worker registered holding `held`: each is claimed for the task of
    /// its key, or staged for a graph still to come.
    pub(super) fn claim_held(&mut self, worker: WorkerId, held: Vec<HeldResult>, comm: &mut impl Comm) {
        if held.is_empty() {
            return;
        }
        tracing::info!(%worker, results = held.len(), "worker kept results from an earlier scheduler");
        let mut unwanted = Vec::new();
        for HeldResult { key, nbytes, tier } in held {
            match self.tasks.find(&key) {
                Some(id) => {
                    if !self.claim(worker, id, nbytes, tier, comm) {
                        unwanted.push(key);
                    }
                }
                None => {
                    let since = self.rounds;
                    let staged = self.staged.entry(key).or_insert_with(|| Staged {
                        holders: Vec::new(),
                        since,
                    });
                    staged.holders.push((worker, nbytes, tier));
                }
            }
        }
        if !unwanted.is_empty() {
            comm.to_worker(worker, ToWorker::Discard { keys: unwanted });
        }
    }

    /// Makes `worker`'s held copy the result of task `id` (telling the
    /// worker to file it so); false when the task cannot take it: it is
    /// running somewhere (its links may wait on it there) or erred.
    fn claim(&mut self, worker: WorkerId, id: TaskId, nbytes: u64, tier: Tier, comm: &mut impl Comm) -> bool {
        match self.tasks[id].state {
            TaskState::Memory => self.add_replica(worker, id, nbytes),
            TaskState::Released | TaskState::Waiting | TaskState::Queued => {
                // A root-queue entry goes stale and is skipped.
                let queue = std::mem::replace(&mut self.tasks[id].queue, QueueKind::None);
                if queue == QueueKind::Unrunnable {
                    self.unrunnable.retain(|&x| x != id);
                }
                self.put_in_memory(worker, id, nbytes, tier, comm);
            }
            TaskState::Processing(_) | TaskState::Erred => return false,
            TaskState::Forgotten => unreachable!("forgotten tasks are not stored"),
        }
        self.stats.reclaimed += 1;
        let key = self.tasks[id].key.clone();
        comm.to_worker(worker, ToWorker::Adopt { task: id, key, nbytes });
        true
    }

    /// Tasks just entered from a graph claim the results staged under
    /// their keys.
    pub(super) fn claim_staged(&mut self, ids: &[TaskId], comm: &mut impl Comm) {
        if self.staged.is_empty() {
            return;
        }
        for &id in ids {
            let Some(staged) = self.staged.remove(&self.tasks[id].key) else {
                continue;
            };
            for (worker, nbytes, tier) in staged.holders {
                self.claim(worker, id, nbytes, tier, comm);
            }
        }
    }

    /// A client reconnected holding futures on `keys`, which have no
    /// lineage (scattered): each is wanted again if known, registered from
    /// a worker that kept it, or erred as lost.
    pub(super) fn reclaim(&mut self, client: ClientId, keys: Vec<Key>, comm: &mut impl Comm) {
        for key in keys {
            let id = match self.tasks.find(&key) {
                Some(id) => id,
                None => match self.staged.remove(&key) {
                    Some(staged) => {
                        let mut holders = staged.holders.into_iter();
                        let Some((first, nbytes, tier)) = holders.next() else {
                            continue;
                        };
                        let id = self.insert_scattered(key.clone(), first, nbytes, tier);
                        comm.to_worker(first, ToWorker::Adopt { task: id, key, nbytes });
                        self.stats.reclaimed += 1;
                        for (worker, nbytes, tier) in holders {
                            self.claim(worker, id, nbytes, tier, comm);
                        }
                        id
                    }
                    None => {
                        let error = TaskError::DataLost { key: key.clone() };
                        comm.to_client(client, ToClient::Erred { key, error });
                        continue;
                    }
                },
            };
            self.add_want(client, id, comm);
        }
    }

    /// A worker is gone: so are the results it staged.
    pub(super) fn unstage(&mut self, worker: WorkerId) {
        if self.staged.is_empty() {
            return;
        }
        self.staged.retain(|_, staged| {
            staged.holders.retain(|&(w, ..)| w != worker);
            !staged.holders.is_empty()
        });
    }

    /// One more balance round: staged results older than the configured
    /// rounds are dropped from their workers.
    pub(super) fn expire_staged(&mut self, comm: &mut impl Comm) {
        self.rounds += 1;
        if self.staged.is_empty() || !self.rounds.is_multiple_of(EXPIRY_EVERY) {
            return;
        }
        let (now, ttl) = (self.rounds, self.config.unclaimed_rounds);
        let mut dropped: FxHashMap<WorkerId, Vec<Key>> = FxHashMap::default();
        self.staged.retain(|key, staged| {
            if now.saturating_sub(staged.since) < ttl {
                return true;
            }
            for &(worker, ..) in &staged.holders {
                dropped.entry(worker).or_default().push(key.clone());
            }
            false
        });
        for (worker, keys) in dropped {
            tracing::info!(%worker, results = keys.len(), "dropping kept results no graph claimed");
            comm.to_worker(worker, ToWorker::Discard { keys });
        }
    }

    /// Results staged on workers, not yet claimed by any task.
    pub fn n_staged(&self) -> usize {
        self.staged.len()
    }
}
