//! The SQL of one batch: appends (dedup lookups, inserts) and transitions.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::exec::{Exec, Stmt, Value, fixed_chunks};
use super::{Effect, Sealed, Staged, Transition};
use crate::message::{Accepted, MessageId, NewMessage, REUSED_KEY_HEADER, State};
use crate::store::{Backend, Result, StoreError};

struct Prepared<'a> {
    id: MessageId,
    msg: &'a NewMessage,
    dedup_key_sealed: Option<&'a str>,
    /// The refusal reason for the intake row of `message_errors` (refused messages only).
    refusal: Option<&'a str>,
    hash: Option<String>,
    headers_json: String,
    reused_key: bool,
}

enum AppendPlan {
    Insert(usize),
    Duplicate(Accepted),
    /// A resend of row `usize` of the same batch: it gets that row's outcome, which is another
    /// writer's id when that row lost the race for its dedup key.
    DuplicateOf(usize),
}

pub(super) fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// A journaled message with a dedup key, as the dedup check needs it.
struct KnownKey {
    id: String,
    hash: Option<String>,
    state: String,
    headers: String,
}

async fn known_keys<'a, E: Exec>(
    e: &mut E,
    appends: &[&'a Sealed],
) -> Result<HashMap<(&'a str, &'a str), Vec<KnownKey>>> {
    let mut by_pipeline: BTreeMap<&'a str, Vec<&'a str>> = BTreeMap::new();
    for m in appends {
        if let Some(k) = m.msg.dedup_key.as_deref() {
            by_pipeline
                .entry(m.msg.pipeline.as_str())
                .or_default()
                .push(k);
        }
    }
    let mut out: HashMap<(&'a str, &'a str), Vec<KnownKey>> = HashMap::new();
    for (pipeline, mut keys) in by_pipeline {
        keys.sort_unstable();
        keys.dedup();
        for chunk in fixed_chunks(&keys) {
            let mut s = Stmt::new(
                e.backend(),
                "SELECT id, dedup_key, body_hash, state, headers FROM messages WHERE pipeline = ",
            );
            s.bind(pipeline);
            s.push(" AND dedup_key IN (");
            for (i, k) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(*k);
            }
            s.push(") ORDER BY id");
            for r in e.fetch(s, "look up dedup keys").await? {
                let mut r = r.into_iter();
                let mut col = || r.next().flatten();
                let (id, key, hash, state, headers) = (col(), col(), col(), col(), col());
                // Map back to the borrowed key of this batch.
                let Some(k) = chunk.iter().find(|k| Some(**k) == key.as_deref()) else {
                    continue;
                };
                out.entry((pipeline, *k)).or_default().push(KnownKey {
                    id: id.unwrap_or_default(),
                    hash,
                    state: state.unwrap_or_default(),
                    headers: headers.unwrap_or_default(),
                });
            }
        }
    }
    Ok(out)
}

