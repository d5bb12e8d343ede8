import test from 'node:test';
import assert from 'node:assert/strict';
import {
  validateTopic,
  validatePattern,
  patternMatches,
  parsePatterns,
  priceOf,
  buildSubscribe,
} from '../../crates/gateway/static/tickwire.js';

test('valid topics and patterns', () => {
  for (const t of ['crypto.BTC-USD', 'fx.EUR-USD', 'binance.btcusdt.trade', 'a', 'x_y:z.1']) {
    assert.equal(validateTopic(t), null, t);
    assert.equal(validatePattern(t), null, t);
  }
  for (const p of ['>', '*', 'fx.*', 'crypto.>', '*.BTC-USD.>']) assert.equal(validatePattern(p), null, p);
});

test('invalid topics say why, like the broker', () => {
  assert.equal(validateTopic(''), 'topic is empty');
  assert.equal(validateTopic('crypto..x'), "segment 2 is empty in 'crypto..x'");
  assert.match(validateTopic('a.b c'), /forbidden character ' '/);
  assert.match(validateTopic('x'.repeat(129)), /129 bytes/);
  assert.match(validateTopic('fx.*'), /wildcards are not allowed/);
  assert.match(validatePattern('>.fx'), /may only be the last segment/);
  assert.match(validatePattern('fx.'), /segment 2 is empty/);
  assert.match(validatePattern('fx.a*'), /forbidden character '\*'/);
});

test('pattern matching follows NATS rules', () => {
  assert.ok(patternMatches('crypto.*', 'crypto.BTC-USD'));
  assert.ok(!patternMatches('crypto.*', 'crypto.BTC-USD.book'));
  assert.ok(patternMatches('crypto.>', 'crypto.BTC-USD'));
  assert.ok(patternMatches('crypto.>', 'crypto.BTC-USD.book'));
  assert.ok(!patternMatches('crypto.>', 'crypto'));
  assert.ok(patternMatches('>', 'fx.EUR-USD'));
  assert.ok(patternMatches('*.EUR-USD', 'fx.EUR-USD'));
  assert.ok(!patternMatches('fx.*', 'eq.AAPL'));
  assert.ok(patternMatches('fx.EUR-USD', 'fx.EUR-USD'));
  assert.ok(!patternMatches('fx.EUR', 'fx.EUR-USD'));
});

test('parsePatterns splits on commas and spaces and validates', () => {
  assert.deepEqual(parsePatterns('fx.*, crypto.>  eq.AAPL'), { patterns: ['fx.*', 'crypto.>', 'eq.AAPL'], error: null });
  assert.deepEqual(parsePatterns(' > ').patterns, ['>']);
  assert.match(parsePatterns('').error, /at least one/);
  assert.match(parsePatterns('fx.*, bad..x').error, /segment 2 is empty/);
});

test('priceOf: price, else the mid of bid and ask', () => {
  assert.equal(priceOf({ price: 64012.5, bid: 1, ask: 2 }), 64012.5);
  assert.equal(priceOf({ bid: 64012.0, ask: 64013.0 }), 64012.5);
  assert.equal(priceOf({ bid: 3 }), 3);
  assert.equal(priceOf({ ask: 4 }), 4);
  assert.equal(priceOf({ price: 'x', bid: 1, ask: 3 }), 2);
  assert.equal(priceOf({}), null);
  assert.equal(priceOf(null), null);
});

test('buildSubscribe sends only the options that differ from the defaults', () => {
  assert.deepEqual(buildSubscribe({ id: 1, topics: ['>'] }), { op: 'subscribe', id: 1, topics: ['>'] });
  assert.deepEqual(buildSubscribe({ id: 2, topics: ['fx.*'], maxHz: 4, snapshot: false }), {
    op: 'subscribe', id: 2, topics: ['fx.*'], snapshot: false, max_hz: 4,
  });
  assert.deepEqual(buildSubscribe({ id: 3, topics: ['>'], maxHz: 0 }), { op: 'subscribe', id: 3, topics: ['>'] });
});

test('buildSubscribe carries epoch and since together, and only with a since', () => {
  assert.deepEqual(buildSubscribe({ id: 1, topics: ['>'], epoch: 'k3v9', since: { 'a.b': 7 } }), {
    op: 'subscribe', id: 1, topics: ['>'], epoch: 'k3v9', since: { 'a.b': 7 },
  });
  assert.deepEqual(buildSubscribe({ id: 1, topics: ['>'], epoch: 'k3v9', since: {} }), { op: 'subscribe', id: 1, topics: ['>'] });
  assert.deepEqual(buildSubscribe({ id: 1, topics: ['>'], epoch: null, since: { 'a.b': 7 } }), { op: 'subscribe', id: 1, topics: ['>'] });
});
