//! The rooms of this engine: who is in each, held in the lobby or admitted, their publications
//! and subscriptions, and the audit of every join and leave (RTC-04, CN-05, CN-06, RTC-12).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use huizhen_core::media::MediaConfig;
use huizhen_core::security::RoomTokens;
use huizhen_core::store::Store;
use huizhen_core::store::audit::AuditEvent;
use huizhen_domain::consultation::room::{self, Admission, Permissions, RoomClaims, RoomRole};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::protocol::{Limits, PeerInfo, ServerMsg};
use crate::session::drop_publication;
use crate::sfu::{PcFactory, Peer, Publication};

/// Where a member's messages go: the current signaling connection.
pub type Outbox = mpsc::UnboundedSender<ServerMsg>;

pub(crate) struct Subscription {
    pub(crate) peer: Peer,
    pub(crate) publication: String,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let pc = self.peer.pc.clone();
        tokio::spawn(async move {
            let _ = pc.close().await;
        });
    }
}

pub(crate) struct Member {
    pub(crate) info: PeerInfo,
    pub(crate) claims: RoomClaims,
    pub(crate) out: Outbox,
    /// Bumped at each (re)connection; a grace timer only removes the link it was set for.
    link: u64,
    pub(crate) source: String,
    pub(crate) publications: HashMap<String, (Arc<Peer>, Arc<Publication>)>,
    pub(crate) subscriptions: HashMap<String, Subscription>,
}

