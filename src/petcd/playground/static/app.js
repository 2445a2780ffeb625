// The playground page: renders the state the playground streams (server-sent events from
// /api/stream, ~5 updates a second) and sends the controls back as JSON POSTs.
"use strict";

const ACTIONS = ["kill", "restart", "pause", "resume", "isolate", "heal"];
const cards = new Map();  // member name -> {el, parts}
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

async function post(path, body = {}) {
  const resp = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify(body)});
  return resp.json();
}

function makeCard(m) {
  const card = el("article", {"class": "card", "data-member": m.name});
  const title = el("h3");
  const name = el("span", {}, m.name);
  const role = el("span", {"class": "badge"});
  const state = el("span", {"class": "badge"});
  title.append(name, role, state);
  const stats = el("dl", {"class": "stats"});
  const values = {};
  for (const [key, label] of [["term", "term"], ["commit", "commit"], ["applied", "applied"],
                              ["lastIndex", "last"], ["leader", "leader"], ["vote", "vote"],
                              ["revision", "rev"], ["pid", "pid"]]) {
    values[key] = el("dd");
    stats.append(el("dt", {}, label), values[key]);
  }
  const log = el("div", {"class": "log", "aria-label": "log entries"});
  const progress = el("p", {"class": "progress"});
  const controls = el("div", {"class": "controls"});
  const buttons = {};
  for (const action of ACTIONS) {
    const b = el("button", {"type": "button", "data-action": action}, action);
    b.addEventListener("click", async () => {
      b.disabled = true;
      const r = await post(`/api/members/${encodeURIComponent(m.name)}/${action}`);
      if (!r.ok) alert(r.error);
    });
    buttons[action] = b;
    controls.append(b);
  }
  const url = el("div", {"class": "url"});
  const x = el("div", {"class": "x", "aria-hidden": "true"});
  card.append(title, stats, log, progress, controls, url, x);
  $("#members").append(card);
  const option = el("option", {"value": m.name}, `via ${m.name}`);
  $("form[data-action=put] select").append(option);
  return {card, role, state, values, log, progress, buttons, url, logKey: ""};
}

// A word for an entry's chip, from the member's summary of it.
function label(summary) {
  const put = /^put key=(.*) \(\d+ bytes\)$/.exec(summary);
  if (put) return put[1];
  if (summary.startsWith("conf change")) return "conf";
  if (summary.startsWith("empty")) return "no-op";
  if (summary.startsWith("delete")) return "del";
  return summary.split(" ")[0];
}

function renderCard(m) {
  let c = cards.get(m.name);
  if (!c) { c = makeCard(m); cards.set(m.name, c); }
  const card = c.card;
  card.dataset.role = m.role;
  card.dataset.state = m.state;
  card.dataset.stale = String(m.stale);
  card.dataset.term = m.term ?? "";
  card.dataset.commit = m.commit ?? "";
  card.dataset.applied = m.applied ?? "";
  card.dataset.clientUrl = m.clientUrl;
  card.dataset.isolated = String(m.isolated);
  c.role.textContent = m.role === "none" ? "down" : m.role;
  c.role.className = `badge role-${m.role}`;
  c.state.textContent = m.state + (m.isolated && m.state !== "isolated" ? " + isolated" : "");
  c.state.className = `badge state-${m.state}`;
  for (const [key, dd] of Object.entries(c.values)) {
    dd.textContent = m[key] === null || m[key] === undefined || m[key] === "" ? "\u2013" : m[key];
  }
  const logKey = JSON.stringify([m.commit, m.entries]);
  if (logKey !== c.logKey) {
    c.logKey = logKey;
    c.log.replaceChildren(...m.entries.map((e) => {
      const committed = m.commit !== null && e.index <= m.commit;
      const span = el("span", {"class": "entry", "data-entry": "", "data-index": e.index,
                               "data-term": e.term, "data-type": e.type,
                               "data-committed": String(committed),
                               "title": `#${e.index} term ${e.term}: ${e.summary}` +
                                        (committed ? "" : " (not committed here yet)")},
                        "");
      span.append(el("b", {}, String(e.index)), el("small", {}, label(e.summary)));
      span.style.setProperty("--hue", String((e.term * 67) % 360));
      return span;
    }));
  }
  const prog = Object.entries(m.progress || {}).sort(([a], [b]) => a.localeCompare(b));
  c.progress.replaceChildren(...prog.filter(([n]) => n !== m.name).map(([n, p]) =>
    el("span", {"data-follower": n},
       `${n}: match ${p.match} next ${p.next} ${p.state}${p.learner ? " (learner)" : ""}` +
       (p.recentActive ? "" : " (not heard from)"))));
  c.progress.hidden = prog.length === 0 || m.state === "killed";
  const killed = m.state === "killed";
  c.buttons.kill.disabled = killed;
  c.buttons.restart.disabled = !killed;
  c.buttons.pause.disabled = killed || m.paused;
  c.buttons.resume.disabled = killed || !m.paused;
  c.buttons.isolate.disabled = m.isolated;
  c.buttons.heal.disabled = !m.isolated;
  c.url.textContent = m.clientUrl;
}

