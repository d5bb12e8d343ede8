#!/usr/bin/env node
// A stand-in for the tickwire broker, for working on the dashboard without
// the Rust build: `TICKWIRE_BIN=browser/mock-broker.mjs node browser/dashboard.browser.mjs`.
//
// It takes the broker's flags (`--listen`, `--publisher-key`) and
// TICKWIRE_STALE_AFTER_MS, serves the four static files, and speaks enough of
// PROTOCOL.md for the dashboard: welcome, subscribe (patterns, snapshot,
// max_hz, epoch/since recovery), unsubscribe, ping, status, shutdown, and
// POST /api/publish, GET /api/topics, GET /healthz. It is a test fixture,
// not a reference: the real broker and PROTOCOL.md are the contract.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { patternMatches } from '../../crates/gateway/static/tickwire.js';

const STATIC = new URL('../../crates/gateway/static/', import.meta.url);
const FILES = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/tickwire.js': ['tickwire.js', 'text/javascript; charset=utf-8'],
  '/dashboard.js': ['dashboard.js', 'text/javascript; charset=utf-8'],
  '/dashboard.css': ['dashboard.css', 'text/css; charset=utf-8'],
};

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const [host, port] = arg('--listen', '127.0.0.1:8080').split(':');
const publisherKey = arg('--publisher-key', 'dev-key');
const staleAfterMs = Number(process.env.TICKWIRE_STALE_AFTER_MS ?? 10000);
const demoFeed = !process.argv.includes('--no-demo-feed');
const epoch = randomBytes(6).toString('hex');
const HISTORY = 1024;

/** topic -> { seq, last, history: [{seq, ts, data}], lastTs, stale, timer } */
const topics = new Map();
const conns = new Set();

function publish(topic, data) {
  let t = topics.get(topic);
  if (!t) {
    t = { seq: 0, last: null, history: [], lastTs: 0, stale: false, timer: null };
    topics.set(topic, t);
  }
  const ts = Date.now();
  t.seq += 1;
  t.last = { seq: t.seq, ts, data };
  t.history.push(t.last);
  if (t.history.length > HISTORY) t.history.shift();
  t.lastTs = ts;
  const revived = t.stale;
  t.stale = false;
  clearTimeout(t.timer);
  t.timer = setTimeout(() => {
    t.stale = true;
    for (const c of conns) if (c.wants(topic)) c.send({ type: 'status', topic, state: 'stale', since: t.lastTs });
  }, staleAfterMs);
  for (const c of conns) {
    if (!c.wants(topic)) continue;
    if (revived) c.send({ type: 'status', topic, state: 'live', since: ts });
    c.deliver(topic, { type: 'tick', topic, seq: t.seq, ts, data });
  }
  return t.seq;
}

class Conn {
  constructor(ws) {
    this.ws = ws;
    this.subs = new Map(); // pattern -> max_hz
    this.lastSent = new Map(); // topic -> ms, for max_hz
    this.pending = new Map(); // topic -> frame held back by max_hz
    ws.on('message', (raw) => this.onMessage(String(raw)));
    ws.on('close', () => conns.delete(this));
    this.send({ type: 'welcome', epoch, heartbeat_ms: 15000, server_time: Date.now() });
  }

  wants(topic) {
    for (const p of this.subs.keys()) if (patternMatches(p, topic)) return true;
    return false;
  }

  maxHz(topic) {
    let hz = 0;
    for (const [p, h] of this.subs) if (patternMatches(p, topic) && h > hz) hz = h;
    return hz;
  }

  send(msg) {
    if (this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  }

  /** Conflates per topic to max_hz: always the newest value, never an old one. */
  deliver(topic, frame) {
    const hz = this.maxHz(topic);
    if (!hz) return this.send(frame);
    const gap = 1000 / hz;
    const wait = (this.lastSent.get(topic) ?? 0) + gap - Date.now();
    if (wait <= 0 && !this.pending.has(topic)) {
      this.lastSent.set(topic, Date.now());
      return this.send(frame);
    }
    const held = this.pending.has(topic);
    this.pending.set(topic, frame);
    if (!held) {
      setTimeout(() => {
        const f = this.pending.get(topic);
        this.pending.delete(topic);
        if (f && this.wants(topic)) {
          this.lastSent.set(topic, Date.now());
          this.send(f);
        }
      }, Math.max(0, wait));
    }
  }

  onMessage(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return this.send({ type: 'error', code: 'bad_request', message: 'not JSON' });
    }
    switch (m.op) {
      case 'ping':
        return this.send({ type: 'pong', id: m.id, server_time: Date.now() });
      case 'auth':
        return this.send({ type: 'authenticated', id: m.id, sub: 'mock', exp: 0 });
      case 'unsubscribe':
        for (const p of m.topics ?? []) this.subs.delete(p);
        return this.send({ type: 'unsubscribed', id: m.id, topics: m.topics });
      case 'subscribe':
        return this.subscribe(m);
      default:
        return this.send({ type: 'error', id: m.id, code: 'bad_request', message: `unknown op ${m.op}` });
    }
  }

