//! Scale-out (`queue: amqp://…`): a pipeline's tickets. `submit` hands a journaled message's id
//! to the ticket batcher, which publishes the ids waiting as one broker message per partition;
//! every node consumes tickets and runs what it can claim in the journal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::PipelineHandle;
use crate::cluster::{Handled, Ticket, WorkQueue};
use crate::message::{Message, State};

/// Waits for the `done` commits of a ticket's messages: `Ack` when all committed, `Requeue`
/// when one could not be recorded (the redelivered ticket finds the others done).
async fn committed(commits: Vec<oneshot::Receiver<()>>) -> Handled {
    for c in commits {
        if c.await.is_err() {
            return Handled::Requeue;
        }
    }
    Handled::Ack
}

/// A message whose ticket the batcher should publish.
pub(super) struct TicketRequest {
    id: String,
    partition: Option<u32>,
    confirmed: oneshot::Sender<()>,
}

/// Publishes tickets in batches: whatever is waiting when the batcher comes round goes out
/// together, one broker message per partition (as the journal's group commit does for
/// appends). Tickets are sent in order on one channel; their confirms are awaited concurrently
/// (up to 16 batches), so the broker's confirm latency does not limit throughput. A ticket that
/// cannot be sent or confirmed is tried again with backoff while the broker is away.
pub(super) async fn ticket_batcher(
    pipeline: String,
    queue: Arc<dyn WorkQueue>,
    mut rx: mpsc::Receiver<TicketRequest>,
    shutdown: CancellationToken,
) {
    const MAX: usize = 512;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => return },
            _ = shutdown.cancelled() => return,
        };
        let mut batch = vec![first];
        // Let the other submitters woken by the same journal commit join this batch.
        tokio::task::yield_now().await;
        while batch.len() < MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut groups: std::collections::BTreeMap<Option<u32>, Vec<TicketRequest>> =
            std::collections::BTreeMap::new();
        for r in batch {
            groups.entry(r.partition).or_default().push(r);
        }
        for (partition, reqs) in groups {
            let ticket = Ticket {
                pipeline: pipeline.clone(),
                partition,
                ids: reqs.iter().map(|r| r.id.clone()).collect(),
            };
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let Some(confirm) = send_ticket(&*queue, &ticket, &shutdown).await else {
                return;
            };
            let queue = queue.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut confirm = confirm;
                loop {
                    match confirm.await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(pipeline = %ticket.pipeline, error = %e, "ticket not confirmed by the broker; sending it again");
                            match send_ticket(&*queue, &ticket, &shutdown).await {
                                Some(c) => confirm = c,
                                None => return,
                            }
                        }
                    }
                }
                drop(permit);
                for r in reqs {
                    let _ = r.confirmed.send(());
                }
            });
        }
    }
}

