// TickwireClient driven through a fake socket and a fake clock: the
// connection lifecycle, recovery, heartbeats, close codes and auth, with no
// network and no real timers.
import test from 'node:test';
import assert from 'node:assert/strict';
import { TickwireClient } from '../../crates/gateway/static/tickwire.js';
import { FakeClock, fakeWebSocketClass } from './fakes.mjs';

const URL = 'ws://127.0.0.1:1/ws';

function setup(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const log = { states: [], ticks: [], snapshots: [], statuses: [], errors: [] };
  const client = new TickwireClient({
    url: URL,
    topics: ['>'],
    WebSocket: FakeWebSocket,
    clock,
    random: () => 0.5,
    onState: (s) => log.states.push(s),
    onTick: (m, meta) => log.ticks.push({ m, meta }),
    onSnapshot: (m, meta) => log.snapshots.push({ m, meta }),
    onStatus: (m) => log.statuses.push(m),
    onError: (m) => log.errors.push(m),
    ...options,
  });
  const last = () => sockets[sockets.length - 1];
  const lastState = () => log.states[log.states.length - 1];
  return { client, clock, sockets, log, last, lastState };
}

/** Opens the newest socket and answers like a broker up to `subscribed`. */
function goLive(t, { epoch = 'E1', recovered } = {}) {
  const ws = t.last();
  ws.open();
  ws.receive({ type: 'welcome', epoch, heartbeat_ms: 15000, server_time: t.clock.now() + 1234 });
  const sub = ws.ops('subscribe').at(-1);
  const reply = { type: 'subscribed', id: sub.id, topics: sub.topics };
  if (recovered !== undefined) reply.recovered = recovered;
  ws.receive(reply);
  return { ws, sub };
}

const tick = (topic, seq, price = 1) => ({ type: 'tick', topic, seq, ts: 1, data: { price } });
const snap = (topic, seq, price = 1) => ({ type: 'snapshot', topic, seq, ts: 1, data: { price } });

test('connects, subscribes with the options and goes live', () => {
  const t = setup({ topics: ['fx.*', 'crypto.>'], maxHz: 4 });
  assert.equal(t.client.state, 'idle');
  t.client.start();
  assert.equal(t.sockets.length, 1);
  assert.equal(t.last().url, URL);
  assert.equal(t.lastState().state, 'connecting');
  const { ws, sub } = goLive(t);
  assert.deepEqual(ws.sent, [{ op: 'subscribe', id: sub.id, topics: ['fx.*', 'crypto.>'], max_hz: 4 }]);
  assert.equal(t.lastState().state, 'live');
  assert.equal(t.lastState().recovered, null);
  assert.equal(t.client.epoch, 'E1');
  assert.equal(t.client.serverNow() - t.clock.now(), 1234, 'server clock offset from welcome');
});

test('snapshot: false and the max_hz option spelled as on the wire', () => {
  const t = setup({ max_hz: 2, snapshot: false });
  t.client.start();
  const { sub } = goLive(t);
  assert.equal(sub.max_hz, 2);
  assert.equal(sub.snapshot, false);
});

test('delivers snapshots, ticks and statuses with gap info', () => {
  const t = setup();
  t.client.start();
  const { ws } = goLive(t);
  ws.receive(snap('fx.EUR-USD', 10, 1.08));
  ws.receive(tick('fx.EUR-USD', 11, 1.09));
  ws.receive(tick('fx.EUR-USD', 15, 1.1));
  ws.receive({ type: 'status', topic: 'fx.EUR-USD', state: 'stale', since: 5 });
  assert.equal(t.log.snapshots.length, 1);
  assert.deepEqual(t.log.snapshots[0].meta, { accept: true, gap: 0, cause: null });
  assert.deepEqual(t.log.ticks.map((x) => x.meta.cause), [null, 'conflation']);
  assert.equal(t.log.ticks[1].meta.gap, 3);
  assert.deepEqual(t.log.statuses, [{ type: 'status', topic: 'fx.EUR-USD', state: 'stale', since: 5 }]);
});

test('ignores garbage, unknown types and repeated ticks', () => {
  const t = setup();
  t.client.start();
  const { ws } = goLive(t);
  ws.receive('not json');
  ws.receive('[1,2]');
  ws.receive({ type: 'future_thing', x: 1 });
  ws.receive(tick('a.b', 5));
  ws.receive(tick('a.b', 5));
  ws.receive(tick('a.b', 4));
  assert.equal(t.log.ticks.length, 1);
  assert.equal(t.client.state, 'live');
});

