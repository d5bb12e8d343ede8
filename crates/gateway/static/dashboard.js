// dashboard.js: the live dashboard served at `/` (see docs/client.md for
// the element ids and classes it keeps stable for tests and styling).
//
// Data flow: TickwireClient callbacks only update plain per-topic models and
// mark them dirty; one requestAnimationFrame pass per frame writes the dirty
// rows to the DOM. However fast ticks come in, each row is touched at most
// once per frame, and a hidden tab (no frames) only keeps the latest model.
//
// The pure helpers at the top are exported for the unit tests
// (web/test/dashboard.test.mjs); the DOM part starts only in a page.

// Relative, so that it resolves to /tickwire.js in the page and to the file
// beside this one under `node --test`.
import { TickwireClient, dataNumbers, parsePatterns, patternMatches } from './tickwire.js';

/** Points kept per topic for the sparkline. */
export const SPARK_POINTS = 60;
const SPARK_W = 96;
const SPARK_H = 22;
/** Default `max_hz`: a person cannot read faster, and it saves bandwidth. */
export const DEFAULT_MAX_HZ = 4;

// ---------------------------------------------------------------------------
// Pure helpers

// Prices are shown from the text the publisher sent (see `dataNumbers` in
// tickwire.js), held as exact decimals: `{ m, s }` is the BigInt `m` times
// 10^-s. A double would drop a trailing zero, round a long price to another
// number, and a tiny one to 0.00000000 when given a fixed number of places.

/** Most decimals of a sent number that are shown; beyond, the cell would be all zeros anyway. */
export const MAX_DECIMALS = 40;

/** An exact decimal from a JSON number's text (`'64012.50'`, `'1.5e-7'`), or null. */
export function parseDecimal(text) {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(typeof text === 'string' ? text : '');
  if (!match) return null;
  const [, sign, int, frac = '', exp = '0'] = match;
  const e = Number(exp);
  // A price beyond these exponents is no price; the bound keeps the digits short.
  if (!(Math.abs(e) <= 60) || frac.length - e > MAX_DECIMALS) return null;
  let digits = int + frac;
  let s = frac.length - e;
  if (s < 0) {
    digits += '0'.repeat(-s);
    s = 0;
  }
  return { m: BigInt(sign + digits), s };
}

/** The decimal of a finite number (a value that came with no text). */
export function decimalOfNumber(value) {
  return typeof value === 'number' && Number.isFinite(value) ? parseDecimal(String(value)) : null;
}

function rescale(d, s) {
  return s > d.s ? { m: d.m * 10n ** BigInt(s - d.s), s } : d;
}

/** `a - b`, exact. */
export function decimalSub(a, b) {
  const s = Math.max(a.s, b.s);
  return { m: rescale(a, s).m - rescale(b, s).m, s };
}

/** `(a + b) / 2`, exact: the mid of a bid and an ask. */
export function decimalMid(a, b) {
  const s = Math.max(a.s, b.s);
  const twice = rescale(a, s).m + rescale(b, s).m;
  return twice % 2n === 0n ? { m: twice / 2n, s } : { m: twice * 5n, s: s + 1 };
}

/** -1, 0 or 1. */
export function decimalCmp(a, b) {
  const d = decimalSub(a, b).m;
  return d > 0n ? 1 : d < 0n ? -1 : 0;
}

/** True for an exact decimal; false for the text of a value that is no number (see `decimalsOf`), or null. */
export function isDecimal(d) {
  return d !== null && typeof d === 'object';
}

/**
 * `d` with at least `places` decimals (trailing zeros added, never a digit
 * cut), or an em dash; a text (a value sent as text that is no number) as it is.
 */
export function formatDecimal(d, places = 0) {
  if (!d) return '—';
  if (typeof d === 'string') return d;
  const { m, s } = rescale(d, Math.max(d.s, places));
  const scale = Math.max(d.s, places);
  const neg = m < 0n;
  const digits = (neg ? -m : m).toString().padStart(scale + 1, '0');
  const text = scale > 0 ? `${digits.slice(0, digits.length - scale)}.${digits.slice(digits.length - scale)}` : digits;
  return neg ? `-${text}` : text;
}

