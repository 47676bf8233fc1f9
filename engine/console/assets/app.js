// Huizhen console: one page, rendered from the engine's API with the session cookie.
// Every data call goes to /api/…: the API's roles, facility scope and audit decide what is
// shown. No framework; the DOM is built with el() so no text is ever parsed as HTML.
"use strict";

const HZ = { session: null, lang: "en", timers: [], aborts: [], route: "" };

// ---------- i18n ----------
function pickLang() {
  const saved = localStorage.getItem("hz-lang");
  if (saved === "en" || saved === "zh-CN") return saved;
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const l of langs) {
    const low = String(l).toLowerCase();
    if (low.startsWith("zh")) return "zh-CN";
    if (low.startsWith("en")) return "en";
  }
  return "en";
}
function t(key, vars) {
  const dict = (window.HZ_I18N && window.HZ_I18N[HZ.lang]) || {};
  const en = (window.HZ_I18N && window.HZ_I18N.en) || {};
  let s = dict[key] !== undefined ? dict[key] : en[key] !== undefined ? en[key] : key;
  if (vars) for (const k of Object.keys(vars)) s = s.split("{" + k + "}").join(String(vars[k]));
  return s;
}
function setLang(l) {
  HZ.lang = l;
  localStorage.setItem("hz-lang", l);
  document.documentElement.lang = l;
  const sel = document.getElementById("lang");
  if (sel) sel.value = l;
}

// ---------- DOM ----------
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}
const svgNS = "http://www.w3.org/2000/svg";
function sv(tag, attrs, ...children) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}
function main() { return document.getElementById("main"); }
function render(...nodes) { const m = main(); m.replaceChildren(...nodes.flat()); }
function toast(msg, bad) {
  const box = document.getElementById("toast");
  const d = el("div", { class: bad ? "err" : "" }, msg);
  box.appendChild(d);
  setTimeout(() => d.remove(), bad ? 8000 : 4000);
}
function fmtTime(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
function fmtDuration(ms) {
  const neg = ms < 0; ms = Math.abs(ms);
  const s = Math.floor(ms / 1000), m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  const txt = d > 0 ? `${d}d ${h % 24}h` : h > 0 ? `${h}h ${m % 60}m` : m > 0 ? `${m}m ${s % 60}s` : `${s}s`;
  return neg ? "-" + txt : txt;
}
function stateBadge(s) {
  const known = ["received", "processing", "done", "failed", "dead"].includes(s);
  return el("span", { class: "state " + (known ? s : "other"), "data-state": s }, t("state." + s));
}
function every(ms, fn) { HZ.timers.push(setInterval(fn, ms)); }
function clearTimers() { HZ.timers.forEach(clearInterval); HZ.timers = []; HZ.aborts.forEach((a) => a.abort()); HZ.aborts = []; }

// ---------- API ----------
class ApiError extends Error {
  constructor(status, body) { super((body && body.error) || ("HTTP " + status)); this.status = status; this.body = body; }
}
async function call(method, path, body, background) {
  const headers = { Accept: "application/json" };
  // An automatic refresh does not keep the session alive (the idle timeout still applies).
  if (background) headers["X-Huizhen-Background"] = "1";
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (HZ.session && HZ.session.csrf) headers["X-CSRF-Token"] = HZ.session.csrf;
  }
  const r = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  if (r.status === 401 && path.startsWith("/api/")) {
    HZ.session = null;
    showLogin(t("login.ended"));
    throw new ApiError(401, data);
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}
const api = {
  get: (p) => call("GET", p),
  poll: (p) => call("GET", p, undefined, true),
  post: (p, b) => call("POST", p, b === undefined ? {} : b),
};
function qs(obj) {
  const parts = [];
  for (const [k, v] of Object.entries(obj)) if (v !== undefined && v !== null && v !== "") parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(v));
  return parts.length ? "?" + parts.join("&") : "";
}
function errorBox(e) { return el("p", { class: "err", role: "alert" }, String(e.message || e)); }

