// The dashboard page itself (dashboard.js's Dashboard) on a fake DOM, with
// its TickwireClient on a fake socket and a fake clock: what the user reads
// in the header and the rows after given broker frames. No browser, no
// network, no real timers.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Dashboard } from '../../crates/gateway/static/dashboard.js';
import { FakeClock, fakePage, fakeWebSocketClass } from './fakes.mjs';

const HTML = readFileSync(new URL('../../crates/gateway/static/index.html', import.meta.url), 'utf8');

function setup({ search = '' } = {}) {
  const page = fakePage(HTML, { search });
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const dash = new Dashboard(page.doc, page.win, { url: 'ws://127.0.0.1:1/ws', WebSocket: FakeWebSocket, clock, random: () => 0.5 });
  dash.start();
  const ws = () => sockets[sockets.length - 1];
  /** Opens the newest socket and answers `welcome`; returns its first subscribe. */
  const welcome = () => {
    ws().open();
    ws().receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: clock.now() });
    return ws().ops('subscribe').at(-1);
  };
  const subscribed = (sub) => ws().receive({ type: 'subscribed', id: sub.id, topics: sub.topics });
  /** Sends a tick frame written by hand (the digits as a publisher wrote them). */
  const tick = (topic, seq, dataText) =>
    ws().receive(`{"type":"tick","topic":"${topic}","seq":${seq},"ts":${clock.now()},"data":${dataText}}`);
  /** Texts of a row's cells, once drawn. */
  const row = (topic) => {
    page.frame();
    const tr = page.el('topic-rows').children.find((r) => r.dataset.topic === topic);
    if (!tr) return null;
    const text = (cls) => tr.find(cls).textContent;
    return { price: text('c-price'), change: text('c-change'), bid: text('c-bid'), ask: text('c-ask') };
  };
  const conn = () => ({
    state: page.el('conn').dataset.state,
    text: page.el('conn-state').textContent,
    table: page.el('topics').getAttribute('data-conn'),
  });
  const error = () => page.el('filter-error').textContent;
  return { page, clock, dash, ws, welcome, subscribed, tick, row, conn, error };
}

test('the page goes live on its first subscribe and draws a row per topic', () => {
  const t = setup();
  assert.deepEqual(t.conn(), { state: 'connecting', text: 'connecting', table: 'down' });
  const sub = t.welcome();
  assert.deepEqual(sub.topics, ['>']);
  t.subscribed(sub);
  assert.deepEqual(t.conn(), { state: 'live', text: 'live', table: 'live' });
  t.tick('fx.EUR-USD', 1, '{"price":1.08420,"bid":1.0842,"ask":1.0843}');
  assert.deepEqual(t.row('fx.EUR-USD'), { price: '1.08420', change: '0.00000', bid: '1.08420', ask: '1.08430' });
});

test('a first subscribe refused as forbidden is not live: the page says refused until a subscribe succeeds', () => {
  const t = setup({ search: '?filter=fx.*,crypto.>' });
  const sub = t.welcome();
  t.ws().receive({ type: 'error', id: sub.id, code: 'forbidden', message: "not allowed to subscribe to 'fx.*'" });
  assert.equal(t.error(), "forbidden: not allowed to subscribe to 'fx.*'");
  assert.deepEqual(t.conn(), { state: 'refused', text: 'subscription refused', table: 'down' });
  // Nothing was subscribed: a filter the token allows must be sent whole,
  // though crypto.> was in the refused one too.
  t.dash.applyFilter('crypto.>');
  const next = t.ws().ops('subscribe').at(-1);
  assert.notEqual(next.id, sub.id);
  assert.deepEqual(next.topics, ['crypto.>']);
  assert.equal(t.conn().state, 'refused', 'not live before the reply');
  t.subscribed(next);
  assert.deepEqual(t.conn(), { state: 'live', text: 'live', table: 'live' });
});

