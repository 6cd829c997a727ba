//! The sim's wire: every message between the scheduler and a worker or the
//! client is encoded with the production codec (`weft_runtime::codec`:
//! postcard envelopes, batched per destination as the reactors batch them),
//! waits in its connection's mailbox, and is decoded when delivered. At the
//! end of a run every mailbox must be empty (tako's `TestComm`): a message
//! sent and never consumed fails the run.

use std::collections::VecDeque;

use weft_runtime::codec::{self, ClientDown, ClientUp, WorkerDown, WorkerUp};
use weft_runtime::ids::{FxHashMap, WorkerId};
use weft_runtime::protocol::{FromClient, FromWorker, ToWorker};
use weft_transport::Message;

/// One direction of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Link {
    /// Scheduler to worker.
    Down(WorkerId),
    /// Worker to scheduler.
    Up(WorkerId),
    /// Client to scheduler.
    ClientUp,
}

/// Encoded messages in flight, per connection, in the order sent.
#[derive(Default)]
pub(crate) struct Wire {
    down: Vec<VecDeque<Message>>,
    up: Vec<VecDeque<Message>>,
    client_up: VecDeque<Message>,
    /// Per link, how many of the oldest messages were on a connection
    /// that broke (the scheduler crashed): delivered as empty batches.
    stale: FxHashMap<Link, usize>,
    /// Messages encoded (one per batch).
    pub sent: u64,
    /// Header bytes encoded.
    pub bytes: u64,
}

impl Wire {
    fn mailbox(&mut self, link: Link) -> &mut VecDeque<Message> {
        let (boxes, w) = match link {
            Link::Down(w) => (&mut self.down, w),
            Link::Up(w) => (&mut self.up, w),
            Link::ClientUp => return &mut self.client_up,
        };
        if boxes.len() <= w.index() {
            boxes.resize_with(w.index() + 1, VecDeque::new);
        }
        &mut boxes[w.index()]
    }

    fn post(&mut self, link: Link, message: Message) {
        self.sent += 1;
        self.bytes += message.header.len() as u64;
        self.mailbox(link).push_back(message);
    }

    /// Encodes a batch for a worker into its mailbox.
    pub fn post_down(&mut self, w: WorkerId, batch: &WorkerDown) -> Result<(), String> {
        let message = codec::encode(batch)?;
        self.post(Link::Down(w), message);
        Ok(())
    }

    /// Encodes a worker's reports into its mailbox to the scheduler.
    pub fn post_up(&mut self, w: WorkerId, batch: Vec<FromWorker>) -> Result<(), String> {
        let message = codec::encode(&WorkerUp::Batch(batch))?;
        self.post(Link::Up(w), message);
        Ok(())
    }

    /// Encodes a client message into the client's mailbox to the scheduler.
    pub fn post_client(&mut self, batch: &ClientUp) -> Result<(), String> {
        let message = codec::encode(batch)?;
        self.post(Link::ClientUp, message);
        Ok(())
    }

    /// Takes the oldest message on `link`, decoded; `None` if it is empty.
    pub fn deliver_down(&mut self, w: WorkerId) -> Result<Option<Vec<ToWorker>>, String> {
        self.take(Link::Down(w))
            .map(|m| codec::decode::<WorkerDown>(&m))
            .transpose()
    }

    /// Takes the oldest report batch of worker `w`.
    pub fn deliver_up(&mut self, w: WorkerId) -> Result<Option<Vec<FromWorker>>, String> {
        match self
            .take(Link::Up(w))
            .map(|m| codec::decode::<WorkerUp>(&m))
            .transpose()?
        {
            Some(WorkerUp::Batch(batch)) => Ok(Some(batch)),
            Some(WorkerUp::Heartbeat(_)) => Ok(Some(Vec::new())),
            None => Ok(None),
        }
    }

    /// Takes the client's oldest message to the scheduler.
    pub fn deliver_client_up(&mut self) -> Result<Option<Vec<FromClient>>, String> {
        self.take(Link::ClientUp)
            .map(|m| codec::decode::<ClientUp>(&m))
            .transpose()
    }