  subscribe(m) {
    const fresh = [];
    for (const p of m.topics ?? []) if (!this.subs.has(p)) fresh.push(p);
    for (const p of m.topics ?? []) this.subs.set(p, m.max_hz ?? 0);
    const matched = [...topics.keys()].filter((t) => fresh.some((p) => patternMatches(p, t)));
    const since = m.epoch === epoch && m.since ? m.since : {};
    let recovered = Object.keys(m.since ?? {}).length > 0;
    const replays = [];
    const snaps = [];
    for (const topic of matched) {
      const t = topics.get(topic);
      const from = since[topic];
      const oldest = t.history[0]?.seq ?? Infinity;
      if (from !== undefined && from + 1 >= oldest) {
        for (const h of t.history) if (h.seq > from) replays.push({ type: 'tick', topic, ...h });
      } else {
        if (m.since && topic in m.since) recovered = false;
        if (m.snapshot !== false || m.since) snaps.push({ type: 'snapshot', topic, ...t.last });
      }
    }
    const reply = { type: 'subscribed', id: m.id, topics: m.topics };
    if (m.since) reply.recovered = recovered && m.epoch === epoch;
    this.send(reply);
    for (const f of [...snaps, ...replays]) this.send(f);
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const file = FILES[url.pathname];
  if (req.method === 'GET' && file) {
    res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-cache' });
    return res.end(readFileSync(fileURLToPath(new URL(file[0], STATIC))));
  }
  if (req.method === 'GET' && url.pathname === '/healthz') return res.end('ok');
  if (req.method === 'GET' && url.pathname === '/api/topics') {
    res.writeHead(200, { 'content-type': 'application/json' });
    const list = [...topics].map(([topic, t]) => ({ topic, seq: t.seq, subscribers: 0, last_ts: t.lastTs, rate_hz: 0, state: t.stale ? 'stale' : 'live' }));
    return res.end(JSON.stringify({ topics: list }));
  }
  if (req.method === 'POST' && url.pathname === '/api/publish') {
    if (req.headers.authorization !== `Bearer ${publisherKey}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      return res.end('{"error":"unauthorized","message":"bad key"}');
    }
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      try {
        const m = JSON.parse(body);
        const seq = publish(m.topic, m.data);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ accepted: 1, seqs: [seq] }));
      } catch (e) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'bad_request', message: String(e), line: 1 }));
      }
    });
    return undefined;
  }
  res.writeHead(404);
  return res.end();
});

const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws) => conns.add(new Conn(ws)));

if (demoFeed) {
  const symbols = [
    ['crypto.BTC-USD', 64000], ['crypto.ETH-USD', 3400], ['crypto.SOL-USD', 150], ['crypto.XRP-USD', 0.52],
    ['crypto.ADA-USD', 0.45], ['crypto.DOGE-USD', 0.12], ['fx.EUR-USD', 1.085], ['fx.GBP-USD', 1.27],
    ['fx.USD-JPY', 151.2], ['fx.AUD-USD', 0.66], ['fx.USD-CHF', 0.88], ['fx.USD-CAD', 1.36],
    ['eq.AAPL', 189.5], ['eq.MSFT', 415.2], ['eq.NVDA', 880.1], ['eq.AMZN', 178.3],
    ['eq.GOOG', 152.4], ['eq.TSLA', 175.9], ['eq.META', 495.0], ['eq.JPM', 198.7],
  ];
  for (const [topic, start] of symbols) {
    let price = start;
    const step = () => {
      price *= 1 + (Math.random() - 0.5) * 0.002;
      const spread = price * 0.0002;
      publish(topic, { price, bid: price - spread / 2, ask: price + spread / 2, volume: Math.round(Math.random() * 100), source_ts: Date.now() });
      setTimeout(step, 80 + Math.random() * 400);
    };
    step();
  }
}

server.listen(Number(port), host, () => console.log(`mock broker on http://${host}:${port}/ epoch ${epoch}`));

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const c of conns) {
      c.send({ type: 'shutdown', retry_ms: 2500 });
      c.ws.close(1001, 'shutting down');
    }
    server.close();
    setTimeout(() => process.exit(0), 100).unref();
  });
}