test('auth comes first, and subscribe waits for authenticated', () => {
  const t = setup({ token: 'secret-token' });
  t.client.start();
  const ws = t.last();
  ws.open();
  assert.deepEqual(ws.sent.map((m) => m.op), ['auth'], 'auth is the first message, sent on open');
  assert.equal(ws.sent[0].token, 'secret-token');
  ws.receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: 0 });
  assert.deepEqual(ws.sent.map((m) => m.op), ['auth'], 'no subscribe before authenticated');
  ws.receive({ type: 'authenticated', id: ws.sent[0].id, sub: 'dash', exp: 9e9 });
  assert.deepEqual(ws.sent.map((m) => m.op), ['auth', 'subscribe']);
  ws.receive({ type: 'subscribed', id: ws.sent[1].id, topics: ['>'] });
  assert.equal(t.client.state, 'live');
});

test('auth is first again on every reconnect', () => {
  const t = setup({ token: 'tok' });
  t.client.start();
  t.last().open();
  t.last().serverClose(1006);
  t.clock.advance(1000);
  assert.equal(t.sockets.length, 2);
  t.last().open();
  assert.equal(t.last().sent[0].op, 'auth');
});

test('without a token no auth is sent', () => {
  const t = setup();
  t.client.start();
  const { ws } = goLive(t);
  assert.equal(ws.ops('auth').length, 0);
});

test('authenticate() sends a fresh token on the live connection', () => {
  const t = setup({ token: 'old' });
  t.client.start();
  const ws = t.last();
  ws.open();
  t.client.authenticate('new');
  assert.deepEqual(ws.ops('auth').map((m) => m.token), ['old', 'new']);
});

test('4500 stops with the reason and never reconnects', () => {
  const t = setup({ token: 'bad' });
  t.client.start();
  t.last().open();
  t.last().serverClose(4500, 'bad token');
  const s = t.lastState();
  assert.equal(s.state, 'stopped');
  assert.equal(s.code, 4500);
  assert.match(s.reason, /unauthorized \(4500: bad token\)/);
  t.clock.advance(120_000);
  assert.equal(t.sockets.length, 1);
  assert.deepEqual(t.clock.pending(), []);
});

test('a token refused with an error (auth off) stops too', () => {
  const t = setup({ token: 'bad' });
  t.client.start();
  const ws = t.last();
  ws.open();
  ws.receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: 0 });
  ws.receive({ type: 'error', id: ws.sent[0].id, code: 'unauthorized', message: 'bad signature' });
  assert.equal(ws.ops('subscribe').length, 0);
  assert.equal(ws.closedWith.code, 1000);
  assert.deepEqual(t.lastState(), { state: 'stopped', reason: 'token refused (unauthorized: bad signature)', code: null });
  assert.equal(t.log.errors.length, 1);
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1);
});

test('a subscribe refused as unauthorized (no token, auth on) is not live: it stops and says a token is needed', () => {
  const t = setup();
  t.client.start();
  const ws = t.last();
  ws.open();
  ws.receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: 0 });
  const sub = ws.ops('subscribe')[0];
  ws.receive({ type: 'error', id: sub.id, code: 'unauthorized', message: 'authenticate first' });
  assert.ok(!t.log.states.some((s) => s.state === 'live'), 'never live: no price will come');
  assert.equal(ws.closedWith.code, 1000);
  const s = t.lastState();
  assert.equal(s.state, 'stopped');
  assert.equal(s.needsToken, true);
  assert.match(s.reason, /token/);
  assert.equal(t.log.errors.length, 1, 'the error is reported too');
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1, 'the same (no) credentials would fail again');
});

test('a normal close (1000) from the broker stops', () => {
  const t = setup();
  t.client.start();
  goLive(t);
  t.last().serverClose(1000);
  assert.equal(t.lastState().state, 'stopped');
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1);
});

for (const code of [1001, 1006, 1011, 1013, 4000, 4001, 4002, 4003, 4499]) {
  test(`close ${code} reconnects after a backoff delay`, () => {
    const t = setup();
    t.client.start();
    goLive(t);
    t.last().serverClose(code);
    const s = t.lastState();
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.code, code);
    assert.equal(s.retryAt, t.clock.now() + s.delayMs);
    t.clock.advance(s.delayMs);
    assert.equal(t.sockets.length, 2);
    assert.equal(t.lastState().state, 'connecting');
  });
}