// ---------- login ----------
function showLogin(notice) {
  clearTimers();
  document.getElementById("top").hidden = true;
  document.getElementById("banner").hidden = true;
  const msg = el("p", { class: "err", id: "login-error", role: "alert" }, notice || "");
  const totpRow = el("label", { class: "hidden", id: "totp-row" }, t("login.totp"),
    el("input", { id: "login-totp", name: "totp", inputmode: "numeric", autocomplete: "one-time-code", maxlength: "6" }));
  const form = el("form", { id: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    msg.textContent = "";
    const body = {
      username: document.getElementById("login-username").value,
      password: document.getElementById("login-password").value,
    };
    const code = document.getElementById("login-totp").value.trim();
    if (code) body.totp = code;
    const btn = document.getElementById("login-submit");
    btn.disabled = true;
    try {
      HZ.session = await call("POST", "/ui/login", body);
      start();
    } catch (e) {
      if (e.body && e.body.need_totp) { totpRow.classList.remove("hidden"); document.getElementById("login-totp").focus(); }
      msg.textContent = e.message;
    } finally { btn.disabled = false; }
  } },
    el("label", null, t("login.username"), el("input", { id: "login-username", name: "username", autocomplete: "username", required: true })),
    el("label", null, t("login.password"), el("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true })),
    totpRow,
    el("button", { id: "login-submit", type: "submit" }, t("login.submit")),
    msg);
  const oidc = HZ.loggedOut && HZ.loggedOut.oidc;
  render(el("div", { class: "login panel" },
    el("h1", null, "会诊 Huizhen"),
    el("p", { class: "muted" }, t("login.intro")),
    form,
    oidc ? [el("div", { class: "or" }, t("login.or")),
      el("a", { id: "oidc-login", href: "/ui/oidc/start" + qs({ return: "/ui/" + location.hash }) },
        el("button", { type: "button", class: "secondary" }, t("login.oidc", { label: oidc.label })))] : null,
    el("div", { class: "langs" }, langSwitch())));
  document.getElementById("login-username").focus();
}
function langSwitch() {
  return el("select", { id: "login-lang", "aria-label": "Language / 语言", onchange: (e) => { setLang(e.target.value); route(); } },
    el("option", { value: "zh-CN", selected: HZ.lang === "zh-CN" }, "中文"),
    el("option", { value: "en", selected: HZ.lang === "en" }, "English"));
}

// ---------- shell ----------
const NAV = [
  ["dashboard", "nav.dashboard"],
  ["messages", "nav.messages"],
  ["tap", "nav.tap"],
  ["consultations", "nav.consultations"],
  ["plugins", "nav.plugins"],
  ["media", "nav.media"],
  ["audit", "nav.audit"],
];
function can(page) { return !!(HZ.session && HZ.session.pages && HZ.session.pages[page]); }
function shell() {
  const s = HZ.session;
  document.getElementById("top").hidden = false;
  const nav = document.getElementById("nav");
  nav.replaceChildren(...NAV.filter(([p]) => can(p)).map(([p, k]) => el("a", { href: "#/" + p, "data-page": p }, t(k))));
  document.getElementById("who").textContent = `${s.display_name} · ${t("role." + s.role)} · ${s.facility === "*" ? t("facility.all") : s.facility}`;
  document.getElementById("logout").textContent = t("nav.logout");
  const banner = document.getElementById("banner");
  if (s.initial_password) {
    banner.replaceChildren(t("banner.initial"), " ", el("a", { href: "#/account" }, t("banner.change")));
    banner.hidden = false;
  } else banner.hidden = true;
}
function firstPage() { return (NAV.find(([p]) => can(p)) || ["account"])[0]; }
function route() {
  clearTimers();
  if (!HZ.session) { showLogin(); return; }
  if (HZ.session.pending) { shell(); pageEnrol(true); return; }
  shell();
  const hash = location.hash.replace(/^#\/?/, "").split("?")[0];
  const [page, ...rest] = hash.split("/");
  const id = rest.map(decodeURIComponent).join("/");
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  const pages = {
    dashboard: pageDashboard, messages: id ? () => pageMessage(id) : pageMessages, tap: pageTap,
    consultations: id ? () => pageConsultation(id) : pageConsultations,
    plugins: pagePlugins, media: id ? () => pageCall(id) : pageMedia, audit: pageAudit, account: () => pageEnrol(false),
  };
  const want = page || firstPage();
  if (!pages[want] || (want !== "account" && !can(want))) {
    if (!page) { location.hash = "#/" + firstPage(); return; }
    render(el("h1", null, t("page.forbidden")), el("p", { class: "muted" }, t("page.forbidden.text")));
    return;
  }
  HZ.route = want;
  Promise.resolve(pages[want]()).catch((e) => { if (!(e instanceof ApiError && e.status === 401)) render(errorBox(e)); });
}

// ---------- charts ----------
function lineChart(series, opts) {
  // series: [{name, cls, color, points: [[x, y], …]}]
  const W = 600, H = 160, L = 40, R = 8, T = 8, B = 20;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const svg = sv("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": opts.label || "" });
  if (!xs.length) {
    svg.appendChild(sv("text", { x: W / 2 - 40, y: H / 2 }, t("chart.nodata")));
    return svg;
  }
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  const y1 = Math.max(1, ...ys) * 1.1;
  const X = (x) => L + ((x - x0) / Math.max(1, x1 - x0)) * (W - L - R);
  const Y = (y) => T + (1 - y / y1) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (y1 / 4) * i;
    svg.appendChild(sv("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#eceff3" }));
    svg.appendChild(sv("text", { x: 2, y: Y(v) + 3 }, v >= 100 ? v.toFixed(0) : v.toFixed(1)));
  }
  svg.appendChild(sv("text", { x: L, y: H - 4 }, fmtTime(x0).slice(11)));
  svg.appendChild(sv("text", { x: W - R - 44, y: H - 4 }, fmtTime(x1).slice(11)));
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
    svg.appendChild(sv("path", { d, fill: "none", stroke: s.color, "stroke-width": "2", "data-series": s.name }));
  }
  return svg;
}
function legend(items) {
  return el("div", { class: "legend" }, items.map(([cls, label]) => el("span", null, el("i", { class: "sw-" + cls }), label)));
}
const COLORS = { received: "#3b6fb6", done: "#1e7d32", failed: "#b35c00", dead: "#b3261e", backlog: "#7d57c2" };

