/*
 * Telex Console page. Plain ES2020, no library, no build step; served by telexd under a strict CSP (no inline
 * script or style), so every element is built with createElement/textContent/setAttribute: event data is
 * untrusted and never reaches innerHTML, an href or a src.
 *
 * Selectors (contract with Scripts/console_browser.py, see design 15 "Selectors"):
 *   main#app; a[data-nav="overview"], a[data-nav="consumers"]; #whoami; button#logout; #error (hidden when empty)
 *   document.body.dataset.ready = overview | topic | article | consumers | login (cleared while loading)
 *   Login:     form#login, input#login-token (password), button#login-submit, #login-error
 *   Overview:  #broker-version, #broker-uptime, #broker-fsync, #broker-disk, #broker-name; input#topic-filter;
 *              table#topics tr.topic[data-topic] with .topic-name (a → #/topics/<topic>), .topic-start,
 *              .topic-end, .topic-bytes, .topic-rate, .topic-spark > svg.sparkline
 *   Topic:     section#topic-page[data-topic]; table#events tr.event[data-offset] with .event-offset,
 *              .event-type, .event-headline, .event-uri (a → article page), .event-time; live rows also .live;
 *              #tail-status (live | connecting | closed | error text); form#uri-search, input#uri-input
 *              (results in table#events, with a link to the article page). Rows are newest first.
 *   Article:   section#article-page[data-uri]; ol#versions li.version[data-topic][data-offset] (click selects);
 *              #article-view with .article-headline, .article-byline, .article-section,
 *              .article-version-created, .article-body; select#diff-from, select#diff-to (values topic:offset);
 *              table#diff tr.diff-row[data-field] (.changed when different) with .diff-left, .diff-right;
 *              changed words in del (left) and ins (right)
 *   Consumers: table#consumers tr.consumer[data-consumer] with .consumer-name, .consumer-lag, .consumer-active;
 *              tr.consumer-topic[data-consumer][data-topic] with .committed, .end, .lag; svg.lag-chart[data-consumer];
 *              admins: button.reset[data-consumer] → dialog#confirm with select#reset-to (beginning | end),
 *              #confirm-text, button#confirm-yes, button#confirm-no; result in #reset-result
 *
 * Texts: offsets, lags and counts in contract cells are plain digits; .topic-rate reads "1.00 ev/s"; #error holds the
 * server's message then its code. Each consumer is one tbody (its tr.consumer, then its tr.consumer-topic rows).
 *
 * Extra hooks (not part of the contract): button#older, #newer-hidden, #topic-summary, #search-summary, #version-count,
 * #diff-summary.
 */
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const PAGE_SIZE = 50;
  const MAX_EVENT_ROWS = 500;
  const FILTER_DEBOUNCE_MS = 300;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    session: null,        // SessionJSON once known
    cleanup: [],          // functions that stop the current page's timers and streams
    generation: 0,        // bumped on every route change; stale async results compare against it
    topicFilter: "",
  };

  // ---------------------------------------------------------------- DOM helpers (text only, never HTML)

  /** An element with attributes (strings) and children (nodes or strings, which become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.setAttribute("class", value);
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function $(selector, root = document) { return root.querySelector(selector); }

  const app = () => document.getElementById("app");

  function setReady(name) {
    if (name) document.body.dataset.ready = name;
    else delete document.body.dataset.ready;
  }

  // ---------------------------------------------------------------- formatting

  const numberFormat = new Intl.NumberFormat("en-US");
  /** Counts with separators where they are only read; offsets and lags stay plain digits (copied into commands). */
  function formatCount(n) { return numberFormat.format(n); }

  function formatBytes(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    if (unit === 0) return `${bytes} B`;
    return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ${units[unit]}`;
  }

  function formatDuration(ms) {
    let seconds = Math.max(0, Math.floor(ms / 1000));
    const days = Math.floor(seconds / 86400); seconds -= days * 86400;
    const hours = Math.floor(seconds / 3600); seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60); seconds -= minutes * 60;
    if (days > 0) return `${days} d ${hours} h ${minutes} min`;
    if (hours > 0) return `${hours} h ${minutes} min`;
    if (minutes > 0) return `${minutes} min ${seconds} s`;
    return `${seconds} s`;
  }

  function formatRate(rate) {
    if (!Number.isFinite(rate)) return "–";
    if (rate === 0) return "0";
    if (rate < 10) return rate.toFixed(2);
    if (rate < 100) return rate.toFixed(1);
    return formatCount(Math.round(rate));
  }

  /** ISO 8601 of a time in ms, or null where Date cannot hold it (|ms| > 8.64e15 makes toISOString throw). */
  function isoTime(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return null;
    return new Date(ms).toISOString();
  }

  /** Broker times (ms since the epoch) in UTC, as newsrooms log them; out of Date's range: the raw number. */
  function formatTime(ms) {
    if (!ms) return "–";
    const iso = isoTime(ms);
    if (iso === null) return String(ms);
    return iso.replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function timeCell(ms, attrs) {
    const cell = el("td", attrs);
    const iso = ms ? isoTime(ms) : null;
    if (iso !== null) {
      cell.append(el("time", { datetime: iso, title: new Date(ms).toString() }, formatTime(ms)));
    } else {
      cell.textContent = ms ? String(ms) : "–";
    }
    return cell;
  }

  // ---------------------------------------------------------------- routes (hash only, no reload)

  const enc = encodeURIComponent;
  function dec(text) {
    try { return decodeURIComponent(text); } catch { return text; }
  }
  const topicHref = (topic) => `#/topics/${enc(topic)}`;
  const articleHref = (uri) => `#/articles/${enc(uri)}`;

  function parseRoute() {
    let hash = location.hash.replace(/^#/, "");
    if (!hash.startsWith("/")) hash = "/" + hash;
    const q = hash.indexOf("?");
    const path = q >= 0 ? hash.slice(0, q) : hash;
    const query = new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
    const parts = path.split("/").filter((p) => p.length > 0);
    if (parts.length === 0) return { page: "overview", query };
    if (parts[0] === "consumers" && parts.length === 1) return { page: "consumers", query };
    const rest = dec(parts.slice(1).join("/"));
    if (parts[0] === "topics" && parts.length >= 2) return { page: "topic", topic: rest, query };
    if (parts[0] === "articles" && parts.length >= 2) return { page: "article", uri: rest, query };
    return { page: "notfound", query };
  }

  function stopPage() {
    for (const stop of state.cleanup.splice(0)) {
      try { stop(); } catch { /* already stopped */ }
    }
    state.generation += 1;
  }

  /** A page's async step still belongs to the page shown (the route did not change meanwhile). */
  function current(generation) { return generation === state.generation; }

  async function route() {
    stopPage();
    const generation = state.generation;
    setReady(null);
    showError(null);
    const r = parseRoute();
    markNav(r.page);
    try {
      if (!state.session) {
        const session = await loadSession();
        if (!current(generation)) return;
        if (!session) return; // login form shown
      }
      switch (r.page) {
        case "overview": await overviewPage(generation); break;
        case "topic": await topicPage(generation, r.topic, r.query.get("uri") || ""); break;
        case "article": await articlePage(generation, r.uri); break;
        case "consumers": await consumersPage(generation); break;
        default: notFoundPage();
      }
    } catch (error) {
      if (!current(generation) || error instanceof LoginNeeded) return;
      handleError(error);
      // Do not leave the previous page standing under the new address.
      failedPage();
    }
  }

  function markNav(page) {
    for (const link of document.querySelectorAll("a[data-nav]")) {
      const active = link.dataset.nav === page || (page === "topic" && link.dataset.nav === "overview");
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  class LoginNeeded extends Error {}

  async function api(path, options = {}) {
    const init = {
      method: options.method || "GET", credentials: "same-origin", headers: { Accept: "application/json" },
    };
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    if (init.method === "POST" && path !== "/api/login" && state.session) {
      init.headers["X-Telex-CSRF"] = state.session.csrf;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "NETWORK", `The console did not answer (${error.message}).`);
    }
    if (response.status === 401 && path !== "/api/login" && !options.allow401) {
      state.session = null;
      showLogin();
      throw new LoginNeeded("login needed");
    }
    if (response.status === 204) return null;
    let body = null;
    const text = await response.text();
    if (text.length > 0) {
      try { body = JSON.parse(text); } catch { body = null; }
    }
    if (!response.ok) {
      const err = body && body.error ? body.error : null;
      if (response.status === 403 && err && err.code === "CSRF" && !options.csrfRetried && path !== "/api/login") {
        // The session's csrf changed (a new login in another tab): take the current one and try once more.
        setSession(await api("/api/session"));
        return api(path, { ...options, csrfRetried: true });
      }
      throw new ApiError(response.status, err ? String(err.code) : `HTTP_${response.status}`,
        err ? String(err.message) : `${response.status} ${response.statusText}`.trim());
    }
    return body;
  }

  async function loadSession() {
    try {
      const session = await api("/api/session", { allow401: true });
      setSession(session);
      return session;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        showLogin();
        return null;
      }
      throw error;
    }
  }

  function setSession(session) {
    state.session = session;
    const who = document.getElementById("whoami");
    const logout = document.getElementById("logout");
    if (session) {
      who.textContent = session.principal;
      who.title = session.admin ? "admin" : "read-only";
      who.classList.toggle("is-admin", !!session.admin);
      logout.hidden = !session.authRequired;
    } else {
      who.textContent = "";
      who.removeAttribute("title");
      logout.hidden = true;
    }
  }

  // ---------------------------------------------------------------- errors

  function showError(error) {
    const banner = document.getElementById("error");
    clear(banner);
    if (!error) { banner.hidden = true; return; }
    const message = error instanceof ApiError ? error.message : String(error.message || error);
    banner.append(el("span", { class: "error-message" }, message));
    if (error instanceof ApiError && error.code) banner.append(" ", el("code", { class: "error-code" }, error.code));
    // The × comes from CSS so that the banner's text is the message alone.
    const dismiss = el("button", { type: "button", class: "error-dismiss", "aria-label": "Dismiss", title: "Dismiss" });
    dismiss.addEventListener("click", () => showError(null));
    banner.append(dismiss);
    banner.hidden = false;
  }

  function handleError(error) {
    if (error instanceof LoginNeeded) return;
    showError(error);
  }

  // ---------------------------------------------------------------- login

  function showLogin() {
    // Two requests answered 401 at once: the second must not rebuild the form under a half-typed token.
    if (document.getElementById("login")) { setReady("login"); return; }
    stopPage();
    setReady(null);
    setSession(null);
    const input = el("input", {
      id: "login-token", type: "password", name: "token", autocomplete: "current-password", required: true,
      placeholder: "NAME.SECRET", spellcheck: "false",
    });
    const problem = el("p", { id: "login-error", class: "form-error", role: "alert" });
    const form = el("form", { id: "login", class: "login card", novalidate: true },
      el("h1", null, "Sign in"),
      el("p", { class: "muted" }, "Use a Telex token (the same one clients send)."),
      el("label", { for: "login-token" }, "Token"),
      input,
      problem,
      el("button", { id: "login-submit", type: "submit", class: "button-primary" }, "Sign in"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      problem.textContent = "";
      const token = input.value.trim();
      if (!token) { problem.textContent = "Enter a token."; return; }
      const submit = $("#login-submit", form);
      submit.disabled = true;
      try {
        const session = await api("/api/login", { method: "POST", body: { token } });
        input.value = "";
        setSession(session);
        showError(null);
        route();
      } catch (error) {
        problem.textContent = error.message;
      } finally {
        submit.disabled = false;
      }
    });
    const root = app();
    clear(root);
    root.append(el("div", { class: "login-wrap" }, form));
    input.focus();
    setReady("login");
  }

  async function logout() {
    try {
      // Every POST carries a JSON body and its content type (the server refuses other POSTs).
      await api("/api/logout", { method: "POST", body: {} });
    } catch (error) {
      if (!(error instanceof LoginNeeded)) { showError(error); return; }
    }
    state.session = null;
    showLogin();
  }

  // ---------------------------------------------------------------- SVG charts

  /** A small line of events/s samples (oldest first). */
  function sparkline(values, label) {
    const width = 120;
    const height = 28;
    const pad = 2;
    const chart = svg("svg", {
      class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
    });
    chart.append(svg("title", null, label));
    const points = (values || []).filter((v) => Number.isFinite(v));
    const baseline = height - pad;
    chart.append(svg("line", { class: "spark-base", x1: 0, y1: baseline, x2: width, y2: baseline }));
    if (points.length === 0) return chart;
    const max = Math.max(...points, 0);
    const x = (i) => (points.length === 1 ? width : pad + (i * (width - 2 * pad)) / (points.length - 1));
    const y = (v) => (max > 0 ? baseline - (v / max) * (height - 2 * pad) : baseline);
    const coords = points.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    if (points.length === 1) coords.unshift(`${pad},${y(points[0]).toFixed(1)}`);
    const firstX = coords[0].split(",")[0];
    const lastX = coords[coords.length - 1].split(",")[0];
    const area = `M${firstX},${baseline} L${coords.join(" L")} L${lastX},${baseline} Z`;
    chart.append(svg("path", { class: "spark-area", d: area }));
    chart.append(svg("polyline", { class: "spark-line", points: coords.join(" ") }));
    const last = coords[coords.length - 1].split(",");
    chart.append(svg("circle", { class: "spark-dot", cx: last[0], cy: last[1], r: 2 }));
    return chart;
  }

  /** Total lag over the last hour: x from now−60 min to now, y from 0 to the largest lag, with axis labels. */
  function lagChart(consumer, samples) {
    const width = 360;
    const height = 120;
    const left = 48;
    const right = 8;
    const top = 10;
    const bottom = 22;
    const chart = svg("svg", {
      class: "lag-chart", "data-consumer": consumer, width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `Lag of ${consumer} over the last hour`,
    });
    chart.append(svg("title", null, `Total lag of ${consumer} over the last hour`));
    const valid = (samples || []).filter((s) => s && Number.isFinite(s.time) && Number.isFinite(s.lag));
    const now = valid.length > 0 ? Math.max(Date.now(), valid[valid.length - 1].time) : Date.now();
    const start = now - 3600 * 1000;
    const max = niceCeiling(Math.max(0, ...valid.map((s) => s.lag)));
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const x = (t) => left + ((Math.max(start, t) - start) / (now - start)) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;
    // Grid and axes.
    for (const fraction of [0, 0.5, 1]) {
      const gy = top + plotH - fraction * plotH;
      const kind = fraction === 0 ? "axis" : "grid";
      chart.append(svg("line", { class: kind, x1: left, y1: gy, x2: width - right, y2: gy }));
      chart.append(svg("text", { class: "axis-label", x: left - 6, y: gy + 4, "text-anchor": "end" },
        shortCount(Math.round(max * fraction))));
    }
    chart.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotH }));
    for (const minutes of [60, 45, 30, 15, 0]) {
      const gx = left + ((60 - minutes) / 60) * plotW;
      chart.append(svg("line", { class: "tick", x1: gx, y1: top + plotH, x2: gx, y2: top + plotH + 4 }));
      const anchor = minutes === 60 ? "start" : minutes === 0 ? "end" : "middle";
      chart.append(svg("text", { class: "axis-label", x: gx, y: height - 6, "text-anchor": anchor },
        minutes === 0 ? "now" : `−${minutes} min`));
    }
    if (valid.length === 0) {
      const middle = { x: left + plotW / 2, y: top + plotH / 2 };
      chart.append(svg("text", { class: "chart-empty", x: middle.x, y: middle.y, "text-anchor": "middle" },
        "no samples yet"));
      return chart;
    }
    const inWindow = valid.filter((s) => s.time >= start);
    const shown = inWindow.length > 0 ? inWindow : valid.slice(-1);
    const coords = shown.map((s) => `${x(s.time).toFixed(1)},${y(s.lag).toFixed(1)}`);
    if (coords.length === 1) coords.push(`${(width - right).toFixed(1)},${y(shown[0].lag).toFixed(1)}`);
    const firstX = coords[0].split(",")[0];
    const lastX = coords[coords.length - 1].split(",")[0];
    const baseline = (top + plotH).toFixed(1);
    const area = `M${firstX},${baseline} L${coords.join(" L")} L${lastX},${baseline} Z`;
    chart.append(svg("path", { class: "lag-area", d: area }));
    chart.append(svg("polyline", { class: "lag-line", points: coords.join(" ") }));
    return chart;
  }

  /** The axis top: a round number at or above `value` whose half is whole too (labels 0, half, top all differ). */
  function niceCeiling(value) {
    if (value <= 2) return 2;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 4, 6, 8, 10]) {
      if (step * power >= value) return step * power;
    }
    return 10 * power;
  }

  function shortCount(n) {
    if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)}G`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
    if (n >= 1e4) return `${(n / 1e3).toFixed(0)}k`;
    return formatCount(n);
  }

  /** Keeps a container's keyed children in the order of `items`, reusing existing ones (no flicker, and
   * elements a test or the user holds stay attached across refreshes). */
  function syncChildren(container, items, key, create, update, after = null) {
    const existing = new Map();
    for (const child of Array.from(container.children)) {
      if (child.dataset.key !== undefined) existing.set(child.dataset.key, child);
    }
    let previous = after;
    for (const item of items) {
      const k = key(item);
      let node = existing.get(k);
      if (node) existing.delete(k);
      else { node = create(item); node.dataset.key = k; }
      update(node, item);
      const expected = previous ? previous.nextSibling : container.firstChild;
      if (node !== expected) container.insertBefore(node, expected);
      previous = node;
    }
    for (const stale of existing.values()) stale.remove();
  }

  function every(ms, generation, task) {
    let running = false; // a stalled server must not pile up requests: skip ticks until the last one ends
    const timer = setInterval(() => {
      if (!current(generation) || document.hidden || running) return;
      running = true;
      task().catch((error) => { if (current(generation)) handleError(error); })
        .finally(() => { running = false; });
    }, ms);
    state.cleanup.push(() => clearInterval(timer));
  }

  // ---------------------------------------------------------------- overview

  /** A topic pattern (`*` one token, `>` the rest) rather than a substring to look for. */
  function isPattern(text) {
    if (!/[*>]/.test(text)) return false;
    const tokens = text.split(".");
    const last = tokens.length - 1;
    return tokens.every((t, i) => t.length > 0 && (t === "*" || (t === ">" && i === last) || !/[*>]/.test(t)));
  }

  async function overviewPage(generation) {
    const root = app();
    const filter = el("input", {
      id: "topic-filter", type: "search", placeholder: "Filter: text, or a pattern like news.*.italy or news.>",
      "aria-label": "Filter topics", autocomplete: "off", spellcheck: "false",
    });
    filter.value = state.topicFilter;
    const facts = el("dl", { class: "facts" },
      fact("Broker", "broker-name"), fact("Version", "broker-version"), fact("Uptime", "broker-uptime"),
      fact("Fsync", "broker-fsync"), fact("Disk use", "broker-disk"), fact("Topics", "broker-topics"),
      fact("Connections", "broker-connections"), fact("Address", "broker-address"));
    const tbody = el("tbody");
    const table = el("table", { id: "topics", class: "data" },
      el("thead", null, el("tr", null,
        el("th", { scope: "col" }, "Topic"), el("th", { scope: "col", class: "num" }, "Start"),
        el("th", { scope: "col", class: "num" }, "End"), el("th", { scope: "col", class: "num" }, "Events"),
        el("th", { scope: "col", class: "num" }, "Size"), el("th", { scope: "col", class: "num" }, "Events/s"),
        el("th", { scope: "col" }, "Last minute"), el("th", { scope: "col" }, "Last append"))),
      tbody);
    const empty = el("p", { class: "empty", hidden: true });
    const count = el("span", { id: "topic-count", class: "muted" });
    clear(root);
    root.append(
      el("section", { id: "overview-page", class: "page" },
        el("h1", null, "Overview"),
        facts,
        el("div", { class: "section-head" }, el("h2", null, "Topics"), count, filter),
        el("div", { class: "table-wrap" }, table),
        empty));

    let asked = 0; // a slow answer must not overwrite a newer one (filter typed while a refresh was out)
    async function refresh() {
      const ask = ++asked;
      const text = filter.value.trim();
      const pattern = isPattern(text) ? text : "";
      const [overview, topics] = await Promise.all([
        api("/api/overview"),
        api(pattern ? `/api/topics?pattern=${enc(pattern)}` : "/api/topics"),
      ]);
      if (!current(generation) || ask !== asked) return;
      renderOverview(overview);
      const needle = pattern ? "" : text.toLowerCase();
      const shown = topics.topics.filter((t) => !needle || t.topic.toLowerCase().includes(needle));
      syncChildren(tbody, shown, (t) => t.topic, createTopicRow, updateTopicRow);
      const all = topics.topics.length;
      count.textContent = shown.length === all ? `${all}` : `${shown.length} of ${all}`;
      empty.hidden = shown.length > 0;
      empty.textContent = text ? `No topic matches “${text}”.` : "No topics yet (or none you may read).";
    }

    let debounce = null;
    filter.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        state.topicFilter = filter.value.trim();
        refresh().then(() => { if (current(generation)) showError(null); })
          .catch((error) => { if (current(generation)) handleError(error); });
      }, FILTER_DEBOUNCE_MS);
    });
    state.cleanup.push(() => clearTimeout(debounce));

    await refresh();
    if (!current(generation)) return;
    setReady("overview");
    every(REFRESH_MS, generation, refresh);
  }

  function fact(label, id) {
    return el("div", { class: "fact" }, el("dt", null, label), el("dd", { id }, "–"));
  }

  function renderOverview(o) {
    const set = (id, text, title) => {
      const node = document.getElementById(id);
      if (!node) return;
      node.textContent = text;
      if (title) node.title = title; else node.removeAttribute("title");
    };
    set("broker-name", o.serverName);
    set("broker-version", o.version);
    set("broker-uptime", formatDuration(o.uptimeMilliseconds), `${formatCount(o.uptimeMilliseconds)} ms`);
    set("broker-fsync", o.fsyncPolicy);
    set("broker-disk", formatBytes(o.dataBytes), `${formatCount(o.dataBytes)} bytes`);
    set("broker-topics", formatCount(o.topicCount));
    set("broker-connections", formatCount(o.connectionCount));
    set("broker-address", `${o.address}${o.tls ? " (TLS)" : ""}`);
  }

  function createTopicRow(t) {
    const link = el("a", { href: topicHref(t.topic) }, t.topic);
    return el("tr", { class: "topic", "data-topic": t.topic },
      el("td", { class: "topic-name" }, link),
      el("td", { class: "topic-start num" }), el("td", { class: "topic-end num" }),
      el("td", { class: "topic-count num" }), el("td", { class: "topic-bytes num" }),
      el("td", { class: "topic-rate num" }), el("td", { class: "topic-spark" }), el("td", { class: "topic-last" }));
  }

  function updateTopicRow(row, t) {
    $(".topic-start", row).textContent = String(t.startOffset);
    $(".topic-end", row).textContent = String(t.endOffset);
    $(".topic-count", row).textContent = formatCount(Math.max(0, t.endOffset - t.startOffset));
    const bytes = $(".topic-bytes", row);
    bytes.textContent = formatBytes(t.bytes);
    bytes.title = `${formatCount(t.bytes)} bytes in ${t.segmentCount} segment${t.segmentCount === 1 ? "" : "s"}`;
    $(".topic-rate", row).textContent = `${formatRate(t.eventsPerSecond)} ev/s`;
    const spark = $(".topic-spark", row);
    clear(spark);
    spark.append(sparkline(t.rateHistory, `${t.topic}: events per second over the last minute`));
    const last = $(".topic-last", row);
    clear(last);
    const lastIso = t.lastAppendTime ? isoTime(t.lastAppendTime) : null;
    if (lastIso !== null) last.append(el("time", { datetime: lastIso }, formatTime(t.lastAppendTime)));
    else last.textContent = t.lastAppendTime ? String(t.lastAppendTime) : "–";
  }

  // ---------------------------------------------------------------- topic

  async function topicPage(generation, topic, uri) {
    const root = app();
    const tbody = el("tbody");
    const table = el("table", { id: "events", class: "data events" },
      el("thead", null, el("tr", null,
        el("th", { scope: "col", class: "num" }, "Offset"), el("th", { scope: "col" }, "Type"),
        el("th", { scope: "col" }, "Headline"), el("th", { scope: "col" }, "URI"),
        el("th", { scope: "col" }, "Broker time"))),
      tbody);
    const status = el("span", { id: "tail-status", class: "tail-status", "data-state": "connecting" }, "connecting");
    const uriInput = el("input", {
      id: "uri-input", type: "search", placeholder: "Article uri", "aria-label": "Article uri", autocomplete: "off",
      spellcheck: "false",
    });
    uriInput.value = uri;
    const search = el("form", { id: "uri-search", class: "inline-form", role: "search" },
      uriInput, el("button", { type: "submit" }, "Find article"));
    search.addEventListener("submit", (event) => {
      event.preventDefault();
      const wanted = uriInput.value.trim();
      const target = wanted ? `${topicHref(topic)}?uri=${enc(wanted)}` : topicHref(topic);
      if (location.hash === target) { route(); return; } // no hashchange for the same hash: search again anyway
      setReady(null); // at once: hashchange comes later, and the page stays a topic page
      location.hash = target;
    });
    const older = el("button", { id: "older", type: "button", hidden: true }, "Older events");
    const summary = el("p", { id: "topic-summary", class: "muted" });
    const searchSummary = el("div", { id: "search-summary", class: "search-summary", hidden: true });
    const empty = el("p", { class: "empty", hidden: true },
      uri ? "No event of this article in this topic." : "No events in this topic yet.");
    // Shown once paging back has pushed the newest rows out (the table keeps at most MAX_EVENT_ROWS).
    const newerHidden = el("p", { id: "newer-hidden", class: "newer-hidden", hidden: true });
    const newerText = el("span");
    const showNewest = el("button", { type: "button" }, "Back to the newest");
    showNewest.addEventListener("click", () => route());
    newerHidden.append(newerText, " ", showNewest);
    clear(root);
    root.append(el("section", { id: "topic-page", class: "page", "data-topic": topic },
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / topic"),
      el("div", { class: "page-head" }, el("h1", { class: "topic-title" }, topic),
        el("span", { class: "tail-wrap" }, "Tail: ", status)),
      el("div", { class: "toolbar" }, search, summary),
      searchSummary,
      newerHidden,
      el("div", { class: "table-wrap" }, table),
      empty,
      el("div", { class: "pager" }, older)));

    // Rows are newest first: live events go on top, older pages at the bottom.
    let oldest = null;    // smallest offset shown
    let newest = -1;      // largest offset shown
    let startOffset = 0;
    let hiddenNewer = 0;  // newer events not in the table since paging back dropped the newest rows
    const noteHidden = () => {
      newerHidden.hidden = hiddenNewer === 0;
      const are = hiddenNewer === 1 ? " is" : "s are";
      newerText.textContent =
        `${formatCount(hiddenNewer)} newer event${are} not shown (the table keeps at most ${MAX_EVENT_ROWS} rows).`;
    };

    const trim = () => {
      while (tbody.children.length > MAX_EVENT_ROWS) tbody.lastElementChild.remove();
      const last = tbody.lastElementChild;
      oldest = last ? Number(last.dataset.offset) : oldest;
    };
    const updateOlder = () => {
      older.hidden = !!uri || oldest === null || oldest <= startOffset;
    };

    const path = `/api/topics/${enc(topic)}/events`;
    const page = await api(uri ? `${path}?uri=${enc(uri)}` : `${path}?limit=${PAGE_SIZE}`);
    if (!current(generation)) return;
    startOffset = page.startOffset;
    const events = page.events.slice().sort((a, b) => b.offset - a.offset);
    for (const event of events) tbody.append(eventRow(event, false));
    if (events.length > 0) {
      newest = events[0].offset;
      oldest = events[events.length - 1].offset;
    }
    trim();
    empty.hidden = events.length > 0;
    // The topic's stored range; the live tail moves its end.
    let lastStored = page.endOffset - 1;
    const describeRange = () => {
      summary.textContent = lastStored >= startOffset
        ? `Offsets ${String(startOffset)} to ${String(lastStored)} kept · newest first`
        : "Empty topic";
    };
    describeRange();
    if (uri) {
      searchSummary.hidden = false;
      searchSummary.append(
        `${events.length} event${events.length === 1 ? "" : "s"} of `, el("code", null, uri), " in this topic. ",
        el("a", { href: articleHref(uri), class: "article-link" }, "Open the article page"), " · ",
        el("a", { href: topicHref(topic) }, "Show all events"));
    }
    updateOlder();
    setReady("topic");

    older.addEventListener("click", async () => {
      older.disabled = true;
      try {
        const before = oldest;
        let windowEnd = before;
        let got = [];
        // Offsets may have gaps (retention, compaction): step back a window at a time until something older turns up.
        for (let attempt = 0; attempt < 10 && got.length === 0 && windowEnd > startOffset; attempt += 1) {
          const windowStart = Math.max(startOffset, windowEnd - PAGE_SIZE);
          let from = windowStart;
          // The server's byte budget may cut an answer short: follow `next` until the window is covered.
          for (;;) {
            let answer;
            try {
              answer = await api(`${path}?from=${from}&limit=${PAGE_SIZE}`);
            } catch (error) {
              // Retention moved the log's start past `from` since the last answer: learn the new start from the
              // newest event's answer, clamp the window to it and go on (startOffset otherwise only updates on
              // success, and every later click would fail the same way).
              if (!(error instanceof ApiError) || error.code !== "OFFSET_OUT_OF_RANGE") throw error;
              const probe = await api(`${path}?limit=1`);
              if (!current(generation)) return;
              if (!(probe.startOffset > from)) throw error; // no progress: show the error, do not loop
              startOffset = probe.startOffset;
              from = startOffset;
              if (from >= windowEnd) break; // the rest of this window is gone
              continue;
            }
            if (!current(generation)) return;
            startOffset = answer.startOffset;
            got = got.concat(answer.events.filter((e) => e.offset < before));
            const next = Number(answer.next);
            if (answer.events.length === 0 || !Number.isFinite(next) || next <= from || next >= windowEnd) break;
            from = next;
          }
          windowEnd = windowStart;
        }
        got.sort((a, b) => b.offset - a.offset);
        for (const event of got) tbody.append(eventRow(event, false));
        if (got.length > 0) oldest = got[got.length - 1].offset;
        else oldest = startOffset;
        // Paging back drops the newest rows instead of the ones just asked for; live events then wait off-table.
        while (tbody.children.length > MAX_EVENT_ROWS) {
          tbody.firstElementChild.remove();
          hiddenNewer += 1;
        }
        noteHidden();
        updateOlder();
      } catch (error) {
        handleError(error);
      } finally {
        older.disabled = false;
      }
    });

    startTail(generation, topic, page.endOffset, status, (event) => {
      if (event.offset > lastStored) {
        lastStored = event.offset;
        describeRange();
      }
      if (event.offset <= newest) return;
      if (uri && event.uri !== uri) return;
      newest = event.offset;
      if (hiddenNewer > 0) {
        hiddenNewer += 1;
        noteHidden();
        return;
      }
      tbody.insertBefore(eventRow(event, true), tbody.firstChild);
      empty.hidden = true;
      trim();
      updateOlder();
    });
  }

  function eventRow(event, live) {
    const uriCell = el("td", { class: "event-uri" });
    if (event.uri) uriCell.append(el("a", { href: articleHref(event.uri), title: event.uri }, event.uri));
    else uriCell.append(el("span", { class: "muted" }, "–"));
    const headline = el("td", { class: "event-headline" });
    if (event.headline) headline.textContent = event.headline;
    else headline.append(el("span", { class: "muted" }, "(no headline)"));
    const type = el("td", { class: "event-type" }, typeBadge(event.type));
    return el("tr", { class: live ? "event live" : "event", "data-offset": String(event.offset) },
      el("td", { class: "event-offset num" }, String(event.offset)),
      type, headline, uriCell, timeCell(event.brokerTime, { class: "event-time" }));
  }

  function typeBadge(type) {
    return el("span", { class: `type-badge ${typeClass(type)}` }, type || "?");
  }

  function typeClass(type) {
    if (type === "article.created") return "type-created";
    if (type === "article.updated") return "type-updated";
    if (type === "article.deleted") return "type-deleted";
    return "type-other";
  }

  function startTail(generation, topic, from, status, onEvent) {
    if (typeof EventSource !== "function") { setStatus(status, "closed", "unavailable"); return; }
    const source = new EventSource(`/api/topics/${enc(topic)}/tail?from=${encodeURIComponent(String(from))}`);
    state.cleanup.push(() => { source.close(); });
    setStatus(status, "connecting", "connecting");
    source.addEventListener("open", () => { if (current(generation)) setStatus(status, "live", "live"); });
    source.addEventListener("event", (message) => {
      if (!current(generation)) return;
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      if (event && Number.isFinite(event.offset)) onEvent(event);
    });
    source.addEventListener("error", (message) => {
      if (!current(generation)) return;
      if (typeof message.data === "string" && message.data.length > 0) {
        // The server's own error event: it closes the stream after it, so stop reconnecting.
        source.close();
        let text = "tail failed";
        try {
          const body = JSON.parse(message.data);
          if (body && body.error) {
            text = String(body.error.message);
            showError(new ApiError(0, String(body.error.code), text));
            // The session ended (logout in another tab, expiry): ask again so the login form appears.
            if (String(body.error.code) === "UNAUTHENTICATED") {
              loadSession().catch((error) => { if (current(generation)) handleError(error); });
            }
          }
        } catch { /* not JSON: keep the generic text */ }
        setStatus(status, "error", text);
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        setStatus(status, "closed", "closed");
        // EventSource hides the status: a refused reconnect may be an expired session; ask (shows the login on 401).
        loadSession().catch((error) => { if (current(generation)) handleError(error); });
      } else {
        setStatus(status, "connecting", "connecting");
      }
    });
  }

  function setStatus(node, kind, text) {
    node.dataset.state = kind;
    node.textContent = text;
  }

  // ---------------------------------------------------------------- article

  async function articlePage(generation, uri) {
    const article = await api(`/api/articles?uri=${enc(uri)}`);
    if (!current(generation)) return;
    const versions = article.versions || [];
    const root = app();
    const key = (v) => `${v.topic}:${v.offset}`;
    let selected = versions.length - 1;

    const list = el("ol", { id: "versions", class: "versions" });
    versions.forEach((v, index) => {
      const item = el("li", {
        class: "version", "data-topic": v.topic, "data-offset": String(v.offset), tabindex: "0", role: "button",
        "aria-pressed": "false",
      },
        el("div", { class: "version-line" },
          typeBadge(v.type),
          el("span", { class: "version-where" }, el("a", { href: topicHref(v.topic), class: "version-topic" }, v.topic),
            " @ ", el("span", { class: "version-offset" }, String(v.offset)))),
        el("div", { class: "version-headline" }, v.headline || "(no headline)"),
        el("div", { class: "version-time muted" }, formatTime(v.brokerTime)));
      const choose = (event) => {
        if (event.target.closest("a")) return;
        selected = index;
        renderSelected();
      };
      item.addEventListener("click", choose);
      item.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); choose(event); }
      });
      list.append(item);
    });

    const view = el("article", { id: "article-view", class: "article-view card" });
    const fromSelect = el("select", { id: "diff-from", "aria-label": "Older version" });
    const toSelect = el("select", { id: "diff-to", "aria-label": "Newer version" });
    for (const select of [fromSelect, toSelect]) {
      versions.forEach((v, index) => {
        const label = `#${index + 1} ${v.type} · ${v.topic} @ ${v.offset} · ${formatTime(v.brokerTime)}`;
        select.append(el("option", { value: key(v) }, label));
      });
    }
    if (versions.length > 0) {
      fromSelect.value = key(versions[Math.max(0, versions.length - 2)]);
      toSelect.value = key(versions[versions.length - 1]);
    }
    const diffTable = el("table", { id: "diff", class: "diff" });
    const diffSummary = el("p", { id: "diff-summary", class: "muted" });
    const byKey = new Map(versions.map((v) => [key(v), v]));
    const renderDiff = () => {
      const left = byKey.get(fromSelect.value);
      const right = byKey.get(toSelect.value);
      buildDiff(diffTable, diffSummary, left, right);
    };
    fromSelect.addEventListener("change", renderDiff);
    toSelect.addEventListener("change", renderDiff);

    function renderSelected() {
      for (const [index, item] of Array.from(list.children).entries()) {
        item.classList.toggle("selected", index === selected);
        item.setAttribute("aria-pressed", index === selected ? "true" : "false");
      }
      renderVersion(view, versions[selected]);
    }

    clear(root);
    root.append(el("section", { id: "article-page", class: "page", "data-uri": uri },
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / article"),
      el("div", { class: "page-head" }, el("h1", { class: "uri-title" }, el("span", { class: "muted" }, "Article "),
        el("code", null, uri))),
      el("div", { class: "article-layout" },
        el("aside", { class: "versions-panel" },
          el("h2", null, "Versions ", el("span", { id: "version-count", class: "muted" }, `(${versions.length})`)),
          article.truncated
            ? el("p", { class: "muted" }, "Older versions are left out: the newest that fit one answer are shown.")
            : null,
          list),
        view),
      el("section", { class: "diff-panel" },
        el("div", { class: "section-head" }, el("h2", null, "Compare versions"),
          el("label", { class: "diff-pick" }, "From ", fromSelect),
          el("label", { class: "diff-pick" }, "to ", toSelect)),
        diffSummary,
        el("div", { class: "table-wrap" }, diffTable))));
    if (versions.length > 0) renderSelected();
    else view.append(el("p", { class: "empty" }, "No readable version."));
    renderDiff();
    setReady("article");
  }

  /** Shows a field's JSON text (path → JSON text from the server): a string as its text, anything else as sent.
   * Never re-serialised: a parse round trip rounds big numbers and makes "1" and 1 look alike. */
  function fieldText(jsonText) {
    if (jsonText === undefined || jsonText === null) return null;
    const text = String(jsonText);
    if (text.trimStart().startsWith("\"")) {
      try {
        const value = JSON.parse(text);
        if (typeof value === "string") return value;
      } catch { /* not JSON after all: show as sent */ }
    }
    return text;
  }

  const SHOWN_FIELDS = new Set(["headline", "byline", "body", "versioncreated"]);

  function renderVersion(view, v) {
    clear(view);
    const meta = el("p", { class: "article-meta" },
      typeBadge(v.type), " ",
      el("span", { class: "muted" },
        `${v.topic} @ ${String(v.offset)} · broker time ${formatTime(v.brokerTime)}`));
    const headline = el("h2", { class: "article-headline" }, v.headline || "");
    if (!v.headline) headline.append(el("span", { class: "muted" }, "(no headline)"));
    const line = el("p", { class: "article-dateline" },
      // "By" stays outside the field's element, which holds the byline alone.
      v.byline ? el("span", { class: "article-by" }, "By ", el("span", { class: "article-byline" }, v.byline))
        : el("span", { class: "article-byline" }),
      el("span", { class: "article-section" }, v.section || ""),
      el("span", { class: "article-version-created" }, v.versionCreated || ""));
    const body = el("div", { class: "article-body" });
    const text = typeof v.bodyText === "string" ? v.bodyText : "";
    const paragraphs = text.includes("\n") ? text.split(/\r?\n(?:\s*\r?\n)*/) : [text];
    for (const paragraph of paragraphs) {
      if (paragraph.trim().length > 0) body.append(el("p", null, paragraph.trim()));
    }
    if (!body.firstChild) body.append(el("p", { class: "muted" }, "(no body text)"));
    const others = el("dl", { class: "article-fields" });
    for (const name of Object.keys(v.fields || {}).sort()) {
      if (SHOWN_FIELDS.has(name)) continue;
      others.append(el("dt", null, name), el("dd", null, fieldText(v.fields[name])));
    }
    view.append(meta, headline, line, body);
    if (others.firstChild) view.append(el("h3", { class: "fields-title" }, "Other fields"), others);
  }

  function buildDiff(table, summary, left, right) {
    clear(table);
    if (!left || !right) { summary.textContent = "Nothing to compare."; return; }
    const lf = left.fields || {};
    const rf = right.fields || {};
    const names = Array.from(new Set([...Object.keys(lf), ...Object.keys(rf)])).sort();
    table.append(el("thead", null, el("tr", null,
      el("th", { scope: "col", class: "diff-field-head" }, "Field"),
      el("th", { scope: "col" }, `${left.topic} @ ${left.offset} (${left.type})`),
      el("th", { scope: "col" }, `${right.topic} @ ${right.offset} (${right.type})`))));
    const tbody = el("tbody");
    let changed = 0;
    for (const name of names) {
      const a = Object.prototype.hasOwnProperty.call(lf, name) ? lf[name] : undefined;
      const b = Object.prototype.hasOwnProperty.call(rf, name) ? rf[name] : undefined;
      const differs = a !== b;
      if (differs) changed += 1;
      const leftCell = el("td", { class: "diff-left" });
      const rightCell = el("td", { class: "diff-right" });
      const at = fieldText(a);
      const bt = fieldText(b);
      if (!differs) {
        leftCell.textContent = at;
        rightCell.textContent = bt;
      } else if (at === null) {
        leftCell.append(el("span", { class: "absent" }, "(absent)"));
        rightCell.append(el("ins", null, bt));
      } else if (bt === null) {
        leftCell.append(el("del", null, at));
        rightCell.append(el("span", { class: "absent" }, "(absent)"));
      } else if (at === bt) {
        // Differ only in type ("1" and 1): show both JSON texts as sent, whole, so the change is visible.
        leftCell.append(el("del", null, String(a)));
        rightCell.append(el("ins", null, String(b)));
      } else {
        wordDiff(at, bt, leftCell, rightCell);
      }
      tbody.append(el("tr", { class: differs ? "diff-row changed" : "diff-row", "data-field": name },
        el("th", { scope: "row", class: "diff-field" }, name), leftCell, rightCell));
    }
    table.append(tbody);
    summary.textContent = left === right
      ? "The same version on both sides."
      : `${changed} of ${names.length} field${names.length === 1 ? "" : "s"} changed.`;
  }

  /** Word-level diff by longest common subsequence: removed words in <del> on the left, added in <ins> on the
   * right. Common prefix and suffix are cut first; a middle too large for the table is marked whole. */
  function wordDiff(a, b, leftCell, rightCell) {
    const x = a.split(/(\s+)/).filter((t) => t.length > 0);
    const y = b.split(/(\s+)/).filter((t) => t.length > 0);
    let pre = 0;
    while (pre < x.length && pre < y.length && x[pre] === y[pre]) pre += 1;
    let suf = 0;
    while (suf < x.length - pre && suf < y.length - pre && x[x.length - 1 - suf] === y[y.length - 1 - suf]) suf += 1;
    const xm = x.slice(pre, x.length - suf);
    const ym = y.slice(pre, y.length - suf);
    const ops = []; // [kind, token] with kind "=", "-", "+"
    for (const t of x.slice(0, pre)) ops.push(["=", t]);
    const n = xm.length;
    const m = ym.length;
    if (n * m > 4_000_000) {
      for (const t of xm) ops.push(["-", t]);
      for (const t of ym) ops.push(["+", t]);
    } else {
      // lengths[i][j] = LCS of xm[i..] and ym[j..], one flat array.
      const width = m + 1;
      const lengths = new Uint32Array((n + 1) * width);
      for (let i = n - 1; i >= 0; i -= 1) {
        for (let j = m - 1; j >= 0; j -= 1) {
          lengths[i * width + j] = xm[i] === ym[j]
            ? lengths[(i + 1) * width + j + 1] + 1
            : Math.max(lengths[(i + 1) * width + j], lengths[i * width + j + 1]);
        }
      }
      let i = 0;
      let j = 0;
      while (i < n && j < m) {
        if (xm[i] === ym[j]) { ops.push(["=", xm[i]]); i += 1; j += 1; }
        else if (lengths[(i + 1) * width + j] >= lengths[i * width + j + 1]) { ops.push(["-", xm[i]]); i += 1; }
        else { ops.push(["+", ym[j]]); j += 1; }
      }
      for (; i < n; i += 1) ops.push(["-", xm[i]]);
      for (; j < m; j += 1) ops.push(["+", ym[j]]);
    }
    for (const t of x.slice(x.length - suf)) ops.push(["=", t]);
    // Merge runs so each change is one del/ins element; whitespace between two changed words joins the change.
    const emit = (cell, kind, tag) => {
      const side = ops.filter(([k]) => k === "=" || k === kind).map(([k, t]) => [k, t]);
      for (let i = 1; i < side.length - 1; i += 1) {
        if (side[i][0] === "=" && /^\s+$/.test(side[i][1]) && side[i - 1][0] === kind && side[i + 1][0] === kind) {
          side[i][0] = kind;
        }
      }
      let run = "";
      let runKind = null;
      const flush = () => {
        if (!run) return;
        cell.append(runKind === "=" ? document.createTextNode(run) : el(tag, null, run));
        run = "";
      };
      for (const [k, t] of side) {
        if (k !== runKind) { flush(); runKind = k; }
        run += t;
      }
      flush();
    };
    emit(leftCell, "-", "del");
    emit(rightCell, "+", "ins");
  }

  // ---------------------------------------------------------------- consumers

  async function consumersPage(generation) {
    const root = app();
    const admin = !!(state.session && state.session.admin);
    const table = el("table", { id: "consumers", class: "data consumers" },
      el("thead", null, el("tr", null,
        el("th", { scope: "col" }, "Consumer / topic"), el("th", { scope: "col", class: "num" }, "Committed"),
        el("th", { scope: "col", class: "num" }, "End"), el("th", { scope: "col", class: "num" }, "Lag"),
        el("th", { scope: "col" }, "Last commit"), el("th", { scope: "col", class: "num" }, "Active"),
        el("th", { scope: "col" }, "Lag, last hour"),
        admin ? el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")) : null)));
    const result = el("div", { id: "reset-result", class: "reset-result", role: "status", hidden: true });
    const empty = el("p", { class: "empty", hidden: true }, "No durable consumers (or none you may use).");
    const note = el("p", { class: "muted" });
    clear(root);
    root.append(el("section", { id: "consumers-page", class: "page" },
      el("h1", null, "Consumers"), note, result,
      el("div", { class: "table-wrap" }, table), empty));
    let latest = [];

    let asked = 0; // a slow answer must not overwrite a newer one (the refresh after a reset)
    async function refresh() {
      const ask = ++asked;
      const answer = await api("/api/consumers");
      if (!current(generation) || ask !== asked) return;
      latest = answer.consumers;
      note.textContent = "Durable consumers with their committed offsets. Lag is sampled every "
        + `${answer.sampleIntervalSeconds} s; the chart shows the last hour.`;
      // One tbody per consumer, kept after the head.
      syncChildren(table, answer.consumers, (c) => c.consumer, (c) => createConsumerBody(c, admin), updateConsumerBody,
        table.tHead);
      empty.hidden = answer.consumers.length > 0;
    }

    table.addEventListener("click", (event) => {
      const button = event.target.closest("button.reset");
      if (!button) return;
      const consumer = latest.find((c) => c.consumer === button.dataset.consumer);
      if (consumer) openResetDialog(generation, consumer, result, refresh);
    });

    await refresh();
    if (!current(generation)) return;
    setReady("consumers");
    every(REFRESH_MS, generation, refresh);
  }

  function createConsumerBody(c, admin) {
    const body = el("tbody", { class: "consumer-group" });
    const row = el("tr", { class: "consumer", "data-consumer": c.consumer },
      el("th", { scope: "rowgroup", class: "consumer-name" }, c.consumer),
      el("td", { class: "consumer-topics muted", colspan: "2" }),
      el("td", { class: "consumer-lag num" }),
      el("td", { class: "consumer-last muted" }),
      el("td", { class: "consumer-active num" }),
      el("td", { class: "consumer-chart", rowspan: "1" }),
      admin ? el("td", { class: "consumer-actions" },
        el("button", { type: "button", class: "reset button-danger", "data-consumer": c.consumer }, "Reset…"))
        : null);
    body.append(row);
    return body;
  }

  function updateConsumerBody(body, c) {
    const row = body.firstElementChild;
    $(".consumer-topics", row).textContent = `${c.topics.length} topic${c.topics.length === 1 ? "" : "s"}`;
    const lag = $(".consumer-lag", row);
    lag.textContent = String(c.totalLag);
    lag.classList.toggle("lagging", c.totalLag > 0);
    const active = $(".consumer-active", row);
    active.textContent = String(c.activeSubscriptions);
    active.title = `${c.activeSubscriptions} open subscription${c.activeSubscriptions === 1 ? "" : "s"}`;
    const lastCommit = Math.max(0, ...c.topics.map((t) => t.lastCommitTime || 0));
    $(".consumer-last", row).textContent = lastCommit ? formatTime(lastCommit) : "–";
    const chart = $(".consumer-chart", row);
    chart.setAttribute("rowspan", String(1 + c.topics.length));
    clear(chart);
    // The broker samples every 30 s; the lag of this answer ends the line at "now", so a new consumer has one too.
    chart.append(lagChart(c.consumer, (c.lagHistory || []).concat([{ time: Date.now(), lag: c.totalLag }])));
    const actions = $(".consumer-actions", row);
    if (actions) actions.setAttribute("rowspan", String(1 + c.topics.length));
    // Topic rows follow the consumer row; rebuilt in place, keyed by topic.
    const holder = document.createDocumentFragment();
    const existing = new Map();
    for (const tr of Array.from(body.querySelectorAll("tr.consumer-topic"))) existing.set(tr.dataset.topic, tr);
    for (const t of c.topics) {
      let tr = existing.get(t.topic);
      if (tr) existing.delete(t.topic);
      else {
        tr = el("tr", { class: "consumer-topic", "data-consumer": c.consumer, "data-topic": t.topic },
          el("td", { class: "topic-cell" }, el("a", { href: topicHref(t.topic) }, t.topic)),
          el("td", { class: "committed num" }), el("td", { class: "end num" }), el("td", { class: "lag num" }),
          el("td", { class: "last-commit muted" }), el("td", { class: "topic-active" }));
      }
      $(".committed", tr).textContent = String(t.committed);
      const end = $(".end", tr);
      end.textContent = t.endOffset < 0 ? "gone" : String(t.endOffset);
      end.title = t.endOffset < 0 ? "The topic no longer exists" : "";
      const lag = $(".lag", tr);
      lag.textContent = String(t.lag);
      lag.classList.toggle("lagging", t.lag > 0);
      const last = $(".last-commit", tr);
      last.textContent = t.lastCommitTime ? formatTime(t.lastCommitTime) : "";
      last.title = t.lastCommitTime ? "last commit" : "";
      holder.append(tr);
    }
    for (const stale of existing.values()) stale.remove();
    body.append(holder);
  }

  function confirmDialog() {
    let dialog = document.getElementById("confirm");
    if (dialog) return dialog;
    dialog = el("dialog", { id: "confirm", class: "confirm", "aria-labelledby": "confirm-title" },
      el("h2", { id: "confirm-title" }, "Reset consumer"),
      el("label", { for: "reset-to", class: "confirm-label" }, "Move the committed offsets to"),
      el("select", { id: "reset-to" },
        el("option", { value: "beginning" }, "beginning (re-deliver everything kept)"),
        el("option", { value: "end" }, "end (skip everything not yet read)")),
      el("p", { id: "confirm-text", class: "confirm-text" }),
      el("div", { class: "confirm-buttons" },
        el("button", { id: "confirm-no", type: "button" }, "Cancel"),
        el("button", { id: "confirm-yes", type: "button", class: "button-danger" }, "Reset")));
    document.body.append(dialog);
    return dialog;
  }

  function openResetDialog(generation, consumer, result, refresh) {
    const dialog = confirmDialog();
    const select = $("#reset-to", dialog);
    const text = $("#confirm-text", dialog);
    const yes = $("#confirm-yes", dialog);
    const no = $("#confirm-no", dialog);
    select.value = "beginning";
    select.disabled = false;
    let force = false;
    const topics = consumer.topics.map((t) => t.topic);
    const describe = () => {
      clear(text);
      text.classList.remove("warning");
      text.append("Reset consumer ", el("strong", null, consumer.consumer),
        " to the ", el("strong", null, select.value), " of ", everyTopic(consumer.consumer, topics), "?");
      if (consumer.activeSubscriptions > 0) {
        const active = consumer.activeSubscriptions;
        text.append(` It has ${active} active subscription${active === 1 ? "" : "s"}.`);
      }
      yes.textContent = "Reset";
    };
    describe();
    const controller = new AbortController();
    const done = () => {
      controller.abort();
      if (dialog.open) dialog.close();
      const index = state.cleanup.indexOf(done);
      if (index >= 0) state.cleanup.splice(index, 1);
    };
    state.cleanup.push(done);
    select.addEventListener("change", describe, { signal: controller.signal });
    no.addEventListener("click", done, { signal: controller.signal });
    dialog.addEventListener("cancel", () => controller.abort(), { signal: controller.signal });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      const to = select.value;
      try {
        const answer = await api(`/api/consumers/${enc(consumer.consumer)}/reset`, {
          method: "POST", body: { to, force },
        });
        done();
        showResult(result, answer, to, force);
        showError(null);
        if (current(generation)) await refresh();
      } catch (error) {
        if (!force && error instanceof ApiError && error.status === 400 && /subscribed/i.test(error.message)) {
          // Second confirmation: the consumer is running.
          force = true;
          select.disabled = true;
          clear(text);
          text.classList.add("warning");
          text.append(el("span", { class: "confirm-server" }, error.message), " ",
            "Reset ", el("strong", null, consumer.consumer), " anyway, to the ", el("strong", null, to), " of ",
            everyTopic(consumer.consumer, topics), "?");
          yes.textContent = "Reset anyway";
        } else {
          done();
          handleError(error);
        }
      } finally {
        yes.disabled = false;
      }
    }, { signal: controller.signal });
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
    select.focus();
  }

  /** The reset has no pattern, so the broker resets every topic the consumer committed in, including topics this
   * user may not read: the text must not present the visible list as complete. */
  function everyTopic(consumer, shown) {
    return el("span", null, "every topic consumer ", el("strong", null, consumer), " has committed in (",
      `${shown.length} shown here`, shown.length > 0 ? ": " : "", shown.length > 0 ? joinCodes(shown) : null, ")");
  }

  function joinCodes(names) {
    const span = el("span");
    names.forEach((name, index) => {
      if (index > 0) span.append(index === names.length - 1 ? " and " : ", ");
      span.append(el("code", null, name));
    });
    return span;
  }

  function showResult(result, answer, to, force) {
    clear(result);
    result.hidden = false;
    result.append(el("p", null, "Consumer ", el("strong", null, answer.consumer),
      ` reset to the ${to}${force ? " (forced)" : ""}: `,
      `${answer.resets.length} topic${answer.resets.length === 1 ? "" : "s"}.`));
    if (answer.resets.length > 0) {
      const list = el("ul");
      for (const r of answer.resets) {
        list.append(el("li", null, el("code", null, r.topic), ": ",
          r.previous < 0 ? "no position" : String(r.previous), " → ", String(r.committed)));
      }
      result.append(list);
    }
  }

  // ---------------------------------------------------------------- not found, start

  function failedPage() {
    const root = app();
    clear(root);
    root.append(el("section", { class: "page" }, el("h1", null, "Could not load this page"),
      el("p", null, "The error above says why. ", el("a", { href: "#/" }, "Go to the overview"), ".")));
  }

  function notFoundPage() {
    const root = app();
    clear(root);
    root.append(el("section", { class: "page" }, el("h1", null, "Not found"),
      el("p", null, "No such page. ", el("a", { href: "#/" }, "Go to the overview"), ".")));
  }

  function start() {
    document.getElementById("logout").addEventListener("click", logout);
    // A followed hash link clears the ready mark at once rather than at hashchange, a task later: whoever waits
    // for the next page's mark never sees the previous page's (topic to topic, article to article).
    document.addEventListener("click", (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      const link = event.target instanceof Element ? event.target.closest("a[href^='#']") : null;
      if (link && link.getAttribute("href") !== location.hash) setReady(null);
    }, true);
    window.addEventListener("hashchange", route);
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
