// The dashboard's pure helpers (the DOM part only starts in a page).
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  parseDecimal,
  decimalsOf,
  formatDecimal,
  formatChange,
  formatAge,
  sparklinePoints,
  connectionText,
  readSettings,
  DEFAULT_MAX_HZ,
} from '../../crates/gateway/static/dashboard.js';
import { dataNumbers } from '../../crates/gateway/static/tickwire.js';

const dec = (text) => parseDecimal(text);

test('prices show the digits the publisher sent, no more, no fewer', () => {
  const frame = '{"type":"tick","topic":"t","seq":1,"ts":1,"data":{"price":0.000000001234,"bid":123456789.123456789,"ask":64012.50}}';
  const sent = decimalsOf(JSON.parse(frame).data, dataNumbers(frame));
  assert.equal(formatDecimal(sent.price), '0.000000001234');
  assert.equal(formatDecimal(sent.bid), '123456789.123456789');
  assert.equal(formatDecimal(sent.ask), '64012.50');
  // What a double makes of them: the reason for the texts.
  assert.notEqual(String(JSON.parse(frame).data.bid), '123456789.123456789');
  assert.equal(formatDecimal(dec('1.5e-7')), '0.00000015');
  assert.equal(formatDecimal(dec('-2E+3')), '-2000');
  assert.equal(formatDecimal(dec('1.5'), 4), '1.5000', 'padded to the row, never cut');
  assert.equal(formatDecimal(dec('1.23456'), 2), '1.23456');
  assert.equal(formatDecimal(null), '—');
  assert.equal(parseDecimal('1e999'), null);
  assert.equal(parseDecimal('abc'), null);
  // Without the frame's text the parsed value is used.
  assert.equal(formatDecimal(decimalsOf({ price: 1.25 }).price), '1.25');
  // The mid of bid and ask, exact.
  const mid = decimalsOf({ bid: 1.0845, ask: 1.0846 }, { bid: '1.0845', ask: '1.0846' }).price;
  assert.equal(formatDecimal(mid), '1.08455');
  assert.equal(formatDecimal(decimalsOf({ bid: 1, ask: 3 }).price), '2');
});

test('change since the first value, exact, with sign and percent', () => {
  assert.deepEqual(formatChange(dec('110'), dec('100'), 2), { abs: '+10.00', pct: '+10.00%', dir: 'up', pctDir: 'up' });
  assert.deepEqual(formatChange(dec('99.5'), dec('100'), 2), { abs: '-0.50', pct: '-0.50%', dir: 'down', pctDir: 'down' });
  assert.deepEqual(formatChange(dec('100'), dec('100'), 2), { abs: '0.00', pct: '0.00%', dir: 'flat', pctDir: 'flat' });
  assert.equal(formatChange(dec('0.3'), dec('0.1'), 4).abs, '+0.2000', 'no float residue');
  assert.deepEqual(formatChange(dec('1.00001'), dec('1'), 5), { abs: '+0.00001', pct: '0.00%', dir: 'up', pctDir: 'flat' });
  assert.equal(formatChange(dec('123456789.123456790'), dec('123456789.123456789'), 9).abs, '+0.000000001');
  assert.equal(formatChange(null, dec('100'), 2).abs, '—');
  assert.equal(formatChange(dec('5'), dec('0'), 2).pct, '—');
});

test('the numbers of a frame\'s data, as written', () => {
  const frame = '{"type":"tick","data":{"price":1.50,"s":"x\\"}","n":{"price":2},"bid":-1.50e-3 ,"t":true,"a":[1,{"b":"]"}],"ask":1E+2}}';
  assert.deepEqual(dataNumbers(frame), { price: '1.50', bid: '-1.50e-3', ask: '1E+2' });
  assert.deepEqual(dataNumbers('{"data":{"price":1,"price":"x"}}'), {}, 'the last of duplicate keys, as JSON.parse');
  assert.deepEqual(dataNumbers('{"data":5}'), {});
  assert.deepEqual(dataNumbers('[1]'), {});
  assert.deepEqual(dataNumbers('not json'), {});
  assert.deepEqual(dataNumbers(undefined), {});
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

test('strings in price, bid and ask: digits as exact decimals, other text as itself', () => {
  const got = decimalsOf({ price: '1.0842', bid: '0.000000001230', ask: 'n/a' }, {});
  assert.equal(formatDecimal(got.price), '1.0842');
  assert.equal(formatDecimal(got.bid), '0.000000001230');
  assert.equal(got.ask, 'n/a');
  assert.equal(formatDecimal(got.ask), 'n/a');
  assert.equal(formatDecimal(decimalsOf({ bid: '1.0845', ask: '1.0846' }).price), '1.08455', 'mid of strings');
  assert.equal(decimalsOf({ price: 'halted', bid: '1', ask: '2' }).price, 'halted', 'the text sent wins over a mid');
  assert.equal(decimalsOf({ price: '' }).price, null, 'an empty string is no value');
  assert.deepEqual(formatChange('halted', dec('1'), 2), { abs: '—', pct: '—', dir: 'flat', pctDir: 'flat' });
});
