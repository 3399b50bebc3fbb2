// Pitaya's client protocol over WebSocket, for browsers: packets (type:1 | length:3 | body,
// one per WebSocket message), the JSON handshake, heartbeats, and messages (flag, varint id,
// route or route code, payload; zlib payloads inflated).

const HANDSHAKE = 1, ACK = 2, HEARTBEAT = 3, DATA = 4, KICK = 5;
const REQUEST = 0, NOTIFY = 1, RESPONSE = 2, PUSH = 3;
const enc = new TextEncoder(), dec = new TextDecoder();

function packet(type, body = new Uint8Array(0)) {
  const p = new Uint8Array(4 + body.length);
  p[0] = type; p[1] = (body.length >> 16) & 0xff; p[2] = (body.length >> 8) & 0xff; p[3] = body.length & 0xff;
  p.set(body, 4);
  return p;
}

function isZlib(b) {
  return b.length > 1 && ((b[0] === 0x78 && [0x9c, 0x01, 0xda, 0x5e].includes(b[1])) || (b[0] === 0x1f && b[1] === 0x8b));
}

async function inflate(bytes) {
  const format = bytes[0] === 0x1f ? 'gzip' : 'deflate';
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(format));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export class PitayaClient {
  constructor() {
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = new Map();
    this.routeToCode = {};
    this.codeToRoute = {};
    /** Heartbeats received from the server: the connection is alive. */
    this.heartbeats = 0;
  }

  /** Connects, handshakes and acknowledges; resolves with the handshake response. */
  connect(url, handshake = { sys: { platform: 'web', libVersion: 'kiwano-web-0.1' }, user: {} }) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      ws.onopen = () => ws.send(packet(HANDSHAKE, enc.encode(JSON.stringify(handshake))));
      ws.onerror = () => reject(new Error('websocket error'));
      ws.onclose = () => { clearInterval(this.beat); this.emit('close', {}); };
      ws.onmessage = async (ev) => {
        const b = new Uint8Array(ev.data);
        const type = b[0], body = b.subarray(4);
        if (type === HANDSHAKE) {
          const json = JSON.parse(dec.decode(isZlib(body) ? await inflate(body) : body));
          if (json.code !== 200) { reject(new Error('handshake refused: ' + json.code)); ws.close(); return; }
          this.routeToCode = json.sys.dict || {};
          for (const [r, c] of Object.entries(this.routeToCode)) this.codeToRoute[c] = r;
          ws.send(packet(ACK));
          const period = (json.sys.heartbeat || 0) * 1000;
          if (period > 0) this.beat = setInterval(() => ws.send(packet(HEARTBEAT)), period);
          resolve(json);
        } else if (type === DATA) {
          await this.onData(body);
        } else if (type === HEARTBEAT) {
          this.heartbeats++;
        } else if (type === KICK) {
          this.emit('kick', {});
        }
      };
    });
  }

  async onData(b) {
    const flag = b[0], type = (flag >> 1) & 7;
    let off = 1, id = 0;
    if (type === REQUEST || type === RESPONSE) {
      let shift = 0;
      for (;;) { const x = b[off++]; id += (x & 0x7f) * 2 ** shift; shift += 7; if (x < 128) break; }
    }
    let route = '';
    if (type !== RESPONSE) {
      if (flag & 1) { route = this.codeToRoute[(b[off] << 8) | b[off + 1]]; off += 2; }
      else { const n = b[off++]; route = dec.decode(b.subarray(off, off + n)); off += n; }
    }
    let payload = b.subarray(off);
    if (flag & 0x10) payload = await inflate(payload);
    const text = dec.decode(payload);
    const value = text.length ? JSON.parse(text) : null;
    if (type === RESPONSE) {
      const p = this.pending.get(id);
      this.pending.delete(id);
      if (p) (flag & 0x20) ? p.reject(value) : p.resolve(value);
    } else {
      this.emit(route, value);
    }
  }

  message(type, route, id, obj) {
    const payload = enc.encode(JSON.stringify(obj));
    const code = this.routeToCode[route];
    const ids = [];
    if (type === REQUEST) { let v = id; do { let x = v % 128; v = Math.floor(v / 128); ids.push(v > 0 ? x | 0x80 : x); } while (v > 0); }
    const r = code === undefined ? [enc.encode(route).length, ...enc.encode(route)] : [code >> 8, code & 0xff];
    const head = [(type << 1) | (code === undefined ? 0 : 1), ...ids, ...r];
    const body = new Uint8Array(head.length + payload.length);
    body.set(head); body.set(payload, head.length);
    this.ws.send(packet(DATA, body));
  }

  /** Sends a request; resolves with the response, rejects with the error object. */
  request(route, obj = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => { this.pending.set(id, { resolve, reject }); this.message(REQUEST, route, id, obj); });
  }

  /** Sends a notify. */
  notify(route, obj = {}) { this.message(NOTIFY, route, 0, obj); }

  /** Listens to pushes on `route` (and 'kick', 'close'). */
  on(route, fn) { if (!this.listeners.has(route)) this.listeners.set(route, []); this.listeners.get(route).push(fn); }

  emit(route, value) { for (const fn of this.listeners.get(route) || []) fn(value); }

  disconnect() { this.ws.close(); }
}
