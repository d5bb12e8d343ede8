import test from 'node:test';
import assert from 'node:assert/strict';
import { closePolicy } from '../../crates/gateway/static/tickwire.js';

test('reconnects on 1001, 1006, 1011 and 1013', () => {
  for (const code of [1001, 1006, 1011, 1013]) {
    assert.equal(closePolicy(code).reconnect, true, `code ${code}`);
  }
});

test('reconnects on the whole 4000-4499 range', () => {
  for (const code of [4000, 4001, 4002, 4003, 4100, 4499]) {
    assert.equal(closePolicy(code).reconnect, true, `code ${code}`);
  }
});

test('stops on 4500 and above and says why', () => {
  for (const code of [4500, 4501, 4999]) {
    const p = closePolicy(code, 'bad token');
    assert.equal(p.reconnect, false, `code ${code}`);
    assert.match(p.why, new RegExp(`${code}`));
    assert.match(p.why, /bad token/);
    assert.match(p.why, /not reconnecting/);
  }
  assert.match(closePolicy(4500).why, /^unauthorized/);
});

test('stops on a normal close and on faults a reconnect would repeat', () => {
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009]) {
    assert.equal(closePolicy(code).reconnect, false, `code ${code}`);
  }
  assert.match(closePolicy(1009).why, /message too big \(1009\)/);
});

test('names the protocol codes in the reason', () => {
  assert.match(closePolicy(4001, 'slow consumer').why, /slow consumer \(4001: slow consumer\)/);
  assert.match(closePolicy(4000).why, /heartbeat timeout/);
  assert.match(closePolicy(1006).why, /connection lost/);
});
