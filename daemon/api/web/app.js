// The live match page: the list of matches, and one match followed live over Server-Sent Events.
// The match view opens /matches/<id>/stream?last_event_id=0, so it receives every event from the
// start and folds them itself (line-ups from the start event, then substitutions and red cards).
// When the connection drops, EventSource reconnects by itself with Last-Event-ID and the server
// sends exactly what was missed.
"use strict";

const app = document.getElementById("app");
const conn = document.getElementById("conn");
let source = null;   // the EventSource of the match view
let listTimer = null;

const KINDS = ["start", "stop", "halftime_start", "halftime_stop", "extratime", "shot", "save", "goal",
  "corner", "goalkick", "offside", "foul", "penalty", "freekick", "card", "substitution", "throwin", "comment"];
const PERIODS = { not_started: "Not started", first: "First half", halftime: "Half-time", last: "Second half",
  first_extra: "Extra time, first half", halftime_extra: "Extra time, half-time", last_extra: "Extra time, second half",
  ended: "Full time" };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function setConn(text, live) {
  conn.textContent = text;
  conn.className = "conn" + (live ? " live" : "");
}

function route() {
  if (source) { source.close(); source = null; }
  clearInterval(listTimer);
  setConn("", false);
  const m = location.hash.match(/^#\/m\/(.+)$/);
  if (m) showMatch(decodeURIComponent(m[1])); else showList();
}

async function showList() {
  const render = async () => {
    let matches;
    try {
      matches = await (await fetch("/matches")).json();
    } catch (e) {
      setConn("offline, retrying…", false);
      return;
    }
    setConn("", false);
    const ul = el("ul", { class: "matches" });
    for (const m of matches) {
      const a = el("a", { href: "#/m/" + encodeURIComponent(m.id) },
        el("span", {}, `${m.home.toUpperCase()} ${m.home_score} – ${m.visit_score} ${m.visit.toUpperCase()}`),
        el("span", { class: "muted" }, m.state === "live" ? PERIODS[m.period] || m.period : "Full time"));
      ul.append(el("li", {}, a));
    }
    app.replaceChildren(el("h2", {}, "Matches"), matches.length ? ul : el("p", { class: "muted" }, "No match yet."));
  };
  await render();
  listTimer = setInterval(render, 5000);
}

function showMatch(id) {
  const s = { home: "", visit: "", home_score: 0, visit_score: 0, period: "not_started", seq: 0,
    home_players: [], visit_players: [], off: { }, fresh: new Set() };
  const score = el("span", { id: "score" }, "– : –");
  const home = el("span", { class: "home" }), visit = el("span", { class: "visit" });
  const period = el("div", { id: "period" });
  const lineups = el("div", { class: "lineups" });
  const feed = el("ol", { id: "feed" });
  app.replaceChildren(
    el("p", {}, el("a", { href: "#/" }, "← All matches")),
    el("section", { class: "scoreboard" }, el("div", { class: "teams" }, home, score, visit), period),
    el("h2", {}, "Line-ups"), lineups,
    el("h2", {}, "Events"), feed);

  const team = (code) => code === s.home ? "home" : "visit";
  const render = () => {
    home.textContent = s.home.toUpperCase();
    visit.textContent = s.visit.toUpperCase();
    score.textContent = `${s.home_score} – ${s.visit_score}`;
    period.textContent = PERIODS[s.period] || s.period;
    lineups.replaceChildren(...["home", "visit"].map((side) => {
      const code = s[side];
      const ol = el("ol", { id: "lineup-" + side });
      for (const p of s[side + "_players"]) {
        ol.append(el("li", { class: s.fresh.has(code + p.number) ? "new" : "" }, el("span", { class: "num" }, String(p.number)), p.name));
      }
      const off = s.off[code] || [];
      return el("div", {}, el("h3", {}, code.toUpperCase()), ol,
        off.length ? el("div", { class: "off" }, "Sent off: " + off.join(", ")) : "");
    }));
  };

  const describe = (e) => {
    // player_team: the player's own team when it differs from the event's (an own goal).
    const who = e.player ? `${e.player.name} (${(e.player_team || e.team || "").toUpperCase()})` : (e.team || "").toUpperCase();
    switch (e.kind) {
      case "start": return `Kick-off: ${e.home.toUpperCase()} v ${e.visit.toUpperCase()}`;
      case "stop": return "Full time";
      case "halftime_start": return "Half-time";
      case "halftime_stop": return "Second half under way";
      case "extratime": return "Extra time";
      case "goal": return e.player_team && e.player_team !== e.team
        ? `Goal! ${e.team.toUpperCase()}: own goal by ${who}` : `Goal! ${who}`;
      case "card": return `${e.card === "red" ? "Red" : "Yellow"} card: ${who}`;
      case "substitution": return `Substitution ${e.team.toUpperCase()}: ${e.player_in.name} on for ${e.player_out.name}`;
      case "comment": return e.comment;
      default: return `${e.kind.replace("_", " ")}${who ? ": " + who : ""}`;
    }
  };

  // fold applies one event to the page's state, as the server's state machine does.
  const fold = (e) => {
    if (e.seq <= s.seq) return; // never twice
    s.seq = e.seq;
    switch (e.kind) {
      case "start":
        Object.assign(s, { home: e.home, visit: e.visit, home_players: e.home_players, visit_players: e.visit_players, period: "first" });
        break;
      case "stop": s.period = "ended"; break;
      case "halftime_start": s.period = s.period === "first" ? "halftime" : "halftime_extra"; break;
      case "halftime_stop": s.period = s.period === "halftime" ? "last" : "last_extra"; break;
      case "extratime": s.period = "first_extra"; break;
      case "goal": s[team(e.team) + "_score"]++; break;
      case "card":
        if (e.card === "red") {
          const key = team(e.team) + "_players";
          s[key] = s[key].filter((p) => p.number !== e.player.number);
          (s.off[e.team] = s.off[e.team] || []).push(e.player.name);
        }
        break;
      case "substitution": {
        const key = team(e.team) + "_players";
        s[key] = s[key].map((p) => p.number === e.player_out.number ? e.player_in : p);
        s.fresh.add(e.team + e.player_in.number);
        break;
      }
    }
    const t = new Date(e.at).toISOString().slice(11, 19);
    feed.prepend(el("li", { class: e.kind, "data-seq": String(e.seq) }, el("time", {}, t), describe(e)));
    render();
  };

  source = new EventSource(`/matches/${encodeURIComponent(id)}/stream?last_event_id=0`);
  source.onopen = () => setConn("● live", true);
  source.onerror = () => {
    if (s.period === "ended") { source.close(); setConn("full time", false); }
    else setConn("reconnecting…", false);
  };
  source.addEventListener("shutdown", () => setConn("server restarting…", false));
  source.addEventListener("status", (m) => { // only when not resuming: adopt the server's state
    const st = JSON.parse(m.data);
    Object.assign(s, st);
    render();
  });
  for (const k of KINDS) {
    source.addEventListener(k, (m) => {
      const e = JSON.parse(m.data);
      fold(e);
      if (e.kind === "stop") { source.close(); setConn("full time", false); }
    });
  }
  fetch(`/matches/${encodeURIComponent(id)}`).then((r) => { if (r.status === 404) app.replaceChildren(el("p", {}, `No match ${id}.`), el("a", { href: "#/" }, "← All matches")); });
}

window.addEventListener("hashchange", route);
route();
