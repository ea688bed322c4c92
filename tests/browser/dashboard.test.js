// The dashboard in Debian's Chromium, driven by playwright-core.
// Started by tests/system/test_dashboard.py, which runs a live aggregator with
// a simulated cluster and passes:
//   MUSTER_URL        the aggregator, http://127.0.0.1:PORT
//   MUSTER_MARKERS    <dir>/<node>/<component> marker files: a component is up
//                     while its marker exists
//   MUSTER_PLAN       JSON: nodes {id: role}, starting (a node part-way up),
//                     next_stages (its next stages' members), flap {node,
//                     component}, master_fail {node, component}
//   MUSTER_ARTIFACTS  where screenshots go
//   MUSTER_AGGR_PID   the aggregator's pid (frozen with SIGSTOP for the
//                     contact-lost test)
//   MUSTER_AGENT_PIDS JSON {node: pid}: PLAN.silent's agent is frozen to make
//                     its node unreachable
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const URL_ = process.env.MUSTER_URL;
const MARKERS = process.env.MUSTER_MARKERS;
const PLAN = JSON.parse(process.env.MUSTER_PLAN || '{}');
const ARTIFACTS = process.env.MUSTER_ARTIFACTS || fs.mkdtempSync(path.join(os.tmpdir(), 'shots-'));
const SCALE = Number(process.env.MUSTER_TIMEOUT_SCALE || 1);
const ORIGIN = new URL(URL_).origin;

let ctx, page, profileDir;
const requests = [];
const pageErrors = [];
const consoleErrors = [];
let outage = false;   // a test makes reads fail on purpose: the browser logs them
const AGGR_PID = Number(process.env.MUSTER_AGGR_PID || 0);
const AGENT_PIDS = JSON.parse(process.env.MUSTER_AGENT_PIDS || '{}');
const SEVERITY = ['unhealthy', 'unreachable', 'missing', 'late', 'failed', 'degraded', 'warning', 'unknown',
  'starting', 'maintenance', 'healthy'];

function shot(name) {
  return page.screenshot({ path: path.join(ARTIFACTS, name + '.png'), fullPage: true });
}

function touch(node, comp) {
  fs.mkdirSync(path.join(MARKERS, node), { recursive: true });
  fs.writeFileSync(path.join(MARKERS, node, comp), '');
}

function rm(node, comp) {
  fs.rmSync(path.join(MARKERS, node, comp), { force: true });
}

async function api(p) {
  const r = await fetch(URL_ + p);
  assert.equal(r.status, 200, p);
  return r.json();
}

async function until(fn, ms, what) {
  const deadline = Date.now() + ms * SCALE;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 25));
  }
}

before(async () => {
  assert.ok(URL_, 'MUSTER_URL is required');
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-'));
  ctx = await chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.MUSTER_CHROMIUM || '/usr/bin/chromium', headless: true,
    viewport: { width: 1200, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  ctx.on('request', (r) => requests.push(r.url()));
  page = ctx.pages()[0] || (await ctx.newPage());
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' && !outage) consoleErrors.push(m.text() + ' ' + JSON.stringify(m.location())); });
});

function conn() {
  return page.evaluate(() => document.body.dataset.connection);
}

after(async () => {
  try {
    if (page) await shot('final');
    if (ctx) await ctx.close();
  } finally {
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  }
});

test('loads and shows the verdict and every node, grouped by role', async () => {
  const resp = await page.goto(URL_ + '/');
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()['content-type'], /^text\/html/);
  assert.ok(resp.headers()['cache-control']);
  const h = await api('/v1/health');
  await page.waitForFunction((v) => document.getElementById('verdict-word').textContent === v, h.verdict,
    { timeout: 5000 * SCALE });
  for (const [id, role] of Object.entries(PLAN.nodes)) {
    const li = page.locator(`.group[data-role="${role}"] .node[data-node="${id}"]`);
    await li.waitFor({ timeout: 5000 * SCALE });
    // the state is a word, not only a colour
    assert.match(await li.locator('.word').first().textContent(), /^(healthy|starting|degraded|unhealthy|unknown|missing|warning)$/);
  }
  // stages as segments, once the details are in
  await page.locator(`.node[data-node="${PLAN.starting}"] .seg[data-stage]`).first().waitFor({ timeout: 5000 * SCALE });
  await page.waitForFunction(() => document.body.dataset.connection === 'live', null, { timeout: 5000 * SCALE });
  // a favicon of its own (no /favicon.ico 404), and epochs as numbers a person reads
  assert.equal(await page.getAttribute('link[rel="icon"]', 'href'), '/ui/favicon.svg');
  assert.equal((await fetch(URL_ + '/ui/favicon.svg')).status, 200);
  assert.match(await page.textContent('#leader .epoch'), /^epoch \d+(\.\d+)?$/);
  await shot('loaded');
});

