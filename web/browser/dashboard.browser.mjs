#!/usr/bin/env node
// Browser test of the dashboard against a real broker, in Debian's Chromium
// driven by playwright-core. Run from web/:
//
//   node browser/dashboard.browser.mjs
//
// Env: TICKWIRE_BIN, the broker binary (default ../target/debug/tickwire,
// relative to web/); CHROMIUM, the browser (default /usr/bin/chromium);
// TICKWIRE_STATIC_DIR, optional: serve the page's four files from this
// folder instead of the broker's embedded copies (to try a change to the
// dashboard without rebuilding the broker; the WebSocket and the API still
// go to the broker).
// Exits 0 when every check passes, 1 with a message otherwise, and gives up
// after DEADLINE_MS. Every wait is on a condition with a timeout.
//
// Checks, in order:
// 1. 10+ rows show up and update;
// 2. the filter `fx.*` leaves only fx rows, which keep updating; `>` brings the rest back;
// 3. a topic published once over HTTP is marked stale once its feed stops
//    (the broker runs with TICKWIRE_STALE_AFTER_MS=1500), and still is after
//    a reload; a screenshot (to $TICKWIRE_SCREENSHOT, else the temp dir);
// 3c. prices show every digit the publisher sent (tiny and long numbers,
//    trailing zeros, and strings of digits; other strings as text), and
//    change is exact;
// 4. after SIGKILL the rows are greyed out while the page is disconnected (a
//    frozen price must not look live); after a restart on the same port the
//    page reconnects within the backoff cap, reports the failed recovery (new
//    epoch), the rows are no longer greyed out, and they update again; a
//    topic that the new broker does not have is shown stale;
// 5. against a second broker with auth on, a page without a token never says
//    live: it stops, shows the broker's error and asks for a token; with the
//    token typed in it goes live and shows prices, and after a reload too
//    (the token is kept in the tab, never in the URL); with a JWT that may
//    subscribe to `fx.*` only, the page's `>` is refused (forbidden): it never
//    says live, shows `refused`, and goes live with the filter `fx.*`.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = resolve(WEB, process.env.TICKWIRE_BIN ?? '../target/debug/tickwire');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const STATIC_DIR = process.env.TICKWIRE_STATIC_DIR ? resolve(WEB, process.env.TICKWIRE_STATIC_DIR) : null;
// The test never writes into the repository (a run from a clean clone left
// docs/img/dashboard.png modified); TICKWIRE_SCREENSHOT=../docs/img/dashboard.png
// renews the documented one.
const SCREENSHOT = process.env.TICKWIRE_SCREENSHOT
  ? resolve(process.env.TICKWIRE_SCREENSHOT)
  : join(tmpdir(), 'tickwire-dashboard.png');
const PUBLISHER_KEY = 'testkey';
const JWT_SECRET = 'browser-test-secret';
const STALE_AFTER_MS = 1500;
const DEADLINE_MS = 150_000;
// The client's backoff cap (tickwire.js DEFAULTS.backoffCapMs) plus time to
// connect and subscribe: a reconnect must land within it.
const RECONNECT_WINDOW_MS = 20_000 + 5_000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${msg}`);

class Failure extends Error {}

function fail(message) {
  throw new Failure(message);
}

/** An HS256 JWT with `claims`, signed with the auth-on broker's secret. */
function jwt(claims) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', JWT_SECRET).update(body).digest('base64url')}`;
}