// ---------- dashboard ----------
async function pageDashboard() {
  const root = el("div", { id: "dashboard" });
  render(el("h1", null, t("nav.dashboard")), root);
  const draw = async (bg) => {
    const get = bg ? api.poll : api.get;
    const [pl, hist, plugins] = await Promise.all([
      get("/api/pipelines"),
      get("/api/pipelines/history?minutes=15"),
      can("plugins") ? get("/api/plugins").catch(() => null) : Promise.resolve(null),
    ]);
    if (HZ.route !== "dashboard") return;
    const totals = { received: 0, processing: 0, done: 0, failed: 0, dead: 0 };
    for (const p of pl.pipelines) for (const k of Object.keys(totals)) totals[k] += (p.messages && p.messages[k]) || 0;
    const all = Object.values(totals).reduce((a, b) => a + b, 0);
    const cards = el("div", { class: "cards" }, el("div", { class: "card" }, el("div", { class: "n", "data-total": "all" }, String(all)), el("div", { class: "l" }, t("dash.total"))), Object.entries(totals).map(([k, n]) =>
      el("div", { class: "card" }, el("div", { class: "n", "data-total": k }, String(n)), el("div", { class: "l" }, t("state." + k)))));
    const agg = {};
    const chosen = HZ.chartPipeline || "";
    for (const p of hist.pipelines.filter((p) => !chosen || p.pipeline === chosen)) for (const pt of p.points) {
      const a = (agg[pt.at] = agg[pt.at] || { received: 0, done: 0, failed: 0, dead: 0, backlog: 0 });
      a.received += pt.received_per_s; a.done += pt.done_per_s; a.failed += pt.failed_per_s; a.dead += pt.dead_per_s; a.backlog += pt.backlog + pt.in_memory;
    }
    const ats = Object.keys(agg).map(Number).sort((a, b) => a - b);
    const mk = (k) => ({ name: k, color: COLORS[k], points: ats.map((at) => [at, agg[at][k]]) });
    const charts = el("div", { class: "grid wide" },
      el("div", { class: "panel" }, el("h2", null, t("dash.throughput")),
        legend([["received", t("state.received")], ["done", t("state.done")], ["failed", t("state.failed")], ["dead", t("state.dead")]]),
        lineChart(["received", "done", "failed", "dead"].map(mk), { label: t("dash.throughput") })),
      el("div", { class: "panel" }, el("h2", null, t("dash.depth")), legend([["backlog", t("dash.depth.legend")]]),
        lineChart([mk("backlog")], { label: t("dash.depth") })));
    const table = el("table", { id: "pipelines" },
      el("thead", null, el("tr", null, ["dash.pipeline", "dash.facility", "dash.running", "state.received", "state.processing", "state.done", "state.failed", "state.dead", "dash.queue"].map((k) => el("th", null, t(k))))),
      el("tbody", null, pl.pipelines.map((p) => el("tr", { class: "click", "data-pipeline": p.name, onclick: () => { location.hash = "#/messages?pipeline=" + encodeURIComponent(p.name); } },
        el("td", null, p.name), el("td", null, p.facility || ""),
        el("td", null, p.running ? el("span", { class: "ok" }, "●") : el("span", { class: "err", title: p.error || "" }, "● " + (p.error || ""))),
        ["received", "processing", "done", "failed", "dead"].map((k) => el("td", { "data-counter": p.name + ":" + k }, String((p.messages && p.messages[k]) || 0))),
        el("td", null, String(p.queue_depth !== undefined ? p.queue_depth : ""))))));
    const picker = el("label", { class: "muted" }, t("dash.chart_of") + " ",
      el("select", { id: "chart-pipeline", onchange: (e) => { HZ.chartPipeline = e.target.value; draw(false).catch(() => {}); } },
        el("option", { value: "" }, t("dash.all_pipelines")),
        pl.pipelines.map((p) => el("option", { value: p.name, selected: p.name === chosen }, p.name))));
    const parts = [cards, el("div", { class: "actions" }, picker), charts, el("h2", null, t("dash.pipelines")), table];
    if (plugins) parts.push(el("h2", null, t("dash.plugins")), pluginTable(plugins.plugins, false));
    root.replaceChildren(...parts, el("p", { class: "muted" }, t("dash.updated", { time: fmtTime(Date.now()) })));
  };
  await draw(false);
  every(5000, () => draw(true).catch(() => {}));
}

