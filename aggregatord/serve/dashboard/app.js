/* muster dashboard: keeps itself current through the API's blocking reads
 * (?index=N&wait=30s, X-Muster-Index). At most five long-polls (health,
 * cluster history, history, nodes, the open node), so the browser's six
 * connections per host are never all parked: the sixth carries the
 * heartbeat, node details and writes. Node details, which hold the
 * components and stages, are fetched when a node's entry in the list or its
 * reasons change. Everything pauses while the tab is hidden. No external
 * requests but other aggregators' /readyz, to find a new leader.
 *
 * Contact. A blocking read may hang on a frozen aggregator (SIGSTOP, a VM
 * pause) without failing, so reads carry a client-side deadline (their wait
 * plus a margin) and a heartbeat reads /readyz every second with a 2 s
 * deadline. Any answer is contact; none for LOST_AFTER_MS turns the page
 * "lost" (greyed, saying since when). <body data-connection> is live, stale
 * (answers come, but what is shown may be old: a failing read, no leader,
 * the tab hidden) or lost.
 *
 * The leader. Reads do not follow redirects (a follower's 307 goes to
 * another origin, which the CSP and CORS refuse): a redirect, a 503 or lost
 * contact makes the page ask /readyz, here and then at every other
 * aggregator it knows (the leaders it has seen, the aggregators it came
 * through, ?aggregators=host:port,...), and go to the leader's dashboard,
 * carrying the aggregators it knows in its address (#aggr=...).
 *
 * When the aggregator has a bearer token (http_token_file) and answers 401,
 * the page asks for the token in a small form, keeps it in sessionStorage
 * (this tab, this origin only) and sends it as Authorization on every API
 * read. Operator actions (maintenance, acknowledgement, forgetting a node)
 * are offered only while the tab holds a token, and send the operator token
 * when one was entered, else the read token: never one it was not given. */
'use strict';

const WAIT = '30s';
const WAIT_MS = 30000;
const READ_MARGIN_MS = 5000;      // a blocking read's deadline past its wait
const PLAIN_DEADLINE_MS = 10000;  // any other read's
const HEARTBEAT_MS = 1000;
const HEARTBEAT_DEADLINE_MS = 2000;
const LOST_AFTER_MS = 3000;       // no answer for this long: lost
const ROLE_ORDER = ['master', 'agent', 'agent_public'];
const ROLE_LABEL = { master: 'Masters', agent: 'Agents', agent_public: 'Public agents' };
const HISTORY_LIMIT = 40;
const TOKEN_KEY = 'muster-token';
const ADMIN_KEY = 'muster-admin-token';
const OPERATOR_KEY = 'muster-operator';

/* Worst first. Node verdicts and component states share one scale. */
const SEVERITY = ['unhealthy', 'unreachable', 'missing', 'late', 'failed', 'degraded', 'warning', 'unknown',
  'starting', 'maintenance', 'healthy'];
function severity(s) {
  const i = SEVERITY.indexOf(s);
  return i < 0 ? SEVERITY.length : i;
}

const state = {
  health: null,
  nodes: null,            // the list
  details: new Map(),     // id -> {node, at (ms, when fetched)}
  history: [],
  cluster: [],
  reach: [],              // the nodes' reachability events (/v1/history/nodes)
  selected: null,
  failing: new Set(),     // loops whose last read failed
  retryAt: 0,
  lastOk: 0,              // the last read that returned data
  lastContact: 0,         // the last answer of any kind from the aggregator
  heartbeatFailing: false,
  noLeader: false,        // this aggregator knows no leader (an election)
  staleSince: 0,
  going: null,            // the leader's address while the page goes there
  needToken: false,       // the token form is showing
  hideHandled: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function word(s) {
  return el('span', { class: 'word s-' + (s || 'unknown'), text: String(s || 'unknown').replace('_', ' ') });
}

/* --- time: relative everywhere, the absolute time on hover ---------------- */

function fmtDuration(sec) {
  if (sec === null || sec === undefined || !isFinite(sec)) return '';
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return sec + 's';
  const m = Math.floor(sec / 60), s = sec % 60;
  if (m < 60) return m + 'm' + (s ? ' ' + s + 's' : '');
  const h = Math.floor(m / 60);
  if (h < 48) return h + 'h' + (m % 60 ? ' ' + (m % 60) + 'm' : '');
  return Math.floor(h / 24) + 'd' + (h % 24 ? ' ' + (h % 24) + 'h' : '');
}

function relative(iso) {
  const t = Date.parse(iso);
  if (!isFinite(t)) return iso || '';
  const s = (Date.now() - t) / 1000;
  if (s > -1 && s < 1) return 'just now';
  return s >= 0 ? fmtDuration(s) + ' ago' : 'in ' + fmtDuration(-s);
}

function absolute(iso) {
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString([], { hour12: false }) + ' (' + d.toISOString() + ')';
}

/* A <time> that says how long ago (kept moving by the clock's tick) and
 * shows the absolute time on hover. */
function timeEl(iso, prefix, lasting) {
  if (!iso) return null;
  return el('time', { datetime: iso, title: absolute(iso), 'data-rel': prefix || '', 'data-lasting': lasting ? 'true' : null,
    text: (prefix || '') + (lasting ? since(iso) : relative(iso)) });
}

/* How long since iso, as a duration ("for 3m 10s"). */
function since(iso) {
  return fmtDuration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000));
}

function tickTimes() {
  for (const t of document.querySelectorAll('time[data-rel]')) {
    const iso = t.getAttribute('datetime');
    const s = t.dataset.rel + (t.dataset.lasting ? since(iso) : relative(iso));
    if (t.textContent !== s) t.textContent = s;
  }
}

/* Epochs are ZooKeeper zxids (epoch << 32 | counter) or, standalone, small
 * numbers: shown as "5.12" or "21", with the raw number on hover. */
function fmtEpoch(e) {
  const n = Number(e);
  if (!isFinite(n)) return String(e);
  if (n < 2 ** 32) return String(n);
  return Math.floor(n / 2 ** 32) + '.' + (n % 2 ** 32);
}

/* --- links and times inside the API's sentences ----------------------------- */