test('groups the components merely starting into one line, problems first', async () => {
  // PLAN.starting is part-way up: its later components are starting.
  const h = await api('/v1/health');
  const starting = h.reasons.filter((r) => r.state === 'starting' && r.component);
  assert.ok(starting.length >= 2, 'components starting: ' + starting.length);
  const nodes = new Set(starting.map((r) => r.node)).size;
  const group = page.locator('#reasons li.starting-group');
  await page.waitForFunction(([n]) => {
    const g = document.querySelector('#reasons li.starting-group');
    return g && Number(g.dataset.count) === n;
  }, [starting.length], { timeout: 5000 * SCALE });
  const text = await group.locator('summary').textContent();
  assert.match(text, new RegExp(starting.length + ' components starting on ' + nodes + ' nodes?'));
  assert.equal(await page.locator('#reasons > li.reason:not(.starting-group)[data-state="starting"]').count(), 0);
  // the group is the last line: whatever else is wrong comes first
  assert.equal(await page.locator('#reasons > li.reason').last().getAttribute('class'), 'reason starting-group');
  // no raw ISO time is printed anywhere: times are relative, absolute on hover
  const body = await page.textContent('main');
  assert.doesNotMatch(body, /\d{4}-\d\d-\d\dT\d\d:\d\d/);
  await shot('boot');
});

test('the timeline shows a node reconnecting', async () => {
  // The driver restarted PLAN.reconnected's agent just before: its
  // disconnect and its connect are the newest reachability events.
  const node = PLAN.reconnected;
  await page.waitForFunction((node) => {
    const li = [...document.querySelectorAll('#timeline li.reach')].filter((l) => l.dataset.node === node);
    return ['connected', 'disconnected'].every((ev) => li.some((l) => l.dataset.event === ev &&
      l.querySelector('.word').textContent === ev));
  }, node, { timeout: 5000 * SCALE });
});

test('shows a starting node\'s progress bar advancing', async () => {
  const sel = `.node[data-node="${PLAN.starting}"] .bar`;
  const before = Number(await page.getAttribute(sel, 'data-percent'));
  assert.ok(before < 100, 'the node is still starting: ' + before);
  const text = await page.textContent(`.node[data-node="${PLAN.starting}"] .progress-text`);
  assert.match(text, /stage \S+/);
  assert.match(text, /\d+%/);
  const doneBefore = await page.locator(`${sel} .seg.done`).count();
  for (const members of PLAN.next_stages) for (const c of members) touch(PLAN.starting, c);
  await page.waitForFunction(([s, b]) => Number(document.querySelector(s).dataset.percent) > b,
    [sel, before], { timeout: 10000 * SCALE });
  await page.waitForFunction(([s, n]) => document.querySelectorAll(s + ' .seg.done').length > n,
    [sel, doneBefore], { timeout: 5000 * SCALE });
  await shot('progress');
});

test('follows a state change without a reload within two seconds', async () => {
  const { node, component } = PLAN.flap;
  await page.evaluate(() => { window.__noReload = true; });
  const before = (await api('/v1/nodes/' + node)).verdict;
  rm(node, component);
  // When the API has it, the page must follow within 2 s.
  const changed = await until(async () => {
    const n = await api('/v1/nodes/' + node);
    return n.verdict !== before ? n : null;
  }, 10000, node + ' verdict change');
  const t0 = Date.now();
  await page.waitForFunction(([id, v]) => {
    const li = document.querySelector(`.node[data-node="${id}"]`);
    return li && li.dataset.verdict === v;
  }, [node, changed.verdict], { timeout: 2000 });
  const lag = Date.now() - t0;
  assert.ok(lag <= 2000, 'lag ' + lag);
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  await shot('state-change');
  touch(node, component);
  await page.waitForFunction(([id, v]) => document.querySelector(`.node[data-node="${id}"]`).dataset.verdict === v,
    [node, before], { timeout: 10000 * SCALE });
});

test('shows the root cause when a master component fails', async () => {
  const { node, component } = PLAN.master_fail;
  rm(node, component);
  const h = await until(async () => {
    const h = await api('/v1/health');
    return h.root_causes.some((c) => c.node === node) ? h : null;
  }, 10000, 'a root cause on ' + node);
  const want = h.root_causes.find((c) => c.node === node);
  const cause = page.locator(`#causes li[data-node="${want.node}"][data-component="${want.component}"]`);
  await cause.waitFor({ timeout: 2000 * SCALE });
  assert.ok(await page.isVisible('#causes-box'));
  const text = await cause.textContent();
  assert.ok(text.includes(want.component), text);
  assert.ok(text.includes(want.state), text);
  assert.match(await page.textContent('#verdict-word'), /^(degraded|unhealthy|starting)$/);
  await shot('root-cause');
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png') });   // the top, for docs/
  // said once: the root cause is not repeated among the reasons
  assert.equal(await page.locator(`#reasons li.reason[data-node="${node}"]`).filter({ hasText: component + ' ' }).count(), 0);
  // its node is a link to the node's view
  assert.equal(await cause.locator(`a.nodelink[data-node="${node}"]`).first().getAttribute('href'), '#node=' + node);
});

