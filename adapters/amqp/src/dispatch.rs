//! `queue: amqp://…`: the cluster's work queue on RabbitMQ (see `huizhen_core::cluster`).
//!
//! Queues (durable; quorum with `cluster.quorum`): `PREFIX.PIPELINE` for a pipeline without an
//! ordering key, consumed by every node (competing consumers, `prefetch` = the pipeline's
//! `concurrency`); `PREFIX.PIPELINE.N` for each partition of an ordered pipeline, declared with
//! `x-single-active-consumer` and consumed one ticket at a time by the node the partition is
//! assigned to. A ticket is a persistent message whose body and `message-id` are the journal's
//! message id; it is published with publisher confirms and acknowledged by the consumer only after
//! the message's outcome is committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use huizhen_core::cluster::{
    Assignment, ClusterConfig, Confirm, Handled, QueueFactory, QueueRun, QueueSpec, Ticket,
    WorkQueue, queue_name,
};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

inventory::submit! {
    QueueFactory { schemes: &["amqp", "amqps"], build }
}

fn build(
    url: &str,
    cluster: &ClusterConfig,
    specs: &[QueueSpec],
) -> Result<Arc<dyn WorkQueue>, String> {
    crate::source::check_url(url)
        .map_err(|e| format!("queue: {}", e.trim_start_matches("url: ")))?;
    Ok(Arc::new(AmqpWorkQueue {
        url: url.to_owned(),
        prefix: cluster.prefix.clone(),
        quorum: cluster.quorum,
        specs: specs.to_vec(),
        publisher: Mutex::new(None),
        tls: match &cluster.tls_ca {
            Some(ca) => {
                let t = crate::AmqpTls { ca: ca.clone() };
                t.load()
                    .map_err(|e| format!("cluster.{}", e.replacen("tls.ca", "tls_ca", 1)))?;
                Some(t)
            }
            None => None,
        },
        reset: Arc::default(),
        confirm_timeout: Duration::from_secs(10),
    }))
}

/// The work queue on one RabbitMQ broker (or cluster behind one URL).
pub struct AmqpWorkQueue {
    url: String,
    prefix: String,
    quorum: bool,
    specs: Vec<QueueSpec>,
    /// The publishing connection and its confirming channel, opened on first use and again
    /// after an error.
    publisher: Mutex<Option<(Connection, Channel)>>,
    tls: Option<crate::AmqpTls>,
    /// Set when a confirm failed: the next publish opens the connection again.
    reset: Arc<std::sync::atomic::AtomicBool>,
    confirm_timeout: Duration,
}

impl AmqpWorkQueue {
    fn queues(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for s in &self.specs {
            if s.partitions == 0 {
                out.push((queue_name(&self.prefix, &s.pipeline, None), false));
            } else {
                for p in 0..s.partitions {
                    out.push((queue_name(&self.prefix, &s.pipeline, Some(p)), true));
                }
            }
        }
        out
    }