// ---------- messages ----------
function hashParams() {
  const q = location.hash.split("?")[1] || "";
  const out = {};
  for (const kv of q.split("&")) { if (!kv) continue; const [k, v] = kv.split("="); out[decodeURIComponent(k)] = decodeURIComponent(v || ""); }
  return out;
}
function toLocalInput(ms) { if (!ms) return ""; const d = new Date(ms - new Date().getTimezoneOffset() * 60000); return d.toISOString().slice(0, 16); }
async function pageMessages() {
  const params = hashParams();
  const pipelines = (await api.get("/api/pipelines")).pipelines.map((p) => p.name);
  const f = (name, label, input) => el("label", null, t(label), input);
  const form = el("form", { class: "filters", id: "message-filters", onsubmit: (ev) => {
    ev.preventDefault();
    const v = (id) => document.getElementById(id).value.trim();
    const ms = (id) => { const x = v(id); return x ? String(new Date(x).getTime()) : ""; };
    location.hash = "#/messages" + qs({ pipeline: v("f-pipeline"), state: v("f-state"), after: ms("f-after"), before: ms("f-before"), text: v("f-text"), control_id: v("f-control"), patient: v("f-patient"), q: v("f-q") });
  } },
    f("pipeline", "msg.pipeline", el("select", { id: "f-pipeline" }, el("option", { value: "" }, t("msg.any")), pipelines.map((p) => el("option", { value: p, selected: params.pipeline === p }, p)))),
    f("state", "msg.state", el("select", { id: "f-state" }, el("option", { value: "" }, t("msg.any")), ["received", "processing", "done", "failed", "dead"].map((s) => el("option", { value: s, selected: params.state === s }, t("state." + s))))),
    f("after", "msg.after", el("input", { id: "f-after", type: "datetime-local", value: toLocalInput(Number(params.after)) })),
    f("before", "msg.before", el("input", { id: "f-before", type: "datetime-local", value: toLocalInput(Number(params.before)) })),
    f("text", "msg.text", el("input", { id: "f-text", value: params.text || "", size: "14" })),
    f("control", "msg.control", el("input", { id: "f-control", value: params.control_id || "", size: "12" })),
    f("patient", "msg.patient", el("input", { id: "f-patient", value: params.patient || "", size: "12" })),
    f("q", "msg.q", el("input", { id: "f-q", value: params.q || "", size: "12" })),
    el("button", { type: "submit", id: "f-search" }, t("msg.search")));
  const body = el("tbody");
  const info = el("p", { class: "muted", id: "msg-info" });
  const selectAll = el("input", { type: "checkbox", "aria-label": t("msg.select_all"), onchange: (e) => body.querySelectorAll("input[type=checkbox]").forEach((c) => (c.checked = e.target.checked)) });
  const reprocessBtn = el("button", { id: "reprocess-selected", class: can("reprocess") ? "" : "hidden", onclick: async () => {
    const ids = [...body.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
    if (!ids.length) { toast(t("msg.none_selected"), true); return; }
    let ok = 0; const errors = [];
    for (const id of ids) { try { await api.post("/api/messages/" + encodeURIComponent(id) + "/reprocess"); ok++; } catch (e) { errors.push(id + ": " + e.message); } }
    toast(t("msg.reprocessed", { n: ok }));
    errors.forEach((e) => toast(e, true));
    route();
  } }, t("msg.reprocess_selected"));
  const table = el("table", { id: "messages" },
    el("thead", null, el("tr", null, el("th", null, selectAll), ["msg.received", "msg.pipeline", "msg.kind", "msg.state", "msg.attempts", "msg.control", "msg.error"].map((k) => el("th", null, t(k))))),
    body);
  let cursor = null;
  const more = el("button", { class: "secondary hidden", id: "more", onclick: () => load() }, t("msg.more"));
  const load = async () => {
    const page = await api.get("/api/messages" + qs({ ...params, limit: 50, cursor }));
    for (const m of page.messages) {
      body.appendChild(el("tr", { class: "click", "data-id": m.id, "data-state": m.state },
        el("td", { onclick: (e) => e.stopPropagation() }, el("input", { type: "checkbox", value: m.id, "aria-label": m.id })),
        el("td", { class: "mono", onclick: () => (location.hash = "#/messages/" + encodeURIComponent(m.id)) }, fmtTime(m.received_at)),
        el("td", { onclick: () => (location.hash = "#/messages/" + encodeURIComponent(m.id)) }, m.pipeline),
        el("td", null, (m.headers && m.headers["hl7-type"]) || m.kind),
        el("td", null, stateBadge(m.state)),
        el("td", null, String(m.attempts)),
        el("td", { class: "mono" }, (m.headers && m.headers["hl7-control-id"]) || ""),
        el("td", { class: "err" }, (m.last_error || "").slice(0, 160))));
    }
    body.querySelectorAll("tr").forEach((tr) => { tr.onclick = (e) => { if (e.target.tagName !== "INPUT") location.hash = "#/messages/" + encodeURIComponent(tr.dataset.id); }; });
    cursor = page.next_cursor;
    more.classList.toggle("hidden", !cursor);
    info.textContent = t("msg.shown", { n: body.children.length }) + (page.scanned !== undefined ? " · " + t("msg.scanned", { n: page.scanned }) : "");
  };
  render(el("h1", null, t("nav.messages")), form, el("div", { class: "actions" }, reprocessBtn), info, table, el("div", { class: "actions" }, more));
  await load();
}
async function pageMessage(id) {
  const m = await api.get("/api/messages/" + encodeURIComponent(id));
  const actions = el("div", { class: "actions" });
  if (can("reprocess")) {
    if (["failed", "dead", "done"].includes(m.state)) {
      const refused = m.intake && m.intake.verdict === "refused";
      actions.appendChild(el("button", { id: "reprocess", onclick: async () => {
        if (refused && !confirm(t("msg.refused_confirm"))) return;
        try { const r = await api.post("/api/messages/" + encodeURIComponent(id) + "/reprocess" + (refused ? "?include_refused=true" : "")); toast(t("msg.reprocess_done", { state: t("state." + r.state) })); setTimeout(route, 300); } catch (e) { toast(e.message, true); }
      } }, t("msg.reprocess")));
    }
    if (m.state === "failed") {
      actions.appendChild(el("button", { id: "move-dead", class: "danger", onclick: async () => {
        const reason = prompt(t("msg.dead_reason"));
        if (!reason) return;
        try { await api.post("/api/messages/" + encodeURIComponent(id) + "/dead", { reason }); toast(t("msg.dead_done")); route(); } catch (e) { toast(e.message, true); }
      } }, t("msg.dead")));
    }
  }
  if (can("tap")) actions.appendChild(el("a", { href: "#/tap?pipeline=" + encodeURIComponent(m.pipeline), id: "watch-steps" }, el("button", { type: "button", class: "secondary" }, t("msg.watch_steps"))));
  const kv = (pairs) => el("dl", { class: "kv" }, pairs.filter((p) => p[1] !== undefined && p[1] !== null && p[1] !== "").map(([k, v]) => [el("dt", null, t(k)), el("dd", { class: "mono" }, v instanceof Node ? v : String(v))]));
  const history = el("ol", { class: "timeline", id: "history" }, (m.history || []).map((h) =>
    el("li", { class: ["failed", "refused", "dead"].includes(h.event) ? "bad" : "", "data-event": h.event },
      el("div", { class: "when" }, fmtTime(h.at)),
      el("div", null, t("event." + h.event), h.step ? " · " + h.step : "", h.attempt ? " · #" + h.attempt : "", h.actor ? " · " + h.actor : ""),
      h.error ? el("div", { class: "err mono" }, h.error) : null,
      h.reason ? el("div", { class: "err mono" }, h.reason) : null)));
  let parsed = null;
  if (Array.isArray(m.parsed)) {
    parsed = el("table", { class: "fields", id: "parsed" }, el("thead", null, el("tr", null, el("th", null, t("msg.path")), el("th", null, t("msg.value")))),
      el("tbody", null, m.parsed.map((f) => el("tr", null, el("td", { class: "mono" }, f.path), el("td", { class: "mono" }, f.null ? '""' : f.value)))));
  } else if (m.parsed && m.parsed.error) {
    parsed = el("p", { class: "err" }, m.parsed.error);
  } else if (m.body_encoding === "utf-8") {
    try { parsed = el("pre", { id: "parsed" }, JSON.stringify(JSON.parse(m.body), null, 2)); } catch (_) { parsed = null; }
  }
  const raw = m.body_text || m.body || "";
  render(
    el("p", null, el("a", { href: "#/messages" }, "← " + t("nav.messages"))),
    el("h1", null, t("msg.message"), " ", el("span", { class: "mono" }, m.id), " ", stateBadge(m.state)),
    actions,
    el("div", { class: "grid" },
      el("div", { class: "panel" }, kv([["msg.pipeline", m.pipeline], ["dash.facility", m.facility], ["msg.kind", m.kind], ["msg.source", m.source], ["msg.received", fmtTime(m.received_at)], ["msg.attempts", m.attempts], ["msg.trace", m.trace_id], ["msg.charset", m.body_charset], ["msg.error", m.last_error]])),
      el("div", { class: "panel" }, el("h2", null, t("msg.history")), history)),
    el("div", { class: "panel" }, el("h2", null, t("msg.headers")), kv(Object.entries(m.headers || {}).map(([k, v]) => [k, v]))),
    parsed ? el("div", { class: "panel" }, el("h2", null, t("msg.parsed")), parsed) : null,
    el("div", { class: "panel" }, el("h2", null, t("msg.raw"), m.body_encoding === "base64" ? " (base64)" : ""), el("pre", { id: "raw" }, raw.replace(/\r/g, "\n"))),
    (m.effects || []).length ? el("div", { class: "panel" }, el("h2", null, t("msg.effects")), (m.effects || []).map((e) => el("div", null, el("div", { class: "muted" }, e.sink + " · " + fmtTime(e.recorded_at)), el("pre", null, e.body)))) : null);
}

// ---------- live: each step's outcome as messages pass (GET /api/tap) ----------
async function pageTap() {
  const params = hashParams();
  const pipelines = (await api.get("/api/pipelines")).pipelines.map((p) => p.name);
  const body = el("tbody");
  const status = el("p", { class: "muted", id: "tap-status" });
  const pick = el("select", { id: "tap-pipeline" }, pipelines.map((p) => el("option", { value: p, selected: params.pipeline === p }, p)));
  const start = async () => {
    HZ.aborts.forEach((a) => a.abort());
    HZ.aborts = [];
    body.replaceChildren();
    const ctl = new AbortController();
    HZ.aborts.push(ctl);
    status.textContent = t("tap.watching", { pipeline: pick.value });
    try {
      const r = await fetch("/api/tap" + qs({ pipeline: pick.value }), { credentials: "same-origin", signal: ctl.signal, headers: { Accept: "application/x-ndjson" } });
      if (!r.ok) { const e = await r.json().catch(() => ({})); status.textContent = e.error || "HTTP " + r.status; return; }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim(); buf = buf.slice(nl + 1);
          if (!line) continue;
          let p; try { p = JSON.parse(line); } catch (_) { continue; }
          if (!p.message_id) continue;
          const o = { result: p.result, detail: p.reason };
          body.prepend(el("tr", { "data-id": p.message_id, "data-point": p.point },
            el("td", { class: "mono" }, fmtTime(p.at)),
            el("td", { class: "mono" }, el("a", { href: "#/messages/" + encodeURIComponent(p.message_id) }, p.message_id)),
            el("td", { class: "mono" }, p.point),
            el("td", { class: o.result === "failed" ? "err" : o.result === "stop" ? "warn" : "ok" }, t("tap." + o.result), o.detail ? " · " + (typeof o.detail === "string" ? o.detail : JSON.stringify(o.detail)) : "")));
          while (body.children.length > 500) body.lastChild.remove();
        }
      }
      status.textContent = t("tap.ended");
    } catch (e) { if (e.name !== "AbortError") status.textContent = String(e.message || e); }
  };
  render(el("h1", null, t("nav.tap")), el("p", { class: "muted" }, t("tap.intro")),
    el("div", { class: "actions" }, pick, el("button", { id: "tap-start", onclick: start }, t("tap.start")),
      el("button", { class: "secondary", onclick: () => { HZ.aborts.forEach((a) => a.abort()); HZ.aborts = []; status.textContent = t("tap.ended"); } }, t("tap.halt"))),
    status,
    el("table", { id: "tap" }, el("thead", null, el("tr", null, ["audit.at", "msg.message", "tap.point", "tap.outcome"].map((k) => el("th", null, t(k))))), body));
  if (params.pipeline) start();
}

