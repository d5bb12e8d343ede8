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