test('the first reconnect waits a random delay under the base', () => {
  for (const r of [0.01, 0.5, 0.99]) {
    const t = setup({ random: () => r });
    t.client.start();
    goLive(t);
    t.last().serverClose(1006);
    const { delayMs } = t.lastState();
    assert.equal(delayMs, 500 * r);
    t.clock.advance(delayMs - 1);
    assert.equal(t.sockets.length, 1, 'not before the delay');
    t.clock.advance(1);
    assert.equal(t.sockets.length, 2);
  }
});

test('failed attempts back off exponentially up to the cap', () => {
  const t = setup({ random: () => 0.999 });
  t.client.start();
  const delays = [];
  for (let i = 0; i < 9; i++) {
    t.last().serverClose(1006); // the broker is down: every attempt fails
    delays.push(Math.round(t.lastState().delayMs / 0.999));
    t.clock.advance(t.lastState().delayMs);
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000]);
});

test('a connection that stayed live resets the backoff; a flapping one does not', () => {
  const t = setup({ random: () => 0.999 });
  t.client.start();
  for (let i = 0; i < 4; i++) {
    t.last().serverClose(1006);
    t.clock.advance(t.lastState().delayMs);
  }
  goLive(t);
  t.clock.advance(1000); // live for a moment only
  t.last().serverClose(1006);
  assert.equal(t.lastState().attempt, 4, 'flapping: backoff goes on');
  t.clock.advance(t.lastState().delayMs);
  goLive(t);
  t.clock.advance(5000);
  t.last().ops('ping').forEach((p) => t.last().receive({ type: 'pong', id: p.id, server_time: 0 }));
  t.last().serverClose(1006);
  assert.equal(t.lastState().attempt, 0, 'stable for 5 s: start over');
  assert.ok(t.lastState().delayMs < 500);
});

test('after a shutdown message the delay is about retry_ms', () => {
  const t = setup({ random: () => 0.25 });
  t.client.start();
  goLive(t);
  t.last().receive({ type: 'shutdown', retry_ms: 2500 });
  t.last().serverClose(1001);
  assert.equal(t.lastState().delayMs, 2500 * 0.75);
});

test('resubscribes with the epoch and the last seq of each topic; recovered: true', () => {
  const t = setup();
  t.client.start();
  const { ws } = goLive(t, { epoch: 'E1' });
  ws.receive(snap('crypto.BTC-USD', 1041));
  ws.receive(tick('crypto.BTC-USD', 1042));
  ws.receive(snap('fx.EUR-USD', 7));
  ws.serverClose(1006);
  t.clock.advance(t.lastState().delayMs);

  const { sub } = goLive(t, { epoch: 'E1', recovered: true });
  assert.equal(sub.epoch, 'E1');
  assert.deepEqual(sub.since, { 'crypto.BTC-USD': 1042, 'fx.EUR-USD': 7 });
  assert.deepEqual(sub.topics, ['>']);
  const live = t.lastState();
  assert.equal(live.state, 'live');
  assert.equal(live.recovered, true);

  // The broker replays what was missed, then continues live.
  t.last().receive(tick('crypto.BTC-USD', 1043));
  t.last().receive(tick('crypto.BTC-USD', 1044));
  assert.deepEqual(t.log.ticks.slice(-2).map((x) => x.meta), [
    { accept: true, gap: 0, cause: null },
    { accept: true, gap: 0, cause: null },
  ]);
});

test('recovered: false tells the app which topics lost ticks', () => {
  const t = setup();
  t.client.start();
  const { ws } = goLive(t, { epoch: 'E1' });
  ws.receive(snap('crypto.BTC-USD', 1042));
  ws.receive(snap('fx.EUR-USD', 7));
  ws.serverClose(4001, 'slow consumer');
  t.clock.advance(t.lastState().delayMs);

  goLive(t, { epoch: 'E1', recovered: false });
  assert.equal(t.lastState().recovered, false);
  t.last().receive(snap('crypto.BTC-USD', 3000)); // history too short: a fresh snapshot
  t.last().receive(snap('fx.EUR-USD', 7)); // nothing was published meanwhile
  const [btc, fx] = t.log.snapshots.slice(-2).map((x) => x.meta);
  assert.deepEqual(btc, { accept: true, gap: 1957, cause: 'recovery_failed' });
  assert.deepEqual(fx, { accept: true, gap: 0, cause: null });
  // Later gaps on this live connection are conflation again.
  t.last().receive(tick('crypto.BTC-USD', 3005));
  assert.equal(t.log.ticks.at(-1).meta.cause, 'conflation');
});

