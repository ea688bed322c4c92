/* muster dashboard: keeps itself current through the API's blocking reads
 * (?index=N&wait=30s, X-Muster-Index). A handful of long-polls at most
 * (health, nodes, history, the open node), so the browser's six connections
 * per host are never all parked. Node details, which hold the stages, are
 * fetched once when a node's entry in the list changes. Everything pauses
 * while the tab is hidden; a failing read backs off and the page says it is
 * stale. No external requests.
 *
 * When the aggregator has a bearer token (http_token_file) and answers 401,
 * the page asks for the token in a small form, keeps it in sessionStorage
 * (this tab only) and sends it as Authorization on every API read. */
'use strict';

const WAIT = '30s';
const ROLE_ORDER = ['master', 'agent', 'agent_public'];
const ROLE_LABEL = { master: 'Masters', agent: 'Agents', agent_public: 'Public agents' };
const HISTORY_LIMIT = 40;

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
  lastOk: 0,
  needToken: false,       // the token form is showing
};

const TOKEN_KEY = 'muster-token';

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
  return el('span', { class: 'word s-' + (s || 'unknown'), text: s || 'unknown' });
}

function fmtDuration(sec) {
  if (sec === null || sec === undefined || !isFinite(sec)) return '';
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return sec + 's';
  const m = Math.floor(sec / 60), s = sec % 60;
  if (m < 60) return m + 'm' + (s ? ' ' + s + 's' : '');
  const h = Math.floor(m / 60);
  return h + 'h' + (m % 60 ? ' ' + (m % 60) + 'm' : '');
}

function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleTimeString([], { hour12: false });
}

function ago(iso) {
  if (!iso) return '';
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return isFinite(s) ? fmtDuration(s) + ' ago' : '';
}

function timeEl(iso, text) {
  return el('time', { datetime: iso || null, title: iso || null, text: text || fmtTime(iso) });
}

/* --- visibility, back-off and staleness ----------------------------------- */

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

function renderConn() {
  const c = $('conn');
  let st, text;
  if (state.needToken) {
    st = 'locked';
    text = 'needs the API token';
  } else if (document.hidden) {
    st = 'paused';
    text = 'paused while hidden';
  } else if (state.failing.size) {
    st = 'stale';
    const wait = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    text = 'stale: connection lost' + (state.lastOk ? ', last update ' + fmtTime(new Date(state.lastOk).toISOString()) : '') +
      (wait ? ', retrying in ' + wait + 's' : ', retrying');
  } else if (state.lastOk) {
    st = 'live';
    text = 'live';
  } else {
    st = 'connecting';
    text = 'connecting…';
  }
  c.dataset.state = st;
  c.textContent = text;
  document.body.classList.toggle('stale', st === 'stale');
}

/* --- the API token ----------------------------------------------------------- */

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (e) {
    return null;
  }
}

let tokenWanted = null;  // the promise the reads wait on while the form shows

/* Shows the token form (once, however many reads were refused) and resolves
 * when a token is entered. used is the token the refused read carried: if
 * the token was changed since, the read just tries again. */
function needToken(used) {
  const now = storedToken();
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
      resolve();
    };
    form.addEventListener('submit', submit);
  });
  return tokenWanted;
}

async function getJSON(path, signal) {
  const token = storedToken();
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(path, { signal, cache: 'no-store', headers });
  if (!r.ok) {
    const e = new Error(path + ': HTTP ' + r.status);
    e.status = r.status;
    e.token = token;
    throw e;
  }
  return { body: await r.json(), index: r.headers.get('X-Muster-Index') };
}

/* One blocking-read loop: path (without index/wait), onData(body). Returns a
 * handle whose stop() ends it. */
