// Takes docs/'s screenshots from a running demo (deploy/demo, second run or
// later, so that muster has learned the stage durations):
//   MUSTER_URL=http://127.0.0.1:7611 MUSTER_DEMO_DIR=/tmp/muster-demo node docs-screenshots.js ../../docs
// boot (nodes booting again: ETA, LATE, the grouped starting
// components), failure (m1's mesos-master failed: the root cause) and triage
// (the problems, one acknowledged). failover.png comes from
// follower.test.js (artifacts/dashboard/failover.png).
'use strict';

const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { chromium } = require('playwright-core');

const URL_ = process.env.MUSTER_URL || 'http://127.0.0.1:7611';
const OUT = process.argv[2] || '.';
const DEMO = path.join(__dirname, '..', '..', 'deploy', 'demo');

const demo = (...args) => execFileSync(DEMO, args, { stdio: 'inherit' });

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.MUSTER_CHROMIUM || '/usr/bin/chromium',
    headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
  await page.goto(URL_ + '/');
  await page.waitForFunction(() => document.getElementById('verdict-word').textContent === 'healthy', null, { timeout: 120000 });
  // A boot once the durations are learned: a1 held up past its stage's p95.
  demo('reboot', 'a2', 'p1');
  demo('reboot', 'a1', '--slow');
  await page.waitForFunction(() => document.querySelector('.node[data-node="a1"] .late-tag') ||
    !document.querySelector('.node[data-node="a1"] .progress-text').textContent.includes('ETA'), null,
  { timeout: 60000, polling: 100 });
  await page.screenshot({ path: path.join(OUT, 'dashboard-boot.png') });
  await page.waitForFunction(() => document.getElementById('verdict-word').textContent === 'healthy', null, { timeout: 120000 });
  demo('fail', 'm1', 'mesos-master');
  demo('fail', 'a2', 'telegraf');
  await page.waitForSelector('#causes li[data-node="m1"]', { timeout: 30000 });
  await page.waitForSelector('#triage-rows tr[data-node="a2"]', { timeout: 30000 });
  await page.waitForTimeout(3000);  // let "for Ns" read as a failure of some seconds
  await page.screenshot({ path: path.join(OUT, 'dashboard.png') });
  await (await page.$('#triage')).screenshot({ path: path.join(OUT, 'dashboard-triage.png') });
  demo('recover', 'm1', 'mesos-master');
  demo('recover', 'a2', 'telegraf');
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