impl Drop for Member {
    fn drop(&mut self) {
        for (peer, _) in self.publications.values() {
            let pc = peer.pc.clone();
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

#[derive(Default)]
pub(crate) struct RoomState {
    pub(crate) members: HashMap<String, Member>,
    /// Publications whose tracks all arrived, by key (`session/pc`).
    pub(crate) ready: HashMap<String, Arc<Publication>>,
    /// The recording in progress (RTC-30).
    pub(crate) recording: Option<crate::record::Active>,
}

/// One consultation's room.
pub struct Room {
    pub id: String,
    pub consultation: String,
    pub(crate) facility: String,
    local_physician_first: bool,
    pub(crate) state: Mutex<RoomState>,
    /// The tracks' quality summaries and alerts (RTC-20, RTC-21).
    pub(crate) quality: StdMutex<crate::qos::RoomQuality>,
}

impl Room {
    pub(crate) fn send_all(st: &RoomState, except: &str, msg: &ServerMsg) {
        for (s, m) in &st.members {
            if s != except {
                let _ = m.out.send(msg.clone());
            }
        }
    }

    pub(crate) fn presence(st: &RoomState, session: &str, event: &'static str) {
        if let Some(m) = st.members.get(session) {
            Room::send_all(
                st,
                session,
                &ServerMsg::Presence {
                    event,
                    peer: m.info.clone(),
                },
            );
        }
    }
}

/// Every room of this engine.
pub struct Hub {
    cfg: MediaConfig,
    pub(crate) store: Store,
    tokens: RoomTokens,
    pub(crate) factory: PcFactory,
    /// Where recordings go (none: recording is refused).
    pub(crate) objects: Option<Arc<huizhen_core::objects::ObjectStore>>,
    rooms: StdMutex<HashMap<String, Arc<Room>>>,
    pub(crate) quality_started: std::sync::atomic::AtomicBool,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn publication_key(session: &str, pc: &str) -> String {
    format!("{session}/{pc}")
}

pub(crate) fn subscription_id(publication: &str) -> String {
    format!("sub:{publication}")
}

impl Hub {
    pub fn new(cfg: MediaConfig, store: Store, tokens: RoomTokens) -> Hub {
        Hub {
            factory: PcFactory::new(cfg.clone()),
            cfg,
            store,
            tokens,
            rooms: StdMutex::new(HashMap::new()),
            objects: None,
            quality_started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The rooms with someone in them now.
    pub(crate) fn rooms_now(&self) -> Vec<Arc<Room>> {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Persists the participation (the call view of the consultation); a failure is logged,
    /// the audit trail has the join and leave in any case.
    async fn participation(&self, what: &str, r: huizhen_core::store::Result<()>) {
        if let Err(e) = r {
            tracing::error!(error = %e, what, "call participation not stored");
        }
    }

    /// Records into `objects` (RTC-30).
    pub fn with_objects(mut self, objects: Arc<huizhen_core::objects::ObjectStore>) -> Hub {
        self.objects = Some(objects);
        self
    }

    pub fn config(&self) -> &MediaConfig {
        &self.cfg
    }

    /// The rooms with someone in them, and who (for the API and tests).
    pub async fn occupancy(&self) -> Vec<(String, Vec<PeerInfo>)> {
        let rooms: Vec<Arc<Room>> = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for r in rooms {
            let st = r.state.lock().await;
            out.push((
                r.id.clone(),
                st.members.values().map(|m| m.info.clone()).collect(),
            ));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn audit(
        &self,
        claims: Option<&RoomClaims>,
        action: &str,
        consultation: &str,
        facility: &str,
        outcome: &str,
        source: &str,
        detail: String,
    ) {
        let (actor, role) = claims
            .map(|c| (c.sub.as_str(), c.role.code()))
            .unwrap_or(("anonymous", ""));
        self.audit_as(
            actor,
            role,
            action,
            consultation,
            facility,
            outcome,
            source,
            detail,
        )
        .await;
    }

    /// [`Hub::audit`] by `actor` in room role `role` (an API user: no room token).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn audit_as(
        &self,
        actor: &str,
        role: &str,
        action: &str,
        consultation: &str,
        facility: &str,
        outcome: &str,
        source: &str,
        detail: String,
    ) {
        let e = AuditEvent {
            actor: actor.to_owned(),
            role: role.to_owned(),
            facility: String::new(),
            action: action.into(),
            resource_type: "Consultation".into(),
            resource_id: consultation.into(),
            outcome: outcome.into(),
            source: source.into(),
            purpose: "TREAT".into(),
            detail,
            subject_facility: String::new(),
        }
        .about(facility);
        if let Err(err) = self.store.audit(&e).await {
            tracing::error!(error = %err, action, "room audit event not written");
        }
    }

    /// Admits a `join` (RTC-04): the token's signature and window, its room, the
    /// consultation's state and consent, the participant, then the lobby rule (CN-06).
    /// `Err` is the fatal error to send before closing.
    pub async fn join(
        self: &Arc<Hub>,
        room_id: &str,
        token: &str,
        resume: Option<&str>,
        source: &str,
        out: Outbox,
    ) -> Result<(Arc<Room>, String, u64), ServerMsg> {
        let claims = match self.tokens.verify(token) {
            Ok(c) => c,
            Err(e) => {
                self.audit(
                    None,
                    "room.join",
                    "-",
                    "",
                    "denied",
                    source,
                    format!("room {room_id}: {e}"),
                )
                .await;
                let code = if e.contains("expired") {
                    "token-expired"
                } else {
                    "invalid-token"
                };
                return Err(ServerMsg::fatal(code, e));
            }
        };
        let stored = match self.store.consultation(&claims.consultation).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(ServerMsg::fatal(
                    "no-consultation",
                    format!("no consultation {}", claims.consultation),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "room join: the store is not available");
                return Err(ServerMsg::fatal(
                    "unavailable",
                    "the store is not available; try again later",
                ));
            }
        };
        let c = &stored.consultation;
        let facility = c.request().requesting_facility.clone();
        if let Err(refusal) = room::may_join(c, room_id, &claims, now()) {
            let code = match &refusal {
                room::Refusal::WrongRoom { .. } => "wrong-room",
                room::Refusal::NotOpen { .. } => "room-closed",
                room::Refusal::NoConsent => "no-consent",
                room::Refusal::NotParticipant { .. } => "not-participant",
                room::Refusal::NotVerified { .. } => "not-verified",
                room::Refusal::OutsideWindow => "token-expired",
            };
            self.audit(
                Some(&claims),
                "room.join",
                &claims.consultation,
                &facility,
                "denied",
                source,
                format!("room {room_id}: {refusal}"),
            )
            .await;
            return Err(ServerMsg::fatal(code, refusal.to_string()));
        }
        let room = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms
                .entry(room_id.to_owned())
                .or_insert_with(|| {
                    Arc::new(Room {
                        id: room_id.to_owned(),
                        consultation: claims.consultation.clone(),
                        facility: facility.clone(),
                        local_physician_first: room::needs_local_physician(c),
                        state: Mutex::new(RoomState::default()),
                        quality: StdMutex::default(),
                    })
                })
                .clone()
        };
        let mut st = room.state.lock().await;
        // Coming back (RTC-12): the same participant in the same role takes over its session,
        // with its peer connections; a `resume` that names another participant's session is
        // ignored.
        let existing = st
            .members
            .iter()
            .find(|(s, m)| {
                m.claims.sub == claims.sub
                    && m.claims.role == claims.role
                    && resume.is_none_or(|r| r == s.as_str())
            })
            .map(|(s, _)| s.clone());
        let ice = crate::turn::ice_servers(&self.cfg, &claims.sub, now(), claims.exp);
        let limits = Limits {
            max_message_bytes: self.cfg.max_message_bytes,
            messages_per_second: self.cfg.messages_per_second,
            reconnect_grace_seconds: self.cfg.reconnect_grace.as_secs(),
        };
        if let Some(session) = existing {
            let m = st.members.get_mut(&session).expect("found above");
            let _ = m.out.send(ServerMsg::fatal(
                "replaced",
                "this session continues on a new connection",
            ));
            m.out = out;
            m.link += 1;
            m.info.connected = true;
            m.source = source.to_owned();
            let link = m.link;
            let (info, perms) = (m.info.clone(), m.claims.perms);
            let peers = st
                .members
                .iter()
                .filter(|(s, _)| **s != session)
                .map(|(_, m)| m.info.clone())
                .collect();
            let _ = st.members[&session].out.send(joined(
                &room, &session, &info, perms, None, true, ice, peers, limits, claims.exp,
            ));
            Room::presence(&st, &session, "reconnected");
            drop(st);
            self.participation("reconnect", self.store.call_reconnected(&session).await)
                .await;
            self.audit(
                Some(&claims),
                "room.join",
                &claims.consultation,
                &facility,
                "success",
                source,
                format!(
                    "room {room_id}, session {session}, reconnected, jti {}",
                    claims.jti
                ),
            )
            .await;
            return Ok((room, session, link));
        }
        let present: Vec<RoomRole> = st
            .members
            .values()
            .filter(|m| m.info.admitted)
            .map(|m| m.info.role)
            .collect();
        let admission = room::admission(room.local_physician_first, claims.role, &present);
        let admitted = admission == Admission::Admit;
        let session = huizhen_core::message::new_id();
        let info = PeerInfo {
            session: session.clone(),
            participant: claims.sub.clone(),
            role: claims.role,
            admitted,
            connected: true,
            audio: claims.perms.publish_audio,
            video: claims.perms.publish_video,
            screen: false,
        };
        let waiting_for = match admission {
            Admission::Hold { waiting_for } => Some(waiting_for),
            Admission::Admit => None,
        };
        let peers = st.members.values().map(|m| m.info.clone()).collect();
        let _ = out.send(joined(
            &room,
            &session,
            &info,
            claims.perms,
            waiting_for,
            false,
            ice,
            peers,
            limits,
            claims.exp,
        ));
        st.members.insert(
            session.clone(),
            Member {
                info,
                claims: claims.clone(),
                out,
                link: 0,
                source: source.to_owned(),
                publications: HashMap::new(),
                subscriptions: HashMap::new(),
            },
        );
        Room::presence(&st, &session, if admitted { "joined" } else { "held" });
        let recording = st.recording.is_some();
        if recording {
            let _ = st.members[&session]
                .out
                .send(ServerMsg::Recording { active: true });
        }
        let mut newly = Vec::new();
        if admitted {
            newly.push(session.clone());
            if claims.role == RoomRole::LocalPhysician {
                // CN-06: the local physician is here; the experts in the lobby come in.
                let held: Vec<String> = st
                    .members
                    .iter()
                    .filter(|(_, m)| !m.info.admitted)
                    .map(|(s, _)| s.clone())
                    .collect();
                for s in held {
                    if let Some(m) = st.members.get_mut(&s) {
                        m.info.admitted = true;
                        let _ = m.out.send(ServerMsg::Admitted);
                    }
                    Room::presence(&st, &s, "admitted");
                    newly.push(s);
                }
            }
        }
        let ready: Vec<Arc<Publication>> = st.ready.values().cloned().collect();
        drop(st);
        let at = huizhen_core::message::now_ms();
        let row = huizhen_core::store::calls::CallSession {
            session: session.clone(),
            consultation: claims.consultation.clone(),
            room: room_id.to_owned(),
            participant: claims.sub.clone(),
            role: claims.role.code().to_owned(),
            joined_at: at,
            admitted_at: admitted.then_some(at),
            left_at: None,
            left_reason: None,
            reconnects: 0,
        };
        self.participation("join", self.store.call_joined(&row).await)
            .await;
        for s in newly.iter().filter(|s| **s != session) {
            self.participation("admission", self.store.call_admitted(s, at).await)
                .await;
        }
        self.audit(
            Some(&claims),
            "room.join",
            &claims.consultation,
            &facility,
            "success",
            source,
            format!(
                "room {room_id}, session {session}, {}, jti {}",
                if admitted {
                    "admitted"
                } else {
                    "held in the lobby until a local physician is present (CN-06)"
                },
                claims.jti
            ),
        )
        .await;
        if recording {
            // Recording goes on only with the newcomer's recording consent too (RTC-30).
            self.recheck_recording(&room, c).await;
        }
        for s in newly {
            for p in ready.iter().filter(|p| p.owner != s) {
                self.clone().subscribe(room.clone(), s.clone(), p.clone());
            }
        }
        Ok((room, session, 0))
    }

    /// The signaling connection `link` of `session` dropped: the member stays (its media keeps
    /// flowing) for `reconnect_grace`, then leaves unless it came back (RTC-12).
    pub async fn disconnected(self: &Arc<Hub>, room: &Arc<Room>, session: &str, link: u64) {
        {
            let mut st = room.state.lock().await;
            let Some(m) = st.members.get_mut(session) else {
                return;
            };
            if m.link != link {
                return;
            }
            m.info.connected = false;
            Room::presence(&st, session, "disconnected");
        }
        let hub = self.clone();
        let room = room.clone();
        let session = session.to_owned();
        let grace = self.cfg.reconnect_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let gone = {
                let st = room.state.lock().await;
                st.members
                    .get(&session)
                    .is_some_and(|m| m.link == link && !m.info.connected)
            };
            if gone {
                hub.leave(&room, &session, "signaling lost beyond the reconnect grace")
                    .await;
            }
        });
    }

    /// Removes `session` from the room: its publications end for everyone, its peer
    /// connections close, the leave is audited.
    pub async fn leave(&self, room: &Arc<Room>, session: &str, reason: &str) {
        let member = {
            let mut st = room.state.lock().await;
            Room::presence(&st, session, "left");
            let Some(m) = st.members.remove(session) else {
                return;
            };
            let keys: Vec<String> = m
                .publications
                .keys()
                .map(|pc| publication_key(session, pc))
                .collect();
            for k in keys {
                drop_publication(&mut st, &k);
            }
            m
        };
        let claims = member.claims.clone();
        let source = member.source.clone();
        drop(member);
        self.participation(
            "leave",
            self.store
                .call_left(session, huizhen_core::message::now_ms(), reason)
                .await,
        )
        .await;
        self.audit(
            Some(&claims),
            "room.leave",
            &room.consultation,
            &room.facility,
            "success",
            &source,
            format!("room {}, session {session}: {reason}", room.id),
        )
        .await;
        let empty = room.state.lock().await.members.is_empty();
        if empty {
            self.stop_recording(
                room,
                crate::record::Stopped {
                    by: String::new(),
                    role: None,
                    reason: "everyone left the room".into(),
                },
            )
            .await;
            self.close_quality(room).await;
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if rooms.get(&room.id).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.id);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn joined(
    room: &Room,
    session: &str,
    info: &PeerInfo,
    permissions: Permissions,
    waiting_for: Option<RoomRole>,
    resumed: bool,
    ice_servers: Vec<crate::turn::IceServer>,
    peers: Vec<PeerInfo>,
    limits: Limits,
    expires_at: u64,
) -> ServerMsg {
    ServerMsg::Joined {
        session: session.to_owned(),
        room: room.id.clone(),
        consultation: room.consultation.clone(),
        participant: info.participant.clone(),
        role: info.role,
        permissions,
        admission: if info.admitted { "admitted" } else { "lobby" },
        waiting_for: if info.admitted {
            None
        } else {
            waiting_for.or(Some(RoomRole::LocalPhysician))
        },
        resumed,
        ice_servers,
        peers,
        limits,
        expires_at,
    }
}