function watch(name, path, onData) {
  let stopped = false, ctl = null, index = null, backoff = 0;
  (async () => {
    while (!stopped) {
      await whenVisible();
      if (stopped) break;
      ctl = new AbortController();
      controllers.add(ctl);
      const sep = path.includes('?') ? '&' : '?';
      const url = index === null ? path : path + sep + 'index=' + encodeURIComponent(index) + '&wait=' + WAIT;
      try {
        const { body, index: next } = await getJSON(url, ctl.signal);
        backoff = 0;
        state.lastOk = Date.now();
        if (state.failing.delete(name)) renderConn();
        if (index === null || next !== index) onData(body);
        index = next;
        renderConn();
      } catch (e) {
        if (stopped) break;
        if (e.name === 'AbortError' && document.hidden) continue;
        if (e.status === 401) {
          index = null;
          await needToken(e.token);
          continue;
        }
        if (e.status === 404) { onData(null); index = null; }
        backoff = Math.min(backoff ? backoff * 2 : 1000, 30000);
        state.failing.add(name);
        state.retryAt = Date.now() + backoff;
        index = null;  // the server may be a new leader: read afresh
        renderConn();
        await sleep(backoff);
      } finally {
        controllers.delete(ctl);
      }
    }
  })();
  return { stop() { stopped = true; if (ctl) ctl.abort(); } };
}

/* --- node details: fetched when a node's list entry changes ---------------- */

const detailQueue = [];
let detailRunning = 0;
const listSig = new Map();

function wantDetail(id) {
  if (!detailQueue.includes(id)) detailQueue.push(id);
  pumpDetails();
}

function pumpDetails() {
  while (detailRunning < 2 && detailQueue.length && !document.hidden) {
    const id = detailQueue.shift();
    detailRunning++;
    getJSON('/v1/nodes/' + encodeURIComponent(id))
      .then(({ body }) => { state.details.set(id, { node: body, at: Date.now() }); renderNodes(); })
      .catch((e) => { if (e.status === 401) needToken(e.token).then(() => wantDetail(id)); })
      .finally(() => { detailRunning--; pumpDetails(); });
  }
}
document.addEventListener('visibilitychange', pumpDetails);

/* --- rendering -------------------------------------------------------------- */

function renderHealth() {
  const h = state.health;
  if (!h) return;
  const v = h.verdict || 'unknown';
  $('verdict').dataset.verdict = v;
  const w = $('verdict-word');
  w.className = 'word s-' + v;
  w.textContent = v;
  document.title = 'muster: ' + v;
  $('verdict-since').textContent = h.since ? 'since ' + fmtTime(h.since) + ' (' + ago(h.since) + ')' : '';
  const counts = [];
  for (const [role, byVerdict] of Object.entries(h.counts || {})) {
    counts.push(role + ': ' + Object.entries(byVerdict).map(([k, n]) => n + ' ' + k).join(', '));
  }
  $('counts').textContent = counts.join(' · ');
  $('leader').textContent = h.leader ? 'leader ' + h.leader.id + ' (epoch ' + h.leader.epoch + ')' : '';

  const causes = h.root_causes || [];
  $('causes-box').hidden = !causes.length;
  $('causes').replaceChildren(...causes.map((c) => el('li', { class: 'cause', 'data-node': c.node, 'data-component': c.component },
    word(c.state), ' ', c.message || [c.component, 'on', c.node].join(' '),
    c.output ? el('div', { class: 'out', text: 'output: ' + c.output }) : null)));
  const reasons = h.reasons || [];
  $('reasons-box').hidden = !reasons.length;
  $('reasons').replaceChildren(...reasons.map((r) => el('li', { class: 'reason' }, word(r.state), ' ', r.message)));
}

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

