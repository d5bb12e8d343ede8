// A peer for benchmarks: uWebSockets (C++, through its Node binding uWS.js,
// the `uws-pack` build of v20 on npm) speaking the subset of the tickwire
// protocol that loadgen uses, so that loadgen runs against it unchanged:
// `welcome` on open; `subscribe` -> `subscribed`; `publish` -> `ack`, and a
// `tick` with a per-topic `seq` to every subscriber of the topic, through
// uWS's own pub/sub (`app.publish`; measured here, this build sends each
// delivery as it is published, one write each: docs/performance.md). No
// auth, no snapshots, no conflation: the fan-out path only.
//
// usage: node server.mjs --listen 127.0.0.1:PORT [ignored tickwire flags...]
// (the tickwire flags compare-builds.sh passes are accepted and ignored).
import * as uws from 'uws-pack';

const args = process.argv.slice(2);
const at = args.indexOf('--listen');
const [host, port] = (at >= 0 ? args[at + 1] : '127.0.0.1:8080').split(':');

const seqs = new Map();
const send = (ws, obj) => ws.send(JSON.stringify(obj), false);

const app = uws.App();
app.get('/healthz', (res) => res.end('{"status":"ok"}'));
app.ws('/ws', {
  compression: uws.DISABLED,
  maxPayloadLength: 1 << 20,
  // Large enough that the fan-out rows lose nothing to uWS's drop-on-limit.
  maxBackpressure: 64 << 20,
  idleTimeout: 0,
  sendPingsAutomatically: false,
  open: (ws) => send(ws, { type: 'welcome', epoch: 'uws', heartbeat_ms: 30000, server_time: Date.now() }),
  message: (ws, message, isBinary) => {
    let m;
    try {
      m = JSON.parse(Buffer.from(message).toString('utf8'));
    } catch {
      send(ws, { type: 'error', code: 'bad_request', message: 'not JSON' });
      return;
    }
    if (m.op === 'publish') {
      const seq = (seqs.get(m.topic) || 0) + 1;
      seqs.set(m.topic, seq);
      const ts = Date.now();
      const tick = `{"type":"tick","topic":${JSON.stringify(m.topic)},"seq":${seq},"ts":${ts},"data":${JSON.stringify(m.data)}}`;
      app.publish(m.topic, tick, false);
      send(ws, { type: 'ack', id: m.id, topic: m.topic, seq });
    } else if (m.op === 'subscribe') {
      for (const t of m.topics) ws.subscribe(t);
      send(ws, { type: 'subscribed', id: m.id, topics: m.topics });
    } else {
      send(ws, { type: 'error', id: m.id, code: 'bad_request', message: 'unsupported op' });
    }
  },
});
app.listen(host, Number(port), (token) => {
  if (!token) {
    console.error(`cannot listen on ${host}:${port}`);
    process.exit(1);
  }
  console.error(`uWS peer on ${host}:${port}`);
});
process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
