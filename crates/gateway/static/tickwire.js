// tickwire.js: browser client for the tickwire wire protocol v1.
//
// An ES module with no dependencies and no build step. The broker embeds it
// and serves it at `/tickwire.js`. docs/client.md is the user guide.
//
// Layout (everything below is exported so it can be unit-tested under
// `node --test` with no network and no DOM):
// * `backoffDelay`, `Backoff`, `shutdownDelay`: when to reconnect
// * `closePolicy`: which close codes mean "reconnect" and which mean "stop"
// * `validateTopic`, `validatePattern`, `patternMatches`, `parsePatterns`:
//   the topic rules, so a filter box can refuse a bad pattern before sending it
// * `GapTracker`: per-topic seq bookkeeping; tells conflation from loss
// * `buildSubscribe`: the `subscribe` request, with recovery fields
// * `priceOf`: the price of a tick's `data` (price, else mid of bid/ask)
// * `dataNumbers`: the numbers of a frame's `data` as the publisher wrote them
// * `TickwireClient`: the connection itself; takes its WebSocket
//   constructor, clock and random source as options so tests can drive it

/** Defaults of the client options; each is documented in docs/client.md. */
export const DEFAULTS = Object.freeze({
  backoffBaseMs: 500,
  backoffCapMs: 20000,
  // A connection must stay live this long before a drop starts the backoff
  // from the beginning again; without it a broker that accepts and then
  // closes at once would be retried at the base delay forever.
  resetBackoffAfterMs: 5000,
  // App-level heartbeat. Browsers answer the broker's WebSocket Pings by
  // themselves but never tell the page about them, so a page that wants to
  // notice a dead broker (or a dead NAT mapping) must ask for a `pong`.
  pingIntervalMs: 10000,
  pongTimeoutMs: 5000,
  // Give up on an attempt that has not reached `welcome` (and `authenticated`
  // when a token is given) in this time; a SYN into a black hole can
  // otherwise hang for minutes before the browser reports 1006.
  connectTimeoutMs: 10000,
  // Stay well below the broker's max_message_bytes (64 KiB by default): a
  // bigger recovery request would be closed with 1009. Topics left out of
  // `since` simply get a snapshot, and the GapTracker still sees the gap.
  maxSinceBytes: 32768,
});

const TOPIC_MAX_BYTES = 128;
const SEGMENT_CHAR = /^[A-Za-z0-9_\-:]$/;

// ---------------------------------------------------------------------------
// Backoff

/**
 * Full-jitter exponential backoff: a uniform random delay in
 * `[0, min(capMs, baseMs * 2^attempt))`. Attempt 0 is the first retry after
 * a drop, so even the first delay is random: when a broker restarts, its
 * clients come back spread over half a second instead of all at once.
 */
export function backoffDelay(
  attempt,
  { baseMs = DEFAULTS.backoffBaseMs, capMs = DEFAULTS.backoffCapMs } = {},
  random = Math.random,
) {
  const n = Math.max(0, Math.floor(attempt));
  const ceiling = Math.min(capMs, baseMs * 2 ** n); // 2 ** 2000 is Infinity; min() keeps it sane
  return random() * ceiling;
}

/** A backoff sequence: `next()` gives the next delay and counts the attempt. */
export class Backoff {
  constructor({ baseMs = DEFAULTS.backoffBaseMs, capMs = DEFAULTS.backoffCapMs, random = Math.random } = {}) {
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.random = random;
    this.attempt = 0;
  }

  next() {
    const delay = backoffDelay(this.attempt, { baseMs: this.baseMs, capMs: this.capMs }, this.random);
    this.attempt += 1;
    return delay;
  }

  reset() {
    this.attempt = 0;
  }
}

/**
 * Delay after a `shutdown` message: "about retry_ms, with jitter", here
 * uniform in `[retryMs / 2, retryMs * 1.5)` so that the clients of a broker
 * that restarts do not all come back in the same millisecond.
 */
export function shutdownDelay(retryMs, random = Math.random) {
  return retryMs * (0.5 + random());
}

// ---------------------------------------------------------------------------
// Close codes