/// Sends one ticket, trying again with backoff until it is sent; `None` on shutdown.
async fn send_ticket(
    queue: &dyn WorkQueue,
    ticket: &Ticket,
    shutdown: &CancellationToken,
) -> Option<crate::cluster::Confirm> {
    let mut attempt = 0u32;
    loop {
        match queue.publish(ticket).await {
            Ok(c) => return Some(c),
            Err(e) => {
                let wait = Duration::from_millis(100u64 << attempt.min(5));
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(20) {
                    tracing::warn!(pipeline = %ticket.pipeline, error = %e, attempt, "ticket not sent to the broker; trying again");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        tracing::warn!(pipeline = %ticket.pipeline, "shutting down with tickets unpublished; their messages stay journaled for another node");
                        return None;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A pipeline's link to the cluster's work queue.
#[derive(Clone)]
pub(crate) struct Remote {
    pub queue: Arc<dyn WorkQueue>,
    /// This node's id (messages it accepts or claims are owned by it).
    pub node: Arc<str>,
    /// A holder without a heartbeat for this long is dead.
    pub dead_after: Duration,
}

impl PipelineHandle {
    /// Publishes the ticket of a journaled message and waits for the broker's confirm (the
    /// batcher tries again with backoff while the broker is away: the sender waits, which is
    /// back-pressure). On shutdown it gives up: the message is journaled and owned by this
    /// node, so once this node is gone another node adopts it and publishes the ticket again.
    pub(crate) async fn publish_ticket(&self, m: &Message) {
        let _ = self.queue_ticket(m).await.await;
    }

    /// Hands a message's ticket to the batcher; the returned receiver resolves once the
    /// broker confirmed it (an error: the batcher gave up at shutdown).
    pub(crate) async fn queue_ticket(&self, m: &Message) -> oneshot::Receiver<()> {
        let i = &self.inner;
        let (tx, rx) = oneshot::channel();
        let Some(b) = &i.tickets else {
            return rx;
        };
        let partition = i
            .ordering_key
            .as_ref()
            .map(|_| self.partition(m, i.concurrency) as u32);
        let req = TicketRequest {
            id: m.id.clone(),
            partition,
            confirmed: tx,
        };
        if b.send(req).await.is_err() {
            tracing::warn!(pipeline = %i.name, id = %m.id, "ticket batcher stopped; the message stays journaled for another node");
        }
        rx
    }

    /// Handles a ticket from the broker: claims its messages (one `UPDATE` for all) and runs
    /// them here, or finds that there is nothing to do. A message another live node is
    /// processing is waited for; one whose holder died is claimed. An ordered pipeline's
    /// ticket runs one message at a time, in order; others run up to `concurrency` at once.
    pub(crate) async fn handle_ticket(&self, ids: Vec<String>) -> Handled {
        let i = &self.inner;
        let Some(r) = &i.remote else {
            return Handled::Requeue;
        };
        if i.stop.is_cancelled() {
            return Handled::Requeue;
        }
        let since = crate::message::now_ms() - r.dead_after.as_millis() as i64;
        let mut claimed: std::collections::HashMap<String, Message> = match i
            .journal
            .store()
            .claim_tickets(&ids, &r.node, since, false)
            .await
        {
            Ok(ms) => ms.into_iter().map(|m| (m.id.clone(), m)).collect(),
            Err(e) => {
                tracing::warn!(pipeline = %i.name, error = %e, "cannot claim the messages of a ticket; returned to the queue");
                tokio::select! {
                    _ = i.stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                return Handled::Requeue;
            }
        };
        if let Ok(mut a) = i.active.lock() {
            a.extend(claimed.keys().cloned());
        }
        let ordered = i.ordering_key.is_some();
        if ordered {
            // One at a time, in order; the next starts once the previous outcome is recorded
            // (a `done` commits in the background, and is awaited before the ticket's ack).
            let mut commits = Vec::new();
            for id in ids {
                let outcome = match claimed.remove(&id) {
                    Some(m) => self.processed(self.process_ticketed(m, true).await, &mut commits),
                    None => self.handle_one(&id, &mut commits).await,
                };
                if outcome == Handled::Requeue {
                    return Handled::Requeue;
                }
            }
            return committed(commits).await;
        }
        let mut running = tokio::task::JoinSet::new();
        for id in ids {
            let h = self.clone();
            let m = claimed.remove(&id);
            let slots = i.slots.clone();
            running.spawn(async move {
                let mut commits = Vec::new();
                let outcome = match m {
                    Some(m) => {
                        let _slot = slots.acquire_owned().await;
                        h.processed(h.process_ticketed(m, false).await, &mut commits)
                    }
                    // Waits without a slot: the message it waits for may be one this node
                    // claimed for another ticket and needs a slot to run.
                    None => h.handle_one(&id, &mut commits).await,
                };
                // The slot is free while the outcome commits.
                match outcome {
                    Handled::Ack => committed(commits).await,
                    Handled::Requeue => Handled::Requeue,
                }
            });
        }
        let mut all = Handled::Ack;
        while let Some(r) = running.join_next().await {
            if !matches!(r, Ok(Handled::Ack)) {
                all = Handled::Requeue;
            }
        }
        all
    }

    /// [`PipelineHandle::process`] for a claimed ticket message, known as active meanwhile.
    pub(super) async fn process_ticketed(
        &self,
        m: Message,
        in_place: bool,
    ) -> Option<oneshot::Receiver<()>> {
        let id = m.id.clone();
        if let Ok(mut a) = self.inner.active.lock() {
            a.insert(id.clone());
        }
        let r = self.process(m, in_place).await;
        if let Ok(mut a) = self.inner.active.lock() {
            a.remove(&id);
        }
        r
    }

    /// What a processed ticket message means for its ticket: interrupted by a shutdown (the
    /// ticket goes back), or done with a commit to wait for.
    pub(super) fn processed(
        &self,
        commit: Option<oneshot::Receiver<()>>,
        commits: &mut Vec<oneshot::Receiver<()>>,
    ) -> Handled {
        if self.inner.stop.is_cancelled() && commit.is_none() {
            return Handled::Requeue;
        }
        commits.extend(commit);
        Handled::Ack
    }

    /// A ticket's message that the batch claim did not get: done elsewhere (nothing to do), or
    /// held by another node (wait until it is done or its holder is dead, then claim it).
    pub(super) async fn handle_one(
        &self,
        id: &str,
        commits: &mut Vec<oneshot::Receiver<()>>,
    ) -> Handled {
        let i = &self.inner;
        let Some(r) = &i.remote else {
            return Handled::Requeue;
        };
        let mut waited = 0u32;
        loop {
            let mut mine = false;
            match i.journal.store().holder(id).await {
                Ok(Some(h))
                    if h.state == State::Processing
                        && h.owner.as_deref() == Some(&*r.node)
                        && !i.active.lock().is_ok_and(|a| a.contains(id)) =>
                {
                    // Held by this node but not being worked on (its outcome could not be
                    // recorded): take it up again.
                    mine = true;
                }
                Ok(Some(h)) if h.state == State::Processing => {
                    if waited == 0 {
                        tracing::debug!(pipeline = %i.name, %id, owner = ?h.owner, "ticket for a message in progress elsewhere; waiting");
                    }
                    waited += 1;
                }
                Ok(Some(h)) if h.state == State::Received => {}
                Ok(Some(_)) => return Handled::Ack,
                Ok(None) => {
                    tracing::warn!(pipeline = %i.name, %id, "ticket for a message that is not in the journal; dropped");
                    return Handled::Ack;
                }
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, %id, error = %e, "cannot read the message of a ticket");
                }
            }
            tokio::select! {
                _ = i.stop.cancelled() => return Handled::Requeue,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let since = crate::message::now_ms() - r.dead_after.as_millis() as i64;
            match i
                .journal
                .store()
                .claim_tickets(&[id.to_owned()], &r.node, since, mine)
                .await
            {
                Ok(mut ms) if !ms.is_empty() => {
                    let m = ms.remove(0);
                    let ordered = i.ordering_key.is_some();
                    let _slot = if ordered {
                        None
                    } else {
                        i.slots.clone().acquire_owned().await.ok()
                    };
                    let commit = self.process_ticketed(m, ordered).await;
                    return self.processed(commit, commits);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, %id, error = %e, "cannot claim the message of a ticket");
                }
            }
        }
    }
}