/**
 * The price of a tick's `data` as an exact decimal: `price`, else the mid of
 * `bid` and `ask`, else whichever of them is there, else null. `texts` are
 * the numbers as sent (`dataNumbers`); a field without one is read from the
 * parsed value. A field sent as a string is read from its digits
 * (`"1.0842"`); a string that is no number is kept as that text, shown as
 * it is (and is no price to take a change or a mid of).
 */
export function decimalsOf(data, texts = {}) {
  const get = (k) => {
    const v = data[k];
    if (typeof v === 'number') return parseDecimal(texts[k]) ?? decimalOfNumber(v);
    // Some publishers send prices as strings, to keep their digits.
    if (typeof v === 'string' && v !== '') return parseDecimal(v) ?? v;
    return null;
  };
  const price = get('price');
  const bid = get('bid');
  const ask = get('ask');
  const side = isDecimal(bid) ? bid : isDecimal(ask) ? ask : null;
  const mid = price ?? (isDecimal(bid) && isDecimal(ask) ? decimalMid(bid, ask) : side);
  return { price: mid, bid, ask };
}

/**
 * Change since the first value: `{ abs, pct, dir, pctDir }`, the display
 * texts and the signs ('up' | 'down' | 'flat') of what they show. `abs` is
 * exact, with at least `places` decimals.
 */
export function formatChange(price, first, places) {
  if (!isDecimal(price) || !isDecimal(first)) return { abs: '—', pct: '—', dir: 'flat', pctDir: 'flat' };
  const delta = decimalSub(price, first);
  const dir = delta.m > 0n ? 'up' : delta.m < 0n ? 'down' : 'flat';
  const abs = `${dir === 'up' ? '+' : ''}${formatDecimal(delta, places)}`;
  const base = Number(formatDecimal(first));
  if (base === 0) return { abs, pct: '—', dir, pctDir: 'flat' };
  const pctValue = Number(((Number(formatDecimal(delta)) / Math.abs(base)) * 100).toFixed(2));
  const pct = `${pctValue > 0 ? '+' : ''}${pctValue === 0 ? '0.00' : pctValue.toFixed(2)}%`;
  const pctDir = pctValue > 0 ? 'up' : pctValue < 0 ? 'down' : 'flat';
  return { abs, pct, dir, pctDir };
}

/** Age of the last update as short text: `0.4s`, `12s`, `3m 04s`, `2h 05m`. */
export function formatAge(ms) {
  if (!Number.isFinite(ms)) return '—';
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, '0')}m`;
}

/** The `points` attribute of a sparkline polyline for `values` in a `w` x `h` box. */
export function sparklinePoints(values, w = SPARK_W, h = SPARK_H) {
  if (values.length === 0) return '';
  const min = Math.min(...values);
  const max = Math.max(...values);
  const span = max - min;
  const pad = 1.5; // keep the stroke inside the box
  const step = values.length > 1 ? (w - 2 * pad) / (values.length - 1) : 0;
  return values
    .map((v, i) => {
      const x = values.length > 1 ? pad + i * step : w / 2;
      const y = span === 0 ? h / 2 : pad + (1 - (v - min) / span) * (h - 2 * pad);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}

/** Text of `#conn-state` for a client state (see TickwireClient), at clock time `now`. */
export function connectionText(info, now) {
  switch (info.state) {
    case 'live':
      return 'live';
    case 'refused':
      return 'subscription refused';
    case 'connecting':
      return info.attempt > 0 ? `connecting (attempt ${info.attempt + 1})` : 'connecting';
    case 'reconnecting': {
      const left = Math.max(0, info.retryAt - now) / 1000;
      return `reconnecting in ${left.toFixed(1)}s`;
    }
    case 'stopped':
      return `stopped: ${info.reason}`;
    default:
      return info.state;
  }
}

/** Initial filter and rate from the page's query string (`?filter=fx.*&max_hz=2`). */
export function readSettings(search) {
  const q = new URLSearchParams(search);
  const filter = q.get('filter')?.trim() || '>';
  const raw = q.get('max_hz');
  const n = raw === null ? DEFAULT_MAX_HZ : Number(raw);
  const maxHz = Number.isFinite(n) && n > 0 ? n : 0;
  return { filter, maxHz };
}