const CLOSE_NAMES = {
  1000: 'normal close',
  1001: 'broker shutting down',
  1002: 'protocol error',
  1003: 'unsupported data',
  1005: 'no status code',
  1006: 'connection lost',
  1007: 'invalid UTF-8',
  1008: 'policy violation',
  1009: 'message too big',
  1011: 'internal error',
  1012: 'service restart',
  1013: 'try again later',
  1014: 'bad gateway',
  1015: 'TLS handshake failed',
  4000: 'heartbeat timeout',
  4001: 'slow consumer',
  4002: 'token expired',
  4003: 'flooding',
  4500: 'unauthorized',
};

// 1012 and 1014 are not sent by the broker, but a proxy in front of it may
// send them, and RFC 6455's registry means "come back later" by both.
const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013, 1014]);

/**
 * The close-code policy of PROTOCOL.md "Close codes".
 *
 * Returns `{ reconnect, why }`. Reconnect (with backoff) on 1001, 1006, 1011,
 * 1013 (and 1012, 1014) and on 4000-4499. Stop on 4500-4999 ("do not
 * reconnect with the same credentials") and on every other code: 1000 is a
 * deliberate close, and 1002/1003/1007/1009 are faults of this client that a
 * reconnect would only repeat. `why` is a sentence for the user.
 */
export function closePolicy(code, reason = '') {
  const name = CLOSE_NAMES[code] ?? (code >= 4500 && code <= 4999 ? 'refused' : 'closed');
  const detail = reason ? `${name} (${code}: ${reason})` : `${name} (${code})`;
  if (RECONNECT_CODES.has(code) || (code >= 4000 && code <= 4499)) {
    return { reconnect: true, why: detail };
  }
  if (code >= 4500 && code <= 4999) {
    return { reconnect: false, why: `${detail}; not reconnecting with the same credentials` };
  }
  return { reconnect: false, why: detail };
}

// ---------------------------------------------------------------------------
// Topics and patterns

function validate(text, wild) {
  if (typeof text !== 'string' || text.length === 0) return 'topic is empty';
  const bytes = new TextEncoder().encode(text).length;
  if (bytes > TOPIC_MAX_BYTES) return `topic is ${bytes} bytes, over the limit of ${TOPIC_MAX_BYTES}`;
  const segments = text.split('.');
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    if (seg === '') return `segment ${i + 1} is empty in '${text}'`;
    if (seg === '*' || seg === '>') {
      if (!wild) return `wildcards are not allowed in a topic to publish to: '${text}'`;
      if (seg === '>' && i !== segments.length - 1) return `'>' may only be the last segment in '${text}'`;
      continue;
    }
    for (const ch of seg) {
      if (!SEGMENT_CHAR.test(ch)) return `segment ${i + 1} has a forbidden character '${ch}' in '${text}'`;
    }
  }
  return null;
}

/** Null when `text` is a valid topic (no wildcards), else why not. */
export function validateTopic(text) {
  return validate(text, false);
}

/** Null when `text` is a valid subscription pattern, else why not. */
export function validatePattern(text) {
  return validate(text, true);
}

