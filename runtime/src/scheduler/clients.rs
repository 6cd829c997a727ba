//! What the scheduler does on client messages other than graphs (those
//! are in `submit`): scatter, releases and disconnects; plus interning of
//! op and resource names.

use bytes::Bytes;

use crate::ids::{ClientId, FxHashMap, Key, OpId, ResourceId, SharedStr, TaskId, WorkerId};
use crate::protocol::{Peer, Priority, ResourceAmount, Tier, ToClient, ToWorker, WorkerStatus};

use super::task::{QueueKind, Task, key_hash};
use super::worker::NOT_LISTED;
use super::{Comm, OpStats, Scheduler, TaskState};

impl Scheduler {
    pub(super) fn client_gone(&mut self, client: ClientId) {
        let Some(c) = self.clients.remove(&client) else {
            tracing::warn!(%client, "disconnect of an unknown client; ignored");
            self.stats.ignored += 1;
            return;
        };
        for id in c.wants {
            if let Some(t) = self.tasks.get_mut(id)
                && let Some(pos) = t.who_wants.iter().position(|&x| x == client)
            {
                t.who_wants.swap_remove(pos);
                self.recheck.push(id);
                self.touch(id);
            }
        }
    }

    pub(super) fn client_release(&mut self, client: ClientId, keys: Vec<Key>) {
        for key in keys {
            let Some(id) = self.tasks.find(&key) else {
                tracing::warn!(%client, %key, "release of an unknown key; ignored");
                self.stats.ignored += 1;
                continue;
            };
            let t = &mut self.tasks[id];
            let Some(pos) = t.who_wants.iter().position(|&x| x == client) else {
                tracing::warn!(%client, %key, "release of a key this client does not hold; ignored");
                self.stats.ignored += 1;
                continue;
            };
            t.who_wants.swap_remove(pos);
            let c = self
                .clients
                .get_mut(&client)
                .expect("internal error: checked by handle");
            c.n_wants -= 1;
            self.recheck.push(id);
            self.touch(id);
        }
        self.compact_wants(client);
    }