/** Resolves with a port that was free a moment ago on 127.0.0.1. */
function freePort() {
  return new Promise((ok, bad) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', bad);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

async function until(what, timeoutMs, probe, everyMs = 100) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value) return value;
    if (Date.now() > end) fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The broker process; keeps the tail of its output for failure reports. */
class Broker {
  constructor(port, extraArgs = []) {
    this.port = port;
    this.extraArgs = extraArgs;
    this.base = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.output = [];
  }

  async start() {
    // A killed broker's port can take a moment to be free again; retry the
    // spawn while the process exits early, within the wait below.
    const end = Date.now() + 15_000;
    for (;;) {
      this.spawn();
      const exited = new Promise((r) => this.proc.once('exit', (code, sig) => r({ code, sig })));
      const healthy = until(`${this.base}/healthz`, Math.max(1000, end - Date.now()), async () => {
        const res = await fetch(`${this.base}/healthz`);
        return res.ok;
      }).then(() => null);
      const outcome = await Promise.race([healthy, exited]);
      if (outcome === null) return;
      if (Date.now() > end) fail(`broker exited (${JSON.stringify(outcome)}) before serving:\n${this.tail()}`);
      log(`broker exited early (${JSON.stringify(outcome)}); retrying`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  spawn() {
    const args = ['--listen', `127.0.0.1:${this.port}`, '--publisher-key', PUBLISHER_KEY, ...this.extraArgs];
    this.proc = spawn(BIN, args, {
      env: { ...process.env, TICKWIRE_STALE_AFTER_MS: String(STALE_AFTER_MS) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk) => {
      this.output.push(...String(chunk).split('\n').filter(Boolean));
      if (this.output.length > 200) this.output.splice(0, this.output.length - 200);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.proc.on('error', (err) => keep(`spawn error: ${err.message}`));
  }

  /** SIGKILL, and wait until the process is gone. */
  async kill() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await gone;
  }

  /** Publishes `body` as sent: numbers keep the digits written in it. */
  async publishRaw(body) {
    const res = await fetch(`${this.base}/api/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${PUBLISHER_KEY}`, 'content-type': 'application/json' },
      body,
    });
    if (!res.ok) fail(`POST /api/publish answered ${res.status}: ${await res.text()}`);
    return res.json();
  }

  async publish(topic, data) {
    const res = await fetch(`${this.base}/api/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${PUBLISHER_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ topic, data }),
    });
    if (!res.ok) fail(`POST /api/publish answered ${res.status}: ${await res.text()}`);
    return res.json();
  }

  tail() {
    return this.output.slice(-40).map((l) => `  | ${l}`).join('\n');
  }
}

// -- page probes -------------------------------------------------------------

/** `topic -> "seq/ts"` of every row: a row whose stamp changed has updated. */
const stamps = (page) =>
  page.evaluate(() => {
    const out = {};
    for (const tr of document.querySelectorAll('#topic-rows tr[data-topic]')) out[tr.dataset.topic] = `${tr.dataset.seq}/${tr.dataset.ts}`;
    return out;
  });

const topicsShown = (page) =>
  page.evaluate(() => [...document.querySelectorAll('#topic-rows tr[data-topic]')].map((tr) => tr.dataset.topic));

/** Texts of a row's value cells. */
const cells = (page, topic) =>
  page.evaluate((topic) => {
    const tr = document.querySelector(`#topic-rows tr[data-topic="${topic}"]`);
    if (!tr) return null;
    const text = (cls) => tr.querySelector(`.${cls}`)?.textContent ?? null;
    return { price: text('c-price'), change: text('c-change'), bid: text('c-bid'), ask: text('c-ask') };
  }, topic);

/** Computed opacity of the price cells of non-stale rows: what the user sees. */
const liveRowOpacities = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('#topic-rows tr[data-topic]:not(.stale) .c-price')].map((td) => Number(getComputedStyle(td).opacity)),
  );

const connText = (page) => page.evaluate(() => document.getElementById('conn-state')?.textContent ?? '');

/** Waits until at least `n` rows that were in `before` show a new stamp. */
async function rowsUpdate(page, before, n, timeoutMs, what) {
  await page
    .waitForFunction(
      ({ before, n }) => {
        let changed = 0;
        for (const tr of document.querySelectorAll('#topic-rows tr[data-topic]')) {
          const was = before[tr.dataset.topic];
          if (was !== undefined && was !== `${tr.dataset.seq}/${tr.dataset.ts}`) changed += 1;
        }
        return changed >= n;
      },
      { before, n },
      { timeout: timeoutMs, polling: 100 },
    )
    .catch(() => fail(`${what}: fewer than ${n} rows updated within ${timeoutMs} ms`));
}

/** Waits for `#conn-state` to say `live` (want 'live') or that it is trying to reconnect (want 'retrying'). */
async function waitConn(page, want, timeoutMs, what) {
  await page
    .waitForFunction(
      (want) => {
        const text = document.getElementById('conn-state')?.textContent ?? '';
        return want === 'live' ? text === 'live' : text.startsWith('reconnecting') || text.startsWith('connecting');
      },
      want,
      { timeout: timeoutMs, polling: 50 },
    )
    .catch(async () => fail(`${what}: connection text is '${await connText(page)}' after ${timeoutMs} ms`));
}

/** Waits until the table shows rows, all of them fx.* topics. */
async function onlyFxRows(page, what) {
  await page
    .waitForFunction(
      () => {
        const rows = [...document.querySelectorAll('#topic-rows tr[data-topic]')];
        return rows.length > 0 && rows.every((tr) => tr.dataset.topic.startsWith('fx.'));
      },
      null,
      { timeout: 10_000 },
    )
    .catch(async () => fail(`${what}: rows are ${JSON.stringify(await topicsShown(page))}`));
}

async function applyFilter(page, text) {
  await page.fill('#filter', text);
  await page.press('#filter', 'Enter');
}

// -- the test ------------------------------------------------------------------

async function run(state) {
  if (!existsSync(BIN)) fail(`no broker binary at ${BIN} (build it with cargo build, or set TICKWIRE_BIN)`);
  if (!existsSync(CHROMIUM)) fail(`no browser at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);

  const port = await freePort();
  const broker = new Broker(port);
  state.broker = broker;
  log(`starting ${BIN} on 127.0.0.1:${port}`);
  await broker.start();

  state.userDataDir = mkdtempSync(join(tmpdir(), 'tickwire-chromium-'));
  state.context = await chromium.launchPersistentContext(state.userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    // A page that Playwright fulfils has no network address, so Chromium's
    // Local Network Access checks would block its WebSocket to 127.0.0.1.
    args: STATIC_DIR ? [...CHROMIUM_ARGS, '--disable-features=LocalNetworkAccessChecks'] : CHROMIUM_ARGS,
    viewport: { width: 1280, height: 860 },
  });
  const page = state.context.pages()[0] ?? (await state.context.newPage());
  page.on('pageerror', (err) => state.pageErrors.push(err.message));
  page.on('console', (msg) => {
    // The browser logs each refused WebSocket while the broker is down;
    // those are expected. Keep the rest for the report.
    if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(msg.text())) state.consoleErrors.push(msg.text());
  });

  if (STATIC_DIR) {
    log(`serving the page's files from ${STATIC_DIR}`);
    const files = { '/': 'index.html', '/tickwire.js': 'tickwire.js', '/dashboard.js': 'dashboard.js', '/dashboard.css': 'dashboard.css' };
    const types = { html: 'text/html', js: 'text/javascript', css: 'text/css' };
    // On the context: the pages of both brokers (step 5) get them.
    await state.context.route(
      (url) => url.hostname === '127.0.0.1' && url.pathname in files,
      (route) => {
        const name = files[new URL(route.request().url()).pathname];
        route.fulfill({ body: readFileSync(join(STATIC_DIR, name)), contentType: types[name.split('.').pop()] });
      },
    );
  }
  await page.goto(`${broker.base}/`, { waitUntil: 'load' });
  await waitConn(page, 'live', 10_000, 'first connection');
  log('connected: live');

  // 1. 10+ rows, updating.
  await page
    .waitForFunction(() => document.querySelectorAll('#topic-rows tr[data-topic]').length >= 10, null, { timeout: 15_000 })
    .catch(async () => fail(`expected 10+ rows, have ${(await topicsShown(page)).length}`));
  await rowsUpdate(page, await stamps(page), 10, 15_000, 'initial feed');
  const count = await page.evaluate(() => Number(document.getElementById('row-count').dataset.count));
  log(`1. ${count} rows, 10+ of them updating`);

  // 2. Filter to fx.*.
  await applyFilter(page, 'fx.*');
  await onlyFxRows(page, 'filter fx.*');
  const fxBefore = await stamps(page);
  const fxCount = Object.keys(fxBefore).length;
  await rowsUpdate(page, fxBefore, Math.min(2, fxCount), 10_000, 'fx rows after filtering');
  // Time has passed with the filter on: no other topic came back meanwhile.
  const afterFx = await topicsShown(page);
  if (!afterFx.every((t) => t.startsWith('fx.'))) fail(`filter fx.*: a non-fx row appeared: ${JSON.stringify(afterFx)}`);
  if (!page.url().includes('filter=fx.*')) fail(`filter fx.* is not kept in the URL: ${page.url()}`);
  log(`2. filter fx.*: only ${fxCount} fx rows, updating`);
  await applyFilter(page, '>');
  await page.waitForFunction(() => document.querySelectorAll('#topic-rows tr[data-topic]').length >= 10, null, { timeout: 10_000 })
    .catch(() => fail('filter >: rows did not come back'));

  // 3. A topic whose feed stops is marked stale.
  await broker.publish('test.STALE', { price: 1.5 });
  const row = 'tr[data-topic="test.STALE"]';
  await page.waitForSelector(row, { timeout: 5_000 }).catch(() => fail('published test.STALE, but no row showed up'));
  const shownPrice = await page.textContent(`${row} .c-price`);
  if (Number(shownPrice) !== 1.5) fail(`test.STALE shows price '${shownPrice}', expected 1.5`);
  await page
    .waitForFunction((sel) => document.querySelector(sel)?.dataset.state === 'stale', row, { timeout: STALE_AFTER_MS + 8_000 })
    .catch(() => fail(`test.STALE was not marked stale within ${STALE_AFTER_MS + 8_000} ms`));
  if (!(await page.isVisible(`${row} .badge-stale`))) fail('test.STALE is stale but its badge is not visible');
  log('3. test.STALE marked stale');

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  log(`screenshot saved to ${SCREENSHOT}`);

  // A fresh page hears no `status` for a topic that is already stale; it
  // must still show it stale (from GET /api/topics).
  await page.reload({ waitUntil: 'load' });
  await waitConn(page, 'live', 10_000, 'after reload');
  await page
    .waitForFunction((sel) => document.querySelector(sel)?.dataset.state === 'stale', row, { timeout: 5_000 })
    .catch(() => fail('after a reload, test.STALE is not shown stale'));
  log('3b. after a reload test.STALE is still shown stale');

  // 3c. Digits as sent. JSON.stringify would already lose them: the bodies
  // are written by hand.
  await broker.publishRaw('{"topic":"test.TINY","data":{"price":0.000000001234,"bid":0.000000001230,"ask":0.000000001240}}');
  await broker.publishRaw('{"topic":"test.LONG","data":{"price":123456789.123456789}}');
  // The second price only once the first is shown: it is the base of the change.
  await page.waitForSelector('tr[data-topic="test.LONG"]', { timeout: 5_000 }).catch(() => fail('published test.LONG, but no row showed up'));
  await broker.publishRaw('{"topic":"test.LONG","data":{"price":123456789.123456790}}');
  await broker.publishRaw('{"topic":"test.ZEROS","data":{"price":64012.50}}');
  // Prices sent as strings: the digits as given; other text as text.
  await broker.publishRaw('{"topic":"test.STR","data":{"price":"1.0842","bid":"<i>n/a</i>"}}');
  const want = {
    'test.TINY': { price: '0.000000001234', bid: '0.000000001230', ask: '0.000000001240' },
    'test.LONG': { price: '123456789.123456790', change: '+0.000000001' },
    'test.ZEROS': { price: '64012.50' },
    'test.STR': { price: '1.0842', bid: '<i>n/a</i>' },
  };
  for (const [topic, expect] of Object.entries(want)) {
    const ok = await until(`${topic} row`, 5_000, async () => {
      const got = await cells(page, topic);
      return got && Object.entries(expect).every(([k, v]) => got[k] === v) ? got : null;
    }).catch(async () => fail(`${topic} shows ${JSON.stringify(await cells(page, topic))}, expected ${JSON.stringify(expect)} (the digits sent)`));
    if (!ok) fail(`${topic}: no row`);
  }
  // And the user sees them all: no value box cuts its text (an ellipsis).
  const cut = await page.evaluate(() =>
    [...document.querySelectorAll('#topic-rows tr[data-topic^="test."] .v')]
      .filter((v) => v.scrollWidth > v.clientWidth)
      .map((v) => `${v.closest('tr').dataset.topic} ${v.parentNode.className}: ${v.textContent}`),
  );
  if (cut.length > 0) fail(`digits cut off on screen: ${JSON.stringify(cut)}`);
  log('3c. prices show the digits sent');

  // 4. Kill the broker, restart it on the same port; the page comes back.
  await broker.kill();
  log('broker killed (SIGKILL)');
  await waitConn(page, 'retrying', 10_000, 'after SIGKILL');
  log(`page says: ${await connText(page)}`);
  // The last prices are frozen now: they must not look live.
  await page
    .waitForFunction(
      () => {
        const tds = [...document.querySelectorAll('#topic-rows tr[data-topic] .c-price')];
        return tds.length > 0 && tds.every((td) => Number(getComputedStyle(td).opacity) < 0.9);
      },
      null,
      { timeout: 2_000, polling: 50 },
    )
    .catch(async () => fail(`disconnected, but the price cells are not greyed out (opacities ${JSON.stringify(await liveRowOpacities(page))})`));
  log('4a. rows greyed out while disconnected');
  await broker.start();
  const restartedAt = Date.now();
  log('broker restarted');
  await waitConn(page, 'live', RECONNECT_WINDOW_MS, 'after restart');
  log(`reconnected ${Date.now() - restartedAt} ms after the broker was back`);
  await rowsUpdate(page, await stamps(page), 10, 15_000, 'after reconnect');
  // The restarted broker has never heard of test.TINY (published once, to
  // the old one): no tick or status will ever come for it, so its last price
  // is frozen for good and must be shown stale, not as a current price.
  await page
    .waitForFunction(() => document.querySelector('tr[data-topic="test.TINY"]')?.dataset.state === 'stale', null, { timeout: 5_000 })
    .catch(() => fail('after a broker restart, test.TINY (unknown to the new broker) is not shown stale'));
  const opacities = await liveRowOpacities(page);
  if (opacities.length === 0 || !opacities.every((o) => o === 1)) fail(`live again, but rows are still greyed out: ${JSON.stringify(opacities)}`);
  // The restart made a new epoch: the client must say recovery failed.
  // (#stats is refreshed twice a second.)
  await page
    .waitForFunction(() => Number(document.getElementById('stats').dataset.recoveryFailed || 0) > 0, null, { timeout: 3_000 })
    .catch(() => fail('after a broker restart the dashboard did not count any topic as unrecovered'));
  const unrecovered = await page.evaluate(() => Number(document.getElementById('stats').dataset.recoveryFailed));
  log(`4. reconnected, rows updating again, ${unrecovered} topics reported unrecovered (new epoch)`);

  // 5. Auth on: a second broker whose config sets a JWT secret. The
  // publisher key is a token that may subscribe to anything.
  await broker.kill();
  const config = join(state.userDataDir, 'auth.toml');
  writeFileSync(config, `[auth]\njwt_secret = "${JWT_SECRET}"\n`);
  const authPort = await freePort();
  const authBroker = new Broker(authPort, ['--config', config]);
  state.broker = authBroker;
  await authBroker.start();
  log(`auth-on broker on 127.0.0.1:${authPort}`);
  const authPage = await state.context.newPage();
  authPage.on('pageerror', (err) => state.pageErrors.push(err.message));
  // Every state the page shows, to know whether it ever claimed `live`.
  await authPage.addInitScript(() => {
    window.connStates = [];
    new MutationObserver(() => {
      const s = document.getElementById('conn')?.dataset.state;
      if (s && window.connStates.at(-1) !== s) window.connStates.push(s);
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  });
  await authPage.goto(`${authBroker.base}/`, { waitUntil: 'load' });
  // Within the broker's auth deadline (5 s): the page must know by itself.
  await authPage
    .waitForFunction(() => document.getElementById('conn').dataset.state === 'stopped', null, { timeout: 4_000, polling: 50 })
    .catch(async () => fail(`auth on, no token: the page says '${await connText(authPage)}', not stopped`));
  const seen = await authPage.evaluate(() => window.connStates);
  if (seen.includes('live')) fail(`auth on, no token: the page claimed live on the way (${JSON.stringify(seen)})`);
  if (!(await authPage.isVisible('#token'))) fail('auth on, no token: no token field is shown');
  const shownError = await authPage.textContent('#filter-error');
  if (!/unauthorized/.test(shownError)) fail(`auth on, no token: the broker's error is not shown ('${shownError}')`);
  log(`5a. no token: '${await connText(authPage)}', error shown, token field shown`);
  await authPage.fill('#token', PUBLISHER_KEY);
  await authPage.press('#token', 'Enter');
  await waitConn(authPage, 'live', 10_000, 'auth on, token given');
  await authPage
    .waitForFunction(() => document.querySelectorAll('#topic-rows tr[data-topic]').length >= 10, null, { timeout: 15_000 })
    .catch(() => fail('auth on, token given: no rows'));
  if (authPage.url().includes(PUBLISHER_KEY)) fail(`the token is in the URL: ${authPage.url()}`);
  await authPage.reload({ waitUntil: 'load' });
  await waitConn(authPage, 'live', 10_000, 'auth on, after a reload');
  // The rows first: 'live' comes with the subscribe's reply, and the
  // snapshots behind it may not be drawn yet (on a busy machine the stamps
  // were taken of an empty table, so no row could ever count as updated).
  await authPage
    .waitForFunction(() => document.querySelectorAll('#topic-rows tr[data-topic]').length >= 10, null, { timeout: 15_000 })
    .catch(() => fail('auth on, after a reload: no rows'));
  await rowsUpdate(authPage, await stamps(authPage), 5, 15_000, 'auth on, after a reload');
  log('5b. with the token: live, rows updating, and after a reload too');

  // 5c. A token that may subscribe to fx.* only: the page's `>` is refused
  // as forbidden. The connection stays, but no price will come: the page
  // must not say live until a subscribe succeeds.
  const fxToken = jwt({ sub: 'fx-reader', exp: Math.floor(Date.now() / 1000) + 600, subscribe: ['fx.*'] });
  await authPage.evaluate(() => (window.connStates = []));
  await authPage.fill('#token', fxToken);
  await authPage.press('#token', 'Enter');
  await authPage
    .waitForFunction(() => document.getElementById('conn').dataset.state === 'refused', null, { timeout: 10_000, polling: 50 })
    .catch(async () => fail(`fx.* token, filter >: the page says '${await connText(authPage)}', not refused`));
  // The page was live with the previous token until the new one took
  // effect: any change of a data-state attribute (a row's too) before that
  // records it. What counts is everything from the first other state on.
  const refusedSeen = await authPage.evaluate(() => window.connStates);
  const afterChange = refusedSeen.slice(refusedSeen.findIndex((s) => s !== 'live'));
  if (afterChange.includes('live')) fail(`fx.* token, filter >: the page claimed live (${JSON.stringify(refusedSeen)})`);
  const refusedError = await authPage.textContent('#filter-error');
  if (!/forbidden/.test(refusedError)) fail(`fx.* token, filter >: the broker's error is not shown ('${refusedError}')`);
  if ((await authPage.getAttribute('#topics', 'data-conn')) !== 'down') fail('fx.* token, filter >: the rows are not greyed out');
  log(`5c. fx.* token, filter >: '${await connText(authPage)}', '${refusedError}'`);
  await applyFilter(authPage, 'fx.*');
  await waitConn(authPage, 'live', 10_000, 'fx.* token, filter fx.*');
  await onlyFxRows(authPage, 'fx.* token, filter fx.*');
  const fxStamps = await stamps(authPage);
  await rowsUpdate(authPage, fxStamps, Math.min(2, Object.keys(fxStamps).length), 15_000, 'fx.* token, filter fx.*');
  log('5d. fx.* token, filter fx.*: live, fx rows updating');

  if (state.pageErrors.length > 0) fail(`uncaught errors in the page:\n  ${state.pageErrors.join('\n  ')}`);
}

async function main() {
  const state = { broker: null, context: null, userDataDir: null, pageErrors: [], consoleErrors: [] };
  const deadline = setTimeout(() => {
    console.error(`FAIL: the browser test took longer than ${DEADLINE_MS / 1000} s`);
    if (state.broker?.proc) state.broker.proc.kill('SIGKILL');
    process.exit(1);
  }, DEADLINE_MS);
  let code = 0;
  try {
    await run(state);
    console.log('PASS: dashboard browser test');
  } catch (err) {
    code = 1;
    console.error(`FAIL: ${err instanceof Failure ? err.message : err.stack}`);
    if (state.broker) console.error(`broker output (last lines):\n${state.broker.tail()}`);
    if (state.consoleErrors.length) console.error(`page console errors:\n  ${state.consoleErrors.join('\n  ')}`);
  } finally {
    await state.context?.close().catch(() => {});
    await state.broker?.kill().catch(() => {});
    if (state.userDataDir) rmSync(state.userDataDir, { recursive: true, force: true });
    clearTimeout(deadline);
  }
  process.exit(code);
}

main();
