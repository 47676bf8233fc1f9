//! What an admitted (or held) member sends once in the room: offers (publications, their
//! renegotiation and ICE restart), answers to subscriptions, candidates, restarts, state,
//! unpublish, leave; and the subscriptions the SFU offers when a publication's tracks arrive.

use std::sync::Arc;
use std::time::Duration;

use huizhen_domain::consultation::room::Permissions;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;

use crate::hub::{Hub, Room, RoomState, Subscription, publication_key, subscription_id};
use crate::protocol::{CandidateInit, ClientMsg, ServerMsg};
use crate::sfu::{self, Publication};

impl Hub {
    /// Handles one message of an admitted (or held) member.
    pub async fn handle(
        self: &Arc<Hub>,
        room: &Arc<Room>,
        session: &str,
        msg: ClientMsg,
    ) -> Option<ServerMsg> {
        match msg {
            ClientMsg::Join { .. } => Some(ServerMsg::error(
                "already-joined",
                "this connection already joined a room",
            )),
            ClientMsg::Ping => Some(ServerMsg::Pong),
            ClientMsg::Record { active } => self.record(room, session, active).await,
            ClientMsg::Leave => {
                self.leave(room, session, "left").await;
                None
            }
            ClientMsg::State {
                audio,
                video,
                screen,
            } => {
                let mut st = room.state.lock().await;
                if let Some(m) = st.members.get_mut(session) {
                    if let Some(a) = audio {
                        m.info.audio = a && m.claims.perms.publish_audio;
                    }
                    if let Some(v) = video {
                        m.info.video = v && m.claims.perms.publish_video;
                    }
                    if let Some(s) = screen {
                        m.info.screen = s && m.claims.perms.publish_screen;
                    }
                }
                Room::presence(&st, session, "state");
                None
            }
            ClientMsg::Offer { pc, sdp, source } => {
                self.offer(room, session, pc, sdp, source).await
            }
            ClientMsg::Answer { pc, sdp } => {
                let peer = {
                    let st = room.state.lock().await;
                    st.members
                        .get(session)
                        .and_then(|m| m.subscriptions.get(&pc))
                        .map(|s| s.peer.pc.clone())
                };
                let Some(peer) = peer else {
                    return Some(ServerMsg::error(
                        "unknown-pc",
                        format!("no subscription {pc}"),
                    ));
                };
                let rejected = crate::simulcast::rejected_sections(&sdp);
                let desc = match RTCSessionDescription::answer(sdp) {
                    Ok(d) => d,
                    Err(e) => {
                        return Some(ServerMsg::error("bad-sdp", format!("answer for {pc}: {e}")));
                    }
                };
                if let Err(e) = peer.set_remote_description(desc).await {
                    return Some(ServerMsg::error("bad-sdp", format!("answer for {pc}: {e}")));
                }
                // RTC-11: a subscriber that decodes none of the codecs offered (the publisher's)
                // rejects the section; it is told what it will not get, and why.
                (!rejected.is_empty()).then(|| {
                    ServerMsg::error(
                        "codec-unsupported",
                        format!(
                            "{pc}: your answer rejected the {} of this publication: the publisher sends a codec your client does not decode (the engine forwards without transcoding; publish H.264 or VP8)",
                            rejected.join(" and ")
                        ),
                    )
                })
            }
            ClientMsg::Candidate { pc, candidate } => {
                let c = candidate?;
                let peer = self.peer_of(room, session, &pc).await?;
                let init = to_init(c);
                peer.add_ice_candidate(init)
                    .await
                    .err()
                    .map(|e| ServerMsg::error("bad-candidate", format!("{pc}: {e}")))
            }
            ClientMsg::Restart { pc } => {
                let peer = {
                    let st = room.state.lock().await;
                    st.members
                        .get(session)
                        .and_then(|m| m.subscriptions.get(&pc))
                        .map(|s| s.peer.pc.clone())
                };
                let Some(peer) = peer else {
                    return Some(ServerMsg::error(
                        "unknown-pc",
                        format!("no subscription {pc}"),
                    ));
                };
                let hub = self.clone();
                let room = room.clone();
                let session = session.to_owned();
                tokio::spawn(async move { hub.restart(room, session, pc, peer).await });
                None
            }
            ClientMsg::Stats { pc, samples } => self.stats(room, session, pc, samples).await,
            ClientMsg::Unpublish { pc } => {
                let key = publication_key(session, &pc);
                let mut st = room.state.lock().await;
                let removed = st
                    .members
                    .get_mut(session)
                    .and_then(|m| m.publications.remove(&pc));
                if removed.is_none() {
                    return Some(ServerMsg::error(
                        "unknown-pc",
                        format!("no publication {pc}"),
                    ));
                }
                drop_publication(&mut st, &key);
                None
            }
        }
    }