const ISO_RE = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(?:\\.\\d+)?Z';
let linkRe = null, linkIds = '';

function nodeLink(id) {
  return el('a', { href: '#node=' + encodeURIComponent(id), class: 'nodelink', 'data-node': id, text: id });
}

/* msg with its ISO times as relative <time>s and the known node ids as
 * links to their views. */
function richText(msg) {
  msg = String(msg || '');
  const ids = (state.nodes || []).map((n) => n.id).sort((a, b) => b.length - a.length);
  const key = ids.join('\n');
  if (!linkRe || key !== linkIds) {
    linkIds = key;
    const esc = ids.map((i) => i.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    linkRe = new RegExp('(' + ISO_RE + ')' + (esc.length ? '|(?<![\\w-])(' + esc.join('|') + ')(?![\\w-])' : ''), 'g');
  }
  const out = [];
  let last = 0;
  for (const m of msg.matchAll(linkRe)) {
    out.push(msg.slice(last, m.index));
    out.push(m[1] ? timeEl(m[1]) : nodeLink(m[2]));
    last = m.index + m[0].length;
  }
  out.push(msg.slice(last));
  return out;
}

/* --- visibility, deadlines, contact ----------------------------------------- */

let visibleWaiters = [];
const controllers = new Set();

function whenVisible() {
  if (!document.hidden) return Promise.resolve();
  return new Promise((resolve) => visibleWaiters.push(resolve));
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    for (const c of controllers) c.abort();
  } else {
    const w = visibleWaiters;
    visibleWaiters = [];
    w.forEach((f) => f());
  }
  renderConn();
});

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/* fetch with a deadline: rejects with a TimeoutError past ms. */
async function fetchBy(url, opts, ms, outer) {
  const ctl = new AbortController();
  controllers.add(ctl);
  let timedOut = false;
  const t = setTimeout(() => { timedOut = true; ctl.abort(); }, ms);
  const onOuter = () => ctl.abort();
  if (outer) outer.addEventListener('abort', onOuter);
  try {
    return await fetch(url, Object.assign({ signal: ctl.signal, cache: 'no-store' }, opts));
  } catch (e) {
    if (timedOut) {
      const te = new Error(url + ': no answer within ' + ms / 1000 + 's');
      te.name = 'TimeoutError';
      throw te;
    }
    throw e;
  } finally {
    clearTimeout(t);
    controllers.delete(ctl);
    if (outer) outer.removeEventListener('abort', onOuter);
  }
}

function contact() {
  const wasLost = connState() === 'lost';
  state.lastContact = Date.now();
  state.heartbeatFailing = false;
  if (wasLost) kickReads();
}

function lost() {
  return state.lastContact > 0 && state.heartbeatFailing && Date.now() - state.lastContact > LOST_AFTER_MS;
}

/* live | stale | lost, as <body data-connection> says. */
function connState() {
  if (lost()) return 'lost';
  if (state.needToken || document.hidden || state.failing.size || state.noLeader || !state.lastOk) return 'stale';
  return 'live';
}

function renderConn() {
  const c = $('conn');
  const conn = connState();
  const now = Date.now();
  if (conn === 'live') state.staleSince = 0;
  else if (!state.staleSince) state.staleSince = state.lastOk || now;
  let st, text;
  const since = (t) => new Date(t).toLocaleTimeString([], { hour12: false }) + ' (' + fmtDuration((now - t) / 1000) + ' ago)';
  if (state.going) {
    st = 'stale';
    text = 'going to the leader at ' + state.going;
  } else if (state.needToken) {
    st = 'locked';
    text = 'needs the API token';
  } else if (document.hidden) {
    st = 'paused';
    text = 'paused while hidden';
  } else if (conn === 'lost') {
    st = 'lost';
    text = 'lost contact with ' + location.host + ' since ' + since(state.lastContact) +
      '; showing what was known then; looking for the leader';
  } else if (state.noLeader) {
    st = 'stale';
    text = 'no leader: an election is under way' + (state.lastOk ? '; shown as of ' + since(state.lastOk) : '');
  } else if (state.failing.size) {
    st = 'stale';
    const wait = Math.max(0, Math.ceil((state.retryAt - now) / 1000));
    text = 'stale' + (state.lastOk ? ' since ' + since(state.lastOk) : '') + ': a read failed, ' +
      (wait ? 'retrying in ' + wait + 's' : 'retrying');
  } else if (state.lastOk) {
    st = 'live';
    text = 'live';
  } else {
    st = 'connecting';
    text = 'connecting…';
  }
  if (c.dataset.state !== st) c.dataset.state = st;
  if (c.textContent !== text) c.textContent = text;
  if (document.body.dataset.connection !== conn) document.body.dataset.connection = conn;
}

/* --- the aggregators it knows, and the leader ---------------------------------- */

