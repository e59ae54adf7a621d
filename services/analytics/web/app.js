// The analytics page: totals, an hourly chart, campaign and template tables, and a live feed
// over server-sent events. Everything shown comes from the JSON API of the same service; text
// from events (addresses, diagnostics) is only ever set as text, never as HTML.
//
// The API wants the tenant's bearer token: the page asks for it, keeps it in this tab's
// sessionStorage and sends it in the Authorization header, never in an address (addresses end
// up in logs and history). EventSource cannot send headers, so the live feed is read with
// fetch. Behind an authenticating proxy (the page is served with data-auth="proxy") the
// proxy's own login stands in for the token.
"use strict";

const FEED_SHOWN = 200;          // entries kept on the page
const REFRESH_DELAY_MS = 500;    // summaries are fetched again at most this often while events come
const RECONNECT_DELAY_MS = 3000;
const TOKEN_KEY = "sendrail-analytics-token:";  // + the tenant: each tenant its own token
const IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const SVG = "http://www.w3.org/2000/svg";

const page = {
  tenant: null,
  token: null,
  proxied: document.documentElement.dataset.auth === "proxy",
  window: "7d",
  filters: { campaign: "", template: "", user: "", kind: "" },
  stream: null,  // the AbortController of the open event stream
  retryMs: RECONNECT_DELAY_MS,
  refreshTimer: null,
  reconnectTimer: null,
};

// The API refused the token (401) or found it to be another tenant's (403).
class Refused extends Error {
  constructor(message, token) {
    super(message);
    this.token = token;  // the token that was sent: a late answer about an older one is ignored
  }
}

const $ = (id) => document.getElementById(id);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value) search.set(name, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}

function tenantPath(rest) {
  return `/api/tenants/${encodeURIComponent(page.tenant)}/${rest}`;
}

function headers(accept) {
  const sent = { Accept: accept };
  if (page.token) sent.Authorization = `Bearer ${page.token}`;
  return sent;
}