test('a broker restart (new epoch) is a failed recovery; the old epoch is what is sent', () => {
  const t = setup();
  t.client.start();
  const { ws } = goLive(t, { epoch: 'E1' });
  ws.receive(snap('eq.AAPL', 500));
  ws.serverClose(1006);
  t.clock.advance(t.lastState().delayMs);
  const { sub } = goLive(t, { epoch: 'E2', recovered: false });
  assert.equal(sub.epoch, 'E1', 'the epoch the since seqs belong to');
  assert.deepEqual(sub.since, { 'eq.AAPL': 500 });
  assert.equal(t.client.epoch, 'E2');
  t.last().receive(snap('eq.AAPL', 4));
  assert.deepEqual(t.log.snapshots.at(-1).meta, { accept: true, gap: null, cause: 'recovery_failed', epochChanged: true });
});

test('the first connection sends no epoch and no since', () => {
  const t = setup();
  t.client.start();
  const { sub } = goLive(t);
  assert.equal('epoch' in sub, false);
  assert.equal('since' in sub, false);
});

test('since only holds topics that the current patterns match', () => {
  const t = setup({ topics: ['>'] });
  t.client.start();
  const { ws } = goLive(t);
  ws.receive(snap('fx.A', 1));
  ws.receive(snap('eq.B', 2));
  t.client.setTopics(['fx.*']);
  ws.serverClose(1006);
  t.clock.advance(t.lastState().delayMs);
  const { sub } = goLive(t);
  assert.deepEqual(sub.topics, ['fx.*']);
  assert.deepEqual(sub.since, { 'fx.A': 1 });
});

test('ping watchdog: a pong in time keeps the connection', () => {
  const t = setup({ pingIntervalMs: 10000, pongTimeoutMs: 5000 });
  t.client.start();
  const { ws } = goLive(t);
  for (let i = 1; i <= 3; i++) {
    t.clock.advance(10000);
    const pings = ws.ops('ping');
    assert.equal(pings.length, i);
    t.clock.advance(4999);
    ws.receive({ type: 'pong', id: pings.at(-1).id, server_time: t.clock.now() });
  }
  assert.equal(t.client.state, 'live');
  assert.equal(ws.closedWith, null);
});

test('ping watchdog: no pong in time closes and reconnects', () => {
  const t = setup({ pingIntervalMs: 10000, pongTimeoutMs: 5000 });
  t.client.start();
  const { ws } = goLive(t);
  t.clock.advance(10000);
  assert.equal(ws.ops('ping').length, 1);
  t.clock.advance(4999);
  assert.equal(t.client.state, 'live');
  t.clock.advance(1);
  assert.equal(ws.closedWith.code, 4000);
  const s = t.lastState();
  assert.equal(s.state, 'reconnecting');
  assert.match(s.reason, /no pong within 5000 ms/);
  // The dead socket's own close event, if it ever comes, changes nothing.
  ws.serverClose(1006);
  assert.equal(t.log.states.filter((x) => x.state === 'reconnecting').length, 1);
  t.clock.advance(s.delayMs);
  assert.equal(t.sockets.length, 2);
});

test('ping watchdog: ticks flowing do not replace the pong', () => {
  const t = setup({ pingIntervalMs: 1000, pongTimeoutMs: 500 });
  t.client.start();
  const { ws } = goLive(t);
  for (let seq = 1; seq <= 15; seq++) {
    ws.receive(tick('a.b', seq));
    t.clock.advance(100);
  }
  assert.equal(t.lastState().state, 'reconnecting');
});

test('no pings before the connection is ready, and none when disabled', () => {
  const t = setup({ pingIntervalMs: 1000, connectTimeoutMs: 60000 });
  t.client.start();
  t.last().open();
  t.clock.advance(5000);
  assert.equal(t.last().ops('ping').length, 0);

  const u = setup({ pingIntervalMs: 0 });
  u.client.start();
  const { ws } = goLive(u);
  u.clock.advance(600_000);
  assert.equal(ws.ops('ping').length, 0);
  assert.equal(u.client.state, 'live');
});

test('an attempt that gets no welcome in time is given up', () => {
  const t = setup({ connectTimeoutMs: 10000 });
  t.client.start();
  t.clock.advance(9999);
  assert.equal(t.client.state, 'connecting');
  t.clock.advance(1);
  assert.equal(t.last().closedWith.code, 4000);
  assert.equal(t.lastState().state, 'reconnecting');
  assert.match(t.lastState().reason, /no welcome within 10000 ms/);
});