// ---------------------------------------------------------------------------
// The page

const SVG_NS = 'http://www.w3.org/2000/svg';
/** sessionStorage key of the token: kept for this tab's reloads, never put in the URL. */
const TOKEN_KEY = 'tickwire.token';

function loadToken(win) {
  try {
    return win.sessionStorage.getItem(TOKEN_KEY) || null;
  } catch {
    return null; // storage disabled: the token is asked for again
  }
}

function saveToken(win, token) {
  try {
    if (token) win.sessionStorage.setItem(TOKEN_KEY, token);
    else win.sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token still serves this page
  }
}
const FLASH_MS = 700;
/**
 * How long a one-off broker error (a rate limit, a bad request) stays shown
 * while the page is live: long enough to read, short enough not to be taken
 * for a problem of now on a screen watched for hours. An error that still
 * applies stays: a refused subscribe until the filter changes, and any
 * error while the page is not live (it may be why) until it is live again.
 */
const BROKER_ERROR_MS = 10_000;
/** A row is redrawn at most this often (10 Hz: faster than anyone reads). */
const ROW_MIN_INTERVAL_MS = 100;

/**
 * The page: `new Dashboard(document, window).start()`. `clientOptions` go to
 * its TickwireClient (the tests give it a fake WebSocket and clock).
 */
export class Dashboard {
  constructor(doc, win, clientOptions = {}) {
    this.doc = doc;
    this.win = win;
    this.el = (id) => doc.getElementById(id);
    this.tbody = this.el('topic-rows');
    this.models = new Map(); // topic -> row model
    this.order = []; // topics in display order (sorted)
    this.dirty = new Set();
    this.staleHints = new Map(); // topic -> last_ts, from /api/topics (see loadTopicStates)
    this.frame = 0;
    this.connInfo = { state: 'idle' };
    this.countdownTimer = 0;
    this.brokerError = false; // #filter-error holds a broker error (not the page's own about the filter)
    this.brokerErrorTimer = null;
    this.stats = { messages: 0, conflated: 0, recoveryFailed: 0, rate: 0 };
    this.received = 0; // snapshots and ticks taken, ever: see loadTopicStates
    this.numChars = 0; // longest price, bid or ask text so far (see fitColumns)
    this.changeChars = 0;

    const settings = readSettings(win.location.search);
    const parsed = parsePatterns(settings.filter);
    this.patterns = parsed.error ? ['>'] : parsed.patterns;
    this.el('filter').value = this.patterns.join(', ');
    this.selectMaxHz(settings.maxHz);

    this.client = new TickwireClient({
      token: loadToken(win),
      topics: this.patterns,
      maxHz: settings.maxHz || null,
      onSnapshot: (msg, meta, frame) => this.onData(msg, meta, false, frame),
      onTick: (msg, meta, frame) => this.onData(msg, meta, true, frame),
      onStatus: (msg) => this.onStatus(msg),
      onState: (info) => this.onState(info),
      onError: (err, op) => this.showBrokerError(`${err.code}: ${err.message}`, op),
      ...clientOptions,
    });
  }