function hashParams() {
  return new URLSearchParams(location.hash.replace(/^#/, ''));
}

const known = new Set();
function knowAggregators(list) {
  for (const a of String(list || '').split(',')) {
    const h = a.trim();
    if (/^[A-Za-z0-9.:[\]_-]{1,300}$/.test(h)) known.add(h);
  }
}
knowAggregators(location.host);
knowAggregators(new URLSearchParams(location.search).get('aggregators'));
knowAggregators(hashParams().get('aggr'));

/* A leader listening on 0.0.0.0 or [::] is reached under the host name the
 * browser used. */
function reachable(http, viaHost) {
  const m = /^(0\.0\.0\.0|\[::\]):(\d+)$/.exec(http);
  if (!m) return http;
  const name = viaHost.replace(/:\d+$/, '');
  return name + ':' + m[2];
}

function goLeader(http) {
  if (!http || http === location.host || state.going) return;
  state.going = http;
  knowAggregators(http);
  const p = hashParams();
  p.set('aggr', [...known].join(','));
  $('conn').textContent = 'going to the leader at ' + http;
  location.replace(location.protocol + '//' + http + '/' + location.search + '#' + p.toString());
}

/* What an aggregator's /readyz says of the leader: its address, or null. */
function leaderFrom(j, host) {
  if (!j) return null;
  if (j.role === 'leader') return j.ready ? host : null;
  if (j.leader && j.leader.http) return reachable(j.leader.http, host);
  return null;
}

let heartbeatBusy = false, probeBusy = false;

async function heartbeat() {
  if (heartbeatBusy || document.hidden || state.going) return;
  heartbeatBusy = true;
  try {
    const r = await fetchBy('/readyz', { headers: { Accept: 'application/json' } }, HEARTBEAT_DEADLINE_MS);
    contact();
    let j = null;
    try { j = await r.json(); } catch (e) { /* not JSON: no word on the leader */ }
    if (j && j.leader && j.leader.http) knowAggregators(reachable(j.leader.http, location.host));
    const leader = leaderFrom(j, location.host);
    state.noLeader = !!j && j.role === 'follower' && !leader;
    if (leader && leader !== location.host) goLeader(leader);
  } catch (e) {
    if (e.name !== 'AbortError' || !document.hidden) state.heartbeatFailing = true;
  } finally {
    heartbeatBusy = false;
  }
  if (lost()) probeOthers();
  renderConn();
}

/* Lost, or here there is no leader: asks every other aggregator known. */
async function probeOthers() {
  if (probeBusy || state.going) return;
  probeBusy = true;
  try {
    const others = [...known].filter((h) => h !== location.host);
    const answers = await Promise.all(others.map(async (h) => {
      try {
        const r = await fetchBy(location.protocol + '//' + h + '/readyz', { mode: 'cors' }, HEARTBEAT_DEADLINE_MS);
        return leaderFrom(await r.json(), h);
      } catch (e) {
        return null;
      }
    }));
    const leader = answers.find((a) => a && a !== location.host);
    if (leader) goLeader(leader);
  } finally {
    probeBusy = false;
  }
}

/* Contact is back: the parked reads may be on a dead connection; read afresh. */
const kicks = new Set();
function kickReads() {
  for (const k of kicks) k();
}

/* --- the API token ----------------------------------------------------------- */

function stored(key) {
  try {
    return sessionStorage.getItem(key);
  } catch (e) {
    return null;
  }
}

let tokenWanted = null;  // the promise the reads wait on while the form shows

/* Shows the token form (once, however many reads were refused) and resolves
 * when a token is entered. used is the token the refused read carried: if
 * the token was changed since, the read just tries again. */
function needToken(used) {
  const now = stored(TOKEN_KEY);
  if (now && now !== used) return Promise.resolve();
  if (tokenWanted) return tokenWanted;
  if (now) sessionStorage.removeItem(TOKEN_KEY);
  $('auth-msg').textContent = now
    ? 'The aggregator refused that token. Enter the token of its http_token_file.'
    : 'This aggregator\'s API needs a token: the one in its http_token_file.';
  state.needToken = true;
  $('auth').hidden = false;
  renderConn();
  $('auth-token').focus();
  tokenWanted = new Promise((resolve) => {
    const form = $('auth-form');
    const submit = (ev) => {
      ev.preventDefault();
      const t = $('auth-token').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $('auth-token').value = '';
      $('auth').hidden = true;
      form.removeEventListener('submit', submit);
      state.needToken = false;
      tokenWanted = null;
      renderConn();
      renderDetail();
      resolve();
    };
    form.addEventListener('submit', submit);
  });
  return tokenWanted;
}

function httpError(path, r, token) {
  const e = new Error(path + ': HTTP ' + r.status);
  e.status = r.status;
  e.token = token;
  e.retryAfter = Number(r.headers.get('Retry-After')) || 0;
  return e;
}

/* A read of this aggregator's API. A redirect (a follower's 307) is not
 * followed: it is an error with status 307, and the heartbeat finds the
 * leader. */
async function getJSON(path, signal, deadline) {
  const token = stored(TOKEN_KEY);
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetchBy(path, { headers, redirect: 'manual' }, deadline || PLAIN_DEADLINE_MS, signal);
  if (r.type === 'opaqueredirect') {
    contact();
    const e = new Error(path + ': redirected to the leader');
    e.status = 307;
    throw e;
  }
  contact();
  if (!r.ok) throw httpError(path, r, token);
  return { body: await r.json(), index: r.headers.get('X-Muster-Index') };
}

/* One blocking-read loop: path (without index/wait), onData(body). Returns a
 * handle whose stop() ends it. */
function watch(name, path, onData) {
  let stopped = false, ctl = null, index = null, backoff = 0, kicked = false;
  const kick = () => { kicked = true; index = null; if (ctl) ctl.abort(); };
  kicks.add(kick);
  (async () => {
    while (!stopped) {
      await whenVisible();
      if (stopped) break;
      ctl = new AbortController();
      kicked = false;
      const sep = path.includes('?') ? '&' : '?';
      const url = index === null ? path : path + sep + 'index=' + encodeURIComponent(index) + '&wait=' + WAIT;
      try {
        const { body, index: next } = await getJSON(url, ctl.signal, WAIT_MS + READ_MARGIN_MS);
        backoff = 0;
        state.lastOk = Date.now();
        state.failing.delete(name);
        if (index === null || next !== index) onData(body);
        index = next;
        renderConn();
      } catch (e) {
        if (stopped) break;
        if (e.name === 'AbortError' && (document.hidden || kicked)) continue;
        if (e.status === 401) {
          index = null;
          await needToken(e.token);
          continue;
        }
        if (e.status === 404) { onData(null); index = null; }
        if (e.status === 307 || e.status === 503) heartbeat();
        // A 503 (an election, an expired lease) says when to ask again.
        backoff = e.retryAfter ? e.retryAfter * 1000 : Math.min(backoff ? backoff * 2 : 1000, e.status ? 2000 : 30000);
        state.failing.add(name);
        state.retryAt = Date.now() + backoff;
        index = null;  // the server may be a new leader: read afresh
        renderConn();
        await Promise.race([sleep(backoff), new Promise((resolve) => { const k = () => { kicks.delete(k); resolve(); }; kicks.add(k); })]);
      }
    }
    kicks.delete(kick);
  })();
  return { stop() { stopped = true; kicks.delete(kick); if (ctl) ctl.abort(); } };
}

/* --- node details: fetched when a node's list entry or reasons change ------ */

const detailQueue = [];
let detailRunning = 0;
const listSig = new Map();
const reasonSig = new Map();

function wantDetail(id) {
  if (id === state.selected) return;  // its own blocking read keeps it
  if (!detailQueue.includes(id)) detailQueue.push(id);
  pumpDetails();
}

function pumpDetails() {
  while (detailRunning < 2 && detailQueue.length && !document.hidden) {
    const id = detailQueue.shift();
    detailRunning++;
    getJSON('/v1/nodes/' + encodeURIComponent(id))
      .then(({ body }) => { state.details.set(id, { node: body, at: Date.now() }); renderNodes(); renderTriage(); })
      .catch((e) => { if (e.status === 401) needToken(e.token).then(() => wantDetail(id)); })
      .finally(() => { detailRunning--; pumpDetails(); });
  }
}
document.addEventListener('visibilitychange', pumpDetails);

/* --- the verdict, root causes and reasons ------------------------------------ */

/* The verdict's real start: a new leader may record the verdict it found
 * again, at its election; the cluster history (copied from leader to
 * leader) holds when the verdict began. */
function verdictSince(h) {
  let since = h.since;
  for (const c of state.cluster) {  // newest first
    if (c.verdict !== h.verdict) break;
    if (!since || c.at < since) since = c.at;
  }
  return since;
}

function renderVerdictSince() {
  const h = state.health;
  const since = h && verdictSince(h);
  $('verdict-since').replaceChildren(...(since ? [timeEl(since, 'since ')] : []));
}

function causeKey(node, comp) {
  return node + '\n' + (comp || '');
}

function renderHealth() {
  const h = state.health;
  if (!h) return;
  const v = h.verdict || 'unknown';
  $('verdict').dataset.verdict = v;
  const w = $('verdict-word');
  w.className = 'word s-' + v;
  w.textContent = v;
  document.title = 'muster: ' + v;
  renderVerdictSince();
  const counts = [];
  for (const [role, byVerdict] of Object.entries(h.counts || {})) {
    counts.push((ROLE_LABEL[role] || role) + ': ' + Object.entries(byVerdict).map(([k, n]) => n + ' ' + k).join(', '));
  }
  $('counts').textContent = counts.join(' · ');
  $('leader').replaceChildren(...(h.leader ? ['leader ', el('strong', { text: h.leader.id }), ' ',
    el('span', { class: 'epoch', title: 'epoch ' + h.leader.epoch + ' (ZooKeeper zxid: the election, then the change)',
      text: 'epoch ' + fmtEpoch(h.leader.epoch) })] : []));

  // Root causes, each said once: the message holds the output, and a
  // reason about a root cause repeats it.
  const causes = h.root_causes || [];
  const causeKeys = new Set(causes.map((c) => causeKey(c.node, c.component)));
  $('causes-box').hidden = !causes.length;
  $('causes').replaceChildren(...causes.map((c) => el('li', { class: 'cause', 'data-node': c.node, 'data-component': c.component },
    word(c.state), ' ', richText(c.message || [c.component, 'on', c.node].join(' ')),
    c.output && !(c.message || '').includes(c.output) ? el('div', { class: 'out', text: 'output: ' + c.output }) : null)),
  h.root_causes_total > causes.length ? el('li', { class: 'muted', text: 'and ' + (h.root_causes_total - causes.length) + ' more' }) : []);

  // Reasons: problems first by severity; components merely starting are
  // one line (boot noise), opened on demand.
  const seen = new Set();
  const reasons = (h.reasons || []).filter((r) => {
    if (r.component && causeKeys.has(causeKey(r.node, r.component))) return false;
    if (seen.has(r.message)) return false;
    seen.add(r.message);
    return true;
  });
  const starting = reasons.filter((r) => r.state === 'starting' && r.component);
  const problems = reasons.filter((r) => !(r.state === 'starting' && r.component))
    .sort((a, b) => severity(a.state) - severity(b.state));
  const items = problems.map((r) => el('li', { class: 'reason', 'data-node': r.node, 'data-state': r.state },
    word(r.state), ' ', richText(r.message)));
  if (starting.length) {
    const nodes = new Set(starting.map((r) => r.node));
    const label = starting.length + ' component' + (starting.length === 1 ? '' : 's') + ' starting on ' +
      nodes.size + ' node' + (nodes.size === 1 ? '' : 's');
    items.push(el('li', { class: 'reason starting-group', 'data-count': String(starting.length), 'data-nodes': String(nodes.size) },
      el('details', {}, el('summary', {}, word('starting'), ' ', label),
        el('ul', { class: 'grouped' }, [...nodes].map((n) => el('li', {}, nodeLink(n), ': ',
          starting.filter((r) => r.node === n).map((r) => r.component).join(', ')))))));
  }
  const more = (h.reasons_total || 0) - (h.reasons || []).length;
  if (more > 0) items.push(el('li', { class: 'muted', text: 'and ' + more + ' more' }));
  $('reasons-box').hidden = !items.length;
  $('reasons').replaceChildren(...items);

  // Nodes whose problems changed: their components are re-read.
  const byNode = new Map();
  for (const r of [...(h.reasons || []), ...causes]) {
    if (!r.node) continue;
    byNode.set(r.node, (byNode.get(r.node) || '') + r.message + '\n');
  }
  for (const n of state.nodes || []) {
    const sig = byNode.get(n.id) || '';
    if (reasonSig.has(n.id) && reasonSig.get(n.id) !== sig) wantDetail(n.id);
    reasonSig.set(n.id, sig);
  }
  renderTriage();
}

/* --- nodes ------------------------------------------------------------------- */

function progressOf(n) {
  const d = state.details.get(n.id);
  const st = Object.assign({}, n.startup || {}, d && d.node && d.node.startup ? d.node.startup : {});
  // The list's summary is the freshest for percent/stage/state.
  if (n.startup) Object.assign(st, { percent: n.startup.percent, stage: n.startup.stage, state: n.startup.state });
  const tick = d ? (Date.now() - d.at) / 1000 : 0;
  const running = st.state !== 'done';
  return {
    st,
    stages: (d && d.node && d.node.startup && d.node.startup.stages) || null,
    elapsed: st.elapsed !== undefined && st.elapsed !== null ? st.elapsed + (running ? tick : 0) : null,
    eta: st.eta_seconds !== undefined && st.eta_seconds !== null ? Math.max(0, st.eta_seconds - (running ? tick : 0)) : null,
  };
}

/* An unreachable node's bar is what was known when it went silent: drawn
 * faded and hatched, and said so, never as current. */
function isStale(n) {
  return n.verdict === 'unreachable' || n.verdict === 'missing';
}

function progressBar(n) {
  const p = progressOf(n);
  const stale = isStale(n);
  const pct = p.st.percent === undefined || p.st.percent === null ? 0 : p.st.percent;
  const bar = el('div', { class: 'bar' + (stale ? ' stale' : ''), role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
    'aria-valuenow': String(pct), 'aria-label': 'startup of ' + n.id + (stale ? ' (last known)' : ''),
    'data-percent': String(pct), 'data-stale': stale ? 'true' : null });
  if (p.stages && p.stages.length) {
    for (const s of p.stages) {
      bar.append(el('span', { class: 'seg ' + s.state, 'data-stage': s.name, 'data-state': s.state,
        title: s.name + ': ' + s.state.replace('_', ' ') + (s.duration ? ' in ' + fmtDuration(s.duration) : '') }));
    }
  } else {
    bar.classList.add('nostages');
    const fill = el('span', { class: 'seg fill' });
    fill.style.width = pct + '%';  // CSSOM, which the CSP allows (a style attribute it does not)
    bar.append(fill, el('span', { class: 'seg' }));
  }
  const late = p.st.late || p.st.state === 'late';
  const waiting = p.st.waiting_on && p.st.waiting_on.length ? p.st.waiting_on : null;
  const parts = [];
  if (stale) parts.push('last known');
  if (p.st.state === 'done') parts.push('started');
  else if (p.st.stage) parts.push('stage ' + p.st.stage + (p.st.state ? ' (' + String(p.st.state).replace('_', ' ') + ')' : ''));
  parts.push(pct + '%');
  if (!stale && p.st.state !== 'done' && p.eta !== null) parts.push('ETA ' + fmtDuration(p.eta));
  if (!stale && p.elapsed !== null) parts.push((p.st.state === 'done' ? 'took ' : 'elapsed ') + fmtDuration(p.elapsed));
  const text = el('div', { class: 'progress-text' }, parts.join(' · '),
    stale && n.last_seen ? [' · ', timeEl(n.last_seen, 'last seen ')] : null,
    !stale && waiting ? ' · waiting on ' + (Array.isArray(waiting) ? waiting.map(fmtWaiting).join(', ') : fmtWaiting(waiting)) : '',
    !stale && late ? [' · ', el('span', { class: 'late-tag', text: 'LATE' })] : '');
  return el('div', { class: 'progress' }, bar, text);
}

function fmtWaiting(w) {
  if (typeof w === 'string') return w;
  if (w && typeof w === 'object') return [w.component, w.node].filter(Boolean).join(' on ') || JSON.stringify(w);
  return String(w);
}

function renderNodes() {
  if (!state.nodes) return;
  const groups = new Map();
  for (const n of state.nodes) {
    const r = n.role || 'other';
    if (!groups.has(r)) groups.set(r, []);
    groups.get(r).push(n);
  }
  const roles = [...groups.keys()].sort((a, b) => {
    const ia = ROLE_ORDER.indexOf(a), ib = ROLE_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const out = roles.map((role) => el('div', { class: 'group', 'data-role': role },
    el('h3', { text: (ROLE_LABEL[role] || role) + ' (' + groups.get(role).length + ')' }),
    el('ul', { class: 'nodelist' }, groups.get(role).sort((a, b) => a.id.localeCompare(b.id)).map((n) =>
      el('li', { class: 'node' + (isStale(n) ? ' stale' : ''), 'data-node': n.id, 'data-verdict': n.verdict,
        'aria-current': state.selected === n.id ? 'true' : null },
        el('button', { type: 'button', class: 'open', 'aria-label': 'open node ' + n.id, onclick: () => select(n.id) },
          el('span', { class: 'id', text: n.id }), word(n.verdict),
          n.connected === false && !isStale(n) ? el('span', { class: 'muted', text: ' · not connected' }) : null,
          n.maintenance ? el('span', { class: 'muted', text: ' · in maintenance' }) : null,
          n.hostname && n.hostname !== n.id ? el('span', { class: 'muted', text: ' · ' + n.hostname }) : null),
        progressBar(n))))));
  if (!out.length) out.push(el('p', { class: 'muted', text: 'no node has reported yet' }));
  const focusedNode = document.activeElement && document.activeElement.closest && document.activeElement.closest('.node');
  const refocus = focusedNode ? focusedNode.dataset.node : null;
  $('groups').replaceChildren(...out);
  if (refocus) {
    const b = document.querySelector('.node[data-node="' + CSS.escape(refocus) + '"] button.open');
    if (b) b.focus();
  }
}

/* --- triage: every problem across the cluster, worst and oldest first ------- */

const PROBLEM = new Set(['unhealthy', 'unreachable', 'missing', 'late', 'warning', 'unknown']);

function problems() {
  const h = state.health || {};
  const causes = new Map((h.root_causes || []).map((c) => [causeKey(c.node, c.component), c]));
  const out = [];
  for (const n of state.nodes || []) {
    const d = state.details.get(n.id);
    const node = (d && d.node) || n;
    const reasons = node.reasons || [];
    const handled = (c) => (c && (c.maintenance || c.acknowledged)) || node.maintenance || null;
    const entry = (component, st, since, c) => {
      const cause = causes.get(causeKey(n.id, component));
      const r = reasons.find((x) => x.node === n.id && (x.component || null) === (component || null) && x.blocked_by && x.blocked_by.length);
      out.push({ node: n.id, component, state: st, since, cause, blockedBy: r ? r.blocked_by : null,
        maintenance: (c && c.maintenance) || node.maintenance || null, acknowledged: (c && c.acknowledged) || null,
        handled: !!handled(c) });
    };
    if (isStale(n)) entry(null, n.verdict, n.last_seen || n.since, null);
    else if (node.agent_fault) entry(null, 'unhealthy', node.agent_fault.since, null);
    // A component is a problem when the verdict names it (a failing state
    // the evaluation leaves out, like a profile's leader_component on every
    // master but the leader, is none) or an operator put it in maintenance.
    const named = new Set([...reasons, ...(node.root_causes || [])].filter((x) => x.node === n.id).map((x) => x.component));
    for (const c of node.components || []) {
      if (PROBLEM.has(c.state) && (named.has(c.name) || c.maintenance)) entry(c.name, c.state, c.since, c);
    }
  }
  return out.sort((a, b) => severity(a.state) - severity(b.state) ||
    (Date.parse(a.since) || Infinity) - (Date.parse(b.since) || Infinity) || a.node.localeCompare(b.node) ||
    String(a.component).localeCompare(String(b.component)));
}

function refList(refs) {
  return (refs || []).map((r, i) => [i ? ', ' : '', r.component ? r.component + ' on ' : '', nodeLink(r.node)]);
}

function renderTriage() {
  const all = problems();
  const list = state.hideHandled ? all.filter((p) => !p.handled) : all;
  const unhandled = all.filter((p) => !p.handled).length;
  $('triage-count').textContent = all.length ? unhandled + ' unhandled of ' + all.length : '';
  const body = list.map((p) => el('tr', { class: 'problem' + (p.handled ? ' handled' : ''), 'data-node': p.node,
    'data-component': p.component || '', 'data-state': p.state },
    el('td', {}, word(p.state)), el('td', {}, nodeLink(p.node)), el('td', { text: p.component || '(the node)' }),
    el('td', {}, timeEl(p.since, 'for ', true) || ''),
    el('td', {}, p.cause ? [el('strong', { text: 'root cause' }), p.cause.blocked_total ? ', blocks ' + p.cause.blocked_total : '']
      : p.blockedBy ? ['blocked by ', refList(p.blockedBy)] : ''),
    el('td', { class: 'operator opt' }, p.maintenance ? 'in maintenance: ' + p.maintenance.reason + ' (' + p.maintenance.by + ')' : '',
      p.acknowledged ? 'acknowledged: ' + p.acknowledged.reason + ' (' + p.acknowledged.by + ')' : '')));
  $('triage-table').hidden = !list.length;
  $('triage-rows').replaceChildren(...body);
  $('triage-empty').hidden = !!list.length;
  $('triage-empty').textContent = all.length ? 'every problem is handled' : 'no problems';
}

/* --- the node view ---------------------------------------------------------- */

/* Operator state (issue 19): who put a node or component in maintenance or
 * acknowledged it, why and until when; null when there is none. */
function operatorLine(what, e) {
  if (!e) return null;
  return el('div', { class: 'operator muted', 'data-operator': what },
    what + ': ' + e.reason + ' (by ' + e.by, e.until ? [', ', timeEl(e.until, 'until ')] : '', ')');
}

function operatorToken() {
  return stored(ADMIN_KEY) || stored(TOKEN_KEY);
}

/* A write (docs/api.md's operator routes): PUT or DELETE with the token the
 * tab holds. Says how it went in the node view. */
async function operate(method, path, body) {
  const token = operatorToken();
  if (!token) return;
  const headers = { Accept: 'application/json', Authorization: 'Bearer ' + token };
  const who = stored(OPERATOR_KEY);
  if (who) headers['X-Muster-Operator'] = who;
  if (body) headers['Content-Type'] = 'application/json';
  const msg = $('op-result');
  try {
    const r = await fetchBy(path, { method, headers, body: body ? JSON.stringify(body) : undefined }, PLAIN_DEADLINE_MS);
    let j = null;
    try { j = await r.json(); } catch (e) { /* empty */ }
    if (msg) {
      msg.dataset.ok = r.ok ? 'true' : 'false';
      msg.textContent = r.ok ? 'done' : 'refused (' + r.status + '): ' + ((j && j.error && j.error.message) || r.statusText);
    }
    if (r.ok && method === 'DELETE' && !path.includes('/components/') && !/\/(maintenance|ack)$/.test(path)) select(null);
  } catch (e) {
    if (msg) { msg.dataset.ok = 'false'; msg.textContent = 'failed: ' + e.message; }
  }
}

let opForm = null;  // {kind, component}: the form being filled

function opPath(id, comp, what) {
  return '/v1/nodes/' + encodeURIComponent(id) + (comp ? '/components/' + encodeURIComponent(comp) : '') + (what ? '/' + what : '');
}

function actionsFor(n, c) {
  if (!operatorToken()) return null;
  const b = (label, cls, fn) => el('button', { type: 'button', class: 'act ' + cls, onclick: fn, text: label });
  const open = (kind) => () => { opForm = { kind, component: c ? c.name : null }; renderDetail(); };
  const del = (what) => () => operate('DELETE', opPath(n.id, c && c.name, what));
  if (c) {
    return el('div', { class: 'actions' },
      c.maintenance ? b('end maintenance', 'maint-end', del('maintenance')) : b('maintenance…', 'maint', open('maintenance')),
      c.acknowledged ? b('clear ack', 'ack-clear', del('ack'))
        : c.state !== 'healthy' ? b('acknowledge…', 'ack', open('ack')) : null);
  }
  return el('div', { class: 'actions' },
    n.maintenance ? b('end maintenance', 'maint-end', del('maintenance')) : b('maintenance…', 'maint', open('maintenance')),
    n.connected === false ? b('forget…', 'forget', open('forget')) : null);
}

function opFormEl(n) {
  if (!opForm) return null;
  const { kind, component } = opForm;
  const what = (component ? component + ' on ' : '') + n.id;
  const title = kind === 'ack' ? 'Acknowledge ' + what : kind === 'forget' ? 'Forget ' + n.id : 'Maintenance of ' + what;
  const reason = el('input', { id: 'op-reason', name: 'reason', maxlength: '256', required: kind !== 'forget',
    placeholder: kind === 'forget' ? '' : 'why', autocomplete: 'off' });
  const duration = kind === 'maintenance' ? el('input', { id: 'op-duration', name: 'duration', placeholder: 'e.g. 2h (empty: until ended)', autocomplete: 'off' }) : null;
  const who = el('input', { id: 'op-who', name: 'who', maxlength: '64', value: stored(OPERATOR_KEY) || '', placeholder: 'your name', autocomplete: 'off' });
  const submit = (ev) => {
    ev.preventDefault();
    const name = who.value.trim();
    if (name && /^[A-Za-z0-9._@-]{1,64}$/.test(name)) sessionStorage.setItem(OPERATOR_KEY, name);
    opForm = null;
    if (kind === 'forget') operate('DELETE', opPath(n.id));
    else {
      const body = { reason: reason.value.trim() };
      if (duration && duration.value.trim()) body.duration = duration.value.trim();
      operate('PUT', opPath(n.id, component, kind), body);
    }
    renderDetail();
  };
  return el('form', { class: 'opform', 'data-kind': kind, onsubmit: submit },
    el('strong', { text: title }),
    kind === 'forget' ? el('span', { class: 'muted', text: 'removes the node from every view; its history stays' }) : null,
    kind !== 'forget' ? [el('label', { for: 'op-reason', text: 'reason' }), reason] : null,
    duration ? [el('label', { for: 'op-duration', text: 'for' }), duration] : null,
    el('label', { for: 'op-who', text: 'operator' }), who,
    el('button', { type: 'submit', class: 'send', text: kind === 'forget' ? 'Forget' : 'Send' }),
    el('button', { type: 'button', onclick: () => { opForm = null; renderDetail(); }, text: 'Cancel' }));
}

/* Without a token the page offers no action, but a way to give one. */
function adminTokenEl() {
  if (operatorToken()) return null;
  const input = el('input', { id: 'admin-token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  return el('details', { class: 'admin' }, el('summary', { text: 'Operator actions need a token' }),
    el('form', { onsubmit: (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      sessionStorage.setItem(ADMIN_KEY, t);
      renderDetail();
    } }, el('label', { for: 'admin-token', text: 'admin token (or the API token when there is no admin token)' }), input,
    el('button', { type: 'submit', text: 'Use token' })),
    el('p', { class: 'muted', text: 'Kept in this tab only, sent only to this aggregator with the writes.' }));
}

function renderDetail() {
  const box = $('detail');
  const id = state.selected;
  if (!id) { box.hidden = true; return; }
  box.hidden = false;
  $('detail-h').textContent = 'Node ' + id;
  const d = state.details.get(id);
  const n = d && d.node;
  const body = $('detail-body');
  if (!n) { body.replaceChildren(el('p', { class: 'muted', text: d === undefined ? 'loading…' : 'no such node' })); return; }
  const focused = document.activeElement && body.contains(document.activeElement) && document.activeElement.id;
  const comps = (n.components || []).slice().sort((a, b) => severity(a.state) - severity(b.state) || a.name.localeCompare(b.name));
  const stages = (n.startup && n.startup.stages) || [];
  const causes = n.root_causes || [];
  const result = $('op-result');
  body.replaceChildren(
    el('p', {}, word(n.verdict), ' ', n.role || '', n.hostname ? ' · ' + n.hostname : '',
      n.since ? [' · ', timeEl(n.since, 'since ')] : '', n.last_seen ? [' · ', timeEl(n.last_seen, 'last seen ')] : '',
      n.connected === false ? ' · not connected' : '', n.startup && n.startup.cause ? ' · began with a ' + n.startup.cause : ''),
    operatorLine('in maintenance', n.maintenance),
    actionsFor(n, null),
    opFormEl(n),
    result || el('p', { id: 'op-result', class: 'muted', role: 'status', 'aria-live': 'polite' }),
    adminTokenEl(),
    causes.length ? el('div', {}, el('h3', { text: 'Root causes' }),
      el('ul', { class: 'causes' }, causes.map((c) => el('li', {}, word(c.state), ' ', richText(c.message || c.component))))) : null,
    el('h3', { text: 'Components' }),
    el('div', { class: 'tablewrap' }, el('table', { class: 'components' },
      el('thead', {}, el('tr', {}, el('th', { text: 'component' }), el('th', { text: 'state' }),
        el('th', { text: 'since' }), el('th', { class: 'opt', text: 'check' }), el('th', { class: 'opt', text: 'health' }),
        el('th', { text: 'output' }))),
      el('tbody', {}, comps.map((c) => el('tr', { 'data-component': c.name, 'data-state': c.state },
        el('td', { title: c.description || null, text: c.display_name && c.display_name !== c.name ? c.name + ' (' + c.display_name + ')' : c.name }),
        el('td', {}, word(c.state)),
        el('td', {}, timeEl(c.since)), el('td', { class: 'opt', text: c.check || '' }),
        el('td', { class: 'opt', text: c.health || '' }), el('td', { class: 'out', text: c.output || '' },
          operatorLine('in maintenance', c.maintenance), operatorLine('acknowledged', c.acknowledged), actionsFor(n, c))))))),
    stages.length ? el('h3', { text: 'Startup stages' }) : null,
    stages.length ? el('div', { class: 'tablewrap' }, el('table', { class: 'stages' },
      el('thead', {}, el('tr', {}, el('th', { text: 'stage' }), el('th', { text: 'state' }),
        el('th', { text: 'reached' }), el('th', { class: 'opt', text: 'took' }), el('th', { class: 'opt', text: 'typical' }))),
      el('tbody', {}, stages.map((s) => el('tr', { 'data-stage': s.name },
        el('td', { text: s.name }), el('td', {}, word(s.state)), el('td', {}, timeEl(s.reached)),
        el('td', { class: 'opt', text: fmtDuration(s.duration) }), el('td', { class: 'opt', text: fmtDuration(s.typical_seconds) })))))) : null);
  if (focused) { const f = $(focused); if (f) f.focus(); }
}

/* --- history ------------------------------------------------------------------ */

/* The colour word a reachability event is drawn with. */
const REACH_WORD = { connected: 'healthy', reachable: 'healthy', disconnected: 'degraded', unreachable: 'unreachable' };

/* The nodes' reachability events are read whenever the history's blocking
 * read returns (it returns on every change), rather than parked on a read of
 * their own: the browser's six connections per host stay enough. */
let reachReading = false;
function readReach() {
  if (reachReading || document.hidden) return;
  reachReading = true;
  getJSON('/v1/history/nodes?limit=' + HISTORY_LIMIT)
    .then(({ body }) => { state.reach = (body && body.events) || []; renderHistory(); })
    .catch(() => {})
    .finally(() => { reachReading = false; });
}

/* How long the state a change ends had lasted: the previous change of the
 * same series (newest first), or null. */
function lasted(list, i, same) {
  for (let j = i + 1; j < list.length; j++) if (same(list[j])) return (Date.parse(list[i].at) - Date.parse(list[j].at)) / 1000;
  return null;
}

function renderHistory() {
  const items = [];
  state.cluster.forEach((c, i) => {
    const d = lasted(state.cluster, i, () => true);
    const prev = state.cluster[i + 1];
    items.push({ at: c.at, li: el('li', { class: 'cluster' }, timeEl(c.at),
      el('span', {}, 'cluster ', word(c.verdict)),
      prev && d !== null ? el('span', { class: 'muted dur', text: 'after ' + fmtDuration(d) + ' ' + prev.verdict }) : null) });
  });
  for (const e of state.reach) {
    items.push({ at: e.at, li: el('li', { class: 'reach', 'data-event': e.event, 'data-node': e.node }, timeEl(e.at),
      el('span', {}, nodeLink(e.node), ' ', el('span', { class: 'word s-' + (REACH_WORD[e.event] || 'unknown'), text: e.event })),
      e.detail || e.peer ? el('span', { class: 'muted', text: e.detail || e.peer }) : null) });
  }
  state.history.forEach((c, i) => {
    const d = c.to === 'healthy' && c.from !== 'healthy'
      ? lasted(state.history, i, (x) => x.node === c.node && x.component === c.component) : null;
    items.push({ at: c.at, li: el('li', { class: 'change' }, timeEl(c.at),
      el('span', {}, nodeLink(c.node), ' ' + c.component + ': ', word(c.from), ' → ', word(c.to)),
      d !== null ? el('span', { class: 'muted dur', text: 'outage ' + fmtDuration(d) }) : null,
      c.output ? el('span', { class: 'muted', text: c.output }) : null) });
  });
  items.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  const list = items.slice(0, HISTORY_LIMIT).map((i) => i.li);
  if (!list.length) list.push(el('li', { class: 'muted', text: 'no changes recorded yet' }));
  $('timeline').replaceChildren(...list);
}

/* --- selection and the address ------------------------------------------------ */

let detailWatch = null;

function setHash(id) {
  const p = hashParams();
  if (id) p.set('node', id); else p.delete('node');
  const s = p.toString();
  return s ? '#' + s.replace(/%2C/g, ',') : '';
}

function select(id, fromHash) {
  if (state.selected === id) return;
  state.selected = id;
  opForm = null;
  const r = $('op-result');
  if (r) r.remove();
  if (detailWatch) { detailWatch.stop(); detailWatch = null; }
  if (id) {
    detailWatch = watch('node', '/v1/nodes/' + encodeURIComponent(id), (body) => {
      state.details.set(id, body ? { node: body, at: Date.now() } : null);
      renderDetail();
      renderNodes();
      renderTriage();
    });
  }
  if (!fromHash) {
    const h = setHash(id);
    if (location.hash !== h) history.pushState(null, '', h || location.pathname + location.search);
  }
  renderDetail();
  renderNodes();
  if (id) $('detail').focus();
}

function fromHash() {
  const id = hashParams().get('node');
  select(id || null, true);
}

window.addEventListener('popstate', fromHash);
window.addEventListener('hashchange', fromHash);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && state.selected) {
    const id = state.selected;
    select(null);
    const b = document.querySelector('.node[data-node="' + CSS.escape(id) + '"] button.open');
    if (b) b.focus();
  }
});

/* --- start ----------------------------------------------------------------- */

function start() {
  $('detail-close').addEventListener('click', () => select(null));
  $('hide-handled').addEventListener('change', (e) => { state.hideHandled = e.target.checked; renderTriage(); });
  watch('health', '/v1/health', (body) => { state.health = body; renderHealth(); });
  watch('cluster', '/v1/history/cluster?limit=' + HISTORY_LIMIT, (body) => {
    state.cluster = (body && body.changes) || [];
    renderHistory();
    renderVerdictSince();
  });
  watch('history', '/v1/history?limit=' + HISTORY_LIMIT, (body) => {
    state.history = (body && body.changes) || [];
    renderHistory();
    // The writer commits an event a moment after the publish that woke us.
    readReach();
    setTimeout(readReach, 500);
  });
  watch('nodes', '/v1/nodes', (body) => {
    state.nodes = (body && body.nodes) || [];
    const seen = new Set();
    for (const n of state.nodes) {
      seen.add(n.id);
      const sig = JSON.stringify([n.verdict, n.startup, n.boot_id, n.connected, n.since, n.maintenance]);
      if (listSig.get(n.id) !== sig) {
        listSig.set(n.id, sig);
        wantDetail(n.id);
      }
    }
    for (const id of [...listSig.keys()]) if (!seen.has(id)) { listSig.delete(id); state.details.delete(id); }
    renderNodes();
    renderTriage();
    if (state.health) renderHealth();  // the node links in its sentences
  });
  fromHash();
  heartbeat();
  setInterval(heartbeat, HEARTBEAT_MS);
  // Elapsed, ETA and "ago" move with the clock between changes.
  setInterval(() => {
    if (document.hidden) return;
    renderConn();
    tickTimes();
    for (const li of document.querySelectorAll('.node')) {
      const n = state.nodes && state.nodes.find((x) => x.id === li.dataset.node);
      const old = li.querySelector('.progress');
      if (n && old) old.replaceWith(progressBar(n));
    }
  }, 1000);
}

start();