async function api(rest, params) {
  const token = page.token;
  const response = await fetch(tenantPath(rest) + query(params),
                               { headers: headers("application/json"), cache: "no-store" });
  const body = await response.json();
  if (response.status === 401 || response.status === 403) throw new Refused(body.message, token);
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

function say(text) {
  const message = $("message");
  message.textContent = text || "";
  message.hidden = !text;
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

const number = (n) => n.toLocaleString("en");

function rateText(rate) {
  return rate === null ? "—" : `${(rate * 100).toFixed(1)}%`;
}

function rateClass(rate) {
  if (rate === null) return "rate";
  return rate >= 0.05 ? "rate bad" : rate >= 0.02 ? "rate warn" : "rate";
}

// --- summaries -----------------------------------------------------------------------

function renderTotals(totals) {
  const cards = [
    ["Sent", number(totals.sent), "sent"],
    ["Recipients", number(totals.sent_recipients), "sent_recipients"],
    ["Bounced", number(totals.bounced), "bounced"],
    ["Hard / soft", `${number(totals.hard_bounced)} / ${number(totals.soft_bounced)}`, "hardsoft"],
    ["Bounce rate", rateText(totals.bounce_rate), "bounce_rate"],
    ["Complaints", number(totals.complaints), "complaints"],
    ["Auto-replies", number(totals.auto_replies), "auto_replies"],
    ["Deferred", number(totals.deferred), "deferred"],
    ["Failed", number(totals.failed), "failed"],
    ["Suppressed", number(totals.suppressed), "suppressed"],
  ];
  const bad = totals.bounce_rate !== null && totals.bounce_rate >= 0.05;
  $("totals").replaceChildren(...cards.map(([label, value, name]) =>
    el("div", { class: name === "bounce_rate" && bad ? "card bad" : "card", "data-total": name },
      el("div", { class: "label" }, label), el("div", { class: "value" }, value))));
}

function renderTable(id, items, filterName) {
  const rows = items.map((item) => {
    const row = el("tr", { "data-key": item.key },
      el("td", { class: "key" }, item.key),
      el("td", { class: "sent" }, number(item.sent)),
      el("td", { class: "bounced" }, number(item.bounced)),
      el("td", { class: "hard" }, number(item.hard_bounced)),
      el("td", { class: "soft" }, number(item.soft_bounced)),
      el("td", { class: rateClass(item.bounce_rate), title: `${item.bounced} of ${item.sent_recipients} recipients` },
        rateText(item.bounce_rate)),
      el("td", { class: "complaints" }, number(item.complaints)),
      el("td", { class: "auto-replies" }, number(item.auto_replies)),
      el("td", { class: "deferred" }, number(item.deferred)),
      el("td", { class: "failed" }, number(item.failed)));
    row.addEventListener("click", () => {
      $(`filter-${filterName}`).value = item.key;
      applyFilters();
    });
    return row;
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { class: "empty", colspan: "10" }, "nothing in this window")));
  $(id).tBodies[0].replaceChildren(...rows);
}

function hourLabel(iso) {
  const date = new Date(iso);
  return date.toLocaleString("en-GB", { weekday: "short", hour: "2-digit", minute: "2-digit" });
}

function renderChart(hours) {
  const width = 720, height = 180, left = 34, bottom = 18, top = 8;
  const plotWidth = width - left - 4, plotHeight = height - top - bottom;
  const most = Math.max(1, ...hours.map((h) => Math.max(h.sent, h.bounced)));
  const step = plotWidth / hours.length;
  const barWidth = Math.max(1, step / 2 - 0.5);
  const y = (value) => top + plotHeight - (value / most) * plotHeight;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
                             "aria-label": "Sends and bounces per hour" });
  chart.append(svg("line", { class: "axis", x1: left, x2: width, y1: top + plotHeight, y2: top + plotHeight }));
  chart.append(svg("line", { class: "axis", x1: left, x2: width, y1: top, y2: top }));
  for (const [value, at] of [[most, top + 10], [0, top + plotHeight]]) {
    const label = svg("text", { x: left - 4, y: at, "text-anchor": "end" });
    label.textContent = number(value);
    chart.append(label);
  }
  hours.forEach((hour, index) => {
    const x = left + index * step;
    for (const [name, value, offset] of [["sent", hour.sent, 0], ["bounced", hour.bounced, barWidth]]) {
      if (value === 0) continue;
      const bar = svg("rect", { class: name, x: x + offset, y: y(value), width: barWidth,
                                height: top + plotHeight - y(value) });
      const title = svg("title", {});
      title.textContent = `${hourLabel(hour.start)}: ${number(hour.sent)} sent, ${number(hour.bounced)} bounced`;
      bar.append(title);
      chart.append(bar);
    }
  });
  for (const index of [0, Math.floor(hours.length / 2), hours.length - 1]) {
    const anchor = index === 0 ? "start" : index === hours.length - 1 ? "end" : "middle";
    const label = svg("text", { x: left + index * step + (index === hours.length - 1 ? step : 0),
                                y: height - 4, "text-anchor": anchor });
    label.textContent = hourLabel(hours[index].start);
    chart.append(label);
  }
  const legend = el("div", { class: "legend" },
    el("span", {}, el("i", { class: "sent" }), "sent"), el("span", {}, el("i", { class: "bounced" }), "bounced"));
  $("chart").replaceChildren(chart, legend);
  $("chart-range").textContent = hours.length === 24 ? "(last 24 hours)" : "(last 7 days)";
}

// False only when the token was refused.
async function loadSummaries() {
  try {
    const [campaigns, templates, timeline] = await Promise.all([
      api("summary", { window: page.window, by: "campaign" }),
      api("summary", { window: page.window, by: "template" }),
      api("timeline", { window: page.window === "24h" ? "24h" : "7d" }),
    ]);
    renderTotals(campaigns.totals);
    renderTable("campaigns", campaigns.items, "campaign");
    renderTable("templates", templates.items, "template");
    renderChart(timeline.hours);
    document.body.dataset.loaded = "true";
  } catch (error) {
    if (error instanceof Refused) {
      askForToken(error.message, error.token);
      return false;
    }
    say(`Could not load the summaries: ${error.message}`);
  }
  return true;
}