// ---------- consultations ----------
const OPEN_STATES = ["drafting", "pending-local-approval", "pending-match", "offered", "reviewing", "scheduled", "in-session", "paused", "report-pending"];
function when(v) { return typeof v === "number" ? v : typeof v === "string" ? Date.parse(v) : NaN; }
function openAttempts(c) { return (c.attempts || []).filter((a) => !a.outcome); }
function slaOf(c) {
  // The nearest deadline not yet met: an open offer's, or any other `deadline`/`due` the
  // consultation carries at its top level or in its SLA block.
  let best = null;
  const consider = (v, what) => { const at = when(v); if (!isNaN(at) && (!best || at < best.at)) best = { at, what }; };
  for (const a of openAttempts(c)) consider(a.deadline, "offer");
  for (const src of [c, c.sla || {}]) for (const [k, v] of Object.entries(src)) if (/deadline|_due$|^due/.test(k) && (typeof v === "string" || typeof v === "number")) consider(v, k);
  return best;
}
async function pageConsultations() {
  const root = el("div", { id: "board" });
  render(el("h1", null, t("nav.consultations")), root);
  const draw = async (bg) => {
    const get = bg ? api.poll : api.get;
    const page = await get("/api/consultations?limit=200");
    const open = page.consultations.filter((c) => OPEN_STATES.includes(c.state));
    const details = await Promise.all(open.slice(0, 60).map((c) => get("/api/consultations/" + encodeURIComponent(c.id)).catch(() => null)));
    if (HZ.route !== "consultations") return;
    const byState = {};
    open.forEach((c, i) => { (byState[c.state] = byState[c.state] || []).push([c, details[i]]); });
    const cols = OPEN_STATES.map((s) => el("div", { class: "column", "data-column": s },
      el("h3", null, t("cstate." + s) + " (" + (byState[s] || []).length + ")"),
      (byState[s] || []).map(([c, d]) => {
        const sla = d ? slaOf(d) : null;
        const left = sla ? sla.at - Date.now() : null;
        const offered = d ? openAttempts(d).flatMap((a) => (a.offerees || []).map((o) => o.expert + (o.facility ? "@" + o.facility : ""))) : [];
        const escal = d ? (d.attempts || []).some((a) => a.escalated_to) : false;
        return el("div", { class: "tile" + (left !== null && left < 0 ? " late" : left !== null && left < 3600e3 ? " soon" : ""), "data-id": c.id, onclick: () => (location.hash = "#/consultations/" + encodeURIComponent(c.id)) },
          el("div", { class: "mono" }, c.id),
          el("div", null, c.department + " · " + t("urgency." + c.urgency)),
          el("div", { class: "muted" }, c.requesting_facility + (c.expert_id ? " → " + c.expert_id : "")),
          sla ? el("div", { class: "sla", "data-sla": sla.at }, left < 0 ? t("sla.late", { d: fmtDuration(-left) }) : t("sla.left", { d: fmtDuration(left) })) : null,
          offered.length ? el("div", { class: "muted" }, t("c.offered") + ": " + offered.slice(0, 3).join(", ")) : null,
          escal ? el("div", { class: "warn" }, t("c.escalated")) : null);
      })));
    root.replaceChildren(...[open.length ? null : el("p", { class: "muted" }, t("c.none")), el("div", { class: "board" }, cols),
      el("p", { class: "muted" }, t("dash.updated", { time: fmtTime(Date.now()) }))].filter(Boolean));
  };
  await draw(false);
  every(10000, () => draw(true).catch(() => {}));
  // The SLA clocks count down between refreshes.
  every(1000, () => document.querySelectorAll(".sla[data-sla]").forEach((e) => {
    const left = Number(e.dataset.sla) - Date.now();
    e.textContent = left < 0 ? t("sla.late", { d: fmtDuration(-left) }) : t("sla.left", { d: fmtDuration(left) });
    const tile = e.closest(".tile");
    if (tile) { tile.classList.toggle("late", left < 0); tile.classList.toggle("soon", left >= 0 && left < 3600e3); }
  }));
}
function timelineOf(c) {
  const items = (c.timeline || []).map((e) => ({
    at: when(e.at), what: e.event || e.type || "",
    who: e.actor ? (typeof e.actor === "string" ? e.actor : e.actor.id || "") : "",
    role: e.actor && typeof e.actor === "object" ? e.actor.role || "" : "",
    text: [e.from && e.to && e.from !== e.to ? t("cstate." + e.from) + " → " + t("cstate." + e.to) : "", e.reason || ""].filter(Boolean).join(" · "),
  }));
  return items.sort((a, b) => (a.at || 0) - (b.at || 0));
}
async function pageConsultation(id) {
  const c = await api.get("/api/consultations/" + encodeURIComponent(id));
  const sla = slaOf(c);
  const items = timelineOf(c);
  render(
    el("p", null, el("a", { href: "#/consultations" }, "← " + t("nav.consultations"))),
    el("h1", null, t("c.consultation"), " ", el("span", { class: "mono" }, c.id || id), " ", el("span", { class: "pill", "data-state": c.state }, t("cstate." + c.state))),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("dl", { class: "kv" },
        [["c.department", c.request && c.request.department], ["c.urgency", c.request && t("urgency." + c.request.urgency)], ["c.reason", c.request && [c.request.icd10, c.request.reason].filter(Boolean).join(" ")], ["c.requesting", c.request && c.request.requesting_facility], ["c.expert", c.accepted_by ? (c.accepted_by.expert || JSON.stringify(c.accepted_by)) : openAttempts(c).flatMap((a) => (a.offerees || []).map((o) => o.expert)).join(", ")], ["c.version", c.version], ["c.created", fmtTime(c.created_at)], ["c.sla", sla ? fmtTime(sla.at) + " (" + fmtDuration(sla.at - Date.now()) + ")" : "–"], ["c.allowed", (c.allowed || []).join(", ")]]
          .map(([k, v]) => [el("dt", null, t(k)), el("dd", null, v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v))]))),
      el("div", { class: "panel" }, el("h2", null, t("c.timeline")),
        items.length ? el("ol", { class: "timeline", id: "consultation-timeline" }, items.map((e) => el("li", { "data-event": e.what },
          el("div", { class: "when" }, fmtTime(e.at)), el("div", null, t("cevent." + e.what) + (e.who ? " · " + e.who : "") + (e.role ? " (" + e.role + ")" : "")), e.text ? el("div", { class: "muted" }, e.text) : null)))
          : el("p", { class: "muted" }, t("c.no_timeline")))),
    el("details", { class: "panel" }, el("summary", null, t("c.raw")), el("pre", null, JSON.stringify(c, null, 2))));
}