/** NATS-style match: `*` is one segment, a last `>` one or more segments. */
export function patternMatches(pattern, topic) {
  if (pattern === topic) return true;
  const p = pattern.split('.');
  const t = topic.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return t.length > i;
    if (i >= t.length) return false;
    if (p[i] !== '*' && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

/**
 * Splits a filter box's text ("fx.*, crypto.>") into patterns.
 * Returns `{ patterns, error }`; `error` is null when every pattern is valid.
 */
export function parsePatterns(text) {
  const patterns = [...new Set(String(text).split(/[\s,]+/).filter(Boolean))];
  if (patterns.length === 0) return { patterns, error: 'enter at least one pattern, e.g. > or fx.*' };
  for (const p of patterns) {
    const error = validatePattern(p);
    if (error) return { patterns, error };
  }
  return { patterns, error: null };
}

// ---------------------------------------------------------------------------
// Tick data

/**
 * The price of a tick's `data`: `price` when it is a finite number, else the
 * mid of `bid` and `ask`, else whichever of them is there, else null.
 */
export function priceOf(data) {
  if (!data || typeof data !== 'object') return null;
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const price = num(data.price);
  if (price !== null) return price;
  const bid = num(data.bid);
  const ask = num(data.ask);
  if (bid !== null && ask !== null) return (bid + ask) / 2;
  return bid ?? ask;
}

/**
 * The numbers among the top-level members of a frame's `data`, as the
 * publisher wrote them: `dataNumbers('{"type":"tick",...,"data":{"price":64012.50}}')`
 * is `{ price: '64012.50' }`. `data` is passed byte for byte, but
 * `JSON.parse` makes doubles of it: a trailing zero is gone, and a price
 * with more than about 16 significant digits comes out as another number.
 * These texts are what a dashboard should show. `{}` for a frame that is not
 * a JSON object or has no object `data`.
 */
export function dataNumbers(frame) {
  const out = {};
  if (typeof frame !== 'string') return out;
  let i = 0;
  const n = frame.length;
  const space = () => {
    while (i < n && (frame[i] === ' ' || frame[i] === '\t' || frame[i] === '\n' || frame[i] === '\r')) i++;
  };
  const expect = (c) => {
    space();
    if (frame[i] !== c) throw new SyntaxError(`expected ${c}`);
    i++;
  };
  const string = () => {
    space();
    const start = i;
    if (frame[i] !== '"') throw new SyntaxError('expected a string');
    for (i++; i < n; i++) {
      if (frame[i] === '\\') i++;
      else if (frame[i] === '"') return JSON.parse(frame.slice(start, ++i));
    }
    throw new SyntaxError('unterminated string');
  };
  // Skips one value; returns its text when it is a number or a literal.
  const value = () => {
    space();
    const c = frame[i];
    if (c === '"') return void string();
    if (c === '{' || c === '[') {
      let depth = 0;
      while (i < n) {
        const d = frame[i];
        if (d === '"') {
          string();
          continue;
        }
        if (d === '{' || d === '[') depth++;
        else if (d === '}' || d === ']') depth--;
        i++;
        if (depth === 0) return undefined;
      }
      throw new SyntaxError('unterminated value');
    }
    const start = i;
    while (i < n && !',}] \t\n\r'.includes(frame[i])) i++;
    return frame.slice(start, i);
  };
  // Calls `member(key)` for each member of the object at `i`; `member` must consume the value.
  const members = (member) => {
    expect('{');
    space();
    if (frame[i] === '}') return void i++;
    for (;;) {
      const key = string();
      expect(':');
      member(key);
      space();
      if (frame[i] === ',') i++;
      else return expect('}');
    }
  };
  try {
    members((key) => {
      space();
      if (key !== 'data' || frame[i] !== '{') return void value();
      members((k) => {
        const text = value();
        if (text !== undefined && /^-?\d/.test(text)) out[k] = text;
        else delete out[k]; // a later duplicate key wins, as in JSON.parse
      });
    });
  } catch {
    return {};
  }
  return out;
}

// ---------------------------------------------------------------------------
// Gap tracking

/**
 * Per-topic seq bookkeeping (PROTOCOL.md "Messages" and "Recovery").
 *
 * `observe()` is called for every `tick` and `snapshot` and says how it
 * relates to the last one of its topic:
 * * `gap`: how many seqs were skipped (0 when contiguous; null when unknown,
 *   i.e. the broker restarted and its seq space is new).
 * * `cause`: null when nothing was missed; `'conflation'` for a gap on a live
 *   connection (the broker skipped older values on purpose and this is the
 *   newest: nothing is lost); `'recovery_failed'` when ticks sent while the
 *   client was away could not be replayed (the value is current again, but
 *   the ticks in between are gone).
 * * `accept`: false for a tick the client has already seen (for example one
 *   that a resubscribe delivered twice): drop it.
 */
export class GapTracker {
  constructor() {
    // topic -> { seq, recovering: null | { epochChanged } }
    this.topics = new Map();
  }

  /** Last seq seen for `topic`, or undefined. */
  lastSeq(topic) {
    return this.topics.get(topic)?.seq;
  }

  /**
   * The `since` map for a recovery: the last seq of each known topic that
   * one of `patterns` matches, stopping before the JSON passes `maxBytes`.
   */
  since(patterns, maxBytes = DEFAULTS.maxSinceBytes) {
    const since = {};
    let bytes = 2;
    for (const [topic, st] of this.topics) {
      if (!patterns.some((p) => patternMatches(p, topic))) continue;
      const entry = JSON.stringify(topic).length + String(st.seq).length + 2;
      if (bytes + entry > maxBytes) break;
      bytes += entry;
      since[topic] = st.seq;
    }
    return since;
  }

  /**
   * Called when a new connection resubscribes: every known topic's next
   * message is judged against what was seen before the drop. Topics that no
   * pattern matches any more are forgotten.
   */
  beginRecovery(patterns, { epochChanged }) {
    for (const [topic, st] of this.topics) {
      if (patterns.some((p) => patternMatches(p, topic))) st.recovering = { epochChanged };
      else this.topics.delete(topic);
    }
  }

  /**
   * Per-topic epochs (clustered brokers put one in every tick and snapshot)
   * of the topics in `since`, for the `epochs` field of a recovery.
   */
  epochs(since) {
    const out = {};
    for (const topic of Object.keys(since)) {
      const e = this.topics.get(topic)?.epoch;
      if (e) out[topic] = e;
    }
    return out;
  }

  /** Forgets the topics that `keep(topic)` refuses (after an unsubscribe). */
  retain(keep) {
    for (const topic of this.topics.keys()) if (!keep(topic)) this.topics.delete(topic);
  }

  clear() {
    this.topics.clear();
  }

  /**
   * Judges one message; `kind` is `'tick'` or `'snapshot'`. `epoch` is the
   * frame's own epoch on a clustered broker (null elsewhere). See the class doc.
   */
  observe(kind, topic, seq, epoch = null) {
    const st = this.topics.get(topic);
    if (st === undefined) {
      // First value of this topic: a baseline, nothing to compare with.
      this.topics.set(topic, { seq, epoch, recovering: null });
      return { accept: true, gap: 0, cause: null };
    }
    const topicEpochChanged = epoch !== null && st.epoch != null && epoch !== st.epoch;
    if (epoch !== null) st.epoch = epoch;
    if (st.recovering) {
      // With per-topic epochs (a cluster) the topic's own epoch decides, not
      // the node's: another node may serve the same seq space.
      const epochChanged = epoch !== null ? topicEpochChanged : st.recovering.epochChanged;
      st.recovering = null;
      if (epochChanged) {
        // The broker restarted: its seqs start again at 1 and say nothing
        // about what was published while the client was away.
        st.seq = seq;
        return { accept: true, gap: null, cause: 'recovery_failed', epochChanged: true };
      }
      if (kind === 'snapshot') {
        // A snapshot instead of a replay: the missed ticks are gone.
        if (seq <= st.seq) return { accept: true, gap: 0, cause: null };
        const gap = seq - st.seq - 1;
        st.seq = seq;
        return { accept: true, gap, cause: gap > 0 ? 'recovery_failed' : null };
      }
      // A replayed tick: from here on it is a live connection again.
    }
    if (topicEpochChanged) {
      // Another node took the topic over: a new seq space, nothing to compare.
      st.seq = seq;
      return { accept: true, gap: null, cause: 'epoch_changed', epochChanged: true };
    }
    if (seq <= st.seq) {
      // Snapshots of a topic already held (an overlapping or repeated
      // subscribe) carry the value the client already has: harmless.
      return kind === 'snapshot'
        ? { accept: true, gap: 0, cause: null, duplicate: true }
        : { accept: false, gap: 0, cause: null, duplicate: true };
    }
    const gap = seq - st.seq - 1;
    st.seq = seq;
    return { accept: true, gap, cause: gap > 0 ? 'conflation' : null };
  }
}

// ---------------------------------------------------------------------------
// Requests

/**
 * The `subscribe` request. `epoch` and `since` are sent only together and
 * only when `since` has an entry (PROTOCOL.md "Recovery"); `max_hz` only
 * when it is a positive number; `snapshot` only when false (the default is
 * true).
 */
export function buildSubscribe({ id, topics, maxHz = null, snapshot = true, epoch = null, since = null, epochs = null }) {
  const msg = { op: 'subscribe', id, topics: [...topics] };
  if (snapshot === false) msg.snapshot = false;
  if (typeof maxHz === 'number' && maxHz > 0) msg.max_hz = maxHz;
  if (epoch && since && Object.keys(since).length > 0) {
    msg.epoch = epoch;
    msg.since = since;
    if (epochs && Object.keys(epochs).length > 0) msg.epochs = epochs;
  }
  return msg;
}

// ---------------------------------------------------------------------------
// The client

const WS_OPEN = 1;

const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle),
};

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new Error('tickwire: no `url` given and no page location to derive it from');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/**
 * A tickwire connection that stays up: it reconnects with backoff, recovers
 * missed ticks, watches the broker with app-level pings and follows the
 * protocol's close-code policy. See docs/client.md for the options and
 * callbacks.
 *
 * States (`onState(info)`, `info.state`):
 * * `idle`: created, `start()` not called yet
 * * `connecting`: an attempt is under way (`info.attempt`)
 * * `live`: subscribed (`info.epoch`, `info.recovered`)
 * * `refused`: connected, but the broker refused the first subscribe
 *   (`info.code`, `info.reason`); a subscribe that succeeds makes it `live`
 * * `reconnecting`: waiting `info.delayMs` until `info.retryAt` (clock ms),
 *   after a close with `info.code` / `info.reason`
 * * `stopped`: will not reconnect by itself; `info.reason` says why
 */
