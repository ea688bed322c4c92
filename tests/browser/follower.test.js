// The dashboard opened at a follower aggregator: the page comes from the
// follower and sends the browser on to the leader's dashboard, which shows
// the data. Started by tests/system/test_dashboard.py with MUSTER_FOLLOWER_URL
// and MUSTER_LEADER_URL.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const FOLLOWER = process.env.MUSTER_FOLLOWER_URL;
const LEADER = process.env.MUSTER_LEADER_URL;
const SCALE = Number(process.env.MUSTER_TIMEOUT_SCALE || 1);

test('a follower sends the browser to the leader\'s dashboard', async () => {
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
    await page.goto(FOLLOWER + '/');
    await page.waitForURL(LEADER + '/', { timeout: 5000 * SCALE });
    await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'live', null,
      { timeout: 5000 * SCALE });
    assert.match(await page.textContent('#verdict-word'), /^(healthy|starting|degraded|unhealthy|unknown)$/);
    if (process.env.MUSTER_ARTIFACTS) await page.screenshot({ path: path.join(process.env.MUSTER_ARTIFACTS, 'follower.png') });
    assert.deepEqual([...origins].sort(), [new URL(FOLLOWER).origin, new URL(LEADER).origin].sort());
  } finally {
    if (ctx) await ctx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