pub(super) async fn append_all<E: Exec>(
    e: &mut E,
    appends: &[&Sealed],
    now: i64,
) -> Result<Vec<Accepted>> {
    let backend = e.backend();
    let mut plans = Vec::with_capacity(appends.len());
    let mut rows: Vec<Prepared> = Vec::with_capacity(appends.len());
    // Dedup keys seen earlier in this batch: (pipeline, key) -> [(hash, row index)].
    let mut in_batch: HashMap<(&str, &str), Vec<(String, usize)>> = HashMap::new();
    // Dedup keys already in the journal, looked up once per batch (one query per pipeline and
    // 500 keys, not one per message).
    let known = known_keys(e, appends).await?;
    for a in appends {
        let msg = &a.msg;
        let mut reused_key = false;
        let mut hash = None;
        if let Some(key) = msg.dedup_key.as_deref() {
            let h = msg
                .body_hash
                .clone()
                .unwrap_or_else(|| body_hash(&msg.body));
            let mut dup = None;
            let mut same_batch = None;
            if let Some(prev) = in_batch.get(&(msg.pipeline.as_str(), key)) {
                for (ph, idx) in prev {
                    if *ph == h {
                        same_batch = Some(*idx);
                    } else {
                        reused_key = true;
                    }
                }
            }
            if let Some(idx) = same_batch {
                plans.push(AppendPlan::DuplicateOf(idx));
                continue;
            }
            if dup.is_none() {
                for r in known
                    .get(&(msg.pipeline.as_str(), key))
                    .into_iter()
                    .flatten()
                {
                    if r.hash.as_deref() == Some(h.as_str()) {
                        dup = Some(Accepted {
                            id: r.id.clone(),
                            duplicate: true,
                            reused_key: r.headers.contains(REUSED_KEY_HEADER),
                            state: State::parse(&r.state).unwrap_or(State::Received),
                        });
                        break;
                    }
                    reused_key = true;
                }
            }
            if let Some(d) = dup {
                plans.push(AppendPlan::Duplicate(d));
                continue;
            }
            hash = Some(h);
        }
        let headers_json = if reused_key {
            let mut headers = msg.headers.clone();
            headers.insert(REUSED_KEY_HEADER.into(), "reused-key".into());
            tracing::warn!(
                pipeline = %msg.pipeline,
                dedup_key = msg.dedup_key.as_deref().unwrap_or(""),
                "dedup key reused with a different body: processing it and flagging it"
            );
            serde_json::to_string(&headers)
        } else {
            serde_json::to_string(&msg.headers)
        }
        .unwrap_or_else(|_| "{}".into());
        let idx = rows.len();
        if let (Some(key), Some(h)) = (msg.dedup_key.as_deref(), hash.as_ref()) {
            in_batch
                .entry((msg.pipeline.as_str(), key))
                .or_default()
                .push((h.clone(), idx));
        }
        rows.push(Prepared {
            id: a.id.clone(),
            msg,
            dedup_key_sealed: a.dedup_key_sealed.as_deref(),
            refusal: a.refusal.as_deref(),
            hash,
            headers_json,
            reused_key,
        });
        plans.push(AppendPlan::Insert(idx));
    }

    // Multi-row inserts of fixed sizes (`fixed_chunks`): the state rows, then the bodies of
    // those that were inserted. A concurrent writer (PostgreSQL) may have inserted the same
    // dedup key in the meantime: ON CONFLICT DO NOTHING, then the rows that did not come back
    // are duplicates (and get no body). On SQLite the statements are `OR IGNORE`: a statement
    // that cannot abort needs no statement journal (SQLite otherwise copies every page a
    // multi-row statement touches inside a transaction, 7% of the writer's time; and conflicts
    // are what `OR IGNORE` skips, as ON CONFLICT DO NOTHING would).
    let mut lost: Vec<usize> = Vec::new();
    let mut offset = 0;
    for chunk in fixed_chunks(&rows) {
        let deduped = chunk.iter().any(|r| r.hash.is_some());
        let mut s = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "INSERT OR IGNORE INTO messages (id, facility, pipeline, kind, headers, source, received_at, trace_id, dedup_key, dedup_key_sealed, body_hash, parent_id, owner, ordering_hash, part, next_attempt_at, state, last_error, updated_at) VALUES "
            } else {
                "INSERT INTO messages (id, facility, pipeline, kind, headers, source, received_at, trace_id, dedup_key, dedup_key_sealed, body_hash, parent_id, owner, ordering_hash, part, next_attempt_at, state, last_error, updated_at) VALUES "
            },
        );
        for (i, r) in chunk.iter().enumerate() {
            s.push(if i == 0 { "(" } else { ", (" });
            s.bind(r.id.as_str());
            s.push(", ");
            s.bind(r.msg.facility.as_str());
            s.push(", ");
            s.bind(r.msg.pipeline.as_str());
            s.push(", ");
            s.bind(r.msg.kind.as_str());
            s.push(", ");
            s.bind(r.headers_json.as_str());
            s.push(", ");
            s.bind(r.msg.source.as_str());
            s.push(", ");
            s.bind(now);
            s.push(", ");
            s.bind(r.msg.trace_id.as_deref().unwrap_or(r.id.as_str()));
            s.push(", ");
            s.bind(r.msg.dedup_key.as_deref());
            s.push(", ");
            s.bind(r.dedup_key_sealed);
            s.push(", ");
            s.bind(r.hash.as_deref());
            s.push(", ");
            s.bind(r.msg.parent_id.as_deref());
            s.push(", ");
            s.bind(r.msg.owner.as_deref());
            s.push(", ");
            s.bind(r.msg.ordering.map(|o| o.0));
            s.push(", ");
            s.bind(r.msg.ordering.map(|o| o.1));
            s.push(", ");
            // A message the in-memory queue had no room for is due at once: the pipeline's
            // feeder takes it from here, in journal order. A message its source refused is
            // kept as a dead letter with the reason, never due.
            let rejected = r.msg.rejected.as_deref();
            s.bind((r.msg.due && rejected.is_none()).then_some(now));
            s.push(", ");
            s.bind(if rejected.is_some() {
                State::Dead.as_str()
            } else {
                State::Received.as_str()
            });
            s.push(", ");
            s.bind(rejected);
            s.push(", ");
            s.bind(now);
            s.push(")");
        }
        if deduped {
            s.push(if backend == Backend::Sqlite {
                " RETURNING id"
            } else {
                " ON CONFLICT DO NOTHING RETURNING id"
            });
            let back = e.fetch(s, "append messages").await?;
            let ids: std::collections::HashSet<String> = back
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            for (i, r) in chunk.iter().enumerate() {
                if !ids.contains(&r.id) {
                    lost.push(offset + i);
                }
            }
        } else {
            let n = e.execute(s, "append messages").await?;
            // OR IGNORE (SQLite) would skip a row that broke a constraint rather than fail; with
            // fresh ids and no dedup key none can, but a row must never vanish silently.
            if n != chunk.len() as u64 {
                return Err(StoreError::Inconsistent(format!(
                    "append messages: {n} of {} rows inserted",
                    chunk.len()
                )));
            }
        }
        offset += chunk.len();
    }
    // The bodies of the rows inserted, by id (written once; a state change never touches them).
    let inserted: Vec<&Prepared> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| lost.binary_search(i).is_err())
        .map(|(_, r)| r)
        .collect();
    for chunk in fixed_chunks(&inserted) {
        let mut s = Stmt::new(backend, "INSERT INTO bodies (id, body) VALUES ");
        for (i, r) in chunk.iter().enumerate() {
            s.push(if i == 0 { "(" } else { ", (" });
            s.bind(r.id.as_str());
            s.push(", ");
            s.bind(r.msg.body.as_slice());
            s.push(")");
        }
        e.execute(s, "append bodies").await?;
    }
    // A refused message's reason, kept as its intake row (attempt 0, step `intake`): the
    // `last_error` column is cleared when a reprocess ends `done`, this row never is.
    let refused: Vec<&&Prepared> = inserted.iter().filter(|r| r.refusal.is_some()).collect();
    for chunk in fixed_chunks(&refused) {
        let mut s = Stmt::new(
            backend,
            "INSERT INTO message_errors (message_id, attempt, at, step, error) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            s.push(if i == 0 { "(" } else { ", (" });
            s.bind(r.id.as_str());
            s.push(", 0, ");
            s.bind(now);
            s.push(", ");
            s.bind(crate::store::INTAKE_STEP);
            s.push(", ");
            s.bind(r.refusal);
            s.push(")");
        }
        e.execute(s, "record intake refusals").await?;
    }
    let mut raced: BTreeMap<usize, Accepted> = BTreeMap::new();
    for idx in lost {
        let r = &rows[idx];
        let mut s = Stmt::new(backend, "SELECT id, state FROM messages WHERE pipeline = ");
        s.bind(r.msg.pipeline.as_str());
        s.push(" AND dedup_key = ");
        s.bind(r.msg.dedup_key.as_deref());
        s.push(" AND body_hash = ");
        s.bind(r.hash.as_deref());
        let row = e
            .fetch(s, "look up raced duplicate")
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                // Not visible yet to this transaction: the batch fails and its operations are
                // retried one by one, which finds the row as a known key.
                StoreError::Inconsistent(format!(
                    "message with dedup key {:?} conflicted but is not visible",
                    r.msg.dedup_key.as_deref().unwrap_or("")
                ))
            })?;
        let mut row = row.into_iter();
        let id = row.next().flatten().unwrap_or_default();
        let st = row.next().flatten().unwrap_or_default();
        raced.insert(
            idx,
            Accepted {
                id,
                duplicate: true,
                reused_key: r.reused_key,
                state: State::parse(&st).unwrap_or(State::Received),
            },
        );
    }
    Ok(plans
        .into_iter()
        .map(|p| match p {
            AppendPlan::Duplicate(a) => a,
            AppendPlan::DuplicateOf(idx) => match raced.get(&idx) {
                Some(a) => a.clone(),
                None => Accepted {
                    id: rows[idx].id.clone(),
                    duplicate: true,
                    reused_key: rows[idx].reused_key,
                    state: State::Received,
                },
            },
            AppendPlan::Insert(idx) => raced.get(&idx).cloned().unwrap_or_else(|| Accepted {
                id: rows[idx].id.clone(),
                duplicate: false,
                reused_key: rows[idx].reused_key,
                state: if rows[idx].msg.rejected.is_some() {
                    State::Dead
                } else {
                    State::Received
                },
            }),
        })
        .collect())
}