// At most one refresh per delay, however fast events come.
function refreshSoon() {
  if (page.refreshTimer) return;
  page.refreshTimer = setTimeout(() => {
    page.refreshTimer = null;
    loadSummaries();
  }, REFRESH_DELAY_MS);
}

// --- the feed ------------------------------------------------------------------------

function describe(item) {
  const where = [item.campaign_id && `campaign ${item.campaign_id}`, item.template_id && `template ${item.template_id}`,
                 item.user_id && `user ${item.user_id}`, item.channel].filter(Boolean);
  if (item.correlated === false) where.push("not tied to a send");
  let reason = item.reason || "";
  if (item.kind === "bounce") reason = `${item.hard ? "hard" : "soft"}: ${item.reason}${item.status ? ` (${item.status})` : ""}`;
  return { where: where.join(" · "), reason };
}

function feedEntry(item, fresh) {
  const at = new Date(item.at);
  const { where, reason } = describe(item);
  const label = item.kind.replace("_", "-");
  return el("li", { "data-id": item.id, "data-kind": item.kind, "data-at": String(at.getTime()), class: fresh ? "new" : null },
    el("div", { class: "top" },
      el("time", { datetime: item.at, title: at.toString() }, at.toLocaleTimeString("en-GB")),
      el("span", { class: `kind kind-${item.kind}` }, label),
      el("span", { class: "who" }, item.recipients.join(", "))),
    where ? el("div", { class: "meta" }, where) : null,
    reason ? el("div", { class: "meta reason" }, reason) : null,
    item.detail ? el("div", { class: "detail", title: item.detail }, item.detail) : null);
}

function addToFeed(item, fresh) {
  const list = $("feed");
  if (list.querySelector(`li[data-id="${CSS.escape(item.id)}"]`)) return;
  const entry = feedEntry(item, fresh);
  const at = Number(entry.dataset.at);
  const later = Array.from(list.children).find((li) => Number(li.dataset.at) < at ||
    (Number(li.dataset.at) === at && li.dataset.id < item.id));
  list.insertBefore(entry, later || null);
  while (list.children.length > FEED_SHOWN) list.lastElementChild.remove();
  $("feed-empty").hidden = true;
}

// The text/event-stream format (WHATWG HTML §9.2.6): `data` lines up to a blank line make one
// message; lines starting with a colon are comments (the server's keep-alives).
async function readEvents(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (data.length) onMessage(data.join("\n"));
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(text);
        else if (field === "retry" && /^[0-9]+$/.test(text)) page.retryMs = Number(text);
      }
    }
  }
}

function disconnect() {
  if (page.stream) page.stream.abort();
  page.stream = null;
  clearTimeout(page.reconnectTimer);
}