test('triage: every problem, worst first, then the longest failing', async () => {
  const { node, component } = PLAN.master_fail;
  const row = page.locator(`#triage-rows tr[data-node="${node}"][data-component="${component}"]`);
  await row.waitFor({ timeout: 5000 * SCALE });
  assert.match(await row.textContent(), /root cause/);
  // a second problem, younger: it sorts after the older one of its severity
  rm(PLAN.flap.node, PLAN.flap.component);
  await page.locator(`#triage-rows tr[data-node="${PLAN.flap.node}"][data-component="${PLAN.flap.component}"]`)
    .waitFor({ timeout: 10000 * SCALE });
  const rows = await page.$$eval('#triage-rows tr', (trs) => trs.map((tr) => ({
    state: tr.dataset.state, since: tr.querySelector('time') ? tr.querySelector('time').getAttribute('datetime') : null })));
  assert.ok(rows.length >= 2, JSON.stringify(rows));
  for (let i = 1; i < rows.length; i++) {
    const a = SEVERITY.indexOf(rows[i - 1].state), b = SEVERITY.indexOf(rows[i].state);
    assert.ok(a <= b, 'severity order: ' + JSON.stringify(rows));
    if (a === b && rows[i - 1].since && rows[i].since) assert.ok(rows[i - 1].since <= rows[i].since, 'oldest first: ' + JSON.stringify(rows));
  }
  await shot('triage');
  touch(PLAN.flap.node, PLAN.flap.component);
});

test('operator actions: offered with a token, acknowledge and clear', async () => {
  const { node, component } = PLAN.master_fail;
  await page.click(`.node[data-node="${node}"] button.open`);
  const row = page.locator(`#detail table.components tr[data-component="${component}"]`);
  await row.waitFor({ timeout: 5000 * SCALE });
  assert.equal(await page.locator('#detail button.act').count(), 0, 'no action without a token');
  // no token is configured: loopback writes need none, but the page offers
  // actions only once it holds one, and sends only that one
  await page.click('#detail details.admin summary');
  await page.fill('#admin-token', 'operator-token');
  const sent = [];
  const onReq = (r) => { if (r.method() !== 'GET') sent.push({ m: r.method(), auth: r.headers().authorization }); };
  page.on('request', onReq);
  await page.click('#detail details.admin button[type="submit"]');
  await row.locator('button.act.ack').click();
  await page.fill('#op-reason', 'looking into it');
  await page.fill('#op-who', 'browser-test');
  await page.click('#detail form.opform button.send');
  await row.locator('[data-operator="acknowledged"]').waitFor({ timeout: 5000 * SCALE });
  assert.match(await row.locator('[data-operator="acknowledged"]').textContent(), /looking into it \(by browser-test via loopback/);
  await page.waitForFunction(([n, c]) => {
    const tr = document.querySelector(`#triage-rows tr[data-node="${n}"][data-component="${c}"]`);
    return tr && tr.classList.contains('handled');
  }, [node, component], { timeout: 5000 * SCALE });
  await shot('acknowledged');
  await row.locator('button.act.ack-clear').click();
  await row.locator('[data-operator="acknowledged"]').waitFor({ state: 'detached', timeout: 5000 * SCALE });
  page.off('request', onReq);
  assert.deepEqual(sent, [{ m: 'PUT', auth: 'Bearer operator-token' }, { m: 'DELETE', auth: 'Bearer operator-token' }]);
  await page.evaluate(() => sessionStorage.removeItem('muster-admin-token'));
  await page.keyboard.press('Escape');
});

test('node view: components with state words, output and since; keyboard', async () => {
  const { node, component } = PLAN.master_fail;
  const btn = page.locator(`.node[data-node="${node}"] button.open`);
  await btn.focus();
  await page.keyboard.press('Enter');
  const row = page.locator(`#detail table.components tr[data-component="${component}"]`);
  await row.waitFor({ timeout: 5000 * SCALE });
  assert.equal(await row.getAttribute('data-state'), 'unhealthy');
  assert.equal((await row.locator('.word').textContent()).trim(), 'unhealthy');
  assert.ok((await row.locator('time').getAttribute('datetime')).length > 0);
  assert.ok(await row.locator('td.out').count());
  await shot('node-view');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#detail', { state: 'hidden', timeout: 2000 * SCALE });
  touch(node, component);
});

test('has a history timeline with verdict and state changes', async () => {
  await page.waitForFunction(() => document.querySelectorAll('#timeline li.cluster').length > 0 &&
    document.querySelectorAll('#timeline li:not(.cluster):not(.reach)').length > 0, null, { timeout: 5000 * SCALE });
});

test('is sensible at phone width', async () => {
  await page.setViewportSize({ width: 375, height: 800 });
  await page.waitForTimeout(100);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, 'horizontal overflow of ' + overflow + 'px');
  await shot('phone');
  await page.setViewportSize({ width: 1200, height: 900 });
});