    async fn peer_of(&self, room: &Room, session: &str, pc: &str) -> Option<sfu::Pc> {
        let st = room.state.lock().await;
        let m = st.members.get(session)?;
        m.subscriptions
            .get(pc)
            .map(|s| s.peer.pc.clone())
            .or_else(|| m.publications.get(pc).map(|(p, _)| p.pc.clone()))
    }

    async fn restart(self: Arc<Hub>, room: Arc<Room>, session: String, pc: String, peer: sfu::Pc) {
        let offer = match peer
            .create_offer(Some(rtc::peer_connection::configuration::RTCOfferOptions {
                ice_restart: true,
            }))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                return self
                    .tell(
                        &room,
                        &session,
                        ServerMsg::error("restart-failed", e.to_string()),
                    )
                    .await;
            }
        };
        if let Err(e) = peer.set_local_description(offer).await {
            return self
                .tell(
                    &room,
                    &session,
                    ServerMsg::error("restart-failed", e.to_string()),
                )
                .await;
        }
        // Gathering of the new generation.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sdp = peer
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default();
        let st = room.state.lock().await;
        if let Some(m) = st.members.get(&session)
            && let Some(sub) = m.subscriptions.get(&pc)
        {
            let publisher = sub.publication.split('/').next().unwrap_or("").to_owned();
            let _ = m.out.send(ServerMsg::Offer {
                pc,
                sdp,
                publisher,
                source: "restart".into(),
            });
        }
    }

    async fn tell(&self, room: &Room, session: &str, msg: ServerMsg) {
        let st = room.state.lock().await;
        if let Some(m) = st.members.get(session) {
            let _ = m.out.send(msg);
        }
    }

    /// A client's offer: a new publication, or a renegotiation / ICE restart of one.
    async fn offer(
        self: &Arc<Hub>,
        room: &Arc<Room>,
        session: &str,
        pc: String,
        sdp: String,
        source: Option<String>,
    ) -> Option<ServerMsg> {
        let (existing, perms, participant) = {
            let st = room.state.lock().await;
            let m = st.members.get(session)?;
            if !m.info.admitted {
                return Some(ServerMsg::error(
                    "in-lobby",
                    "held in the lobby until a local physician is present (CN-06): nothing is published yet",
                ));
            }
            (
                m.publications.get(&pc).map(|(p, _)| p.pc.clone()),
                m.claims.perms,
                m.claims.sub.clone(),
            )
        };
        let source = source.unwrap_or_else(|| "camera".into());
        if let Some(reason) = refused_media(&sdp, &source, perms) {
            return Some(ServerMsg::error("not-permitted", reason));
        }
        let desc = match RTCSessionDescription::offer(sdp.clone()) {
            Ok(d) => d,
            Err(e) => return Some(ServerMsg::error("bad-sdp", format!("offer for {pc}: {e}"))),
        };
        if let Some(peer) = existing {
            // Renegotiation or ICE restart of a publication (RTC-12).
            if let Err(e) = peer.set_remote_description(desc).await {
                return Some(ServerMsg::error("bad-sdp", format!("offer for {pc}: {e}")));
            }
            if let Err(e) = sfu::answer(&peer).await {
                return Some(ServerMsg::error("bad-sdp", e));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sdp = peer
                .local_description()
                .await
                .map(|d| sfu::answer_for_client(&d.sdp))
                .unwrap_or_default();
            return Some(ServerMsg::Answer { pc, sdp });
        }
        let publication = Arc::new(Publication::new(&pc, session, &participant, &source, &sdp));
        if publication.expected == 0 {
            return Some(ServerMsg::error(
                "bad-sdp",
                format!("offer for {pc} sends no audio or video"),
            ));
        }
        let peer = match self.factory.build(Some(publication.clone())).await {
            Ok(p) => p,
            Err(e) => return Some(ServerMsg::error("sfu-failed", e)),
        };
        let answer = async {
            peer.pc
                .set_remote_description(desc)
                .await
                .map_err(|e| e.to_string())?;
            sfu::answer(&peer.pc).await?;
            peer.local_sdp().await.map(|s| sfu::answer_for_client(&s))
        }
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let _ = peer.pc.close().await;
                return Some(ServerMsg::error("bad-sdp", format!("offer for {pc}: {e}")));
            }
        };
        {
            let mut st = room.state.lock().await;
            let Some(m) = st.members.get_mut(session) else {
                let _ = peer.pc.close().await;
                return None;
            };
            m.publications
                .insert(pc.clone(), (Arc::new(peer), publication.clone()));
            let _ = m.out.send(ServerMsg::Answer {
                pc: pc.clone(),
                sdp: answer,
            });
        }
        // Once the tracks arrive, every other admitted member subscribes.
        let hub = self.clone();
        let room = room.clone();
        let key = publication_key(session, &pc);
        tokio::spawn(async move {
            let waited = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if publication.tracks.lock().await.len() >= publication.expected {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            if waited.is_err() && publication.tracks.lock().await.is_empty() {
                tracing::warn!(publication = %key, "no media arrived within 10 s; not forwarded");
                return;
            }
            let others: Vec<String> = {
                let mut st = room.state.lock().await;
                let Some(owner) = st.members.get(&publication.owner) else {
                    return;
                };
                if !owner.publications.contains_key(&publication.pc_id) {
                    return;
                }
                st.ready.insert(key.clone(), publication.clone());
                hub.record_publication(&room, &mut st, &key, &publication)
                    .await;
                st.members
                    .iter()
                    .filter(|(s, m)| **s != publication.owner && m.info.admitted)
                    .map(|(s, _)| s.clone())
                    .collect()
            };
            for s in others {
                hub.clone().subscribe(room.clone(), s, publication.clone());
            }
        });
        None
    }

    /// Offers `publication` to `session` on a new subscription peer connection (in the
    /// background).
    pub(crate) fn subscribe(
        self: Arc<Hub>,
        room: Arc<Room>,
        session: String,
        publication: Arc<Publication>,
    ) {
        tokio::spawn(async move {
            let key = publication_key(&publication.owner, &publication.pc_id);
            let pc_id = subscription_id(&key);
            let peer = match self.factory.build(None).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "subscription peer connection not built");
                    return;
                }
            };
            let tracks = publication.tracks.lock().await.clone();
            let made = async {
                let screen = publication.source == "screen";
                let tasks = sfu::attach(&peer, &publication.owner, screen, &tracks).await?;
                let offer = peer
                    .pc
                    .create_offer(None)
                    .await
                    .map_err(|e| e.to_string())?;
                peer.pc
                    .set_local_description(offer)
                    .await
                    .map_err(|e| e.to_string())?;
                let sdp = peer.local_sdp().await?;
                Ok::<_, String>((tasks, sdp))
            }
            .await;
            let (tasks, sdp) = match made {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "subscription offer not made");
                    let _ = peer.pc.close().await;
                    return;
                }
            };
            let mut st = room.state.lock().await;
            if !st.ready.contains_key(&key) {
                return;
            }
            let Some(m) = st.members.get_mut(&session) else {
                return;
            };
            let _ = m.out.send(ServerMsg::Offer {
                pc: pc_id.clone(),
                sdp,
                publisher: publication.owner.clone(),
                source: publication.source.clone(),
            });
            m.subscriptions.insert(
                pc_id,
                Subscription {
                    peer,
                    publication: key,
                    tasks,
                },
            );
            drop(st);
            publication.request_key_frames().await;
        });
    }
}