pub(super) async fn transition_all<E: Exec>(
    e: &mut E,
    transitions: &[&Staged],
    now: i64,
) -> Result<Vec<bool>> {
    let backend = e.backend();
    let mut applied = vec![false; transitions.len()];
    // Processing first, then done: a message's processing marker always precedes its outcome.
    let processing: Vec<usize> = (0..transitions.len())
        .filter(|&i| matches!(transitions[i].t, Transition::Processing { .. }))
        .collect();
    for chunk in fixed_chunks(&processing) {
        let mut s = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "UPDATE OR IGNORE messages SET state = 'processing', updated_at = "
            } else {
                "UPDATE messages SET state = 'processing', updated_at = "
            },
        );
        s.bind(now);
        s.push(" WHERE state = 'received' AND next_attempt_at IS NULL AND id IN (");
        for (n, &i) in chunk.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.bind(transitions[i].t.id());
        }
        s.push(")");
        e.execute(s, "mark processing").await?;
        for &i in chunk {
            applied[i] = true;
        }
    }
    let done: Vec<usize> = (0..transitions.len())
        .filter(|&i| matches!(transitions[i].t, Transition::Done { .. }))
        .collect();
    // Effects of the messages whose `done` applied, written after all of them: one run of
    // fixed-size inserts. An effect whose body is the message as received is a reference
    // (body NULL: the message's own body, in `bodies`).
    let mut effect_rows: Vec<(&str, &Effect)> = Vec::new();
    for chunk in fixed_chunks(&done) {
        let mut s = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "UPDATE OR IGNORE messages SET state = 'done', next_attempt_at = NULL, last_error = NULL, updated_at = "
            } else {
                "UPDATE messages SET state = 'done', next_attempt_at = NULL, last_error = NULL, updated_at = "
            },
        );
        s.bind(now);
        s.push(" WHERE state IN ('received', 'processing') AND id IN (");
        for (n, &i) in chunk.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.bind(transitions[i].t.id());
        }
        s.push(") RETURNING id");
        let ids: std::collections::HashSet<String> = e
            .fetch(s, "mark done")
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        for &i in chunk {
            let Transition::Done { id, effects } = &transitions[i].t else {
                continue;
            };
            applied[i] = ids.contains(id);
            if applied[i] {
                effect_rows.extend(effects.iter().map(|eff| (id.as_str(), eff)));
            }
        }
    }
    for chunk in fixed_chunks(&effect_rows) {
        let mut s = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "INSERT OR IGNORE INTO effects (message_id, sink, pipeline, body, recorded_at) VALUES "
            } else {
                "INSERT INTO effects (message_id, sink, pipeline, body, recorded_at) VALUES "
            },
        );
        for (n, (id, eff)) in chunk.iter().enumerate() {
            s.push(if n == 0 { "(" } else { ", (" });
            s.bind(*id);
            s.push(", ");
            s.bind(eff.sink.as_str());
            s.push(", ");
            s.bind(eff.pipeline.as_str());
            s.push(", ");
            if eff.as_received {
                s.bind(Value::NullBlob);
            } else {
                s.bind(eff.body.as_slice());
            }
            s.push(", ");
            s.bind(now);
            s.push(")");
        }
        if backend == Backend::Postgres {
            s.push(" ON CONFLICT (message_id, sink) DO NOTHING");
        }
        e.execute(s, "record effects").await?;
    }
    for (i, staged) in transitions.iter().enumerate() {
        let (id, attempt, step, error, state, retry_at) = match &staged.t {
            Transition::Failed {
                id,
                attempt,
                retry_at,
                step,
                error,
            } => (id, *attempt, step, error, State::Failed, Some(*retry_at)),
            Transition::Retrying {
                id,
                attempt,
                step,
                error,
            } => (id, *attempt, step, error, State::Processing, None),
            Transition::Dead {
                id,
                attempt,
                step,
                error,
            } => (id, *attempt, step, error, State::Dead, None),
            _ => continue,
        };
        let mut s = Stmt::new(backend, "UPDATE messages SET state = ");
        s.bind(state.as_str());
        s.push(", attempts = ");
        s.bind(attempt);
        s.push(", next_attempt_at = ");
        s.bind(retry_at);
        s.push(", last_error = ");
        s.bind(
            staged
                .last_error
                .clone()
                .unwrap_or_else(|| format!("{step}: {error}")),
        );
        s.push(", updated_at = ");
        s.bind(now);
        s.push(" WHERE id = ");
        s.bind(id.as_str());
        s.push(" AND state IN ('received', 'processing')");
        applied[i] = e.execute(s, "record failure").await? == 1;
        if applied[i] {
            let mut s = Stmt::new(
                backend,
                "INSERT INTO message_errors (message_id, attempt, at, step, error) VALUES (",
            );
            s.bind(id.as_str());
            s.push(", ");
            s.bind(attempt);
            s.push(", ");
            s.bind(now);
            s.push(", ");
            s.bind(step.as_str());
            s.push(", ");
            s.bind(error.as_str());
            s.push(")");
            e.execute(s, "record attempt error").await?;
        }
    }
    Ok(applied)
}