// ---------- plugins ----------
function pluginTable(list, manage) {
  return el("table", { id: "plugins" },
    el("thead", null, el("tr", null, ["pl.name", "pl.version", "pl.world", "pl.sha", "pl.calls", "pl.errors", "pl.p50", "pl.p99", "pl.last_error", manage ? "pl.action" : null].filter(Boolean).map((k) => el("th", null, t(k))))),
    el("tbody", null, (list || []).map((p) => {
      const lat = p.latency_us || {};
      const last = p.last_error ? (p.last_error.message || JSON.stringify(p.last_error)) : "";
      return el("tr", { "data-plugin": p.name },
        el("td", null, p.name), el("td", null, p.version || ""), el("td", null, p.world || ""),
        el("td", { class: "mono", title: p.sha256 || "" }, (p.sha256 || "").slice(0, 12)),
        el("td", null, String(p.calls || 0)), el("td", { class: p.errors ? "err" : "" }, String(p.errors || 0)),
        el("td", null, lat.p50 !== undefined ? lat.p50 + " µs" : ""), el("td", null, lat.p99 !== undefined ? lat.p99 + " µs" : ""),
        el("td", { class: "err" }, last),
        manage ? el("td", null, el("button", { class: "secondary", "data-reload": p.name, onclick: async () => {
          try { await api.post("/api/plugins/" + encodeURIComponent(p.name) + "/reload"); toast(t("pl.reloaded", { name: p.name })); route(); } catch (e) { toast(e.message, true); }
        } }, t("pl.reload"))) : null);
    })));
}
async function pagePlugins() {
  const r = await api.get("/api/plugins");
  render(el("h1", null, t("nav.plugins")), (r.plugins || []).length ? pluginTable(r.plugins, can("plugins_manage")) : el("p", { class: "muted" }, t("pl.none")));
}