function renderKV(s) {
  const rows = s.kv.map((kv) => {
    const tr = el("tr", {"data-key": kv.key, "data-mod-revision": kv.modRevision});
    tr.append(el("td", {"title": kv.key}, kv.key), el("td", {"title": kv.value}, kv.value),
              el("td", {}, String(kv.modRevision)), el("td", {}, String(kv.version)));
    return tr;
  });
  $("#kv").replaceChildren(...rows);
  $("#kv-source").textContent = s.kvSource ? `(watching ${s.kvSource}, revision ${s.kvRevision})` : "";
}

function renderTimeline(s) {
  const list = $("#timeline");
  const newest = s.events.length ? s.events[s.events.length - 1].t + s.events.length : 0;
  if (list.dataset.newest === String(newest)) return;
  list.dataset.newest = String(newest);
  list.replaceChildren(...s.events.slice().reverse().map((e) => {
    const li = el("li", {"data-kind": e.kind});
    const t = new Date(e.t);
    const stamp = t.toLocaleTimeString([], {hour12: false}) + "." +
                  String(t.getMilliseconds()).padStart(3, "0");
    li.append(el("time", {}, stamp), el("span", {}, e.text));
    return li;
  }));
}

function render(s) {
  for (const m of s.members) renderCard(m);
  $("#leader").textContent = s.leader ? `leader: ${s.leader}` : "no leader";
  document.body.dataset.leader = s.leader;
  $("#term").textContent = `term ${s.term}`;
  renderKV(s);
  renderTimeline(s);
}

function connect() {
  const live = $("#live");
  const source = new EventSource("/api/stream");
  source.onmessage = (ev) => {
    live.dataset.live = "true";
    live.textContent = "live";
    render(JSON.parse(ev.data));
  };
  source.onerror = () => { live.dataset.live = "false"; live.textContent = "reconnecting"; };
}

let putSeq = 0;
$("form[data-action=put]").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const out = $("#put-result");
  const key = form.key.value;
  const seq = ++putSeq;
  out.dataset.ok = "";
  out.dataset.putKey = key;
  out.textContent = `putting ${key}...`;
  const r = await post("/api/put", {key, value: form.value.value, member: form.member.value});
  if (seq !== putSeq) return;  // a newer put owns the line (this one is in the timeline)
  out.dataset.ok = String(r.ok);
  out.textContent = r.ok ? `${key} written through ${r.member} at revision ${r.revision}`
                         : `${key} failed${r.member ? " through " + r.member : ""}: ${r.error}`;
});

$("#heal-all").addEventListener("click", () => post("/api/heal-all"));
connect();
