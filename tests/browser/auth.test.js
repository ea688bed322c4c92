// The dashboard against an aggregator whose API needs a bearer token, over
// HTTPS with the test's own CA (the browser is told to accept it). Started by
// tests/system/test_https.py, which passes:
//   MUSTER_URL     the aggregator, https://127.0.0.1:PORT (one node, py1, reported)
//   MUSTER_TOKEN   its token
// The page must ask for the token, refuse a wrong one, then show the data
// and send the token with every API read, its blocking reads included.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const URL_ = process.env.MUSTER_URL;
const TOKEN = process.env.MUSTER_TOKEN;
const SCALE = Number(process.env.MUSTER_TIMEOUT_SCALE || 1);

test('the token form, then every API read carries the token', async () => {
  assert.ok(URL_ && TOKEN, 'MUSTER_URL and MUSTER_TOKEN are required');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-'));
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(dir, {
      executablePath: process.env.MUSTER_CHROMIUM || '/usr/bin/chromium', headless: true,
      ignoreHTTPSErrors: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    const api = [];      // {url, auth} of every /v1/ request the page made
    const responses = [];
    ctx.on('request', (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith('/v1/')) api.push({ url: r.url(), auth: r.headers()['authorization'] || null });
    });
    ctx.on('response', (r) => {
      if (new URL(r.url()).pathname.startsWith('/v1/')) responses.push(r.status());
    });
    const page = ctx.pages()[0] || (await ctx.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));

    // 1. No token yet: the API answers 401 and the page shows the form.
    await page.goto(URL_ + '/');
    await page.waitForSelector('#auth:not([hidden])', { timeout: 5000 * SCALE });
    assert.equal(await page.getAttribute('#conn', 'data-state'), 'locked');
    assert.match(await page.textContent('#conn'), /needs the API token/);
    assert.ok(responses.includes(401), 'the page saw no 401');
    assert.ok(api.every((r) => r.auth === null), 'a token was sent before one was entered');
    assert.equal(await page.textContent('#counts'), '', 'data shown without a token');

    // 2. A wrong token: refused, and the form says so.
    await page.fill('#auth-token', 'not-the-token');
    await page.click('#auth-form button');
    await page.waitForFunction(() => /refused/.test(document.getElementById('auth-msg').textContent) &&
      !document.getElementById('auth').hidden, null, { timeout: 5000 * SCALE });
    assert.ok(api.some((r) => r.auth === 'Bearer not-the-token'), 'the wrong token was never tried');

    // 3. The right token: the form goes, the data comes, the page is live.
    const before = api.length;
    await page.fill('#auth-token', TOKEN);
    await page.press('#auth-token', 'Enter');
    await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'live', null,
      { timeout: 5000 * SCALE });
    assert.equal(await page.isHidden('#auth'), true);
    await page.waitForSelector('.node[data-node="py1"]', { timeout: 5000 * SCALE });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('muster-token')), TOKEN);

    // Every read since carries it, the blocking reads (index=&wait=) and a
    // node's details (fetched when its list entry appears) too.
    const deadline = Date.now() + 5000 * SCALE;
    while (!api.slice(before).some((r) => /[?&]index=\d+&wait=/.test(r.url)) && Date.now() < deadline) {
      await page.waitForTimeout(50);
    }
    const after = api.slice(before);
    assert.ok(after.some((r) => /[?&]index=\d+&wait=/.test(r.url)), 'no blocking read after the token');
    assert.ok(after.some((r) => /\/v1\/nodes\/py1$/.test(new URL(r.url).pathname)), 'no node detail read');
    for (const r of after) {
      // reads the wrong token started may still end after the right one was entered
      if (r.auth === 'Bearer not-the-token') continue;
      assert.equal(r.auth, 'Bearer ' + TOKEN, r.url);
    }

    // 4. A reload keeps the token for this tab: no form, live at once.
    await page.reload();
    await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'live', null,
      { timeout: 5000 * SCALE });
    assert.equal(await page.isHidden('#auth'), true);
    assert.deepEqual(errors, []);
  } finally {
    if (ctx) await ctx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