// ---------- media ----------
async function pageMedia() {
  const root = el("div", { id: "media" });
  render(el("h1", null, t("nav.media")), root);
  const page = await api.get("/api/consultations?limit=200");
  const live = page.consultations.filter((c) => ["in-session", "paused", "scheduled"].includes(c.state));
  const views = await Promise.all(live.map((c) => api.get("/api/consultations/" + encodeURIComponent(c.id) + "/call").catch(() => null)));
  const rows = live.map((c, i) => [c, views[i]]).filter(([, v]) => v);
  root.replaceChildren(rows.length ? el("table", { id: "calls" },
    el("thead", null, el("tr", null, ["c.consultation", "c.state", "media.present", "media.alerts", "media.recording"].map((k) => el("th", null, t(k))))),
    el("tbody", null, rows.map(([c, v]) => el("tr", { class: "click", "data-id": c.id, onclick: () => (location.hash = "#/media/" + encodeURIComponent(c.id)) },
      el("td", { class: "mono" }, c.id), el("td", null, t("cstate." + c.state)), el("td", null, String(v.present)),
      el("td", { class: (v.active_alerts || []).length ? "err" : "" }, String((v.active_alerts || []).length)),
      el("td", null, v.recording ? "●" : ""))))) : el("p", { class: "muted" }, t("media.none")));
}
async function pageCall(id) {
  const series = {};
  const root = el("div");
  render(el("p", null, el("a", { href: "#/media" }, "← " + t("nav.media"))), el("h1", null, t("media.call"), " ", el("span", { class: "mono" }, id)), root);
  const draw = async (bg) => {
    const v = await (bg ? api.poll : api.get)("/api/consultations/" + encodeURIComponent(id) + "/call");
    if (HZ.route !== "media") return;
    const now = Date.now();
    for (const q of v.quality || []) {
      const key = (q.role || q.session) + " " + q.kind + " " + q.direction + " (" + q.source + ")";
      const s = (series[key] = series[key] || { rtt: [], loss: [], jitter: [], kbps: [] });
      s.rtt.push([now, q.summary.rtt_ms.last]); s.loss.push([now, q.summary.loss_pct.last]); s.jitter.push([now, q.summary.jitter_ms.last]); s.kbps.push([now, q.summary.bitrate_kbps.last]);
      for (const a of Object.values(s)) if (a.length > 120) a.shift();
    }
    const charts = Object.entries(series).map(([key, s]) => el("div", { class: "panel" }, el("h2", null, key),
      legend([["received", "RTT ms"], ["failed", t("media.loss")], ["backlog", "jitter ms"]]),
      lineChart([{ name: "rtt", color: COLORS.received, points: s.rtt }, { name: "loss", color: COLORS.failed, points: s.loss }, { name: "jitter", color: COLORS.backlog, points: s.jitter }], { label: key }),
      legend([["done", "kbit/s"]]), lineChart([{ name: "kbps", color: COLORS.done, points: s.kbps }], { label: key + " kbit/s" })));
    root.replaceChildren(
      el("p", null, t("media.present") + ": " + v.present + " · " + t("c.state") + ": " + t("cstate." + v.state) + (v.recording ? " · ● " + t("media.recording") : "")),
      (v.active_alerts || []).length ? el("p", { class: "err" }, t("media.alerts") + ": " + JSON.stringify(v.active_alerts)) : null,
      el("table", null, el("thead", null, el("tr", null, ["media.participant", "media.role", "media.joined", "media.left", "media.reconnects"].map((k) => el("th", null, t(k))))),
        el("tbody", null, (v.participation || []).map((p) => el("tr", null, el("td", null, p.participant), el("td", null, p.role), el("td", null, fmtTime(p.joined_at)), el("td", null, p.left_at ? fmtTime(p.left_at) + " " + (p.left_reason || "") : "–"), el("td", null, String(p.reconnects)))))),
      charts.length ? el("div", { class: "grid" }, charts) : el("p", { class: "muted" }, t("media.no_quality")));
  };
  await draw(false);
  every(5000, () => draw(true).catch(() => {}));
}