    /// The oldest message on `link`; a stale one (see [`Wire::cut`]) is
    /// dropped and read as an empty batch.
    fn take(&mut self, link: Link) -> Option<Message> {
        let message = self.mailbox(link).pop_front()?;
        match self.stale.get_mut(&link) {
            Some(n) if *n > 0 => {
                *n -= 1;
                match link {
                    Link::Up(_) => codec::encode(&WorkerUp::Batch(Vec::new())).ok(),
                    Link::Down(_) | Link::ClientUp => codec::encode(&Vec::<ToWorker>::new()).ok(),
                }
            }
            _ => Some(message),
        }
    }

    /// Every connection to the scheduler broke: the messages on the wire
    /// now are never read (each is still delivered, as nothing).
    pub fn cut(&mut self) {
        let mut links = vec![(Link::ClientUp, self.client_up.len())];
        for (link, boxes) in [(Link::Down as fn(WorkerId) -> Link, &self.down), (Link::Up, &self.up)] {
            links.extend(
                boxes
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (link(WorkerId::new(i as u32)), b.len())),
            );
        }
        for (link, n) in links {
            if n > 0 {
                self.stale.insert(link, n);
            }
        }
    }

    /// Round-trips what the scheduler tells the client (delivered at once:
    /// the virtual client sits beside the scheduler).
    pub fn round_trip_client_down(&mut self, batch: &ClientDown) -> Result<ClientDown, String> {
        let message = codec::encode(batch)?;
        self.sent += 1;
        self.bytes += message.header.len() as u64;
        codec::decode(&message)
    }

    /// Round-trips a message the client hands the scheduler directly.
    pub fn round_trip_client_up(&mut self, msg: FromClient) -> Result<FromClient, String> {
        let message = codec::encode(&vec![msg])?;
        self.sent += 1;
        self.bytes += message.header.len() as u64;
        let mut batch: ClientUp = codec::decode(&message)?;
        match (batch.pop(), batch.is_empty()) {
            (Some(msg), true) => Ok(msg),
            _ => Err("a one-message batch decoded to another count".into()),
        }
    }

    /// Messages still waiting in some mailbox, with the first such link.
    pub fn leftover(&self) -> (usize, Option<Link>) {
        let mut n = self.client_up.len();
        let mut first = (!self.client_up.is_empty()).then_some(Link::ClientUp);
        for (links, boxes) in [(Link::Down as fn(WorkerId) -> Link, &self.down), (Link::Up, &self.up)] {
            for (i, mailbox) in boxes.iter().enumerate() {
                if !mailbox.is_empty() {
                    n += mailbox.len();
                    first.get_or_insert(links(WorkerId::new(i as u32)));
                }
            }
        }
        (n, first)
    }
}

/// Groups a scheduler's worker messages by destination, keeping each
/// worker's order: one batch per worker and scheduler event, as the
/// server's outboxes send them.
pub(crate) fn batch_by_worker(msgs: Vec<(WorkerId, ToWorker)>) -> Vec<(WorkerId, WorkerDown)> {
    let mut batches: Vec<(WorkerId, WorkerDown)> = Vec::new();
    let mut index: FxHashMap<WorkerId, usize> = FxHashMap::default();
    for (w, msg) in msgs {
        let i = *index.entry(w).or_insert_with(|| {
            batches.push((w, Vec::new()));
            batches.len() - 1
        });
        batches[i].1.push(msg);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_runtime::ids::TaskId;

    #[test]
    fn a_message_not_delivered_is_left_over_and_delivery_decodes_it() {
        let mut wire = Wire::default();
        let w = WorkerId::new(2);
        let free = ToWorker::Free { task: TaskId::new(1) };
        wire.post_down(w, &vec![free.clone()]).expect("encodes");
        assert_eq!(wire.leftover(), (1, Some(Link::Down(w))));
        assert_eq!(wire.deliver_down(w), Ok(Some(vec![free])));
        assert_eq!(wire.leftover(), (0, None));
        assert_eq!(wire.deliver_down(w), Ok(None), "nothing more on that link");
    }
}