test('setTopics unsubscribes the old patterns and subscribes the new ones', () => {
  const t = setup({ topics: ['>'], maxHz: 4 });
  t.client.start();
  const { ws } = goLive(t);
  ws.receive(snap('eq.AAPL', 3));
  t.client.setTopics(['fx.*']);
  const [unsub, sub] = ws.sent.slice(-2);
  assert.deepEqual({ op: unsub.op, topics: unsub.topics }, { op: 'unsubscribe', topics: ['>'] });
  assert.deepEqual({ op: sub.op, topics: sub.topics, max_hz: sub.max_hz }, { op: 'subscribe', topics: ['fx.*'], max_hz: 4 });
  assert.equal('since' in sub, false, 'no recovery on a live connection');
  // A tick of the old pattern still in flight is not delivered.
  ws.receive(tick('eq.AAPL', 4));
  ws.receive({ type: 'status', topic: 'eq.AAPL', state: 'stale', since: 1 });
  assert.equal(t.log.ticks.length, 0);
  assert.equal(t.log.statuses.length, 0);
  ws.receive(snap('fx.EUR-USD', 9));
  assert.equal(t.log.snapshots.at(-1).m.topic, 'fx.EUR-USD');
});

test('setMaxHz resubscribes everything at the new rate', () => {
  const t = setup({ topics: ['fx.*', 'eq.*'] });
  t.client.start();
  const { ws } = goLive(t);
  t.client.setMaxHz(10);
  const [unsub, sub] = ws.sent.slice(-2);
  assert.deepEqual([unsub.op, unsub.topics], ['unsubscribe', ['fx.*', 'eq.*']]);
  assert.deepEqual([sub.op, sub.topics, sub.max_hz], ['subscribe', ['fx.*', 'eq.*'], 10]);
  t.client.setMaxHz(0);
  assert.equal('max_hz' in ws.sent.at(-1), false);
});

test('changes while disconnected go into the next connection\'s subscribe', () => {
  const t = setup({ topics: ['fx.*'] });
  t.client.start();
  t.last().serverClose(1006);
  t.client.subscribe(['eq.*']);
  t.client.setMaxHz(2);
  t.clock.advance(t.lastState().delayMs);
  const { sub } = goLive(t);
  assert.deepEqual(sub.topics, ['fx.*', 'eq.*']);
  assert.equal(sub.max_hz, 2);
  assert.equal(t.sockets[0].sent.length, 0);
});

test('a subscribe made between welcome and subscribed is still sent', () => {
  const t = setup({ topics: ['fx.*'] });
  t.client.start();
  const ws = t.last();
  ws.open();
  ws.receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: 0 });
  t.client.subscribe(['eq.*']);
  assert.deepEqual(ws.ops('subscribe').map((m) => m.topics), [['fx.*'], ['eq.*']]);
});

test('a first subscribe refused as forbidden is reported, and the connection stays but is not live', () => {
  const t = setup({ topics: ['fx.*', 'crypto.>'] });
  t.client.start();
  const ws = t.last();
  ws.open();
  ws.receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: 0 });
  const sub = ws.ops('subscribe')[0];
  ws.receive({ type: 'error', id: sub.id, code: 'forbidden', message: 'not allowed' });
  assert.equal(t.log.errors[0].code, 'forbidden');
  assert.ok(!t.log.states.some((s) => s.state === 'live'), 'nothing is subscribed: no price will come');
  assert.deepEqual(t.lastState(), { state: 'refused', code: 'forbidden', reason: 'forbidden: not allowed' });
  assert.equal(ws.closedWith, null, 'the connection stays');
  // The broker refused the whole request: a new filter is asked for whole,
  // crypto.> included, and a refusal of it stays refused.
  t.client.setTopics(['crypto.>', 'eq.*']);
  const again = ws.ops('subscribe').at(-1);
  assert.deepEqual(again.topics, ['crypto.>', 'eq.*']);
  assert.equal(ws.ops('unsubscribe').length, 0, 'nothing held, nothing to unsubscribe');
  ws.receive({ type: 'error', id: again.id, code: 'forbidden', message: "not allowed to subscribe to 'eq.*'" });
  assert.equal(t.lastState().state, 'refused');
  assert.equal(t.lastState().reason, "forbidden: not allowed to subscribe to 'eq.*'");
  t.client.subscribe(['ix.*']);
  assert.deepEqual(ws.ops('subscribe').at(-1).topics, ['crypto.>', 'eq.*', 'ix.*'], 'refused: all of them');
  t.client.setTopics(['crypto.>']);
  const ok = ws.ops('subscribe').at(-1);
  assert.deepEqual(ok.topics, ['crypto.>']);
  ws.receive({ type: 'subscribed', id: ok.id, topics: ok.topics });
  assert.deepEqual(t.lastState(), { state: 'live', epoch: 'E1', recovered: null });
  // Live again: changes are diffs once more.
  t.client.setTopics(['crypto.>', 'fx.*']);
  assert.deepEqual(ws.ops('subscribe').at(-1).topics, ['fx.*']);
  assert.equal(t.sockets.length, 1);
});

