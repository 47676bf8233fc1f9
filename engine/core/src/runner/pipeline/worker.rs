//! The workers: each takes a message from the in-memory queue, runs the steps and the sinks on
//! a copy of it, and records the outcome (`done` with the sinks' effects, `failed` with a retry
//! time, `dead`). When the pipeline stops (a shutdown, a reload) a worker finishes the message
//! it is on, waits for its `done` to commit and ends; what waits in memory stays journaled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use tokio::sync::oneshot;

use super::{PipelineHandle, Receivers};
use crate::message::{Message, State, now_ms};
use crate::runner::tap::{Outcome as Passed, Place};
use crate::store::Transition;
use crate::telemetry::Run;
use crate::work::{Flow, StepError, Work};

/// Starts the pipeline's workers on `tasks`. A worker ends when the pipeline stops: it finishes
/// the message it is on and waits until that message's `done` is committed (so a reload finds
/// every outcome of the old version recorded before it hands the rest to the new one).
pub(in crate::runner) fn spawn_workers(
    tasks: &crate::runner::fleet::Tasks,
    handle: &PipelineHandle,
    receivers: Receivers,
) {
    let stop = handle.stop_token();
    match receivers {
        Receivers::Shared(rx, n) => {
            for _ in 0..n {
                let rx = rx.clone();
                let h = handle.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    let mut last = None;
                    loop {
                        let m = tokio::select! {
                            biased;
                            _ = stop.cancelled() => break,
                            m = rx.recv() => match m { Ok(m) => m, Err(_) => break },
                        };
                        h.taken(0);
                        last = h.process(m, false).await.or(last);
                    }
                    committed(last).await;
                });
            }
        }
        Receivers::Partitioned(rxs) => {
            for (part, mut rx) in rxs.into_iter().enumerate() {
                let h = handle.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    let mut last = None;
                    loop {
                        let m = tokio::select! {
                            biased;
                            _ = stop.cancelled() => break,
                            m = rx.recv() => match m { Some(m) => m, None => break },
                        };
                        h.taken(part);
                        last = h.process(m, true).await.or(last);
                    }
                    committed(last).await;
                });
            }
        }
    }
}

/// Waits for a worker's last `done` to commit (the writer commits in order, so every earlier
/// one is committed too); an outcome that could not be recorded ends the wait as well.
async fn committed(last: Option<oneshot::Receiver<()>>) {
    if let Some(rx) = last {
        let _ = rx.await;
    }
}