    pub(super) fn compact_wants(&mut self, client: ClientId) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.wants.len() > 16 && c.wants.len() > 2 * c.n_wants as usize {
            c.wants
                .retain(|&id| self.tasks.get(id).is_some_and(|t| t.who_wants.contains(&client)));
            c.wants.sort_unstable();
            c.wants.dedup();
        }
    }

    /// Registers data a client put on a worker, all or nothing: the
    /// worker adopts the values it holds under those keys, the client gets
    /// `InMemory` per key, or `ScatterRejected` and nothing is kept.
    pub(super) fn scatter(&mut self, client: ClientId, worker: WorkerId, data: Vec<(Key, u64)>, comm: &mut impl Comm) {
        let refusal = if !self.workers.contains_key(&worker) {
            Some(format!("worker {worker} is not (or no longer) registered"))
        } else {
            let mut seen = FxHashMap::default();
            data.iter().find_map(|(key, _)| {
                if self.tasks.find(key).is_some() {
                    Some(format!("key {key} is already known to the scheduler"))
                } else if seen.insert(key.as_str(), ()).is_some() {
                    Some(format!("key {key} appears twice"))
                } else {
                    None
                }
            })
        };
        if let Some(reason) = refusal {
            tracing::warn!(%client, %worker, %reason, "scatter refused");
            self.stats.ignored += 1;
            let keys = data.into_iter().map(|(key, _)| key).collect();
            comm.to_client(client, ToClient::ScatterRejected { worker, keys, reason });
            return;
        }
        for (key, nbytes) in data {
            let id = self.insert_scattered(key.clone(), worker, nbytes, Tier::Host);
            comm.to_worker(worker, ToWorker::Adopt { task: id, key, nbytes });
            self.add_want(client, id, comm);
        }
    }

    /// Enters a task without lineage whose result `worker` holds (a
    /// scattered value): in memory there, wanted by nobody yet.
    pub(super) fn insert_scattered(&mut self, key: Key, worker: WorkerId, nbytes: u64, tier: Tier) -> TaskId {
        let op = self.intern_op(&SharedStr::from("<scattered>"));
        let id = self.tasks.reserve();
        self.tasks.insert(Task {
            id,
            key_hash: key_hash(&key),
            key,
            args: Bytes::new(),
            deps: Box::default(),
            dependents: Vec::new(),
            who_has: Vec::new(),
            who_wants: Vec::new(),
            restrictions: None,
            priority: Priority {
                user: 0,
                seq: self.next_seq,
            },
            nbytes,
            state: TaskState::Released,
            op,
            request: 0,
            waiting_on: 0,
            waiters: 0,
            live_dependents: 0,
            proc_idx: NOT_LISTED,
            est: 0.0,
            retries_left: 0,
            deaths: 0,
            queue: QueueKind::None,
            scattered: true,
            ahead: false,
            tier,
        });
        self.next_seq += 1;
        self.add_replica(worker, id, nbytes);
        self.set_state(id, TaskState::Memory);
        id
    }

    /// Gives `client` a future on `id` (if it has none) and tells it the
    /// task's state when that is final.
    pub(super) fn add_want(&mut self, client: ClientId, id: TaskId, comm: &mut impl Comm) {
        let t = &mut self.tasks[id];
        if t.who_wants.contains(&client) {
            return;
        }
        t.who_wants.push(client);
        let c = self
            .clients
            .get_mut(&client)
            .expect("internal error: checked by handle");
        c.wants.push(id);
        c.n_wants += 1;
        let t = &self.tasks[id];
        match t.state {
            TaskState::Memory => comm.to_client(client, self.in_memory(t)),
            TaskState::Erred => comm.to_client(
                client,
                ToClient::Erred {
                    key: t.key.clone(),
                    error: self.errors[&id].clone(),
                },
            ),
            TaskState::Released => self.need(id, comm),
            _ => {}
        }
    }

    /// A client could not gather `keys` from the workers it names: those
    /// replicas are forgotten, keys left without one are recomputed, and
    /// each key is answered with its status now (see
    /// [`FromClient::MissingData`](crate::protocol::FromClient::MissingData)).
    pub(super) fn client_missing_data(
        &mut self,
        client: ClientId,
        keys: Vec<(Key, Vec<WorkerId>)>,
        comm: &mut impl Comm,
    ) {
        for (key, tried) in keys {
            let Some(id) = self.tasks.find(&key) else {
                tracing::warn!(%client, %key, "missing data for an unknown key; ignored");
                self.stats.ignored += 1;
                continue;
            };
            if !self.tasks[id].who_wants.contains(&client) {
                tracing::warn!(%client, %key, "missing data for a key this client does not hold; ignored");
                self.stats.ignored += 1;
                continue;
            }
            tracing::debug!(%client, %key, ?tried, "a client could not gather a result");
            if self.drop_replicas(id, &tried, comm) {
                continue; // `lost` told the client
            }
            let t = &self.tasks[id];
            let answer = match t.state {
                TaskState::Memory => self.in_memory(t),
                TaskState::Erred => ToClient::Erred {
                    key,
                    error: self.errors[&id].clone(),
                },
                _ => ToClient::Lost { key },
            };
            comm.to_client(client, answer);
        }
    }

    /// The message that tells a client where `t`, in memory, is held.
    pub(super) fn in_memory(&self, t: &Task) -> ToClient {
        ToClient::InMemory {
            key: t.key.clone(),
            task: t.id,
            nbytes: t.nbytes,
            who_has: self.peers(&t.who_has),
        }
    }

    /// Holders as peers (id and data address); each must be live.
    pub(super) fn peers(&self, holders: &[WorkerId]) -> Vec<Peer> {
        holders
            .iter()
            .map(|h| Peer {
                worker: *h,
                address: self.workers[h].info.address.clone(),
            })
            .collect()
    }

    /// The live workers, by id, for a client.
    pub(super) fn worker_statuses(&self) -> Vec<WorkerStatus> {
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .values()
            .map(|wk| WorkerStatus {
                worker: wk.id,
                name: wk.info.name.clone(),
                address: wk.info.address.clone(),
                nthreads: wk.info.nthreads,
                n_held: wk.n_held as u64,
                nbytes_held: wk.nbytes_held,
                processing: wk.processing.len() as u64,
            })
            .collect();
        workers.sort_unstable_by_key(|w| w.worker);
        workers
    }

    /// Holders of each key, in order; none for unknown keys and keys not
    /// in memory.
    pub(super) fn who_has_peers(&self, keys: &[Key]) -> Vec<Vec<Peer>> {
        keys.iter()
            .map(|key| {
                let Some(t) = self.tasks.find(key).map(|id| &self.tasks[id]) else {
                    return Vec::new();
                };
                t.who_has
                    .iter()
                    .filter_map(|w| {
                        self.workers.get(w).map(|wk| Peer {
                            worker: *w,
                            address: wk.info.address.clone(),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    pub(super) fn intern_op(&mut self, name: &SharedStr) -> OpId {
        if let Some(&id) = self.op_ids.get(name) {
            return id;
        }
        let id = OpId::new(self.ops.len() as u32);
        self.ops.push(OpStats {
            name: name.clone(),
            avg: 0.0,
            count: 0,
        });
        self.op_ids.insert(name.clone(), id);
        id
    }

    pub(super) fn intern_resource(&mut self, name: &SharedStr) -> ResourceId {
        if let Some(&id) = self.res_ids.get(name) {
            return id;
        }
        let id = ResourceId::new(self.res_names.len() as u16);
        self.res_names.push(name.clone());
        self.res_ids.insert(name.clone(), id);
        id
    }

    pub(super) fn intern_request(&mut self, req: &[ResourceAmount]) -> u32 {
        if req.iter().all(|r| r.amount == 0) {
            return 0;
        }
        let mut v: Vec<(ResourceId, u32)> = req
            .iter()
            .filter(|r| r.amount > 0)
            .map(|r| (self.intern_resource(&r.name), r.amount))
            .collect();
        v.sort_unstable();
        let v = v.into_boxed_slice();
        if let Some(&id) = self.request_ids.get(&v) {
            return id;
        }
        let id = self.requests.len() as u32;
        self.requests.push(v.clone());
        self.request_ids.insert(v, id);
        id
    }

    pub(super) fn reject_graph(client: ClientId, comm: &mut impl Comm, reason: String) {
        tracing::warn!(%client, %reason, "graph rejected");
        comm.to_client(client, ToClient::GraphRejected { reason });
    }
}
