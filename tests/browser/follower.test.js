// The dashboard opened at a follower aggregator: the page comes from the
// follower and sends the browser on to the leader's dashboard, which shows
// the data. Then the leader is killed (SIGKILL): the page, with no reload
// from the test, notices it lost contact, asks the aggregators it knows
// (the follower it came through) and ends on the new leader's dashboard.
// Started by tests/system/test_dashboard.py with MUSTER_FOLLOWER_URL,
// MUSTER_LEADER_URL and MUSTER_LEADER_PID.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const FOLLOWER = process.env.MUSTER_FOLLOWER_URL;
const LEADER = process.env.MUSTER_LEADER_URL;
const LEADER_PID = Number(process.env.MUSTER_LEADER_PID || 0);
const SCALE = Number(process.env.MUSTER_TIMEOUT_SCALE || 1);

test('a follower sends the browser to the leader, and the page follows a failover', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-'));
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(dir, {
      executablePath: process.env.MUSTER_CHROMIUM || '/usr/bin/chromium', headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    const origins = new Set();
    ctx.on('request', (r) => origins.add(new URL(r.url()).origin));
    const page = ctx.pages()[0] || (await ctx.newPage());
    let killed = false, arrived = false;
    const errors = [];
    // While the leader is dead the browser logs its refused reads; before
    // the kill and once on the new leader there must be no console error.
    page.on('console', (m) => { if (m.type() === 'error' && (!killed || arrived)) errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));

    await page.goto(FOLLOWER + '/');
    await page.waitForURL((u) => u.origin === new URL(LEADER).origin, { timeout: 5000 * SCALE });
    await page.waitForFunction(() => document.body.dataset.connection === 'live', null, { timeout: 5000 * SCALE });
    assert.match(await page.textContent('#verdict-word'), /^(healthy|starting|degraded|unhealthy|unknown)$/);
    // the aggregators it came through are in its address
    assert.ok(new URLSearchParams(new URL(page.url()).hash.slice(1)).get('aggr').split(',').includes(new URL(FOLLOWER).host));
    // a ZooKeeper epoch (a zxid) is shown as epoch.counter, the zxid on hover
    const epoch = await page.textContent('#leader .epoch');
    assert.match(epoch, /^epoch \d+\.\d+$/);
    if (process.env.MUSTER_ARTIFACTS) await page.screenshot({ path: path.join(process.env.MUSTER_ARTIFACTS, 'follower.png') });

    killed = true;
    process.kill(LEADER_PID, 'SIGKILL');
    await page.waitForFunction(() => document.body.dataset.connection === 'lost', null, { timeout: 5000 * SCALE });
    if (process.env.MUSTER_ARTIFACTS) await page.screenshot({ path: path.join(process.env.MUSTER_ARTIFACTS, 'failover-lost.png') });
    await page.waitForURL((u) => u.origin === new URL(FOLLOWER).origin, { timeout: 20000 * SCALE });
    arrived = true;
    await page.waitForFunction(() => document.body.dataset.connection === 'live', null, { timeout: 10000 * SCALE });
    const epoch2 = await page.textContent('#leader .epoch');
    assert.match(epoch2, /^epoch \d+\.\d+$/);
    assert.notEqual(epoch2, epoch, 'a new leader, a new epoch');
    if (process.env.MUSTER_ARTIFACTS) await page.screenshot({ path: path.join(process.env.MUSTER_ARTIFACTS, 'failover.png') });
    assert.deepEqual([...origins].sort(), [new URL(FOLLOWER).origin, new URL(LEADER).origin].sort());
    assert.deepEqual(errors, []);
  } finally {
    if (ctx) await ctx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
