// The call page (issue 18): joins the room named in the path with the room token of the query
// string over /ws/signal, publishes the camera and microphone (and a screen share on demand),
// answers the engine's subscription offers, and posts getStats() samples every few seconds.
// docs/media.md specifies every message used here.
"use strict";
(function () {
  const ZH = {
    title: "远程会诊",
    connecting: "正在连接…",
    lobby: "等待本地医生加入…",
    inCall: "通话中",
    reconnecting: "连接中断，正在重连…",
    left: "已离开",
    mic: "静音",
    micOn: "取消静音",
    cam: "关闭摄像头",
    camOn: "打开摄像头",
    share: "共享屏幕",
    shareStop: "停止共享",
    leave: "离开",
    recording: "正在录制",
    me: "我",
    screen: "屏幕",
    muted: "已静音",
    camOff: "摄像头已关",
    noToken: "链接缺少 token 参数",
    noMedia: "无法打开摄像头或麦克风：",
    rtt: "延迟",
    loss: "丢包",
    jitter: "抖动",
    freeze: "卡顿",
    roles: { expert: "专家", "local-physician": "本地医生", patient: "患者", observer: "旁听" },
    errors: {
      "invalid-token": "链接无效",
      "token-expired": "链接已过期",
      "wrong-room": "链接不属于此会诊",
      "room-closed": "会诊不在进行中",
      "no-consent": "尚未记录知情同意",
      "not-participant": "您不是此会诊的参与者",
      "not-verified": "医生实名认证未通过",
      replaced: "已在另一窗口加入",
    },
  };
  const EN = {
    title: "Consultation call",
    connecting: "Connecting…",
    lobby: "Waiting for the local physician…",
    inCall: "In call",
    reconnecting: "Connection lost, reconnecting…",
    left: "Left the call",
    mic: "Mute",
    micOn: "Unmute",
    cam: "Camera off",
    camOn: "Camera on",
    share: "Share screen",
    shareStop: "Stop sharing",
    leave: "Leave",
    recording: "Recording",
    me: "Me",
    screen: "screen",
    muted: "muted",
    camOff: "camera off",
    noToken: "The link has no token",
    noMedia: "Camera or microphone not available: ",
    rtt: "RTT",
    loss: "loss",
    jitter: "jitter",
    freeze: "freeze",
    roles: { expert: "Expert", "local-physician": "Local physician", patient: "Patient", observer: "Observer" },
    errors: {
      "invalid-token": "This link is not valid",
      "token-expired": "This link has expired",
      "wrong-room": "This link is for another consultation",
      "room-closed": "The consultation is not in session",
      "no-consent": "No consent is recorded yet",
      "not-participant": "You are not a participant of this consultation",
      "not-verified": "The physician's real-name verification has not passed",
      replaced: "Joined in another window",
    },
  };
  const L = (navigator.language || "en").toLowerCase().startsWith("zh") ? ZH : EN;
  document.documentElement.lang = L === ZH ? "zh-CN" : "en";

  const STATS_EVERY_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const room = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  // The token: from the link, kept for this tab (a reload) but out of the address bar.
  const tokenKey = "huizhen-room-token:" + room;
  const token = new URLSearchParams(location.search).get("token") || sessionStorage.getItem(tokenKey);
  if (token) {
    try { sessionStorage.setItem(tokenKey, token); } catch (e) { /* private mode */ }
    try { history.replaceState(null, "", location.pathname); } catch (e) { /* ignore */ }
  }

  const st = {
    ws: null,
    session: null,
    permissions: {},
    iceServers: [],
    admitted: false,
    left: false,
    peers: {}, // session → peer info
    pcs: {}, // pc id → {pc, role: "publish"|"subscribe", source, publisher}
    camera: null,
    screen: null,
    screenSeq: 0,
    audio: true,
    video: true,
    recording: false,
    quality: {}, // pc id → last samples (for the page and the tests)
    prev: {}, // stats id → previous counters
    alerts: [],
    messages: [],
    retries: 0,
  };
  window.huizhen = st; // read by the browser test

  $("title").textContent = L.title;
  $("recording").textContent = L.recording;
  $("btn-mic").textContent = L.mic;
  $("btn-cam").textContent = L.cam;
  $("btn-share").textContent = L.share;
  $("btn-leave").textContent = L.leave;
  $("local-who").textContent = L.me;

  function status(text, state) {
    const s = $("status");
    s.textContent = text;
    s.dataset.state = state || "ok";
  }

  function send(msg) {
    if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(msg));
  }

  function signalUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/signal";
  }

  // Non-trickle: the engine expects complete SDP is simplest; wait for gathering (≤ 3 s).
  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  function connect() {
    if (!token) {
      status(L.noToken, "error");
      return;
    }
    status(L.connecting);
    const ws = new WebSocket(signalUrl());
    st.ws = ws;
    ws.onopen = () => {
      const join = { type: "join", room, token };
      if (st.session) join.resume = st.session;
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      st.messages.push(m.type);
      handle(m).catch((err) => console.error("huizhen call:", m.type, err));
    };
    ws.onclose = () => {
      if (st.ws !== ws || st.left) return;
      if (!st.session) return; // refused: the error says why
      // RTC-12: reconnect without leaving; the media keeps flowing meanwhile.
      status(L.reconnecting, "error");
      const wait = Math.min(1000 * 2 ** st.retries, 8000);
      st.retries += 1;
      setTimeout(connect, wait);
    };
  }

  async function handle(m) {
    switch (m.type) {
      case "joined":
        st.retries = 0;
        st.session = m.session;
        st.permissions = m.permissions || {};
        st.iceServers = m.ice_servers || [];
        $("local-who").textContent = L.me + " · " + (L.roles[m.role] || m.role);
        for (const p of m.peers || []) peer(p);
        if (m.resumed) {
          status(L.inCall);
          break;
        }
        st.admitted = m.admission === "admitted";
        status(st.admitted ? L.inCall : L.lobby);
        await camera();
        if (st.admitted) await publishCamera();
        break;
      case "admitted":
        st.admitted = true;
        status(L.inCall);
        await publishCamera();
        break;
      case "presence":
        if (m.event === "left") removePeer(m.peer.session);
        else peer(m.peer);
        break;
      case "offer":
        await subscription(m);
        break;
      case "answer": {
        const p = st.pcs[m.pc];
        if (p) await p.pc.setRemoteDescription({ type: "answer", sdp: m.sdp });
        break;
      }
      case "closed":
        closePc(m.pc);
        break;
      case "recording":
        st.recording = !!m.active;
        $("recording").hidden = !st.recording;
        break;
      case "quality_alert":
        alertShown(m);
        break;
      case "error":
        if (m.fatal) {
          st.left = m.code !== "unavailable";
          status((L.errors[m.code] || m.code) + (m.message ? " — " + m.message : ""), "error");
        } else {
          console.warn("huizhen call:", m.code, m.message);
        }
        break;
      default:
        // pong and types this page does not know: ignored.
        break;
    }
  }

  async function camera() {
    if (st.camera) return;
    const want = { audio: !!st.permissions.publish_audio, video: !!st.permissions.publish_video };
    if (!want.audio && !want.video) return;
    try {
      st.camera = await navigator.mediaDevices.getUserMedia(want);
    } catch (e) {
      status(L.noMedia + e.message, "error");
      return;
    }
    $("local-video").srcObject = st.camera;
    $("btn-mic").disabled = !want.audio;
    $("btn-cam").disabled = !want.video;
    $("btn-share").disabled = !st.permissions.publish_screen || !navigator.mediaDevices.getDisplayMedia;
    $("btn-leave").disabled = false;
  }

  // H.264 first for hardware decoders and Safari/iOS, VP8 as fallback (RTC-11).
  function preferCodecs(transceiver) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpSender || !RTCRtpSender.getCapabilities) return;
    const caps = RTCRtpSender.getCapabilities("video");
    if (!caps) return;
    const rank = (c) => {
      const t = c.mimeType.toLowerCase();
      if (t === "video/h264") return 0;
      if (t === "video/vp8") return 1;
      if (t === "video/rtx" || t === "video/red" || t === "video/ulpfec") return 3;
      return 2;
    };
    const codecs = caps.codecs.slice().sort((a, b) => rank(a) - rank(b));
    try { transceiver.setCodecPreferences(codecs); } catch (e) { /* keep the default */ }
  }

  async function publish(id, stream, source) {
    const pc = new RTCPeerConnection({ iceServers: st.iceServers });
    st.pcs[id] = { pc, role: "publish", source };
    for (const track of stream.getTracks()) {
      const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      if (track.kind === "video") preferCodecs(t);
    }
    watchIce(id, pc, true);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    send({ type: "offer", pc: id, sdp: pc.localDescription.sdp, source });
  }

  async function publishCamera() {
    if (!st.camera || st.pcs.cam) return;
    await publish("cam", st.camera, "camera");
    send({ type: "state", audio: st.audio, video: st.video, screen: false });
  }

  // ICE failed after a network change: restart it without leaving the room (RTC-12).
  function watchIce(id, pc, publisher) {
    pc.addEventListener("iceconnectionstatechange", async () => {
      if (pc.iceConnectionState !== "failed" || st.left) return;
      if (publisher) {
        await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
        await gathered(pc);
        send({ type: "offer", pc: id, sdp: pc.localDescription.sdp, source: st.pcs[id].source });
      } else {
        send({ type: "restart", pc: id });
      }
    });
  }

  async function subscription(m) {
    let p = st.pcs[m.pc];
    if (!p) {
      const pc = new RTCPeerConnection({ iceServers: st.iceServers });
      p = { pc, role: "subscribe", source: m.source, publisher: m.publisher, stream: new MediaStream() };
      st.pcs[m.pc] = p;
      pc.ontrack = (e) => {
        p.stream.addTrack(e.track);
        tile(m.pc, m.publisher, m.source).querySelector("video").srcObject = p.stream;
      };
      watchIce(m.pc, pc, false);
    }
    await p.pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
    await p.pc.setLocalDescription(await p.pc.createAnswer());
    await gathered(p.pc);
    send({ type: "answer", pc: m.pc, sdp: p.pc.localDescription.sdp });
  }

  function closePc(id) {
    const p = st.pcs[id];
    if (!p) return;
    p.pc.close();
    delete st.pcs[id];
    delete st.quality[id];
    const t = document.querySelector('[data-pc="' + CSS.escape(id) + '"]');
    if (t) t.remove();
  }

  function tile(pcId, publisher, source) {
    let t = document.querySelector('[data-pc="' + CSS.escape(pcId) + '"]');
    if (t) return t;
    t = document.createElement("figure");
    t.className = "tile" + (source === "screen" ? " screen" : "");
    t.dataset.pc = pcId;
    t.dataset.publisher = publisher;
    const v = document.createElement("video");
    v.autoplay = true;
    v.playsInline = true;
    const c = document.createElement("figcaption");
    c.innerHTML = '<span class="who"></span> <span class="flags"></span><span class="quality"></span>';
    t.append(v, c);
    $("tiles").append(t);
    caption(publisher);
    return t;
  }

  function peer(info) {
    st.peers[info.session] = info;
    caption(info.session);
  }

  function removePeer(session) {
    delete st.peers[session];
    for (const [id, p] of Object.entries(st.pcs)) if (p.publisher === session) closePc(id);
  }

  function caption(session) {
    const info = st.peers[session];
    for (const t of document.querySelectorAll('[data-publisher="' + CSS.escape(session) + '"]')) {
      const screen = t.classList.contains("screen");
      const who = info ? (L.roles[info.role] || info.role) : "";
      t.querySelector(".who").textContent = who + (screen ? " · " + L.screen : "");
      const flags = [];
      if (info && !screen && !info.audio) flags.push(L.muted);
      if (info && !screen && !info.video) flags.push(L.camOff);
      t.querySelector(".flags").textContent = flags.join(" · ");
    }
  }

  function alertShown(m) {
    const key = m.track + "/" + m.metric;
    st.alerts = st.alerts.filter((a) => a.track + "/" + a.metric !== key);
    if (m.active) st.alerts.push(m);
    $("alerts").textContent = st.alerts
      .map((a) => (L[a.metric] || a.metric) + " " + a.value + " > " + a.threshold)
      .join(" · ");
  }

  // --- buttons ---
  // Mute / camera off: the track stays published (disabled), the others see the state.
  function toggle(field, button, tracks, onLabel, offLabel) {
    st[field] = !st[field];
    if (st.camera) for (const t of st.camera[tracks]()) t.enabled = st[field];
    $(button).textContent = st[field] ? onLabel : offLabel;
    $(button).setAttribute("aria-pressed", String(!st[field]));
    $("local-flags").textContent = [st.audio ? "" : L.muted, st.video ? "" : L.camOff].filter(Boolean).join(" · ");
    send({ type: "state", [field]: st[field] });
  }
  $("btn-mic").onclick = () => toggle("audio", "btn-mic", "getAudioTracks", L.mic, L.micOn);
  $("btn-cam").onclick = () => toggle("video", "btn-cam", "getVideoTracks", L.cam, L.camOn);
  async function stopShare() {
    if (!st.screen) return;
    const id = st.screen.id;
    for (const t of st.screen.stream.getTracks()) t.stop();
    st.screen = null;
    send({ type: "unpublish", pc: id });
    const p = st.pcs[id];
    if (p) p.pc.close();
    delete st.pcs[id];
    send({ type: "state", screen: false });
    $("btn-share").textContent = L.share;
    $("btn-share").setAttribute("aria-pressed", "false");
  }
  $("btn-share").onclick = async () => {
    if (st.screen) return stopShare();
    if (!st.admitted) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (e) {
      return; // the user cancelled
    }
    st.screenSeq += 1;
    st.screen = { id: "screen-" + st.screenSeq, stream };
    for (const t of stream.getVideoTracks()) t.onended = () => stopShare();
    await publish(st.screen.id, stream, "screen");
    send({ type: "state", screen: true });
    $("btn-share").textContent = L.shareStop;
    $("btn-share").setAttribute("aria-pressed", "true");
  };
  $("btn-leave").onclick = () => {
    st.left = true;
    send({ type: "leave" });
    for (const id of Object.keys(st.pcs)) closePc(id);
    if (st.camera) for (const t of st.camera.getTracks()) t.stop();
    if (st.screen) for (const t of st.screen.stream.getTracks()) t.stop();
    if (st.ws) st.ws.close();
    status(L.left);
    for (const b of document.querySelectorAll("footer button")) b.disabled = true;
  };

  // --- live quality (RTC-20): shown on each tile and posted as `stats` ---
  const round = (x, d) => (x === undefined || x === null || !isFinite(x) ? undefined : Number(x.toFixed(d)));

  async function samplesOf(id, p) {
    const report = await p.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let pairRtt;
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
        pairRtt = s.currentRoundTripTime * 1000;
      }
    });
    const samples = [];
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" && s.type !== "outbound-rtp") return;
      const kind = s.kind || s.mediaType;
      const key = id + "/" + s.id;
      const prev = st.prev[key];
      const now = s.timestamp;
      const dt = prev ? (now - prev.timestamp) / 1000 : 0;
      const sample = {
        track: s.trackIdentifier || (s.mid !== undefined ? "mid" + s.mid : s.id),
        kind,
        direction: s.type === "inbound-rtp" ? "inbound" : "outbound",
      };
      if (s.type === "inbound-rtp") {
        const bytes = s.bytesReceived || 0;
        const recv = s.packetsReceived || 0;
        const lost = Math.max(s.packetsLost || 0, 0);
        if (prev && dt > 0) {
          sample.bitrate_kbps = round(((bytes - prev.bytes) * 8) / dt / 1000, 1);
          const dr = recv - prev.recv;
          const dl = lost - prev.lost;
          if (dr + dl > 0) sample.loss_pct = round((100 * Math.max(dl, 0)) / (dr + Math.max(dl, 0)), 2);
          if (kind === "video" && s.totalFreezesDuration !== undefined) {
            sample.freeze_ms = round((s.totalFreezesDuration - (prev.freezes || 0)) * 1000, 0);
          }
        }
        if (s.jitter !== undefined) sample.jitter_ms = round(s.jitter * 1000, 1);
        if (s.framesPerSecond !== undefined) sample.fps = round(s.framesPerSecond, 1);
        if (pairRtt !== undefined) sample.rtt_ms = round(pairRtt, 1);
        st.prev[key] = { timestamp: now, bytes, recv, lost, freezes: s.totalFreezesDuration || 0 };
        sample.packets = recv;
      } else {
        const bytes = s.bytesSent || 0;
        if (prev && dt > 0) sample.bitrate_kbps = round(((bytes - prev.bytes) * 8) / dt / 1000, 1);
        if (s.framesPerSecond !== undefined) sample.fps = round(s.framesPerSecond, 1);
        const remote = s.remoteId && byId.get(s.remoteId);
        if (remote) {
          if (remote.roundTripTime !== undefined) sample.rtt_ms = round(remote.roundTripTime * 1000, 1);
          if (remote.fractionLost !== undefined) sample.loss_pct = round(remote.fractionLost * 100, 2);
          if (remote.jitter !== undefined) sample.jitter_ms = round(remote.jitter * 1000, 1);
        } else if (pairRtt !== undefined) {
          sample.rtt_ms = round(pairRtt, 1);
        }
        st.prev[key] = { timestamp: now, bytes };
        sample.packets = s.packetsSent || 0;
      }
      samples.push(sample);
    });
    return samples;
  }

  function shown(samples) {
    const worst = (f) => samples.reduce((m, s) => (s[f] !== undefined && s[f] > m ? s[f] : m), -1);
    const parts = [];
    const rtt = worst("rtt_ms");
    const loss = worst("loss_pct");
    const jitter = worst("jitter_ms");
    const kbps = samples.reduce((a, s) => a + (s.bitrate_kbps || 0), 0);
    if (rtt >= 0) parts.push(L.rtt + " " + Math.round(rtt) + " ms");
    if (loss >= 0) parts.push(L.loss + " " + loss.toFixed(1) + " %");
    if (jitter >= 0) parts.push(L.jitter + " " + Math.round(jitter) + " ms");
    if (kbps > 0) parts.push(Math.round(kbps) + " kbps");
    const bad = rtt > 300 || loss > 5 || jitter > 50;
    return { text: parts.join(" · "), bad };
  }

  async function collect() {
    for (const [id, p] of Object.entries(st.pcs)) {
      if (p.pc.connectionState === "closed") continue;
      let samples;
      try {
        samples = await samplesOf(id, p);
      } catch (e) {
        continue;
      }
      if (!samples.length) continue;
      st.quality[id] = samples;
      const q = shown(samples);
      const el = p.role === "publish"
        ? (p.source === "camera" ? $("local-quality") : null)
        : document.querySelector('[data-pc="' + CSS.escape(id) + '"] .quality');
      if (el) {
        el.textContent = q.text;
        el.classList.toggle("bad", q.bad);
      }
      const posted = samples.map((s) => {
        const o = Object.assign({}, s);
        delete o.packets;
        return o;
      });
      send({ type: "stats", pc: id, samples: posted });
    }
  }
  setInterval(() => { collect().catch(() => {}); }, STATS_EVERY_MS);

  // Keep-alive through proxies that close idle WebSockets.
  setInterval(() => send({ type: "ping" }), 20000);

  window.addEventListener("pagehide", () => {
    if (!st.left) send({ type: "leave" });
  });

  connect();
})();