// ---------- audit ----------
async function pageAudit() {
  const params = hashParams();
  const v = (id) => document.getElementById(id).value.trim();
  const ms = (id) => (v(id) ? String(new Date(v(id)).getTime()) : "");
  const form = el("form", { class: "filters", id: "audit-filters", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = "#/audit" + qs({ actor: v("a-actor"), action: v("a-action"), resource_id: v("a-resource"), outcome: v("a-outcome"), since: ms("a-since"), until: ms("a-until") });
  } },
    el("label", null, t("audit.actor"), el("input", { id: "a-actor", value: params.actor || "" })),
    el("label", null, t("audit.action"), el("input", { id: "a-action", value: params.action || "", placeholder: "message.read" })),
    el("label", null, t("audit.resource"), el("input", { id: "a-resource", value: params.resource_id || "" })),
    el("label", null, t("audit.outcome"), el("select", { id: "a-outcome" }, el("option", { value: "" }, t("msg.any")),
      ["success", "denied", "failed"].map((o) => el("option", { value: o, selected: params.outcome === o }, t("outcome." + o))))),
    el("label", null, t("audit.since"), el("input", { id: "a-since", type: "datetime-local", value: toLocalInput(Number(params.since)) })),
    el("label", null, t("audit.until"), el("input", { id: "a-until", type: "datetime-local", value: toLocalInput(Number(params.until)) })),
    el("button", { type: "submit" }, t("msg.search")),
    el("button", { type: "button", class: "secondary", id: "audit-verify", onclick: async () => {
      try { const r = await api.get("/api/audit/verify"); toast(t("audit.intact", { n: r.rows })); } catch (e) {
        if (e.status === 409 && e.body) toast(t("audit.broken") + ": " + (e.body.problems || []).join("; "), true); else toast(e.message, true);
      }
    } }, t("audit.verify")));
  const body = el("tbody");
  let before = null;
  const more = el("button", { class: "secondary hidden", id: "audit-more", onclick: () => load() }, t("msg.more"));
  const load = async () => {
    const r = await api.get("/api/audit" + qs({ actor: params.actor, action: params.action, resource_id: params.resource_id, outcome: params.outcome, since: params.since, until: params.until, order: "desc", before, limit: 200 }));
    const events = r.events || [];
    for (const e of events) body.appendChild(el("tr", { "data-seq": e.seq },
      el("td", { class: "mono" }, fmtTime(e.at)), el("td", null, e.actor), el("td", null, e.role), el("td", null, e.facility),
      el("td", { class: "mono" }, e.action), el("td", { class: "mono" }, [e.resource_type, e.resource_id].filter(Boolean).join(" ")),
      el("td", { class: e.outcome === "success" ? "ok" : "err" }, e.outcome), el("td", { class: "mono" }, e.source), el("td", { class: "mono" }, (e.detail || "").slice(0, 200))));
    before = events.length ? events[events.length - 1].seq : before;
    more.classList.toggle("hidden", events.length < 200);
  };
  render(el("h1", null, t("nav.audit")), form,
    el("table", { id: "audit" },
      el("thead", null, el("tr", null, ["audit.at", "audit.actor", "audit.role", "dash.facility", "audit.action", "audit.resource", "audit.outcome", "audit.source", "audit.detail"].map((k) => el("th", null, t(k))))),
      body),
    el("div", { class: "actions" }, more));
  await load();
}

// ---------- account: password and second factor ----------
async function pageEnrol(pending) {
  const s = HZ.session;
  const parts = [el("h1", null, t("acct.title"))];
  if (pending) parts.push(el("p", { class: "warn" }, t("acct.must_enrol")));
  if (s.local) {
    const out = el("div", { id: "totp-box" });
    if (!s.totp.enrolled) {
      parts.push(el("div", { class: "panel" }, el("h2", null, t("acct.totp")), el("p", { class: "muted" }, t("acct.totp.text")),
        el("button", { id: "totp-start", onclick: async () => {
          try {
            const r = await api.post("/ui/totp");
            out.replaceChildren(r.qr_svg ? el("p", null, t("acct.totp.scan")) : null,
              r.qr_svg ? el("img", { id: "totp-qr", alt: "QR", width: "200", height: "200", src: "data:image/svg+xml;base64," + btoa(r.qr_svg) }) : null,
              el("p", null, t("acct.totp.secret")), el("pre", { id: "totp-secret" }, r.secret), el("p", { class: "muted" }, t("acct.totp.uri")), el("pre", { id: "totp-uri" }, r.uri),
              el("form", { onsubmit: async (ev) => {
                ev.preventDefault();
                try { HZ.session = await api.post("/ui/totp/confirm", { code: document.getElementById("totp-code").value }); toast(t("acct.totp.done")); location.hash = "#/" + firstPage(); route(); } catch (e) { toast(e.message, true); }
              } }, el("label", null, t("login.totp"), " ", el("input", { id: "totp-code", inputmode: "numeric", maxlength: "6" })), " ", el("button", { type: "submit", id: "totp-confirm" }, t("acct.totp.confirm"))));
          } catch (e) { toast(e.message, true); }
        } }, t("acct.totp.start")), out));
    } else parts.push(el("div", { class: "panel" }, el("h2", null, t("acct.totp")), el("p", { class: "ok" }, t("acct.totp.enrolled"))));
    if (!pending) {
      parts.push(el("div", { class: "panel" }, el("h2", null, t("acct.password")),
        el("form", { id: "password-form", class: "filters", onsubmit: async (ev) => {
          ev.preventDefault();
          const cur = document.getElementById("pw-current").value, nw = document.getElementById("pw-new").value;
          if (nw !== document.getElementById("pw-again").value) { toast(t("acct.mismatch"), true); return; }
          try { HZ.session = await api.post("/ui/password", { current: cur, new: nw }); toast(t("acct.changed")); route(); } catch (e) { toast(e.message, true); }
        } },
          el("label", null, t("acct.current"), el("input", { id: "pw-current", type: "password", autocomplete: "current-password" })),
          el("label", null, t("acct.new"), el("input", { id: "pw-new", type: "password", autocomplete: "new-password" })),
          el("label", null, t("acct.again"), el("input", { id: "pw-again", type: "password", autocomplete: "new-password" })),
          el("button", { type: "submit" }, t("acct.save"))),
        el("p", { class: "muted" }, t("acct.rule"))));
    }
  } else parts.push(el("p", { class: "muted" }, t("acct.oidc")));
  parts.push(el("div", { class: "panel" }, el("dl", { class: "kv" },
    [["acct.user", s.user], ["acct.role", t("role." + s.role)], ["dash.facility", s.facility], ["acct.method", s.method], ["acct.expires", fmtTime(s.expires_at)]].map(([k, v]) => [el("dt", null, t(k)), el("dd", null, v)]))));
  render(...parts);
}

// ---------- start ----------
async function start() {
  setLang(HZ.lang);
  try {
    const s = HZ.session || (await call("GET", "/ui/session"));
    if (!s.authenticated) { HZ.loggedOut = s; HZ.session = null; showLogin(s.ended || ""); return; }
    HZ.session = s;
    route();
  } catch (e) { render(errorBox(e)); }
}
document.addEventListener("DOMContentLoaded", () => {
  HZ.lang = pickLang();
  document.getElementById("lang").addEventListener("change", (e) => { setLang(e.target.value); route(); });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await call("POST", "/ui/logout"); } catch (_) { /* the session ended anyway */ }
    HZ.session = null; HZ.loggedOut = null; location.hash = ""; start();
  });
  window.addEventListener("hashchange", route);
  start();
});