/// Ends a publication for every subscriber.
pub(crate) fn drop_publication(st: &mut RoomState, key: &str) {
    st.ready.remove(key);
    let pc = subscription_id(key);
    for m in st.members.values_mut() {
        if m.subscriptions.remove(&pc).is_some() {
            let _ = m.out.send(ServerMsg::Closed { pc: pc.clone() });
        }
    }
}

/// Why an offer's media is not allowed by the token's permissions, if it is not.
fn refused_media(sdp: &str, source: &str, perms: Permissions) -> Option<String> {
    let sends = |kind: &str| {
        let mut found = false;
        let mut current = false;
        let mut sending = true;
        for line in sdp.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                if current && sending {
                    found = true;
                }
                current = m.starts_with(kind);
                sending = true;
            } else if line == "a=recvonly" || line == "a=inactive" {
                sending = false;
            }
        }
        found || (current && sending)
    };
    match source {
        "screen" if !perms.publish_screen => Some("this token may not share a screen".into()),
        "screen" => None,
        "camera" => {
            if sends("audio") && !perms.publish_audio {
                Some("this token may not publish audio".into())
            } else if sends("video") && !perms.publish_video {
                Some("this token may not publish video".into())
            } else {
                None
            }
        }
        other => Some(format!("source {other:?} is not camera or screen")),
    }
}

fn to_init(c: CandidateInit) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    }
}
