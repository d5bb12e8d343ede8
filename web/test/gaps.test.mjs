import test from 'node:test';
import assert from 'node:assert/strict';
import { GapTracker } from '../../crates/gateway/static/tickwire.js';

test('the first value of a topic is a baseline', () => {
  const g = new GapTracker();
  assert.deepEqual(g.observe('snapshot', 'fx.EUR-USD', 1041), { accept: true, gap: 0, cause: null });
  assert.equal(g.lastSeq('fx.EUR-USD'), 1041);
});

test('contiguous ticks report no gap', () => {
  const g = new GapTracker();
  g.observe('snapshot', 'a.b', 10);
  for (let seq = 11; seq < 20; seq++) {
    assert.deepEqual(g.observe('tick', 'a.b', seq), { accept: true, gap: 0, cause: null });
  }
  assert.equal(g.lastSeq('a.b'), 19);
});

test('topics are tracked independently', () => {
  const g = new GapTracker();
  g.observe('tick', 'a.x', 1);
  g.observe('tick', 'a.y', 100);
  assert.equal(g.observe('tick', 'a.x', 2).gap, 0);
  assert.equal(g.observe('tick', 'a.y', 101).gap, 0);
});

test('a gap on a live connection is conflation, never loss', () => {
  const g = new GapTracker();
  g.observe('snapshot', 'a.b', 10);
  assert.deepEqual(g.observe('tick', 'a.b', 14), { accept: true, gap: 3, cause: 'conflation' });
  assert.deepEqual(g.observe('tick', 'a.b', 15), { accept: true, gap: 0, cause: null });
});

test('an old or repeated tick is dropped, a repeated snapshot is harmless', () => {
  const g = new GapTracker();
  g.observe('tick', 'a.b', 10);
  assert.equal(g.observe('tick', 'a.b', 10).accept, false);
  assert.equal(g.observe('tick', 'a.b', 7).accept, false);
  const snap = g.observe('snapshot', 'a.b', 10);
  assert.equal(snap.accept, true);
  assert.equal(snap.cause, null);
  assert.equal(g.lastSeq('a.b'), 10);
});

test('since() lists the last seq of the topics the patterns match', () => {
  const g = new GapTracker();
  g.observe('tick', 'fx.EUR-USD', 5);
  g.observe('tick', 'fx.USD-JPY', 9);
  g.observe('tick', 'crypto.BTC-USD', 1041);
  assert.deepEqual(g.since(['fx.*']), { 'fx.EUR-USD': 5, 'fx.USD-JPY': 9 });
  assert.deepEqual(g.since(['>']), { 'fx.EUR-USD': 5, 'fx.USD-JPY': 9, 'crypto.BTC-USD': 1041 });
  assert.deepEqual(g.since(['eq.*']), {});
});

test('since() stays under its byte budget', () => {
  const g = new GapTracker();
  for (let i = 0; i < 5000; i++) g.observe('tick', `t.topic-${i}`, 123456);
  const since = g.since(['>'], 4096);
  assert.ok(JSON.stringify(since).length <= 4096);
  assert.ok(Object.keys(since).length > 100);
});

test('recovery that worked: replayed ticks continue the sequence', () => {
  const g = new GapTracker();
  g.observe('tick', 'a.b', 20);
  g.beginRecovery(['>'], { epochChanged: false });
  assert.deepEqual(g.observe('tick', 'a.b', 21), { accept: true, gap: 0, cause: null });
  assert.deepEqual(g.observe('tick', 'a.b', 22), { accept: true, gap: 0, cause: null });
});

test('recovery that worked but replays under max_hz: a gap is conflation', () => {
  const g = new GapTracker();
  g.observe('tick', 'a.b', 20);
  g.beginRecovery(['>'], { epochChanged: false });
  assert.equal(g.observe('tick', 'a.b', 25).cause, 'conflation');
});

test('recovery that failed: a snapshot past the last seq means lost ticks', () => {
  const g = new GapTracker();
  g.observe('tick', 'a.b', 20);
  g.beginRecovery(['>'], { epochChanged: false });
  assert.deepEqual(g.observe('snapshot', 'a.b', 2000), { accept: true, gap: 1979, cause: 'recovery_failed' });
  // After the snapshot the topic is live again.
  assert.deepEqual(g.observe('tick', 'a.b', 2001), { accept: true, gap: 0, cause: null });
});

test('recovery refused but nothing was published meanwhile: no loss', () => {
  const g = new GapTracker();
  g.observe('tick', 'a.b', 20);
  g.beginRecovery(['>'], { epochChanged: false });
  assert.deepEqual(g.observe('snapshot', 'a.b', 20), { accept: true, gap: 0, cause: null });
  assert.deepEqual(g.observe('snapshot', 'a.c', 3), { accept: true, gap: 0, cause: null }, 'new topic: baseline');
});

test('a new epoch (broker restart) is a failed recovery with an unknown gap', () => {
  const g = new GapTracker();
  g.observe('tick', 'a.b', 5000);
  g.observe('tick', 'a.c', 7);
  g.beginRecovery(['>'], { epochChanged: true });
  assert.deepEqual(g.observe('snapshot', 'a.b', 3), { accept: true, gap: null, cause: 'recovery_failed', epochChanged: true });
  // Even a tick whose seq looks contiguous belongs to the new seq space.
  assert.equal(g.observe('tick', 'a.c', 8).cause, 'recovery_failed');
  assert.deepEqual(g.observe('tick', 'a.b', 4), { accept: true, gap: 0, cause: null });
});

test('recovery forgets topics that no pattern matches any more', () => {
  const g = new GapTracker();
  g.observe('tick', 'fx.A', 5);
  g.observe('tick', 'eq.B', 5);
  g.beginRecovery(['fx.*'], { epochChanged: false });
  assert.equal(g.lastSeq('eq.B'), undefined);
  assert.equal(g.lastSeq('fx.A'), 5);
});

test('retain() forgets unsubscribed topics, so they start from a baseline again', () => {
  const g = new GapTracker();
  g.observe('tick', 'fx.A', 5);
  g.observe('tick', 'eq.B', 5);
  g.retain((t) => t.startsWith('fx.'));
  assert.equal(g.lastSeq('eq.B'), undefined);
  assert.deepEqual(g.observe('snapshot', 'eq.B', 90), { accept: true, gap: 0, cause: null });
});

test('on a cluster the topic epoch, not the node epoch, decides a recovery', () => {
  const g = new GapTracker();
  g.observe('snapshot', 'c.a', 40, 'nodeA');
  g.observe('tick', 'c.a', 41, 'nodeA');
  const since = g.since(['c.*']);
  assert.deepEqual(since, { 'c.a': 41 });
  assert.deepEqual(g.epochs(since), { 'c.a': 'nodeA' });
  // Reconnected to node B (another welcome epoch), which replays nodeA's seqs.
  g.beginRecovery(['c.*'], { epochChanged: true });
  assert.deepEqual(g.observe('tick', 'c.a', 42, 'nodeA'), { accept: true, gap: 0, cause: null });
});

test('a topic moving to another epoch on a live connection is a new seq space', () => {
  const g = new GapTracker();
  g.observe('tick', 'c.a', 41, 'nodeA');
  const r = g.observe('tick', 'c.a', 42, 'nodeB');
  assert.equal(r.cause, 'epoch_changed');
  assert.equal(g.observe('tick', 'c.a', 43, 'nodeB').gap, 0);
});