async function connect() {
  disconnect();
  const stream = new AbortController();
  const token = page.token;
  page.stream = stream;
  setStatus("connecting", "connecting…");
  try {
    const response = await fetch(tenantPath("events") + query(page.filters),
                                 { headers: headers("text/event-stream"), cache: "no-store", signal: stream.signal });
    if (response.status === 401 || response.status === 403) {
      askForToken((await response.json()).message, token);
      return;
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    // On every (re)connection the feed is read again: it holds what was missed meanwhile.
    setStatus("live", "live");
    loadFeed();
    refreshSoon();
    await readEvents(response.body, (data) => {
      addToFeed(JSON.parse(data), true);
      refreshSoon();
    });
  } catch (error) {
    if (stream.signal.aborted) return;  // closed here: new filters, or a new token asked for
  }
  if (page.stream !== stream) return;
  // The stream ended or never opened (503 while the service starts, a restart, a revoked
  // token): try again; a refused token then brings the token form back.
  setStatus("reconnecting", "reconnecting…");
  page.reconnectTimer = setTimeout(connect, page.retryMs);
}

async function loadFeed() {
  const filters = page.filters;
  try {
    const feed = await api("feed", { limit: "100", ...filters });
    if (filters !== page.filters) return;  // the filters changed while it loaded
    for (const item of feed.items) addToFeed(item, false);
    $("feed-empty").hidden = $("feed").children.length > 0;
  } catch (error) {
    if (error instanceof Refused) askForToken(error.message, error.token);
    else say(`Could not load the feed: ${error.message}`);
  }
}

// --- the token -----------------------------------------------------------------------

function showDashboard() {
  $("token-form").hidden = true;
  $("forget").hidden = page.proxied;
  $("dashboard").hidden = false;
  // The stream opens once the token has been accepted, not alongside requests it would fail too.
  loadSummaries().then((accepted) => { if (accepted) connect(); });
}

// No token yet, or the API refused `token`: forget it and ask for one.
function askForToken(message, token) {
  if (token !== page.token) return;  // about a token replaced meanwhile
  disconnect();
  if (page.proxied) {  // the proxy's login decides; nothing to ask for here
    setStatus("error", "refused");
    say(message);
    return;
  }
  sessionStorage.removeItem(TOKEN_KEY + page.tenant);
  page.token = null;
  setStatus("idle", "not connected");
  say(message);
  $("dashboard").hidden = true;
  $("forget").hidden = true;
  $("token-tenant").textContent = page.tenant;
  $("token-tenant-command").textContent = page.tenant;
  $("token-form").hidden = false;
  $("token").focus();
}

// --- wiring --------------------------------------------------------------------------

function remember() {
  const url = new URL(window.location.href);
  url.search = query({ tenant: page.tenant, window: page.window, ...page.filters });
  window.history.replaceState(null, "", url);
}

function applyFilters() {
  const filters = {};
  for (const name of ["campaign", "template", "user"]) {
    const value = $(`filter-${name}`).value.trim();
    if (value && !IDENTIFIER.test(value)) {
      say(`A ${name} is letters, digits and ._:@- , starting with a letter or digit.`);
      return;
    }
    filters[name] = value;
  }
  filters.kind = $("filter-kind").value;
  say("");
  page.filters = filters;
  remember();
  $("feed").replaceChildren();
  $("feed-empty").hidden = false;
  connect();
}

function start() {
  const params = new URLSearchParams(window.location.search);
  const tenant = params.get("tenant") || "";
  page.window = ["24h", "7d", "all"].includes(params.get("window")) ? params.get("window") : "7d";
  $("window").value = page.window;
  $("tenant").value = tenant;
  for (const name of ["campaign", "template", "user", "kind"]) {
    const value = params.get(name) || "";
    page.filters[name] = value;
    $(`filter-${name}`).value = value;
  }
  $("tenant-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = new URL(window.location.href);
    url.search = query({ tenant: $("tenant").value.trim(), window: $("window").value });
    window.location.assign(url);
  });
  $("window").addEventListener("change", () => {
    if (!page.tenant) return;
    page.window = $("window").value;
    remember();
    loadSummaries();
  });
  let typing = null;
  $("filters").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(applyFilters, 400);
  });
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); applyFilters(); });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    page.token = token;
    sessionStorage.setItem(TOKEN_KEY + page.tenant, token);
    say("");
    showDashboard();
  });
  $("forget").addEventListener("click", () => askForToken("Token forgotten in this tab.", page.token));
  if (!IDENTIFIER.test(tenant)) {
    say(tenant ? "A tenant id is letters, digits and ._:@- , starting with a letter or digit." :
                 "Choose a tenant to see its analytics.");
    return;
  }
  page.tenant = tenant;
  document.title = `${tenant} · sendrail analytics`;
  page.token = page.proxied ? null : sessionStorage.getItem(TOKEN_KEY + tenant);
  if (page.proxied || page.token) showDashboard();
  else askForToken("", null);
}

start();