export class TickwireClient {
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.url = o.url ?? defaultUrl();
    this.topics = [...new Set(o.topics ?? [])];
    this.maxHz = o.maxHz ?? o.max_hz ?? null;
    this.snapshot = o.snapshot ?? true;
    this.token = o.token ?? null;
    this.opts = o;
    this.WebSocket = o.WebSocket ?? globalThis.WebSocket;
    this.clock = o.clock ?? systemClock;
    this.random = o.random ?? Math.random;
    this.backoff = new Backoff({ baseMs: o.backoffBaseMs, capMs: o.backoffCapMs, random: this.random });
    this.tracker = new GapTracker();

    this.onTick = o.onTick ?? null;
    this.onSnapshot = o.onSnapshot ?? null;
    this.onStatus = o.onStatus ?? null;
    this.onState = o.onState ?? null;
    this.onError = o.onError ?? null;

    this.state = 'idle';
    /** Epoch of the broker's seq space, from the last `welcome`. */
    this.epoch = null;
    /** Broker clock minus local clock (ms), from the last `welcome` or `pong`. */
    this.serverTimeOffsetMs = 0;
    /** `recovered` of the last recovery subscribe: true, false, or null when none was tried. */
    this.recovered = null;

    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> { op, initial, recovery }
    this.timers = { reconnect: null, connect: null, ping: null, pong: null };
    this.conn = null; // per-connection facts, reset on every attempt
    this.matchCache = new Map();
  }

  /** Starts connecting (from `idle` or `stopped`). */
  start() {
    if (this.state !== 'idle' && this.state !== 'stopped') return;
    this.backoff.reset();
    this.#connect();
  }

  /** Closes the connection and stays closed until `start()`. */
  stop(reason = 'stopped by the application') {
    this.#teardown(1000, 'client stop');
    this.#setState({ state: 'stopped', reason, code: null });
  }

  /** Broker time now (ms since the Unix epoch), estimated from `welcome.server_time`. */
  serverNow() {
    return this.clock.now() + this.serverTimeOffsetMs;
  }

  /** Adds patterns to the subscription. */
  subscribe(topics) {
    const added = topics.filter((t) => !this.topics.includes(t));
    if (added.length === 0) return;
    this.topics.push(...added);
    this.matchCache.clear();
    // Refused: the broker holds none of the patterns, so ask for them all.
    if (this.#ready()) this.#sendSubscribe(this.state === 'refused' ? this.topics : added, { initial: false });
  }

  /** Removes patterns from the subscription. */
  unsubscribe(topics) {
    const removed = this.topics.filter((t) => topics.includes(t));
    if (removed.length === 0) return;
    this.topics = this.topics.filter((t) => !removed.includes(t));
    this.matchCache.clear();
    this.tracker.retain((topic) => this.matches(topic));
    if (this.#ready()) this.#send({ op: 'unsubscribe', id: this.#id('unsubscribe'), topics: removed });
  }

  /** Replaces the subscription with `topics` (what a filter box does). */
  setTopics(topics) {
    const next = [...new Set(topics)];
    const removed = this.topics.filter((t) => !next.includes(t));
    const added = next.filter((t) => !this.topics.includes(t));
    // Swap the whole set first: a topic that both the old and the new
    // patterns match keeps its seq history (and so its recovery).
    this.topics = next;
    this.matchCache.clear();
    this.tracker.retain((topic) => this.matches(topic));
    if (!this.#ready()) return;
    if (this.state === 'refused') {
      // The broker refused the whole request (PROTOCOL.md: `forbidden`
      // refuses it if any pattern is not allowed), so it holds none of the
      // patterns: ask for every one, not only the new ones.
      if (next.length > 0) this.#sendSubscribe(next, { initial: false });
      return;
    }
    if (removed.length > 0) this.#send({ op: 'unsubscribe', id: this.#id('unsubscribe'), topics: removed });
    if (added.length > 0) this.#sendSubscribe(added, { initial: false });
  }

  /**
   * Changes `max_hz` (null or 0: no limit). On a live connection this
   * unsubscribes and subscribes again with the new rate, which brings a
   * fresh snapshot of every topic.
   */
  setMaxHz(maxHz) {
    this.maxHz = maxHz > 0 ? maxHz : null;
    if (!this.#ready() || this.topics.length === 0) return;
    this.#send({ op: 'unsubscribe', id: this.#id('unsubscribe'), topics: this.topics });
    this.#sendSubscribe(this.topics, { initial: false });
  }

  /** Sends a fresh token on the live connection (before the old one expires: 4002). */
  authenticate(token) {
    this.token = token;
    if (this.ws && this.ws.readyState === WS_OPEN) this.#send({ op: 'auth', id: this.#id('auth'), token });
  }

  /** True when one of the subscribed patterns matches `topic`. */
  matches(topic) {
    let hit = this.matchCache.get(topic);
    if (hit === undefined) {
      hit = this.topics.some((p) => patternMatches(p, topic));
      if (this.matchCache.size > 100000) this.matchCache.clear(); // bounded
      this.matchCache.set(topic, hit);
    }
    return hit;
  }

  // -- connection lifecycle -------------------------------------------------

  #connect() {
    this.#clearTimers();
    this.conn = {
      welcomed: false,
      authed: this.token === null,
      ready: false, // welcomed and authed: requests may go out
      serverEpoch: null, // this connection's epoch, from its welcome
      liveSince: null, // clock time it went live, for the backoff reset
      shutdownRetryMs: null, // from a `shutdown` message
    };
    this.#setState({ state: 'connecting', attempt: this.backoff.attempt });
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (err) {
      // A malformed URL throws synchronously; no reconnect will fix it.
      this.#setState({ state: 'stopped', reason: `cannot connect to ${this.url}: ${err.message}`, code: null });
      return;
    }
    this.ws = ws;
    // Handlers check that `ws` is still the current socket: a socket that
    // was given up on (pong timeout) may still report events later.
    ws.onopen = () => ws === this.ws && this.#onOpen();
    ws.onmessage = (ev) => ws === this.ws && this.#onMessage(ev.data);
    ws.onclose = (ev) => ws === this.ws && this.#onClose(ev.code, ev.reason ?? '');
    ws.onerror = () => {}; // a close event always follows; it carries the code
    this.timers.connect = this.clock.setTimeout(() => {
      this.timers.connect = null;
      this.#abandon(1006, `no welcome within ${this.opts.connectTimeoutMs} ms`);
    }, this.opts.connectTimeoutMs);
  }

  #onOpen() {
    // First-message auth: with auth on, the broker refuses any other
    // request that comes before it (PROTOCOL.md "Authentication").
    if (this.token !== null) this.#send({ op: 'auth', id: this.#id('auth', { first: true }), token: this.token });
  }

  #onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return; // not ours to fix; the protocol only sends JSON objects
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'tick':
      case 'snapshot':
        return this.#onData(msg, text);
      case 'status':
        if (this.matches(msg.topic)) this.onStatus?.(msg);
        return;
      case 'welcome':
        return this.#onWelcome(msg);
      case 'authenticated':
        this.pending.delete(msg.id);
        if (!this.conn.authed) {
          this.conn.authed = true;
          this.#maybeReady();
        }
        return;
      case 'subscribed':
        return this.#onSubscribed(msg);
      case 'unsubscribed':
      case 'ack':
        this.pending.delete(msg.id);
        return;
      case 'pong':
        return this.#onPong(msg);
      case 'error':
        return this.#onServerError(msg);
      case 'shutdown':
        if (typeof msg.retry_ms === 'number') this.conn.shutdownRetryMs = msg.retry_ms;
        return;
      default:
        return; // unknown types are ignored, like unknown fields
    }
  }

  #onWelcome(msg) {
    if (this.conn.welcomed) return;
    this.conn.welcomed = true;
    this.conn.serverEpoch = msg.epoch ?? null;
    if (typeof msg.server_time === 'number') this.serverTimeOffsetMs = msg.server_time - this.clock.now();
    this.#maybeReady();
  }

  #maybeReady() {
    if (this.conn.ready || !this.conn.welcomed || !this.conn.authed) return;
    this.conn.ready = true;
    this.clock.clearTimeout(this.timers.connect);
    this.timers.connect = null;
    this.#schedulePing();
    if (this.topics.length === 0) {
      this.epoch = this.conn.serverEpoch;
      this.tracker.clear();
      this.#goLive(null);
      return;
    }
    this.#sendSubscribe(this.topics, { initial: true });
  }

  #sendSubscribe(topics, { initial }) {
    let since = null;
    let epoch = null;
    let epochs = null;
    if (initial) {
      // Recovery: ask for what was missed since the last seq of each topic,
      // in the seq space (epoch) those seqs belong to.
      if (this.epoch !== null) {
        since = this.tracker.since(topics, this.opts.maxSinceBytes);
        epochs = this.tracker.epochs(since);
        epoch = this.epoch;
        this.tracker.beginRecovery(topics, { epochChanged: this.epoch !== this.conn.serverEpoch });
      }
      this.epoch = this.conn.serverEpoch;
    }
    const recovery = since !== null && Object.keys(since).length > 0;
    // Sent while refused, a subscribe asks for every pattern: its success
    // makes the connection live. One sent before the refusal asked for a
    // part only, and its success does not.
    const whole = this.state === 'refused';
    const id = this.#id('subscribe', { initial, recovery, whole });
    this.#send(buildSubscribe({ id, topics, maxHz: this.maxHz, snapshot: this.snapshot, epoch, since, epochs }));
  }

  #onSubscribed(msg) {
    const req = this.pending.get(msg.id);
    this.pending.delete(msg.id);
    // The first subscribe, or the whole set asked for after a refusal,
    // makes the connection live.
    if (!req || !(req.initial || (req.whole && this.state === 'refused'))) return;
    let recovered = null;
    if (req.recovery) {
      // `recovered` may be a boolean for the request or, from a broker that
      // says it per topic, an object; either way false means "not all".
      const r = msg.recovered;
      recovered = typeof r === 'object' && r !== null ? Object.values(r).every(Boolean) : r === true;
    }
    this.#goLive(recovered);
  }

  #onServerError(msg) {
    const req = this.pending.get(msg.id);
    this.pending.delete(msg.id);
    this.onError?.(msg, req?.op ?? null);
    if (req && req.op === 'auth' && req.first && !this.conn.authed) {
      // With auth off the broker answers a bad token with an error instead
      // of closing with 4500. Same policy: the same token will not do better.
      this.#teardown(1000, 'token refused');
      this.#setState({ state: 'stopped', reason: `token refused (${msg.code}: ${msg.message})`, code: null });
      return;
    }
    if (req && req.op === 'subscribe' && msg.code === 'unauthorized') {
      // Auth is on and this connection has no (good) token: nothing will
      // come, and the broker closes with 4500 at its auth deadline. Saying
      // `live` until then would be a lie; stop as 4500 would.
      this.#teardown(1000, 'unauthorized');
      this.#setState({
        state: 'stopped',
        reason: `the broker needs a token (${msg.code}: ${msg.message})`,
        code: null,
        needsToken: true,
      });
      return;
    }
    // A refused first subscribe leaves a working connection with nothing
    // subscribed: not live (no price will come) until a subscribe succeeds,
    // e.g. with a filter the token allows. No reconnect: it would be refused
    // again.
    if (req && req.op === 'subscribe' && (req.initial || this.state === 'refused')) {
      this.#setState({ state: 'refused', code: msg.code ?? null, reason: `${msg.code}: ${msg.message}` });
    }
  }

  #goLive(recovered) {
    if (this.state === 'live') return;
    this.recovered = recovered;
    this.conn.liveSince = this.clock.now();
    this.#setState({ state: 'live', epoch: this.epoch, recovered });
  }

  #onData(msg, frame) {
    if (typeof msg.topic !== 'string' || typeof msg.seq !== 'number') return;
    // Ticks of a pattern that was just unsubscribed may still be in flight.
    if (!this.matches(msg.topic)) return;
    const meta = this.tracker.observe(msg.type, msg.topic, msg.seq, typeof msg.epoch === 'string' ? msg.epoch : null);
    if (!meta.accept) return;
    // The frame's text goes along: `dataNumbers(frame)` has the numbers as sent.
    if (msg.type === 'tick') this.onTick?.(msg, meta, frame);
    else this.onSnapshot?.(msg, meta, frame);
  }

  // -- heartbeat ---------------------------------------------------------

  #schedulePing() {
    if (!(this.opts.pingIntervalMs > 0)) return;
    this.timers.ping = this.clock.setTimeout(() => {
      this.timers.ping = null;
      const id = this.#id('ping');
      this.conn.pingId = id;
      this.#send({ op: 'ping', id });
      this.timers.pong = this.clock.setTimeout(() => {
        this.timers.pong = null;
        this.#abandon(4000, `no pong within ${this.opts.pongTimeoutMs} ms`);
      }, this.opts.pongTimeoutMs);
    }, this.opts.pingIntervalMs);
  }

  #onPong(msg) {
    this.pending.delete(msg.id);
    if (typeof msg.server_time === 'number') this.serverTimeOffsetMs = msg.server_time - this.clock.now();
    if (this.timers.pong === null) return; // not ours, or already late
    this.clock.clearTimeout(this.timers.pong);
    this.timers.pong = null;
    this.#schedulePing();
  }

  // -- closing -----------------------------------------------------------

  /** Gives up on the current socket without waiting for its close event. */
  #abandon(code, reason) {
    this.#teardown(4000, reason);
    this.#onClose(code, reason);
  }

  #onClose(code, reason) {
    const wasLiveMs = this.conn?.liveSince != null ? this.clock.now() - this.conn.liveSince : 0;
    const shutdownRetryMs = this.conn?.shutdownRetryMs ?? null;
    this.#teardown(null);
    const policy = closePolicy(code, reason);
    if (!policy.reconnect) {
      this.#setState({ state: 'stopped', reason: policy.why, code });
      return;
    }
    if (wasLiveMs >= this.opts.resetBackoffAfterMs) this.backoff.reset();
    const attempt = this.backoff.attempt;
    let delayMs = this.backoff.next();
    if (shutdownRetryMs !== null) delayMs = shutdownDelay(shutdownRetryMs, this.random);
    const retryAt = this.clock.now() + delayMs;
    this.timers.reconnect = this.clock.setTimeout(() => {
      this.timers.reconnect = null;
      this.#connect();
    }, delayMs);
    this.#setState({ state: 'reconnecting', code, reason: policy.why, delayMs, retryAt, attempt });
  }

  /** Drops the socket and the per-connection timers; `closeCode` null: already closed. */
  #teardown(closeCode, closeReason = '') {
    this.#clearTimers();
    this.pending.clear();
    const ws = this.ws;
    this.ws = null; // from here on its events are ignored
    if (ws && closeCode !== null) {
      try {
        ws.close(closeCode, closeReason.slice(0, 120)); // a close reason is at most 123 bytes
      } catch {
        // already closing; nothing to do
      }
    }
  }

  #clearTimers() {
    for (const key of Object.keys(this.timers)) {
      if (this.timers[key] !== null) this.clock.clearTimeout(this.timers[key]);
      this.timers[key] = null;
    }
  }

  // -- helpers -----------------------------------------------------------

  // Past welcome (and auth): requests sent now are answered on this
  // connection. Before that, changes only update what the first subscribe
  // of the connection will ask for.
  #ready() {
    return this.ws !== null && this.conn !== null && this.conn.ready;
  }

  #id(op, extra = {}) {
    const id = this.nextId++;
    this.pending.set(id, { op, ...extra });
    return id;
  }

  #send(msg) {
    if (!this.ws || this.ws.readyState !== WS_OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  #setState(info) {
    this.state = info.state;
    this.onState?.({ ...info });
  }
}

/** `new TickwireClient(options)` and `start()` in one call. */
export function connect(options) {
  const client = new TickwireClient(options);
  client.start();
  return client;
}