    async fn declare(&self, ch: &Channel, name: &str, single_active: bool) -> Result<(), String> {
        let mut args = FieldTable::default();
        if self.quorum {
            args.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString("quorum".into()),
            );
        }
        if single_active {
            args.insert(
                ShortString::from("x-single-active-consumer"),
                AMQPValue::Boolean(true),
            );
        }
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("declaring work queue {name}: {e}"))
    }

    async fn connect(&self) -> Result<Connection, String> {
        crate::connect(&self.url, self.tls.as_ref()).await
    }

    async fn open_publisher(&self) -> Result<(Connection, Channel), String> {
        let conn = self.connect().await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm.select: {e}"))?;
        for (q, single) in self.queues() {
            self.declare(&ch, &q, single).await?;
        }
        Ok((conn, ch))
    }

    async fn publish_one(&self, t: &Ticket) -> Result<Confirm, String> {
        let ch = {
            let mut guard = self.publisher.lock().await;
            let reset = self.reset.swap(false, std::sync::atomic::Ordering::SeqCst);
            let healthy = !reset
                && guard
                    .as_ref()
                    .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
            if !healthy {
                *guard = None;
                *guard = Some(self.open_publisher().await?);
            }
            match guard.as_ref() {
                Some((_, ch)) => ch.clone(),
                None => return Err("no channel".into()),
            }
        };
        let queue = queue_name(&self.prefix, &t.pipeline, t.partition);
        let first = t.ids.first().map(String::as_str).unwrap_or_default();
        let props = BasicProperties::default()
            .with_message_id(first.into())
            .with_type(t.pipeline.as_str().into())
            .with_delivery_mode(2);
        let confirm = match ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &t.encode(),
                props,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                *self.publisher.lock().await = None;
                return Err(format!("publish to {queue}: {e}"));
            }
        };
        let timeout = self.confirm_timeout;
        let reset = self.reset.clone();
        Ok(Box::pin(async move {
            let r = match tokio::time::timeout(timeout, confirm).await {
                Err(_) => Err(format!("no publisher confirm within {timeout:?}")),
                Ok(Err(e)) => Err(format!("publisher confirm: {e}")),
                Ok(Ok(Confirmation::Ack(None))) => return Ok(()),
                Ok(Ok(Confirmation::Ack(Some(_)))) => {
                    Err(format!("unroutable: work queue {queue} does not exist"))
                }
                Ok(Ok(Confirmation::Nack(_))) => {
                    return Err("the broker refused the ticket (nack)".into());
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    return Err("publisher confirms are off".into());
                }
            };
            // Open (and declare) again before the next publish.
            reset.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        }))
    }

    /// A channel consuming `queue` (declared first) with `prefetch` unacknowledged tickets.
    async fn open_consumer(
        &self,
        conn: &Connection,
        queue: &str,
        single_active: bool,
        prefetch: u16,
    ) -> Result<(Channel, lapin::Consumer), String> {
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        self.declare(&ch, queue, single_active).await?;
        ch.basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
        let consumer = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("basic.consume on {queue}: {e}"))?;
        Ok((ch, consumer))
    }

    /// One connection's life: consume until shutdown (`Ok`) or a connection error (`Err`).
    async fn consume(&self, run: &mut QueueRun) -> Result<(), String> {
        let conn = self.connect().await?;
        let (fail_tx, mut fail_rx) = mpsc::channel::<String>(16);
        let stop = run.shutdown.child_token();
        let mut tasks = JoinSet::new();
        let mut partitions: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        // Everything that can fail on this connection; the cleanup below runs either way.
        let result: Result<(), String> = async {
            // Shared queues: one channel each, prefetch = the pipeline's concurrency.
            for spec in self.specs.iter().filter(|s| s.partitions == 0) {
                let queue = queue_name(&self.prefix, &spec.pipeline, None);
                let (ch, consumer) = self
                    .open_consumer(&conn, &queue, false, spec.prefetch)
                    .await?;
                tasks.spawn(shared_consumer(
                    spec.pipeline.clone(),
                    ch,
                    consumer,
                    run.handler.clone(),
                    stop.clone(),
                    fail_tx.clone(),
                ));
            }
            // Partitions of ordered pipelines: those assigned to this node, one consumer each.
            let mut assignment = run.assignment.clone();
            loop {
                let a: Assignment = *assignment.borrow_and_update();
                let wanted: Vec<((String, u32), String)> = self
                    .specs
                    .iter()
                    .flat_map(|s| {
                        (0..s.partitions).filter(move |p| a.owns(*p)).map(move |p| {
                            (
                                (s.pipeline.clone(), p),
                                queue_name(&self.prefix, &s.pipeline, Some(p)),
                            )
                        })
                    })
                    .collect();
                // Let go of partitions no longer ours (after the ticket in hand), then take new ones.
                let keep: std::collections::HashSet<&String> = wanted.iter().map(|w| &w.1).collect();
                let gone: Vec<String> = partitions
                    .keys()
                    .filter(|q| !keep.contains(q))
                    .cloned()
                    .collect();
                for q in gone {
                    if let Some((token, handle)) = partitions.remove(&q) {
                        token.cancel();
                        let _ = handle.await;
                    }
                }
                for ((pipeline, partition), q) in wanted {
                    if partitions.contains_key(&q) {
                        continue;
                    }
                    let (ch, consumer) = self.open_consumer(&conn, &q, true, 1).await?;
                    let token = stop.child_token();
                    let handle = tokio::spawn(partition_consumer(
                        pipeline,
                        partition,
                        ch,
                        consumer,
                        run.handler.clone(),
                        token.clone(),
                        fail_tx.clone(),
                    ));
                    partitions.insert(q, (token, handle));
                }
                tokio::select! {
                    _ = run.shutdown.cancelled() => break Ok(()),
                    e = fail_rx.recv() => break Err(e.unwrap_or_else(|| "consumers stopped".into())),
                    changed = assignment.changed() => {
                        if changed.is_err() {
                            break Ok(());
                        }
                    }
                }
            }
        }
        .await;
        // Stop taking tickets; let those in hand finish (the engine's shutdown grace bounds it).
        stop.cancel();
        for (_, (_, handle)) in partitions.drain() {
            let _ = handle.await;
        }
        while tasks.join_next().await.is_some() {}
        let _ = conn.close(200, "engine stopping".into()).await;
        result
    }
}