function progressBar(n) {
  const p = progressOf(n);
  const pct = p.st.percent === undefined || p.st.percent === null ? 0 : p.st.percent;
  const bar = el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
    'aria-valuenow': String(pct), 'aria-label': 'startup of ' + n.id, 'data-percent': String(pct) });
  if (p.stages && p.stages.length) {
    for (const s of p.stages) {
      bar.append(el('span', { class: 'seg ' + s.state, 'data-stage': s.name, 'data-state': s.state,
        title: s.name + ': ' + s.state.replace('_', ' ') + (s.duration ? ' in ' + fmtDuration(s.duration) : '') }));
    }
  } else {
    bar.classList.add('nostages');
    bar.append(el('span', { class: 'seg fill', style: 'width:' + pct + '%' }), el('span', { class: 'seg' }));
  }
  const late = p.st.late || p.st.state === 'late';
  const waiting = p.st.waiting_on && p.st.waiting_on.length ? p.st.waiting_on : null;
  const parts = [];
  if (p.st.state === 'done') parts.push('started');
  else if (p.st.stage) parts.push('stage ' + p.st.stage + (p.st.state ? ' (' + String(p.st.state).replace('_', ' ') + ')' : ''));
  parts.push(pct + '%');
  if (p.st.state !== 'done' && p.eta !== null) parts.push('ETA ' + fmtDuration(p.eta));
  if (p.elapsed !== null) parts.push((p.st.state === 'done' ? 'took ' : 'elapsed ') + fmtDuration(p.elapsed));
  const text = el('div', { class: 'progress-text' }, parts.join(' · '),
    waiting ? ' · waiting on ' + (Array.isArray(waiting) ? waiting.map(fmtWaiting).join(', ') : fmtWaiting(waiting)) : '',
    late ? [' · ', el('span', { class: 'late-tag', text: 'LATE' })] : '');
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
      el('li', { class: 'node', 'data-node': n.id, 'data-verdict': n.verdict, 'aria-current': state.selected === n.id ? 'true' : null },
        el('button', { type: 'button', class: 'open', 'aria-label': 'open node ' + n.id, onclick: () => select(n.id) },
          el('span', { class: 'id', text: n.id }), word(n.verdict),
          n.connected === false ? el('span', { class: 'muted', text: ' · not connected' }) : null,
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

/* Operator state (issue 19): who put a node or component in maintenance or
 * acknowledged it, why and until when; null when there is none. */
function operatorLine(what, e) {
  if (!e) return null;
  return el('div', { class: 'operator muted', 'data-operator': what,
    text: what + ': ' + e.reason + ' (by ' + e.by + (e.until ? ', until ' + fmtTime(e.until) : '') + ')' });
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
  const comps = (n.components || []).slice().sort((a, b) => a.name.localeCompare(b.name));
  const stages = (n.startup && n.startup.stages) || [];
  const causes = n.root_causes || [];
  body.replaceChildren(
    el('p', {}, word(n.verdict), ' ', n.role || '', n.hostname ? ' · ' + n.hostname : '',
      n.since ? ' · since ' + fmtTime(n.since) : '', n.last_seen ? ' · last seen ' + ago(n.last_seen) : '',
      n.connected === false ? ' · not connected' : ''),
    operatorLine('in maintenance', n.maintenance),
    causes.length ? el('div', {}, el('h3', { text: 'Root causes' }),
      el('ul', { class: 'causes' }, causes.map((c) => el('li', {}, word(c.state), ' ', c.message || c.component)))) : null,
    el('h3', { text: 'Components' }),
    el('div', { class: 'tablewrap' }, el('table', { class: 'components' },
      el('thead', {}, el('tr', {}, el('th', { text: 'component' }), el('th', { text: 'state' }),
        el('th', { text: 'since' }), el('th', { class: 'opt', text: 'check' }), el('th', { class: 'opt', text: 'health' }),
        el('th', { text: 'output' }))),
      el('tbody', {}, comps.map((c) => el('tr', { 'data-component': c.name, 'data-state': c.state },
        el('td', { text: c.name }), el('td', {}, word(c.state)),
        el('td', {}, timeEl(c.since, c.since ? ago(c.since) : '')), el('td', { class: 'opt', text: c.check || '' }),
        el('td', { class: 'opt', text: c.health || '' }), el('td', { class: 'out', text: c.output || '' },
          operatorLine('in maintenance', c.maintenance), operatorLine('acknowledged', c.acknowledged))))))),
    stages.length ? el('h3', { text: 'Startup stages' }) : null,
    stages.length ? el('div', { class: 'tablewrap' }, el('table', { class: 'stages' },
      el('thead', {}, el('tr', {}, el('th', { text: 'stage' }), el('th', { text: 'state' }),
        el('th', { text: 'reached' }), el('th', { class: 'opt', text: 'took' }), el('th', { class: 'opt', text: 'typical' }))),
      el('tbody', {}, stages.map((s) => el('tr', { 'data-stage': s.name },
        el('td', { text: s.name }), el('td', {}, word(s.state)), el('td', {}, timeEl(s.reached)),
        el('td', { class: 'opt', text: fmtDuration(s.duration) }), el('td', { class: 'opt', text: fmtDuration(s.typical_seconds) })))))) : null);
}

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

function renderHistory() {
  const items = [];
  for (const c of state.cluster) {
    items.push({ at: c.at, li: el('li', { class: 'cluster' }, timeEl(c.at), el('span', {}, 'cluster ', word(c.verdict))) });
  }
  for (const e of state.reach) {
    items.push({ at: e.at, li: el('li', { class: 'reach', 'data-event': e.event, 'data-node': e.node }, timeEl(e.at),
      el('span', {}, e.node + ' ', el('span', { class: 'word s-' + (REACH_WORD[e.event] || 'unknown'), text: e.event })),
      e.detail || e.peer ? el('span', { class: 'muted', text: e.detail || e.peer }) : null) });
  }
  for (const c of state.history) {
    items.push({ at: c.at, li: el('li', {}, timeEl(c.at),
      el('span', {}, c.node + ' ' + c.component + ': ', word(c.from), ' → ', word(c.to)),
      c.output ? el('span', { class: 'muted', text: c.output }) : null) });
  }
  items.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  const list = items.slice(0, HISTORY_LIMIT).map((i) => i.li);
  if (!list.length) list.push(el('li', { class: 'muted', text: 'no changes recorded yet' }));
  $('timeline').replaceChildren(...list);
}

/* --- the node view -------------------------------------------------------- */

let detailWatch = null;

function select(id, fromHash) {
  if (state.selected === id) return;
  state.selected = id;
  if (detailWatch) { detailWatch.stop(); detailWatch = null; }
  if (id) {
    detailWatch = watch('node', '/v1/nodes/' + encodeURIComponent(id), (body) => {
      state.details.set(id, body ? { node: body, at: Date.now() } : null);
      renderDetail();
      renderNodes();
    });
  }
  if (!fromHash) {
    const h = id ? '#node=' + encodeURIComponent(id) : '#';
    if (location.hash !== h) history.pushState(null, '', id ? h : location.pathname);
  }
  renderDetail();
  renderNodes();
  if (id) $('detail').focus();
}

function fromHash() {
  const m = /^#node=(.+)$/.exec(location.hash);
  select(m ? decodeURIComponent(m[1]) : null, true);
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

/* A follower serves this page but not the data (its /v1/ reads redirect to
 * the leader, another origin): go to the leader's dashboard instead. */
async function followLeader() {
  try {
    const r = await fetch('/readyz', { cache: 'no-store' });
    const j = await r.json();
    if (j.role !== 'follower' || !j.leader || !j.leader.http) return false;
    let host = j.leader.http;
    const m = /^(0\.0\.0\.0|\[::\]):(\d+)$/.exec(host);
    if (m) host = location.hostname + ':' + m[2];
    $('conn').textContent = 'follower: going to the leader at ' + host;
    location.replace(location.protocol + '//' + host + '/' + location.hash);
    return true;
  } catch (e) {
    return false;
  }
}

function start() {
  $('detail-close').addEventListener('click', () => select(null));
  watch('health', '/v1/health', (body) => { state.health = body; renderHealth(); });
  watch('cluster', '/v1/history/cluster?limit=' + HISTORY_LIMIT, (body) => {
    state.cluster = (body && body.changes) || [];
    renderHistory();
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
      const sig = JSON.stringify([n.verdict, n.startup, n.boot_id, n.connected, n.since]);
      if (listSig.get(n.id) !== sig) {
        listSig.set(n.id, sig);
        if (n.id !== state.selected) wantDetail(n.id);
      }
    }
    for (const id of [...listSig.keys()]) if (!seen.has(id)) { listSig.delete(id); state.details.delete(id); }
    renderNodes();
  });
  fromHash();
  // Elapsed, ETA and "ago" move with the clock between changes.
  setInterval(() => {
    if (document.hidden) return;
    renderConn();
    if (state.health) $('verdict-since').textContent = state.health.since ? 'since ' + fmtTime(state.health.since) + ' (' + ago(state.health.since) + ')' : '';
    for (const li of document.querySelectorAll('.node')) {
      const n = state.nodes && state.nodes.find((x) => x.id === li.dataset.node);
      const old = li.querySelector('.progress');
      if (n && old) old.replaceWith(progressBar(n));
    }
  }, 1000);
}

followLeader().then((gone) => { if (!gone) start(); });
