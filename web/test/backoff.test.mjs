import test from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, Backoff, shutdownDelay, DEFAULTS } from '../../crates/gateway/static/tickwire.js';
import { seededRandom } from './fakes.mjs';

test('defaults are a 0.5 s base and a 20 s cap', () => {
  assert.equal(DEFAULTS.backoffBaseMs, 500);
  assert.equal(DEFAULTS.backoffCapMs, 20000);
});

test('delay is random times the ceiling min(cap, base * 2^attempt)', () => {
  const opts = { baseMs: 500, capMs: 20000 };
  assert.equal(backoffDelay(0, opts, () => 0.5), 250);
  assert.equal(backoffDelay(1, opts, () => 0.5), 500);
  assert.equal(backoffDelay(3, opts, () => 0.5), 2000);
  assert.equal(backoffDelay(5, opts, () => 0.5), 8000);
});

test('delay stays within [0, ceiling) for every attempt', () => {
  const random = seededRandom(7);
  for (let attempt = 0; attempt < 40; attempt++) {
    const ceiling = Math.min(20000, 500 * 2 ** attempt);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, {}, random);
      assert.ok(d >= 0 && d < ceiling, `attempt ${attempt}: ${d} not in [0, ${ceiling})`);
    }
  }
});

test('the cap holds for huge attempt numbers', () => {
  const almostOne = () => 0.999999;
  assert.ok(backoffDelay(6, {}, almostOne) < 20000);
  assert.ok(backoffDelay(1e6, {}, almostOne) < 20000);
  assert.ok(Number.isFinite(backoffDelay(5000, {}, almostOne)));
  assert.ok(backoffDelay(1e6, {}, almostOne) > 19990);
});

test('the first delay is random, under the base, and not always zero', () => {
  const random = seededRandom(1);
  const firsts = Array.from({ length: 500 }, () => new Backoff({ random }).next());
  assert.ok(firsts.every((d) => d >= 0 && d < 500));
  // Full jitter: the first retries of many clients spread over the window.
  const distinct = new Set(firsts.map((d) => Math.floor(d / 50)));
  assert.equal(distinct.size, 10, 'first delays should cover every 50 ms bucket of [0, 500)');
  assert.ok(Math.min(...firsts) < 50 && Math.max(...firsts) > 450);
});

test('jitter: the mean delay is about half the ceiling', () => {
  const random = seededRandom(99);
  let sum = 0;
  const n = 4000;
  for (let i = 0; i < n; i++) sum += backoffDelay(4, {}, random);
  const mean = sum / n;
  assert.ok(Math.abs(mean - 4000) < 250, `mean ${mean} should be near 4000`);
});

test('Backoff counts attempts and reset() starts over', () => {
  const b = new Backoff({ random: () => 0.999 });
  const delays = Array.from({ length: 8 }, () => b.next());
  assert.deepEqual(
    delays.map((d) => Math.round(d / 0.999)),
    [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000],
  );
  assert.equal(b.attempt, 8);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.ok(b.next() < 500);
});

test('shutdown delay is about retry_ms, with jitter', () => {
  assert.equal(shutdownDelay(2500, () => 0), 1250);
  assert.equal(shutdownDelay(2500, () => 0.5), 2500);
  const random = seededRandom(3);
  for (let i = 0; i < 200; i++) {
    const d = shutdownDelay(2500, random);
    assert.ok(d >= 1250 && d < 3750);
  }
});