  start() {
    this.el('filter-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.applyFilter(this.el('filter').value);
    });
    this.el('max-hz').addEventListener('change', (ev) => {
      const hz = Number(ev.target.value);
      this.client.setMaxHz(hz > 0 ? hz : null);
      this.saveSettings();
    });
    this.el('reconnect').addEventListener('click', () => this.client.start());
    this.el('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.useToken(this.el('token').value.trim());
    });
    this.el('token-form').hidden = this.client.token === null;
    // Ages and the rate move with time, not with ticks.
    this.win.setInterval(() => this.tickClock(), 500);
    this.client.start();
  }

  // -- client callbacks: update models only ---------------------------------

  onData(msg, meta, isTick, frame) {
    this.stats.messages += 1;
    this.received += 1;
    if (meta.cause === 'conflation') this.stats.conflated += meta.gap;
    if (meta.cause === 'recovery_failed') this.stats.recoveryFailed += 1;
    if (meta.duplicate) return; // a value already shown (overlapping subscribe)
    const m = this.model(msg.topic);
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    const { price, bid, ask } = decimalsOf(data, dataNumbers(frame));
    // Every sent number shows all its decimals; the others of the row pad to them.
    // (A mid's extra half digit does not count: it was not sent.)
    const sent = typeof data.price === 'number' || typeof data.price === 'string' ? price : null;
    for (const d of [sent, bid, ask]) if (isDecimal(d) && d.s > m.decimals) m.decimals = d.s;
    if (isDecimal(price)) {
      if (m.first === null) m.first = price;
      // Flash only on a live move, not on the first value or a snapshot.
      const move = isDecimal(m.price) ? decimalCmp(price, m.price) : 0;
      if (isTick && move !== 0) m.flash = move > 0 ? 'up' : 'down';
      m.hist.push(Number(formatDecimal(price)));
      if (m.hist.length > SPARK_POINTS) m.hist.splice(0, m.hist.length - SPARK_POINTS);
    }
    if (price !== null) m.price = price;
    if (bid) m.bid = bid;
    if (ask) m.ask = ask;
    m.ts = msg.ts;
    m.seq = msg.seq;
    m.received = this.received;
    m.updates += 1;
    // A tick revives a stale topic; the broker's `status: live` says so too.
    if (isTick) m.stale = false;
    const hint = this.staleHints.get(msg.topic);
    if (hint !== undefined) {
      this.staleHints.delete(msg.topic);
      if (!isTick && msg.ts <= hint) m.stale = true;
    }
    this.markDirty(m);
  }

  onStatus(msg) {
    const m = this.model(msg.topic);
    m.stale = msg.state === 'stale';
    this.markDirty(m);
  }

  /** Connects again with `token` (empty: none), and keeps it for reloads of this tab. */
  useToken(token) {
    saveToken(this.win, token);
    this.el('token').value = '';
    this.showError('');
    this.client.token = token || null;
    this.client.stop('changing the token');
    this.client.start();
  }

  onState(info) {
    this.connInfo = info;
    // Refused for want of a (good) token: ask for one.
    const refused = info.state === 'stopped' && (info.needsToken === true || (info.code >= 4500 && info.code <= 4999));
    if (refused) this.el('token-form').hidden = false;
    if (info.state === 'live') {
      this.loadTopicStates();
      // Connected and subscribed: an earlier broker error no longer applies.
      if (this.brokerError) this.showError('');
    }
    this.renderConnection();
    // A countdown needs its own timer: nothing else happens while waiting.
    this.win.clearInterval(this.countdownTimer);
    if (info.state === 'reconnecting') this.countdownTimer = this.win.setInterval(() => this.renderConnection(), 100);
  }

  /**
   * A new subscriber hears `status` only when a topic changes state, so a
   * topic that was already stale would look live. Ask the broker after each
   * (re)subscribe; a later tick or status overrides what this says. Topics
   * whose snapshot has not arrived yet keep a hint for when it does.
   *
   * A topic the broker does not list at all (a restarted broker that has
   * not heard of it again) will get no tick and no status: its price is
   * frozen for good, so it is shown stale too, unless a value of it came in
   * after the question was asked.
   */
  async loadTopicStates() {
    const asked = this.received;
    try {
      const res = await this.win.fetch('/api/topics', { cache: 'no-store' });
      if (!res.ok) return;
      const body = await res.json();
      this.staleHints.clear();
      const listed = new Set((body.topics ?? []).map((t) => t.topic));
      for (const m of this.models.values()) {
        if (!listed.has(m.topic) && m.received <= asked && !m.stale) {
          m.stale = true;
          this.markDirty(m);
        }
      }
      for (const t of body.topics ?? []) {
        if (t.state !== 'stale' || typeof t.last_ts !== 'number') continue;
        const m = this.models.get(t.topic);
        if (!m) {
          this.staleHints.set(t.topic, t.last_ts);
        } else if (m.ts === null || m.ts <= t.last_ts) {
          // No tick newer than the broker's last one arrived meanwhile.
          m.stale = true;
          this.markDirty(m);
        }
      }
    } catch {
      // Best effort: status messages keep the markers right from here on.
    }
  }

  // -- filter and rate -----------------------------------------------------

  applyFilter(text) {
    const { patterns, error } = parsePatterns(text);
    const input = this.el('filter');
    if (error) {
      input.setAttribute('aria-invalid', 'true');
      this.showError(error);
      return;
    }
    input.removeAttribute('aria-invalid');
    this.showError('');
    this.patterns = patterns;
    this.client.setTopics(patterns);
    // Drop the rows the new filter does not cover; their ticks stop coming.
    for (const topic of [...this.models.keys()]) {
      if (!patterns.some((p) => patternMatches(p, topic))) this.removeRow(topic);
    }
    this.renderCount();
    this.saveSettings();
    this.loadTopicStates();
  }

  selectMaxHz(hz) {
    const select = this.el('max-hz');
    const value = String(hz > 0 ? hz : 0);
    if (![...select.options].some((o) => o.value === value)) {
      const opt = this.doc.createElement('option');
      opt.value = value;
      opt.textContent = `${value} Hz`;
      select.append(opt);
    }
    select.value = value;
  }

  /** Keeps the filter and rate in the URL, so a reload or a shared link keeps them. */
  saveSettings() {
    const q = new URLSearchParams();
    const filter = this.patterns.join(',');
    if (filter !== '>') q.set('filter', filter);
    const hz = Number(this.el('max-hz').value);
    if (hz !== DEFAULT_MAX_HZ) q.set('max_hz', String(hz));
    const search = q.toString();
    this.win.history.replaceState(null, '', search ? `?${search}` : this.win.location.pathname);
  }

  showError(text) {
    this.el('filter-error').textContent = text;
    this.brokerError = false;
    this.client.clock.clearTimeout(this.brokerErrorTimer);
    this.brokerErrorTimer = null;
  }

  /** A broker `error` frame, in answer to a request `op` (null: none of ours). See BROKER_ERROR_MS. */
  showBrokerError(text, op) {
    this.showError(text);
    this.brokerError = true;
    if (op === 'subscribe') return; // holds until the filter changes or the page is live again
    this.brokerErrorTimer = this.client.clock.setTimeout(() => {
      this.brokerErrorTimer = null;
      if (this.connInfo.state === 'live') this.showError('');
    }, BROKER_ERROR_MS);
  }

  // -- models and rows -----------------------------------------------------

  model(topic) {
    let m = this.models.get(topic);
    if (!m) {
      m = {
        topic,
        first: null, // first price this page saw: the base of the change columns
        price: null, // exact decimals, see parseDecimal (or a text sent that is no number)
        decimals: 0, // most decimals sent so far in price, bid or ask
        bid: null,
        ask: null,
        ts: null,
        seq: null,
        hist: [], // recent prices for the sparkline, at most SPARK_POINTS
        stale: false,
        flash: null, // 'up' | 'down' to flash on the next draw
        updates: 0,
        received: 0, // this.received when its last value came
        row: null, // the <tr>, once drawn
        vals: null, // its value boxes
        ageText: '',
        drawnAt: -Infinity, // frame time of the last draw
        flashAnim: null,
      };
      this.models.set(topic, m);
    }
    return m;
  }

  markDirty(m) {
    this.dirty.add(m.topic);
    if (!this.frame) this.frame = this.win.requestAnimationFrame((t) => this.flush(t));
  }

  /**
   * One DOM pass per animation frame, for the rows that changed. A row is
   * redrawn at most every ROW_MIN_INTERVAL_MS: a later change waits for a
   * later frame (its model keeps only the newest value), so the DOM work per
   * second is bounded by the number of rows, not by the message rate.
   */
  flush(frameTime = performance.now()) {
    this.frame = 0;
    const now = this.client.serverNow();
    let added = false;
    let deferred = false;
    for (const topic of this.dirty) {
      const m = this.models.get(topic);
      if (!m) {
        this.dirty.delete(topic); // removed by a filter change meanwhile
        continue;
      }
      if (!m.row) {
        this.createRow(m);
        added = true;
      } else if (frameTime - m.drawnAt < ROW_MIN_INTERVAL_MS) {
        deferred = true;
        continue;
      }
      m.drawnAt = frameTime;
      this.renderRow(m, now);
      this.dirty.delete(topic);
    }
    if (deferred) this.frame = this.win.requestAnimationFrame((t) => this.flush(t));
    if (added) this.renderCount();
  }

  createRow(m) {
    const tr = this.doc.createElement('tr');
    tr.className = 'row';
    tr.dataset.topic = m.topic;
    const cell = (cls) => {
      const td = this.doc.createElement('td');
      td.className = cls;
      tr.append(td);
      return td;
    };
    // Values live in a `.v` box with CSS containment: a changed number then
    // lays out only its own box, not the whole table (see dashboard.css).
    const valueCell = (cls) => {
      const box = this.doc.createElement('div');
      box.className = 'v';
      cell(cls).append(box);
      return box;
    };
    const topicCell = cell('c-topic');
    const name = this.doc.createElement('span');
    name.className = 'topic-name';
    name.textContent = m.topic;
    const badge = this.doc.createElement('span');
    badge.className = 'badge-stale';
    badge.textContent = 'stale';
    topicCell.append(name, badge);
    const vals = {
      price: valueCell('c-price num'),
      change: valueCell('c-change num'),
      pct: valueCell('c-pct num'),
      bid: valueCell('c-bid num'),
      ask: valueCell('c-ask num'),
      spark: null,
      age: null,
    };
    const svg = this.doc.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
    svg.setAttribute('width', String(SPARK_W));
    svg.setAttribute('height', String(SPARK_H));
    svg.setAttribute('aria-hidden', 'true');
    const line = this.doc.createElementNS(SVG_NS, 'polyline');
    svg.append(line);
    cell('c-spark').append(svg);
    vals.spark = line;
    vals.age = valueCell('c-age num');
    m.row = tr;
    m.vals = vals;

    // Keep rows sorted by topic: binary search for the insertion point.
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.order[mid] < m.topic) lo = mid + 1;
      else hi = mid;
    }
    const before = lo < this.order.length ? this.models.get(this.order[lo])?.row ?? null : null;
    this.order.splice(lo, 0, m.topic);
    this.tbody.insertBefore(tr, before);
  }

  removeRow(topic) {
    const m = this.models.get(topic);
    this.models.delete(topic);
    this.dirty.delete(topic);
    if (!m) return;
    m.row?.remove();
    const i = this.order.indexOf(topic);
    if (i >= 0) this.order.splice(i, 1);
  }

  renderRow(m, now) {
    const { vals, row } = m;
    const d = m.decimals;
    const texts = { price: formatDecimal(m.price, d), bid: formatDecimal(m.bid, d), ask: formatDecimal(m.ask, d) };
    setText(vals.price, texts.price);
    const change = formatChange(m.price, m.first, d);
    setText(vals.change, change.abs);
    setText(vals.pct, change.pct);
    setAttr(vals.change.parentNode, 'data-dir', change.dir);
    setAttr(vals.pct.parentNode, 'data-dir', change.pctDir);
    setText(vals.bid, texts.bid);
    setText(vals.ask, texts.ask);
    // A text that is no number can be any length: it may be cut, a number never.
    const width = (k) => (isDecimal(m[k]) ? texts[k].length : 0);
    this.fitColumns(Math.max(width('price'), width('bid'), width('ask')), change.abs.length);
    vals.spark.setAttribute('points', sparklinePoints(m.hist));
    const trend = m.hist.length > 1 ? Math.sign(m.hist[m.hist.length - 1] - m.hist[0]) : 0;
    setAttr(vals.spark, 'class', trend > 0 ? 'up' : trend < 0 ? 'down' : 'flat');
    this.renderAge(m, now);
    row.dataset.seq = m.seq === null ? '' : String(m.seq);
    row.dataset.ts = m.ts === null ? '' : String(m.ts);
    row.dataset.updates = String(m.updates);
    setAttr(row, 'data-state', m.stale ? 'stale' : 'live');
    if (row.classList.contains('stale') !== m.stale) row.classList.toggle('stale', m.stale);
    if (m.flash) {
      setAttr(row, 'data-move', m.flash);
      const td = vals.price.parentNode;
      setAttr(td, 'data-dir', m.flash);
      m.flashAnim = flash(td, m.flash, m.flashAnim);
      m.flash = null;
    }
  }

  /**
   * Widens the number columns to their longest text so far: a price is
   * never cut to an ellipsis. They only grow, so the table is laid out
   * again only when a longer number than any before shows up.
   */
  fitColumns(numChars, changeChars) {
    const table = this.el('topics');
    if (numChars > this.numChars) {
      this.numChars = numChars;
      table.style.setProperty('--num-ch', String(numChars));
    }
    if (changeChars > this.changeChars) {
      this.changeChars = changeChars;
      table.style.setProperty('--change-ch', String(changeChars));
    }
  }

  renderAge(m, now) {
    const text = m.ts === null ? '—' : formatAge(now - m.ts);
    if (text !== m.ageText) {
      m.ageText = text;
      m.vals.age.textContent = text;
    }
  }

  renderCount() {
    const n = this.models.size;
    const el = this.el('row-count');
    el.dataset.count = String(n);
    el.textContent = `${n} ${n === 1 ? 'topic' : 'topics'}`;
    this.el('empty').hidden = n > 0;
    this.el('empty').textContent = `Waiting for prices on ${this.patterns.join(', ')}…`;
  }

  renderConnection() {
    const info = this.connInfo;
    const conn = this.el('conn');
    conn.dataset.state = info.state;
    // Off the broker, every price on the page is frozen: the table greys out
    // (dashboard.css) so that none of them looks current.
    setAttr(this.el('topics'), 'data-conn', info.state === 'live' ? 'live' : 'down');
    setText(this.el('conn-state'), connectionText(info, this.client.clock.now()));
    let detail = '';
    if (info.state === 'live' && info.recovered === true) detail = 'recovered every missed tick';
    else if (info.state === 'live' && info.recovered === false) detail = 'some ticks missed: fresh snapshots';
    else if (info.state === 'reconnecting' || info.state === 'refused') detail = info.reason;
    setText(this.el('conn-detail'), detail);
    this.el('reconnect').hidden = info.state !== 'stopped';
  }

  tickClock() {
    const now = this.client.serverNow();
    for (const m of this.models.values()) if (m.row) this.renderAge(m, now);
    const s = this.stats;
    s.rate = s.messages * 2; // messages in the last 500 ms
    s.messages = 0;
    const el = this.el('stats');
    el.dataset.rate = String(s.rate);
    el.dataset.conflated = String(s.conflated);
    el.dataset.recoveryFailed = String(s.recoveryFailed);
    el.textContent = `${s.rate} msg/s · ${s.conflated} conflated · ${s.recoveryFailed} unrecovered`;
    el.title = 'conflated: seqs skipped on purpose by max_hz or backpressure (the newest value is shown); '
      + 'unrecovered: topics whose ticks during a disconnect could not be replayed';
  }
}

// Writes only what changed: an unchanged value costs no style or layout work.
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setAttr(el, name, value) {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

/**
 * A green or red background fade on a cell. The cell's previous fade is
 * cancelled first: a busy row would otherwise stack several running
 * animations per cell, each costing style work every frame.
 */
function flash(el, dir, previous) {
  previous?.cancel();
  if (typeof el.animate !== 'function') return null;
  const color = dir === 'up' ? 'var(--flash-up)' : 'var(--flash-down)';
  return el.animate([{ backgroundColor: color }, { backgroundColor: 'transparent' }], { duration: FLASH_MS, easing: 'ease-out' });
}

if (typeof document !== 'undefined' && document.getElementById('topic-rows')) {
  const dashboard = new Dashboard(document, window);
  dashboard.start();
  // Handy from the devtools console, and for the browser test.
  window.tickwireDashboard = dashboard;
}