test('a subscribe sent before the first one was refused does not make the page live', () => {
  // The first subscribe is in flight when the filter changes: the change
  // goes out as a diff. The first is then refused (the broker holds none of
  // its patterns); the diff's success covers only its own.
  const t = setup({ topics: ['fx.*', 'secret.*'] });
  t.client.start();
  const ws = t.last();
  ws.open();
  ws.receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: 0 });
  const first = ws.ops('subscribe')[0];
  t.client.setTopics(['fx.*', 'crypto.*']);
  const diff = ws.ops('subscribe').at(-1);
  assert.deepEqual(diff.topics, ['crypto.*']);
  ws.receive({ type: 'error', id: first.id, code: 'forbidden', message: "not allowed to subscribe to 'secret.*'" });
  ws.receive({ type: 'subscribed', id: diff.id, topics: diff.topics });
  assert.equal(t.lastState().state, 'refused', 'fx.* is not held: not live');
  // Asked for whole, and granted: live.
  t.client.setTopics(['fx.*', 'crypto.*', 'eq.*']);
  const whole = ws.ops('subscribe').at(-1);
  assert.deepEqual(whole.topics, ['fx.*', 'crypto.*', 'eq.*']);
  ws.receive({ type: 'subscribed', id: whole.id, topics: whole.topics });
  assert.equal(t.lastState().state, 'live');
});

test('stop() closes with 1000 and stays stopped until start()', () => {
  const t = setup();
  t.client.start();
  const { ws } = goLive(t);
  t.client.stop();
  assert.equal(ws.closedWith.code, 1000);
  assert.equal(t.lastState().state, 'stopped');
  ws.serverClose(1000);
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1);
  t.client.start();
  assert.equal(t.sockets.length, 2);
  assert.equal(t.lastState().state, 'connecting');
});

test('stop() while waiting to reconnect cancels the retry', () => {
  const t = setup();
  t.client.start();
  t.last().serverClose(1006);
  t.client.stop('user');
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1);
  assert.deepEqual(t.lastState(), { state: 'stopped', reason: 'user', code: null });
});

test('with no topics the connection is live after welcome', () => {
  const t = setup({ topics: [] });
  t.client.start();
  const ws = t.last();
  ws.open();
  ws.receive({ type: 'welcome', epoch: 'E1', heartbeat_ms: 15000, server_time: 0 });
  assert.equal(t.client.state, 'live');
  assert.equal(ws.sent.length, 0);
});

test('buildSubscribe sends per-topic epochs with since', async () => {
  const { buildSubscribe } = await import('../../crates/gateway/static/tickwire.js');
  const m = buildSubscribe({ id: 1, topics: ['c.*'], epoch: 'e1', since: { 'c.a': 4 }, epochs: { 'c.a': 'nodeA' } });
  assert.deepEqual(m.epochs, { 'c.a': 'nodeA' });
  assert.equal(buildSubscribe({ id: 2, topics: ['c.*'], epoch: 'e1', since: { 'c.a': 4 } }).epochs, undefined);
});

test('onError says which of the client\'s requests an error answers', () => {
  const ops = [];
  const t = setup({ topics: ['fx.*'], onError: (m, op) => ops.push([m.code, op]) });
  t.client.start();
  const { ws } = goLive(t);
  t.client.subscribe(['eq.*']);
  ws.receive({ type: 'error', id: ws.ops('subscribe').at(-1).id, code: 'forbidden', message: 'no' });
  ws.receive({ type: 'error', code: 'rate_limited', message: 'slow down' });
  ws.receive({ type: 'error', id: 999, code: 'bad_request', message: 'not ours' });
  assert.deepEqual(ops, [['forbidden', 'subscribe'], ['rate_limited', null], ['bad_request', null]]);
});