test('prices sent as JSON strings show as sent: digits exactly, other text as text', () => {
  const t = setup();
  t.subscribed(t.welcome());
  // Numeric strings: the digits as given, and they count as prices (change, mid).
  t.tick('fx.EUR-USD', 1, '{"price":"1.0842","bid":"1.08415","ask":"1.08425"}');
  assert.deepEqual(t.row('fx.EUR-USD'), { price: '1.08420', change: '0.00000', bid: '1.08415', ask: '1.08425' });
  t.tick('fx.EUR-USD', 2, '{"price":"1.0850"}');
  assert.deepEqual(t.row('fx.EUR-USD'), { price: '1.08500', change: '+0.00080', bid: '1.08415', ask: '1.08425' });
  t.tick('fx.GBP-USD', 1, '{"bid":"1.2700","ask":"1.2701"}');
  assert.equal(t.row('fx.GBP-USD').price, '1.27005', 'the mid of string bid and ask');
  t.tick('eq.LONG', 1, '{"price":"123456789.123456789012"}');
  assert.equal(t.row('eq.LONG').price, '123456789.123456789012', 'every digit, beyond a double');
  // Other text: shown as it is, as text (markup stays text), no change.
  t.tick('eq.HALT', 1, '{"price":"halted","bid":"<b>n/a</b>","ask":"1.5"}');
  assert.deepEqual(t.row('eq.HALT'), { price: 'halted', change: '—', bid: '<b>n/a</b>', ask: '1.5' });
  const bid = t.page.el('topic-rows').children.find((r) => r.dataset.topic === 'eq.HALT').find('c-bid');
  assert.equal(bid.find('v').children.length, 0, 'a text node, no element made of the markup');
  // A number after the text: a price again.
  t.tick('eq.HALT', 2, '{"price":2.25}');
  assert.equal(t.row('eq.HALT').price, '2.25');
});

test('a one-off broker error goes after 10 s of being live, and at once when the page goes live again', () => {
  const t = setup();
  t.subscribed(t.welcome());
  t.ws().receive({ type: 'error', code: 'rate_limited', message: 'over 100 control messages per second' });
  assert.equal(t.error(), 'rate_limited: over 100 control messages per second');
  t.clock.advance(9_999);
  assert.equal(t.error(), 'rate_limited: over 100 control messages per second', 'long enough to read');
  t.clock.advance(1);
  assert.equal(t.error(), '', 'gone: the page has been live all along');
  // An error just before a drop stays while the page is not live (it may be
  // why), past the 10 s, and goes once a reconnect is live.
  t.ws().receive({ type: 'error', code: 'bad_request', message: 'unknown op' });
  t.ws().serverClose(1006);
  t.clock.advance(10_001);
  assert.notEqual(t.conn().state, 'live');
  assert.equal(t.error(), 'bad_request: unknown op');
  t.subscribed(t.welcome());
  assert.equal(t.conn().state, 'live');
  assert.equal(t.error(), '', 'cleared by the reconnect');
});

test('an error that still applies stays: a refused subscribe, until the filter changes or the page goes live', () => {
  const t = setup();
  t.subscribed(t.welcome());
  t.dash.applyFilter('eq.*');
  const sub = t.ws().ops('subscribe').at(-1);
  t.ws().receive({ type: 'error', id: sub.id, code: 'forbidden', message: "not allowed to subscribe to 'eq.*'" });
  t.clock.advance(10_001);
  assert.equal(t.error(), "forbidden: not allowed to subscribe to 'eq.*'", 'the filter is still refused');
  t.dash.applyFilter('fx.*');
  assert.equal(t.error(), '');
  // A filter typo is the page's own message: a reconnect does not clear it.
  t.dash.applyFilter('fx..x');
  assert.match(t.error(), /segment 2 is empty/);
  t.ws().serverClose(1006);
  t.clock.advance(1_000);
  t.subscribed(t.welcome());
  assert.equal(t.conn().state, 'live');
  assert.match(t.error(), /segment 2 is empty/);
});
