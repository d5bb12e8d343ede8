// The dashboard's pure helpers (the DOM part only starts in a page).
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  fractionDigits,
  formatNumber,
  formatChange,
  formatAge,
  sparklinePoints,
  connectionText,
  readSettings,
  DEFAULT_MAX_HZ,
} from '../../crates/gateway/static/dashboard.js';

test('decimals as sent, as far as JSON keeps them', () => {
  assert.equal(fractionDigits(64012.53), 2);
  assert.equal(fractionDigits(64012.5), 1);
  assert.equal(fractionDigits(1.08453), 5);
  assert.equal(fractionDigits(100), 0);
  assert.equal(fractionDigits(1.5e-7), 8);
  assert.equal(fractionDigits(2e-7), 7);
  assert.equal(fractionDigits(1e21), 0);
  assert.equal(fractionDigits(NaN), 0);
  assert.equal(fractionDigits('1.25'), 0, 'only numbers count');
  assert.equal(formatNumber(1.5, 5), '1.50000');
  assert.equal(formatNumber(null, 2), '—');
});

test('change since the first value, with sign and percent', () => {
  assert.deepEqual(formatChange(110, 100, 2), { abs: '+10.00', pct: '+10.00%', dir: 'up', pctDir: 'up' });
  assert.deepEqual(formatChange(99.5, 100, 2), { abs: '-0.50', pct: '-0.50%', dir: 'down', pctDir: 'down' });
  assert.deepEqual(formatChange(100, 100, 2), { abs: '0.00', pct: '0.00%', dir: 'flat', pctDir: 'flat' });
  // A float residue is shown as no change, not as -0.00.
  assert.equal(formatChange(0.1 + 0.2, 0.3, 4).abs, '0.0000');
  assert.deepEqual(formatChange(1.00001, 1, 5), { abs: '+0.00001', pct: '0.00%', dir: 'up', pctDir: 'flat' });
  assert.equal(formatChange(null, 100, 2).abs, '—');
  assert.equal(formatChange(5, 0, 2).pct, '—');
});

test('age as short text', () => {
  assert.equal(formatAge(0), '0.0s');
  assert.equal(formatAge(-30), '0.0s', 'clock skew never shows a negative age');
  assert.equal(formatAge(1234), '1.2s');
  assert.equal(formatAge(42_000), '42s');
  assert.equal(formatAge(184_000), '3m 04s');
  assert.equal(formatAge(2 * 3600_000 + 5 * 60_000), '2h 05m');
  assert.equal(formatAge(NaN), '—');
});

test('sparkline points span the box, highest value on top', () => {
  const pts = sparklinePoints([1, 3, 2], 100, 20).split(' ').map((p) => p.split(',').map(Number));
  assert.equal(pts.length, 3);
  assert.equal(pts[0][0], 1.5);
  assert.equal(pts[2][0], 98.5);
  assert.equal(pts[1][1], 1.5, 'max at the top');
  assert.equal(pts[0][1], 18.5, 'min at the bottom');
  assert.equal(sparklinePoints([]), '');
  assert.equal(sparklinePoints([5, 5], 100, 20), '1.5,10.0 98.5,10.0', 'flat line in the middle');
});

test('connection text for each state', () => {
  assert.equal(connectionText({ state: 'live' }, 0), 'live');
  assert.equal(connectionText({ state: 'connecting', attempt: 0 }, 0), 'connecting');
  assert.equal(connectionText({ state: 'connecting', attempt: 2 }, 0), 'connecting (attempt 3)');
  assert.equal(connectionText({ state: 'reconnecting', retryAt: 5200 }, 4000), 'reconnecting in 1.2s');
  assert.equal(connectionText({ state: 'reconnecting', retryAt: 5200 }, 9000), 'reconnecting in 0.0s');
  assert.equal(connectionText({ state: 'stopped', reason: 'unauthorized (4500)' }, 0), 'stopped: unauthorized (4500)');
});

test('filter and rate come from the query string', () => {
  assert.deepEqual(readSettings(''), { filter: '>', maxHz: DEFAULT_MAX_HZ });
  assert.deepEqual(readSettings('?filter=fx.*&max_hz=2'), { filter: 'fx.*', maxHz: 2 });
  assert.deepEqual(readSettings('?max_hz=0'), { filter: '>', maxHz: 0 });
  assert.deepEqual(readSettings('?max_hz=abc&filter=%20'), { filter: '>', maxHz: 0 });
});