test('pauses while the tab is hidden', async () => {
  await page.evaluate(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'paused', null,
    { timeout: 2000 * SCALE });
  const n = requests.length;
  rm(PLAN.flap.node, PLAN.flap.component);   // a change, which would wake a visible page
  await page.waitForTimeout(1500);
  assert.deepEqual(requests.slice(n).filter((u) => u.includes('/v1/')), [], 'no reads while hidden');
  touch(PLAN.flap.node, PLAN.flap.component);
  await page.evaluate(() => {
    delete document.hidden;
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'live', null,
    { timeout: 5000 * SCALE });
  await until(() => requests.length > n, 2000, 'reads after the tab is shown again');
});

test('draws an unreachable node\'s last known state as stale', async () => {
  const node = PLAN.silent;
  process.kill(AGENT_PIDS[node], 'SIGSTOP');
  try {
    await page.waitForFunction((id) => {
      const li = document.querySelector(`.node[data-node="${id}"]`);
      return li && li.dataset.verdict === 'unreachable';
    }, node, { timeout: 30000 * SCALE });
    const li = page.locator(`.node[data-node="${node}"]`);
    assert.match(await li.getAttribute('class'), /\bstale\b/);
    assert.equal(await li.locator('.bar').getAttribute('data-stale'), 'true');
    assert.match(await li.locator('.progress-text').textContent(), /^last known · started · 100%.*last seen .* ago/);
    const tr = page.locator(`#triage-rows tr[data-node="${node}"][data-component=""]`);
    await tr.waitFor({ timeout: 5000 * SCALE });
    assert.equal(await tr.getAttribute('data-state'), 'unreachable');
    await shot('unreachable');
  } finally {
    process.kill(AGENT_PIDS[node], 'SIGCONT');
  }
  await page.waitForFunction((id) => document.querySelector(`.node[data-node="${id}"]`).dataset.verdict === 'healthy',
    node, { timeout: 30000 * SCALE });
});

test('says within 5 s that it lost contact with a frozen aggregator, and recovers', async () => {
  await page.waitForFunction(() => document.body.dataset.connection === 'live', null, { timeout: 10000 * SCALE });
  outage = true;
  const t0 = Date.now();
  process.kill(AGGR_PID, 'SIGSTOP');
  try {
    await page.waitForFunction(() => document.body.dataset.connection === 'lost', null, { timeout: 5000 * SCALE });
    const took = Date.now() - t0;
    assert.ok(took <= 5000 * SCALE, 'lost after ' + took + ' ms');
    assert.match(await page.textContent('#conn'), /lost contact with .* since \d\d:\d\d:\d\d/);
    await shot('lost');
  } finally {
    process.kill(AGGR_PID, 'SIGCONT');
  }
  await page.waitForFunction(() => document.body.dataset.connection === 'live', null, { timeout: 10000 * SCALE });
  // and it is current again: a change shows
  const { node, component } = PLAN.flap;
  rm(node, component);
  await page.waitForFunction(([n, c]) => !!document.querySelector(`#triage-rows tr[data-node="${n}"][data-component="${c}"]`),
    [node, component], { timeout: 10000 * SCALE });
  touch(node, component);
  outage = false;
});

test('shows that it is stale after a lost connection', async () => {
  // Requests the aggregator cannot answer: the page backs off and says so.
  // A change wakes the parked reads, and their next ones fail.
  outage = true;
  await page.route('**/v1/**', (route) => route.abort('connectionrefused'));
  rm(PLAN.flap.node, PLAN.flap.component);
  await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'stale', null,
    { timeout: 40000 * SCALE });
  await shot('stale');
  touch(PLAN.flap.node, PLAN.flap.component);
  await page.unroute('**/v1/**');
  await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'live', null,
    { timeout: 40000 * SCALE });
  outage = false;
});

test('makes no request outside the aggregator, and no console error', () => {
  assert.ok(requests.length > 3, 'requests were recorded');
  const outside = requests.filter((u) => new URL(u).origin !== ORIGIN);
  assert.deepEqual(outside, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});
