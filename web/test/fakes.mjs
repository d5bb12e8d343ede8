// Test doubles for TickwireClient: a clock whose time moves only when a
// test says so, a WebSocket that a test opens, feeds and closes by hand, and
// a repeatable random source. No network, no real timers.

/** A manual clock with the `{ now, setTimeout, clearTimeout }` shape the client takes. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.timers = new Map(); // id -> { at, fn }
    this.nextId = 1;
  }

  now() {
    return this.t;
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** Moves time forward by `ms`, firing due timers in time order (including ones they set). */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let due = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (due === null || timer.at < due[1].at)) due = [id, timer];
      }
      if (due === null) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
    }
    this.t = end;
  }

  /** Delays (ms from now) of the pending timers, for assertions. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.t).sort((a, b) => a - b);
  }
}

/** Returns a WebSocket class whose instances land in `sockets`. */
export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }

    // -- driven by the test, as the broker and the browser would ------------

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(msg) {
      this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
    }

    /** The close event as the browser reports it (1006 when there was no close frame). */
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }

    /** Sent messages with the given op. */
    ops(op) {
      return this.sent.filter((m) => m.op === op);
    }
  }
  return { FakeWebSocket, sockets };
}

/** A repeatable random source in [0, 1) (mulberry32). */
export function seededRandom(seed = 42) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// -- a page for dashboard.js ---------------------------------------------------

/**
 * The little of the DOM that dashboard.js uses: elements with text,
 * attributes, `dataset`, children and listeners. `textContent` is plain
 * text, as in a browser: markup in it stays text.
 */
export class FakeElement {
  constructor(tag, id = null) {
    this.tagName = tag.toUpperCase();
    this.id = id;
    this.attrs = new Map();
    this.dataset = {};
    this.children = [];
    this.parentNode = null;
    this.listeners = {};
    this.hidden = false;
    this.value = '';
    this.text = '';
    const props = {};
    this.style = { setProperty: (k, v) => (props[k] = v), getPropertyValue: (k) => props[k] ?? '' };
    const classes = () => new Set(this.className.split(/\s+/).filter(Boolean));
    this.classList = {
      contains: (c) => classes().has(c),
      toggle: (c, on) => {
        const set = classes();
        if (on ?? !set.has(c)) set.add(c);
        else set.delete(c);
        this.className = [...set].join(' ');
      },
    };
  }

  get className() {
    return this.attrs.get('class') ?? '';
  }

  set className(v) {
    this.attrs.set('class', String(v));
  }

  get textContent() {
    return this.children.length > 0 ? this.children.map((c) => c.textContent).join('') : this.text;
  }

  set textContent(v) {
    this.children = [];
    this.text = String(v);
  }

  get options() {
    return this.children.filter((c) => c.tagName === 'OPTION');
  }

  setAttribute(name, value) {
    this.attrs.set(name, String(value));
  }

  getAttribute(name) {
    return this.attrs.get(name) ?? null;
  }

  removeAttribute(name) {
    this.attrs.delete(name);
  }

  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }

  append(...nodes) {
    for (const n of nodes) this.insertBefore(n, null);
  }

  insertBefore(node, before) {
    node.remove();
    node.parentNode = this;
    const i = before ? this.children.indexOf(before) : -1;
    if (i >= 0) this.children.splice(i, 0, node);
    else this.children.push(node);
  }

  remove() {
    if (!this.parentNode) return;
    this.parentNode.children.splice(this.parentNode.children.indexOf(this), 1);
    this.parentNode = null;
  }

  /** The first descendant with class `cls`. */
  find(cls) {
    for (const c of this.children) {
      if (c.classList.contains(cls)) return c;
      const hit = c.find(cls);
      if (hit) return hit;
    }
    return null;
  }
}

/**
 * A document holding one element per `id="..."` of the page's index.html,
 * and a window around it: no timers of its own (the test drives the
 * client's clock and runs animation frames with `frame()`), a `fetch` that
 * answers `GET /api/topics` with `topics`.
 */
export function fakePage(html, { search = '', topics = [] } = {}) {
  const byId = new Map();
  for (const [, tag, id] of html.matchAll(/<(\w+)[^>]*\sid="([^"]+)"/g)) byId.set(id, new FakeElement(tag, id));
  const doc = {
    getElementById: (id) => byId.get(id) ?? null,
    createElement: (tag) => new FakeElement(tag),
    createElementNS: (_ns, tag) => new FakeElement(tag),
  };
  const frames = [];
  let frameTime = 0;
  const storage = new Map();
  const win = {
    location: { search, pathname: '/' },
    history: { replaceState: () => {} },
    sessionStorage: {
      getItem: (k) => storage.get(k) ?? null,
      setItem: (k, v) => storage.set(k, String(v)),
      removeItem: (k) => storage.delete(k),
    },
    setInterval: () => 0,
    clearInterval: () => {},
    requestAnimationFrame: (fn) => frames.push(fn),
    fetch: async () => ({ ok: true, json: async () => ({ topics }) }),
  };
  /** Runs the pending animation frames, a second apart (past any redraw limit). */
  const frame = () => {
    frameTime += 1000;
    for (const fn of frames.splice(0)) fn(frameTime);
  };
  return { doc, win, frame, el: (id) => byId.get(id) };
}
