// The view page's browser side: reads the inlined JSON, lays out tables, draws figures with Plotly.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("data").textContent);
  const main = document.getElementById("main");
  const state = { tab: null, user: null, trace: 0, session: null, cmpA: null, cmpB: null, cmpSeed: null };

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "onclick") e.addEventListener("click", v);
      else if (k === "onchange") e.addEventListener("change", v);
      else e.setAttribute(k, v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      e.appendChild(typeof kid === "string" || typeof kid === "number" ? document.createTextNode(String(kid)) : kid);
    }
    return e;
  }
  const fmt = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d === undefined ? 3 : d));
  const title = (i) => (D.items[String(i)] ? D.items[String(i)].title : "item " + i);
  function table(headers, rows, cls) {
    return el("table", { class: cls || "" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((r) => el("tr", r.attrs || {}, r.cells.map((c) => el("td", {}, c))))));
  }
  function plot(div, fig) {
    Plotly.newPlot(div, fig.data, Object.assign({ autosize: true }, fig.layout || {}), { displaylogo: false, responsive: true });
  }

  // ------------------------------------------------------------------------------------ trace columns
  function rowsOf(cols, keep) {
    const out = [];
    const n = cols.user_id.length;
    for (let j = 0; j < n; j++) if (keep(cols, j)) out.push(j);
    return out;
  }
  function sessionsOf(trace, user) {
    const p = trace.pages;
    const byS = new Map();
    for (const j of rowsOf(p, (c, j) => c.user_id[j] === user)) {
      const s = p.session[j];
      if (!byS.has(s)) byS.set(s, { session: s, day: p.day[j], pages: 0, watched: 0, likes: 0, exit: "continued" });
      const e = byS.get(s);
      e.pages += 1; e.watched += p.watched[j]; e.likes += p.likes[j]; e.exit = p.exit[j]; e.satisfaction = p.satisfaction[j];
    }
    return [...byS.values()].sort((a, b) => a.session - b.session);
  }
  function watchesOf(trace, user) {
    const s = trace.shown;
    return rowsOf(s, (c, j) => c.user_id[j] === user && c.watched[j]).map((j) => [s.item_id[j], s.rating[j]]);
  }
  const traceName = (t) => t.policy + " · seed " + t.seed;

  // ------------------------------------------------------------------------------------------ Report
  function viewReport() {
    const box = el("section", { id: "report" });
    const gap = D.gap;
    if (gap) {
      box.appendChild(el("h2", {}, "Gap report"));
      box.appendChild(el("p", {}, `${gap.users} simulated users, rater ${gap.rater}, ${gap.seeds.length} seeds × ${gap.days} days.`));
      const rows = gap.results.map((r) => {
        const sim = r.simulated[gap.headline.simulated];
        return { attrs: { class: "policy-row" }, cells: [r.policy, fmt(r.offline[gap.headline.offline.split("@")[0]]),
          `${fmt(sim.mean, 2)} [${fmt(sim.low, 2)}, ${fmt(sim.high, 2)}]`] };
      });
      box.appendChild(table(["policy", "offline " + gap.headline.offline, "simulated " + gap.headline.simulated + " (95%)"], rows, "gap-table"));
    }
    for (const key of ["gap_scatter", "gap_bars", "alignment"]) {
      if (!D.figures[key]) continue;
      const div = el("div", { class: "figure", id: "fig-" + key });
      box.appendChild(div);
      requestAnimationFrame(() => plot(div, D.figures[key]));
    }
    if (D.fidelity) {
      box.appendChild(el("h2", {}, "Simulator fidelity"));
      const rows = Object.entries(D.fidelity.alignment).map(([m, a]) => ({ cells: [m + " : 1", fmt(a.roc_auc), fmt(a.accuracy)] }));
      box.appendChild(table(["random : real", "ROC-AUC", "accuracy"], rows, "fidelity-table"));
      const policies = Object.keys(D.fidelity.behaviour || {});
      if (policies.length) {
        const measures = Object.keys(D.fidelity.behaviour[policies[0]]);
        box.appendChild(el("h3", {}, "Behaviour, real test part against simulated (distances; lower is closer)"));
        box.appendChild(table(["measure", ...policies], measures.map((m) => ({ cells: [m, ...policies.map((p) => fmt(D.fidelity.behaviour[p][m]))] })), "behaviour-table"));
      }
    }
    if (!D.gap && !D.fidelity) box.appendChild(el("p", {}, "This run has no gap report or fidelity suite; see Users and Sessions."));
    return box;
  }

  // ------------------------------------------------------------------------------------------- Users
  function traitTable(u) {
    const rows = Object.entries(u.traits || {}).map(([k, t]) => ({ cells: [k, t.level, fmt(t.score, 2), fmt(t.value, 2)] }));
    return table(["trait", "level", "score", "value"], rows, "traits");
  }
  function histogram(ratings) {
    const h = [0, 0, 0, 0, 0];
    for (const r of ratings) if (r >= 1 && r <= 5) h[r - 1] += 1;
    const n = ratings.length || 1;
    return h.map((x) => x / n);
  }
  function userDetail(id) {
    const u = D.users[String(id)] || { history: [], test: [], traits: {}, demographics: {} };
    const box = el("div", { id: "user-detail" });
    const demo = u.demographics || {};
    box.appendChild(el("h2", {}, `User ${id}`));
    box.appendChild(el("p", { class: "demographics" },
      `gender ${demo.gender ?? "–"}, age ${demo.age ?? "–"}, occupation ${demo.occupation ?? "–"}; cluster ${u.cluster ?? "–"}`));
    box.appendChild(traitTable(u));
    if (u.persona) box.appendChild(el("pre", { class: "persona" }, u.persona));
    const sims = D.traces.map((t) => ({ name: traceName(t), watches: watchesOf(t, id) }));
    const fig = { data: [
      { type: "bar", name: `real train (${u.history.length})`, x: [1, 2, 3, 4, 5], y: histogram(u.history.map((x) => x[1])) },
      { type: "bar", name: `real test (${u.test.length})`, x: [1, 2, 3, 4, 5], y: histogram(u.test.map((x) => x[1])) },
      ...sims.filter((s) => s.watches.length).map((s) => ({ type: "bar", name: `${s.name} (${s.watches.length})`, x: [1, 2, 3, 4, 5], y: histogram(s.watches.map((x) => x[1])) })),
    ], layout: { barmode: "group", title: "Rating histograms (share of ratings)", xaxis: { title: "rating" }, height: 320, margin: { t: 50 } } };
    const div = el("div", { class: "figure", id: "user-hist" });
    box.appendChild(div);
    requestAnimationFrame(() => plot(div, fig));
    const cols = el("div", { class: "columns" });
    const list = (h, pairs, cls) => el("div", { class: "column " + cls }, el("h3", {}, `${h} (${pairs.length})`),
      table(["movie", "rating"], pairs.map(([i, r]) => ({ cells: [title(i), r] })), "movies"));
    cols.appendChild(list("real history (train)", u.history, "real-history"));
    cols.appendChild(list("real next movies (test)", u.test, "real-test"));
    for (const s of sims) cols.appendChild(list("simulated · " + s.name, s.watches, "sim-watches"));
    box.appendChild(cols);
    return box;
  }
  function viewUsers() {
    const ids = Object.keys(D.users).map(Number).sort((a, b) => a - b);
    const traced = [...new Set(D.traces.flatMap((t) => t.users))].sort((a, b) => a - b);
    const all = ids.length ? ids : traced;
    const box = el("section", { id: "users", class: "split" });
    const list = el("ul", { class: "user-list" }, all.map((id) => el("li", {
      class: "user-item" + (id === state.user ? " active" : ""), "data-user": id,
      onclick: () => { state.user = id; show("users"); } }, `user ${id}` + (D.users[String(id)] && D.users[String(id)].cluster !== null && D.users[String(id)].cluster !== undefined ? ` · cluster ${D.users[String(id)].cluster}` : ""))));
    box.appendChild(list);
    if (!all.length) box.appendChild(el("p", {}, "No traced users: run the benchmark with --trace-users N, or simulate with --trace DIR."));
    else box.appendChild(state.user === null ? el("p", {}, "Pick a user.") : userDetail(state.user));
    return box;
  }

  // ---------------------------------------------------------------------------------------- Sessions
  function traceSelect(value, onchange, id) {
    return el("select", { id, onchange }, D.traces.map((t, k) => {
      const o = el("option", { value: k }, traceName(t));
      if (k === value) o.selected = true;
      return o;
    }));
  }
  function replay(trace, user, session) {
    const s = trace.shown, p = trace.pages;
    const box = el("div", { class: "replay", "data-session": session });
    const pages = rowsOf(p, (c, j) => c.user_id[j] === user && c.session[j] === session);
    for (const pj of pages) {
      const page = p.page[pj];
      const items = rowsOf(s, (c, j) => c.user_id[j] === user && c.session[j] === session && c.page[j] === page)
        .sort((a, b) => s.position[a] - s.position[b]);
      const block = el("div", { class: "page", "data-page": page });
      block.appendChild(el("h4", {}, `page ${page} · day ${p.day[pj]} · ${p.watched[pj]} watched, ${p.likes[pj]} liked · satisfaction ${fmt(p.satisfaction[pj], 2)} · ${p.exit[pj]}`));
      block.appendChild(table(["#", "movie", "P(watch)", "E[rating]", "watched", "rating"], items.map((j) => ({
        attrs: { class: s.watched[j] ? "watched" : (s.seen[j] ? "seen" : "") },
        cells: [s.position[j] + 1, title(s.item_id[j]), s.seen[j] ? "seen" : fmt(s.p_watch[j], 3), s.seen[j] ? "–" : fmt(s.expected[j], 2), s.watched[j] ? "yes" : "", s.rating[j] || ""] })), "slate"));
      const div = el("div", { class: "figure dist" });
      block.appendChild(div);
      const z = items.map((j) => s.dist[j]);
      const fig = { data: [{ type: "heatmap", z, x: ["1", "2", "3", "4", "5"], y: items.map((j) => (s.position[j] + 1) + ". " + title(s.item_id[j]).slice(0, 28)), colorscale: "Blues", reversescale: true, zmin: 0, zmax: 1 }],
        layout: { title: "rater's rating distribution per shown movie", height: 90 + 22 * items.length, margin: { l: 230, t: 40, b: 30 }, yaxis: { autorange: "reversed" } } };
      requestAnimationFrame(() => plot(div, fig));
      box.appendChild(block);
    }
    const last = pages.length ? p.exit[pages[pages.length - 1]] : "–";
    box.appendChild(el("p", { class: "exit" }, `session ended: ${last}`));
    return box;
  }
  function viewSessions() {
    const box = el("section", { id: "sessions" });
    if (!D.traces.length) { box.appendChild(el("p", {}, "No traces in this run.")); return box; }
    const trace = D.traces[state.trace];
    const users = trace.users;
    const count = new Map(users.map((u) => [u, 0]));
    trace.pages.user_id.forEach((u, j) => { if (trace.pages.page[j] === 1) count.set(u, (count.get(u) || 0) + 1); });
    if (state.user === null || !users.includes(state.user)) state.user = users.find((u) => count.get(u) > 0) ?? users[0];
    const bar = el("div", { class: "controls" },
      "trace ", traceSelect(state.trace, (e) => { state.trace = Number(e.target.value); state.session = null; show("sessions"); }, "trace-select"),
      " user ", el("select", { id: "session-user", onchange: (e) => { state.user = Number(e.target.value); state.session = null; show("sessions"); } },
        users.map((u) => { const o = el("option", { value: u }, `${u} (${count.get(u)} sessions)`); if (u === state.user) o.selected = true; return o; })));
    box.appendChild(bar);
    const sessions = sessionsOf(trace, state.user);
    box.appendChild(table(["session", "day", "pages", "watched", "liked", "ended"], sessions.map((x) => ({
      attrs: { class: "session-item" + (x.session === state.session ? " active" : ""), "data-session": x.session },
      cells: [x.session, x.day, x.pages, x.watched, x.likes, x.exit] })), "sessions"));
    box.querySelectorAll(".session-item").forEach((tr) => tr.addEventListener("click", () => { state.session = Number(tr.dataset.session); show("sessions"); }));
    if (!sessions.length) box.appendChild(el("p", {}, `User ${state.user} had no session in this simulation.`));
    else if (state.session !== null) box.appendChild(replay(trace, state.user, state.session));
    else box.appendChild(el("p", {}, "Pick a session to replay it page by page."));
    return box;
  }

  // ----------------------------------------------------------------------------------------- Compare
  function choice(id, values, current, label, onchange) {
    return el("select", { id, onchange }, values.map((v) => {
      const o = el("option", { value: v }, label ? label(v) : String(v));
      if (v === current) o.selected = true;
      return o;
    }));
  }
  function viewCompare() {
    const box = el("section", { id: "compare" });
    const policies = [...new Set(D.traces.map((t) => t.policy))];
    if (policies.length < 2) { box.appendChild(el("p", {}, "Comparing needs traces of two policies (benchmark --trace-users N).")); return box; }
    if (!policies.includes(state.cmpA)) state.cmpA = policies[0];
    if (!policies.includes(state.cmpB) || state.cmpB === state.cmpA) state.cmpB = policies.find((p) => p !== state.cmpA);
    const find = (p, s) => D.traces.find((t) => t.policy === p && t.seed === s);
    const seeds = [...new Set(D.traces.map((t) => t.seed))].filter((s) => find(state.cmpA, s) && find(state.cmpB, s)).sort((a, b) => a - b);
    if (!seeds.includes(state.cmpSeed)) state.cmpSeed = seeds[0];
    const A = find(state.cmpA, state.cmpSeed), B = find(state.cmpB, state.cmpSeed);
    if (!A || !B) { box.appendChild(el("p", {}, `No seed has traces of both ${state.cmpA} and ${state.cmpB}.`)); return box; }
    const users = A.users.filter((u) => B.users.includes(u));
    if (state.user === null || !users.includes(state.user)) state.user = users[0];
    box.appendChild(el("div", { class: "controls" },
      "left ", choice("cmp-a", policies, state.cmpA, null, (e) => { state.cmpA = e.target.value; show("compare"); }),
      " right ", choice("cmp-b", policies, state.cmpB, null, (e) => { state.cmpB = e.target.value; show("compare"); }),
      " seed ", choice("cmp-seed", seeds, state.cmpSeed, null, (e) => { state.cmpSeed = Number(e.target.value); show("compare"); }),
      " user ", choice("cmp-user", users, state.user, null, (e) => { state.user = Number(e.target.value); show("compare"); })));
    const cols = el("div", { class: "columns" });
    for (const t of [A, B]) {
      const col = el("div", { class: "column compare-column" }, el("h3", {}, traceName(t)));
      const ss = sessionsOf(t, state.user);
      const w = watchesOf(t, state.user);
      col.appendChild(el("p", {}, `${ss.length} sessions, ${ss.reduce((a, x) => a + x.pages, 0)} pages, ${w.length} watched, ${w.filter((x) => x[1] >= 4).length} rated 4 or 5`));
      col.appendChild(table(["session", "day", "pages", "watched", "ended"], ss.map((x) => ({ cells: [x.session, x.day, x.pages, x.watched, x.exit] })), "sessions"));
      col.appendChild(table(["watched movie", "rating"], w.map(([i, r]) => ({ cells: [title(i), r] })), "movies"));
      cols.appendChild(col);
    }
    box.appendChild(cols);
    return box;
  }

  // ------------------------------------------------------------------------------------------ frame
  const VIEWS = { report: ["Report", viewReport], users: ["Users", viewUsers], sessions: ["Sessions", viewSessions], compare: ["Compare", viewCompare] };
  function show(tab) {
    state.tab = tab;
    document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
    main.replaceChildren(VIEWS[tab][1]());
    for (const n of D.notes || []) main.appendChild(el("p", { class: "note" }, n));
  }
  const tabs = document.getElementById("tabs");
  for (const [key, [label]] of Object.entries(VIEWS)) tabs.appendChild(el("button", { "data-tab": key, onclick: () => show(key) }, label));
  document.getElementById("run").textContent = D.run;
  show(D.gap || D.fidelity ? "report" : "users");
  document.body.dataset.ready = "1";
  window.viewReadyMs = performance.now();
})();