/// The consumer's next delivery; `None` on `stop`, or when the consumer failed (reported on
/// `fail`, which makes the connection be opened again).
async fn next_delivery(
    consumer: &mut lapin::Consumer,
    pipeline: &str,
    stop: &CancellationToken,
    fail: &mpsc::Sender<String>,
) -> Option<lapin::message::Delivery> {
    let next = tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        d = consumer.next() => d,
    };
    let problem = match next {
        Some(Ok(d)) => return Some(d),
        Some(Err(e)) => format!("consumer of {pipeline}: {e}"),
        None => format!("the broker cancelled the consumer of {pipeline}"),
    };
    let _ = fail.send(problem).await;
    None
}

/// Consumes a shared queue: each ticket is handled on a task of its own (the broker sends at
/// most `prefetch` unacknowledged ones).
async fn shared_consumer(
    pipeline: String,
    ch: Channel,
    mut consumer: lapin::Consumer,
    handler: Arc<dyn huizhen_core::cluster::TicketHandler>,
    stop: CancellationToken,
    fail: mpsc::Sender<String>,
) {
    let mut in_hand = JoinSet::new();
    while let Some(d) = next_delivery(&mut consumer, &pipeline, &stop, &fail).await {
        while in_hand.try_join_next().is_some() {}
        let handler = handler.clone();
        let pipeline = pipeline.clone();
        in_hand.spawn(async move { handle(&*handler, &pipeline, None, d).await });
    }
    let _ = ch
        .basic_cancel(
            consumer.tag().as_str().into(),
            BasicCancelOptions::default(),
        )
        .await;
    while in_hand.join_next().await.is_some() {}
}

/// Consumes one partition: one ticket at a time, in queue order.
async fn partition_consumer(
    pipeline: String,
    partition: u32,
    ch: Channel,
    mut consumer: lapin::Consumer,
    handler: Arc<dyn huizhen_core::cluster::TicketHandler>,
    stop: CancellationToken,
    fail: mpsc::Sender<String>,
) {
    while let Some(d) = next_delivery(&mut consumer, &pipeline, &stop, &fail).await {
        handle(&*handler, &pipeline, Some(partition), d).await;
    }
    // Closing the channel returns a prefetched, unhandled ticket to its queue.
    let _ = ch.close(200, "partition released".into()).await;
}

async fn handle(
    handler: &dyn huizhen_core::cluster::TicketHandler,
    pipeline: &str,
    partition: Option<u32>,
    d: lapin::message::Delivery,
) {
    let ticket = Ticket::decode(pipeline, partition, &d.data);
    match handler.handle(ticket, d.redelivered).await {
        Handled::Ack => {
            if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                // The outcome is committed: the redelivered copy finds it done.
                tracing::debug!(error = %e, "ticket ack not sent");
            }
        }
        Handled::Requeue => {
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

impl WorkQueue for AmqpWorkQueue {
    fn describe(&self) -> String {
        format!(
            "{} ({} queues)",
            crate::redact(&self.url),
            self.queues().len()
        )
    }

    fn publish<'a>(&'a self, ticket: &'a Ticket) -> BoxFuture<'a, Result<Confirm, String>> {
        Box::pin(self.publish_one(ticket))
    }

    fn run(self: Arc<Self>, mut run: QueueRun) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut attempt = 0u32;
            loop {
                let started = std::time::Instant::now();
                match self.consume(&mut run).await {
                    Ok(()) => return,
                    Err(e) => {
                        if started.elapsed() > Duration::from_secs(30) {
                            attempt = 0;
                        }
                        let wait = crate::backoff(attempt);
                        attempt += 1;
                        tracing::warn!(error = %e, retry_in = ?wait, "work queue consumer disconnected; reconnecting");
                        tokio::select! {
                            _ = run.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        })
    }

    fn depth(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, String>> {
        Box::pin(async move {
            // A connection of its own: a passive declare of a missing queue closes its channel.
            let conn = self.connect().await?;
            let ch = conn
                .create_channel()
                .await
                .map_err(|e| format!("cannot open a channel: {e}"))?;
            let mut per: HashMap<String, u64> = HashMap::new();
            for s in &self.specs {
                let names: Vec<String> = if s.partitions == 0 {
                    vec![queue_name(&self.prefix, &s.pipeline, None)]
                } else {
                    (0..s.partitions)
                        .map(|p| queue_name(&self.prefix, &s.pipeline, Some(p)))
                        .collect()
                };
                for q in names {
                    let r = ch
                        .queue_declare(
                            q.as_str().into(),
                            QueueDeclareOptions {
                                passive: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .map_err(|e| format!("{q}: {e}"))?;
                    *per.entry(s.pipeline.clone()).or_default() += u64::from(r.message_count());
                }
            }
            let _ = conn.close(200, "depth".into()).await;
            let mut out: Vec<(String, u64)> = per.into_iter().collect();
            out.sort();
            Ok(out)
        })
    }
}