/// `deliver_limit`: a token bucket and a cap on deliveries in progress, shared by the workers.
pub(super) struct Limiter {
    per_second: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Limiter {
    pub(super) fn new(l: &crate::config::DeliverLimit, concurrency: usize) -> Limiter {
        Limiter {
            per_second: l.per_second.max(f64::MIN_POSITIVE),
            burst: l.burst.max(1.0),
            bucket: Mutex::new((l.burst.max(1.0), Instant::now())),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                l.max_in_flight.unwrap_or(concurrency).max(1),
            )),
        }
    }

    async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.in_flight.clone().acquire_owned().await.ok();
        loop {
            let wait = {
                let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                b.0 =
                    (b.0 + now.duration_since(b.1).as_secs_f64() * self.per_second).min(self.burst);
                b.1 = now;
                if b.0 >= 1.0 {
                    b.0 -= 1.0;
                    return permit;
                }
                Duration::from_secs_f64((1.0 - b.0) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// How long a fresh message's first attempt runs before it is marked `processing`.
const PROCESSING_MARK_AFTER: Duration = Duration::from_millis(500);

enum Outcome {
    Done(Vec<crate::store::Effect>),
    Failed { step: String, error: StepError },
}

impl PipelineHandle {
    /// Runs one message to an outcome and records it. `in_place` retries (ordered pipelines)
    /// keep the message in its partition until it is done or dead.
    ///
    /// A `done` commits while the caller goes on; the returned receiver resolves once it is
    /// committed (a ticket is acknowledged only then). Other outcomes are committed on return.
    pub(super) async fn process(
        &self,
        mut m: Message,
        in_place: bool,
    ) -> Option<oneshot::Receiver<()>> {
        let i = &self.inner;
        let mut marked = m.state != State::Received;
        loop {
            let outcome = if marked {
                self.run_once(&m).await
            } else {
                // A fresh message is marked `processing` only if its first attempt is still
                // running after PROCESSING_MARK_AFTER (a slow sink, a retrying destination), so
                // that the API shows it as in flight. Most messages are done well before: writing
                // the marker for them would cost a journal write each and show nothing.
                let run = self.run_once(&m);
                tokio::pin!(run);
                tokio::select! {
                    biased;
                    o = &mut run => o,
                    _ = tokio::time::sleep(PROCESSING_MARK_AFTER) => {
                        i.journal
                            .transition_nowait(Transition::Processing { id: m.id.clone() })
                            .await;
                        run.await
                    }
                }
            };
            let attempt = m.attempts + 1;
            let result = match outcome {
                Outcome::Done(effects) => {
                    // The worker goes on to its next message while this one commits.
                    let metrics = i.metrics.clone();
                    let (name, id) = (i.name.clone(), m.id.clone());
                    let (committed, rx) = oneshot::channel();
                    i.journal
                        .transition_then(
                            Transition::Done {
                                id: m.id.clone(),
                                effects,
                            },
                            move |r| {
                                match r {
                                    Ok(true) => metrics.done(&name),
                                    Ok(false) => {}
                                    Err(e) => {
                                        tracing::error!(pipeline = %name, %id, error = %e, "could not record the outcome; the message stays in flight");
                                        return;
                                    }
                                }
                                let _ = committed.send(());
                            },
                        )
                        .await;
                    return Some(rx);
                }
                Outcome::Failed { step, error } => {
                    let last = !error.retryable || attempt >= i.max_attempts;
                    // A destination's Retry-After: not before it, whatever the backoff says.
                    let wait = error.retry_after.unwrap_or_default();
                    // The reason stays out of the log (it may quote patient data); it is in the journal.
                    tracing::warn!(pipeline = %i.name, id = %m.id, attempt, step = %step, dead = last, "message failed; the reason is in the journal (huizhen messages show ID)");
                    i.metrics.failed(&i.name);
                    i.metrics.step_error(&i.name, &step);
                    if last {
                        i.metrics.dead(&i.name);
                        let reason = format!("{step}: {}", error.message);
                        let notified = if i.dry_run { &[][..] } else { &i.sinks[..] };
                        for sink in notified {
                            let mut w = Work::from_message(&m);
                            if let Err(e) = sink.on_dead(&mut w, &reason).await {
                                tracing::warn!(pipeline = %i.name, id = %m.id, sink = sink.name(), error = %e, "dead-letter notice not delivered");
                            }
                        }
                        i.journal
                            .transition(Transition::Dead {
                                id: m.id.clone(),
                                attempt,
                                step,
                                error: error.message,
                            })
                            .await
                    } else if in_place {
                        let r = i
                            .journal
                            .transition(Transition::Retrying {
                                id: m.id.clone(),
                                attempt,
                                step,
                                error: error.message,
                            })
                            .await;
                        if let Err(e) = r {
                            tracing::error!(pipeline = %i.name, id = %m.id, error = %e, "could not record the failure; the message stays in flight");
                            return None;
                        }
                        m.attempts = attempt;
                        // `Retrying` left it `processing` in the journal.
                        marked = true;
                        tokio::select! {
                            _ = i.stop.cancelled() => return None,
                            _ = tokio::time::sleep(self.backoff(attempt).max(wait)) => {}
                        }
                        continue;
                    } else {
                        let retry_at =
                            now_ms() + self.backoff(attempt).max(wait).as_millis() as i64;
                        i.journal
                            .transition(Transition::Failed {
                                id: m.id.clone(),
                                attempt,
                                retry_at,
                                step,
                                error: error.message,
                            })
                            .await
                    }
                }
            };
            if let Err(e) = result {
                // The message stays received/processing in the journal and is recovered.
                tracing::error!(pipeline = %i.name, id = %m.id, error = %e, "could not record the outcome; the message stays in flight");
            }
            return None;
        }
    }

    /// One attempt at `m`; with traces on, inside a `process` span of its own.
    async fn run_once(&self, m: &Message) -> Outcome {
        let Some(tracer) = &self.inner.telemetry else {
            return self.run_steps(m, None).await;
        };
        let run = tracer.process(m, m.attempts + 1);
        let outcome = self.run_steps(m, Some(&run)).await;
        run.end(match &outcome {
            Outcome::Done(_) => "done",
            Outcome::Failed { error, .. } => self.failure(m, error),
        });
        outcome
    }

    /// The outcome word of a failed attempt at `m`: `dead` when it is its last.
    fn failure(&self, m: &Message, error: &StepError) -> &'static str {
        if !error.retryable || m.attempts + 1 >= self.inner.max_attempts {
            "dead"
        } else {
            "failed"
        }
    }

    async fn run_steps(&self, m: &Message, run: Option<&Run<'_>>) -> Outcome {
        let i = &self.inner;
        let mut work = Work::from_message(m);
        for (n, (label, step)) in i.steps.iter().enumerate() {
            let t0 = Instant::now();
            let started = run.map(|_| SystemTime::now());
            let r = step.apply(&mut work).await;
            i.metrics.step_latency(&i.name, label, t0.elapsed());
            if let (Some(run), Some(started)) = (run, started) {
                let outcome = match &r {
                    Ok(Flow::Continue) => "continue",
                    Ok(Flow::Stop(_)) => "stop",
                    Err(e) => self.failure(m, e),
                };
                run.step(label, started, outcome);
            }
            if i.taps.any() {
                let seen = || match &r {
                    Ok(Flow::Continue) => Passed::Continue,
                    Ok(Flow::Stop(reason)) => Passed::Stop(reason.clone()),
                    Err(e) => Passed::Failed(e.message.clone()),
                };
                i.taps
                    .report(&i.name, label, Place::Step(n), seen, &mut work);
            }
            match r {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop(reason)) => {
                    tracing::debug!(pipeline = %i.name, id = %m.id, step = %label, %reason, "stopped");
                    return Outcome::Done(Vec::new());
                }
                Err(error) => {
                    return Outcome::Failed {
                        step: label.clone(),
                        error,
                    };
                }
            }
        }
        if i.dry_run {
            // Nothing leaves the engine: the taps see what each sink would have got.
            for (n, sink) in i.sinks.iter().enumerate() {
                i.taps.report(
                    &i.name,
                    sink.name(),
                    Place::Sink(n),
                    || Passed::NotDelivered,
                    &mut work,
                );
            }
            return Outcome::Done(Vec::new());
        }
        // A slow destination's pace (deliver_limit): wait for a slot and a token, and hold the
        // slot until the sinks are done.
        let _slot = match &i.limit {
            Some(l) if !i.sinks.is_empty() => Some(l.acquire().await),
            _ => None,
        };
        let mut effects = Vec::new();
        for (n, sink) in i.sinks.iter().enumerate() {
            let t0 = Instant::now();
            let delivery = run.map(|run| run.deliver(sink.name()));
            if let Some(d) = &delivery {
                work.set_span(Some(d.trace_parent()));
            }
            let r = sink.deliver(&mut work).await;
            i.metrics.step_latency(&i.name, sink.name(), t0.elapsed());
            if let Some(d) = delivery {
                work.set_span(None);
                d.end(match &r {
                    Ok(_) => "delivered",
                    Err(e) => self.failure(m, e),
                });
            }
            if i.taps.any() {
                let seen = || match &r {
                    Ok(_) => Passed::Delivered,
                    Err(e) => Passed::Failed(e.message.clone()),
                };
                i.taps
                    .report(&i.name, sink.name(), Place::Sink(n), seen, &mut work);
            }
            match r {
                Ok(e) => effects.extend(e),
                Err(error) => {
                    return Outcome::Failed {
                        step: sink.name().to_owned(),
                        error,
                    };
                }
            }
        }
        Outcome::Done(effects)
    }

    /// Exponential backoff with jitter: `backoff × 2^(attempt-1)`, capped, then a random
    /// factor in [0.5, 1.0] so that many failing messages do not retry in lockstep.
    pub(super) fn backoff(&self, attempt: i64) -> Duration {
        let i = &self.inner;
        let exp = attempt.saturating_sub(1).clamp(0, 30) as u32;
        let base = i
            .backoff
            .saturating_mul(2u32.saturating_pow(exp))
            .min(i.max_backoff);
        let factor: f64 = rand::rng().random_range(0.5..=1.0);
        base.mul_f64(factor)
    }
}
