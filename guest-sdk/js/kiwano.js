// Kiwano's JavaScript SDK: write a server type's logic as handler functions registered on a
// `Server`, with JSON in and out as plain JavaScript values. One dependency-free ES module.
//
//   import { Server, KiwanoError, groups } from './kiwano.js';
//
//   const server = new Server()
//     .request('room.join', (ctx, body) => {
//       ctx.bind(body.name);
//       return { code: 0, members: groups.members('room') };
//     })
//     .onSessionClose((ctx) => { ... });
//
//   export const guest = server.guest();   // the component's `guest` export
//
// It mirrors the Rust SDK (guest-sdk/src): the same routes, hooks, error codes and messages, and
// the same JSON syntax errors, so a client cannot tell a JavaScript server type from a Rust one.
//
// Host functions are reached through `globalThis[Symbol.for('kiwano.host')]`, an object
// `{ log, users, groups, rpc, timers, metrics }` holding the WIT interfaces of `kiwano:server`.
// `componentize.mjs` installs the component's imports there; `testing.js` installs an in-memory
// host, so the same code runs under plain Node for unit tests.

const HOST = Symbol.for('kiwano.host');
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const hasOwn = Object.prototype.hasOwnProperty;

function host() {
  const h = globalThis[HOST];
  if (!h) {
    throw new Error(
      'kiwano: no host. In a component, build with guest-sdk/js/componentize.mjs; ' +
        "under Node, import guest-sdk/js/testing.js first.",
    );
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Errors

function setProp(obj, key, value) {
  // `obj[key] = value` would change the prototype for `__proto__`.
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function toMetadata(metadata) {
  const out = {};
  if (metadata == null) return out;
  const pairs =
    Array.isArray(metadata) || metadata instanceof Map ? metadata : Object.entries(metadata);
  for (const [k, v] of pairs) setProp(out, String(k), String(v));
  return out;
}

/**
 * A Pitaya error: the client receives `{"code":..,"msg":..,"metadata":{..}}`. Throw it from a
 * handler to fail the request. Host functions throw it too, so a host error passes on to the
 * client when it is not caught.
 *
 * `metadata` may be an object, a `Map` or an array of `[key, value]` pairs; it is kept as an
 * object of strings.
 */
export class KiwanoError extends Error {
  constructor(code, msg, metadata) {
    super(`${code}: ${msg}`);
    this.name = 'KiwanoError';
    /** A Pitaya code such as `PIT-404`, or a game's own code such as `RH-000`. */
    this.code = String(code);
    /** The message the client receives. */
    this.msg = String(msg);
    /** Extra key/value strings passed to the client unchanged. */
    this.metadata = toMetadata(metadata);
    // componentize-js turns a thrown value with an own `payload` into the WIT error record.
    Object.defineProperty(this, 'payload', { get: () => this.toRecord(), enumerable: false });
  }

  /** Adds a metadata pair; returns the error. */
  with(key, value) {
    setProp(this.metadata, String(key), String(value));
    return this;
  }

  /** `PIT-400` with a message: a request the handler cannot accept. */
  static badRequest(msg) {
    return new KiwanoError('PIT-400', msg);
  }

  /** The WIT `error` record. */
  toRecord() {
    return { code: this.code, msg: this.msg, metadata: Object.entries(this.metadata) };
  }

  /**
   * The KiwanoError a thrown value stands for: itself, a host error (componentize-js throws an
   * `Error` whose `payload` is the WIT record), or a plain `{ code, msg, metadata }` object;
   * `undefined` for anything else (a bug).
   */
  static from(e) {
    if (e instanceof KiwanoError) return e;
    const p = e !== null && typeof e === 'object' && hasOwn.call(e, 'payload') ? e.payload : e;
    if (p !== null && typeof p === 'object' && typeof p.code === 'string' && typeof p.msg === 'string') {
      return new KiwanoError(p.code, p.msg, p.metadata);
    }
    return undefined;
  }
}

function hostCall(f) {
  try {
    return f();
  } catch (e) {
    throw KiwanoError.from(e) ?? e;
  }
}

// ---------------------------------------------------------------------------------------------
// JSON, as the Rust SDK reads and writes it (serde_json)

/**
 * Encodes a value as compact JSON, as serde_json writes it: `JSON.stringify`'s output (`undefined`
 * becomes `null`), with BigInts written as integers and numbers between 1e-6 and 1e-5 in
 * exponential notation (`1.5e-6`, where JavaScript writes `0.0000015`).
 */
export function encodeJson(value) {
  return encoder.encode(jsonString(value));
}

function jsonString(value) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    return stringifyWithFixes(value); // a BigInt; throws again for a cycle
  }
  if (text === undefined) return 'null';
  return text.includes('0.00000') ? stringifyWithFixes(value) : text;
}

function stringifyWithFixes(value) {
  const tag = `kiwano-f64-${Math.random().toString(36).slice(2)}-`;
  const fixes = [];
  const text = JSON.stringify(value, (_key, v) => {
    if (typeof v === 'bigint') return bigintJson(v);
    if (typeof v === 'number' && Math.abs(v) >= 1e-6 && Math.abs(v) < 1e-5) {
      fixes.push(v.toExponential()); // shortest digits, `1.5e-6` as serde_json's f64 writer
      return `${tag}${fixes.length - 1}`;
    }
    return v;
  });
  if (text === undefined) return 'null';
  if (fixes.length === 0) return text;
  return text.replace(new RegExp(`"${tag}(\\d+)"`, 'g'), (_m, k) => fixes[Number(k)]);
}

function bigintJson(v) {
  if (typeof JSON.rawJSON === 'function') return JSON.rawJSON(v.toString());
  const n = Number(v);
  if (Number.isSafeInteger(n)) return n;
  throw new TypeError(`the BigInt ${v} cannot be written in JSON by this engine`);
}

// What JSON.parse accepts and serde_json refuses: numbers out of f64 range (long mantissas or
// exponents), surrogate escapes, nesting deeper than 127. Bodies matching this regex, and
// bodies JSON.parse refuses, are checked by `serdeError` for the exact message.
const SUSPECT = /[eE][+-]?\d{3}|\d{100}|\\u[dD][89a-fA-F]/;

function depthWithin(v, budget) {
  if (v === null || typeof v !== 'object') return true;
  if (budget === 0) return false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (!depthWithin(v[i], budget - 1)) return false;
  } else {
    for (const k in v) if (!depthWithin(v[k], budget - 1)) return false;
  }
  return true;
}

/**
 * Decodes a JSON body as the Rust SDK does: an empty body is `null`; invalid JSON throws
 * `PIT-400` `invalid JSON: <serde_json's message>`, byte for byte the Rust SDK's error.
 */
export function decodeJson(bytes) {
  if (bytes.length === 0) return null;
  let text;
  let value;
  let parsed = false;
  try {
    text = strictUtf8.decode(bytes);
    value = JSON.parse(text);
    parsed = true;
  } catch {
    // invalid UTF-8 or JSON: serdeError says how
  }
  if (parsed && !SUSPECT.test(text) && (text.length < 256 || depthWithin(value, 127))) return value;
  const err = serdeError(bytes);
  if (err !== undefined) throw new KiwanoError('PIT-400', `invalid JSON: ${err}`);
  if (parsed) return value;
  throw new KiwanoError('PIT-400', 'invalid JSON'); // unreachable: serde_json accepts less
}

// A port of serde_json 1.0's parser (SliceRead, deserializing a `Value`, default features),
// reduced to finding the first error and its position. Returns the message, or undefined.
function serdeError(b) {
  const len = b.length;
  let i = 0;
  let depth = 128;

  class SyntaxFail {
    constructor(msg, at, pos) {
      this.msg = msg;
      this.at = at;
      this.pos = pos;
    }
  }
  const position = (at) => {
    let line = 1;
    let start = 0;
    for (let k = 0; k < at; k++) {
      if (b[k] === 0x0a) {
        line++;
        start = k + 1;
      }
    }
    return [line, at - start];
  };
  const fail = (msg) => new SyntaxFail(msg, i); // serde's `error`: at the consumed byte
  const peekFail = (msg) => new SyntaxFail(msg, Math.min(len, i + 1)); // `peek_error`
  const peek = () => (i < len ? b[i] : -1);
  const peekOrNull = () => (i < len ? b[i] : 0);
  const isDigit = (c) => c >= 0x30 && c <= 0x39;
  const ws = () => {
    while (i < len) {
      const c = b[i];
      if (c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d) i++;
      else return c;
    }
    return -1;
  };

  const EOF_VALUE = 'EOF while parsing a value';
  const EOF_LIST = 'EOF while parsing a list';
  const EOF_OBJECT = 'EOF while parsing an object';
  const EOF_STRING = 'EOF while parsing a string';
  const INVALID_NUMBER = 'invalid number';
  const OUT_OF_RANGE = 'number out of range';
  const INVALID_ESCAPE = 'invalid escape';
  const LONE_SURROGATE = 'lone leading surrogate in hex escape';
  const END_OF_HEX = 'unexpected end of hex escape';

  const U64_MAX = 18446744073709551615n;
  const U64_DIV = U64_MAX / 10n;
  const U64_REM = U64_MAX % 10n;
  const overflowU64 = (sig, d) => sig >= U64_DIV && (sig > U64_DIV || d > U64_REM);
  const I32_MAX = 2147483647;
  const overflowI32 = (e, d) => e >= 214748364 && (e > 214748364 || d > 7);
  const saturate = (x) => Math.max(-2147483648, Math.min(I32_MAX, x));

  function f64FromParts(sig, exponent) {
    let f = Number(sig);
    for (;;) {
      const abs = exponent === -2147483648 ? Infinity : Math.abs(exponent);
      if (abs <= 308) {
        const pow = Number(`1e${abs}`);
        if (exponent >= 0) {
          f *= pow;
          if (!Number.isFinite(f)) throw fail(OUT_OF_RANGE);
        } else {
          f /= pow;
        }
        return;
      }
      if (f === 0) return;
      if (exponent >= 0) throw fail(OUT_OF_RANGE);
      f /= 1e308;
      exponent += 308;
    }
  }

  function parseExponent(sig, startingExp) {
    i++; // e or E
    let positiveExp = true;
    const s = peekOrNull();
    if (s === 0x2b) i++;
    else if (s === 0x2d) {
      i++;
      positiveExp = false;
    }
    if (i >= len) throw fail(EOF_VALUE);
    const first = b[i++];
    if (!isDigit(first)) throw fail(INVALID_NUMBER);
    let exp = first - 0x30;
    while (isDigit(peekOrNull())) {
      const d = b[i++] - 0x30;
      if (overflowI32(exp, d)) {
        if (sig !== 0n && positiveExp) throw fail(OUT_OF_RANGE);
        while (isDigit(peekOrNull())) i++;
        return;
      }
      exp = exp * 10 + d;
    }
    f64FromParts(sig, positiveExp ? saturate(startingExp + exp) : saturate(startingExp - exp));
  }

  function parseDecimal(sig, expBefore) {
    i++; // .
    let expAfter = 0;
    while (isDigit(peekOrNull())) {
      const d = BigInt(b[i] - 0x30);
      if (overflowU64(sig, d)) {
        // further digits are ignored
        while (isDigit(peekOrNull())) i++;
        if (peekOrNull() === 0x65 || peekOrNull() === 0x45) parseExponent(sig, expBefore + expAfter);
        else f64FromParts(sig, expBefore + expAfter);
        return;
      }
      i++;
      sig = sig * 10n + d;
      expAfter--;
    }
    if (expAfter === 0) throw peekFail(i < len ? INVALID_NUMBER : EOF_VALUE);
    const c = peekOrNull();
    if (c === 0x65 || c === 0x45) parseExponent(sig, expBefore + expAfter);
    else f64FromParts(sig, expBefore + expAfter);
  }

  function parseNumber(sig) {
    const c = peekOrNull();
    if (c === 0x2e) parseDecimal(sig, 0);
    else if (c === 0x65 || c === 0x45) parseExponent(sig, 0);
  }

  function parseLongInteger(sig) {
    let exponent = 0;
    for (;;) {
      const c = peekOrNull();
      if (isDigit(c)) {
        i++;
        exponent++;
      } else if (c === 0x2e) {
        return parseDecimal(sig, exponent);
      } else if (c === 0x65 || c === 0x45) {
        return parseExponent(sig, exponent);
      } else {
        return f64FromParts(sig, exponent);
      }
    }
  }

  function parseInteger() {
    if (i >= len) throw fail(EOF_VALUE);
    const c = b[i++];
    if (c === 0x30) {
      if (isDigit(peekOrNull())) throw peekFail(INVALID_NUMBER);
      return parseNumber(0n);
    }
    if (c < 0x31 || c > 0x39) throw fail(INVALID_NUMBER);
    let sig = BigInt(c - 0x30);
    for (;;) {
      const n = peekOrNull();
      if (!isDigit(n)) return parseNumber(sig);
      const d = BigInt(n - 0x30);
      if (overflowU64(sig, d)) return parseLongInteger(sig);
      i++;
      sig = sig * 10n + d;
    }
  }

  function parseIdent(rest) {
    for (let k = 0; k < rest.length; k++) {
      if (i >= len) throw fail(EOF_VALUE);
      if (b[i++] !== rest.charCodeAt(k)) throw fail('expected ident');
    }
  }

  function hexEscape() {
    if (len - i < 4) {
      i = len;
      throw fail(EOF_STRING);
    }
    let n = 0;
    for (let k = 0; k < 4; k++) {
      const c = b[i + k];
      const v =
        c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
      if (v < 0) n = -1;
      if (n >= 0) n = n * 16 + v;
    }
    i += 4;
    if (n < 0) throw fail(INVALID_ESCAPE);
    return n;
  }

  function pushCodepoint(n, out) {
    if (n < 0x80) out.push(n);
    else if (n < 0x800) out.push(0xc0 | (n >> 6), 0x80 | (n & 0x3f));
    else if (n < 0x10000) out.push(0xe0 | (n >> 12), 0x80 | ((n >> 6) & 0x3f), 0x80 | (n & 0x3f));
    else out.push(0xf0 | (n >> 18), 0x80 | ((n >> 12) & 0x3f), 0x80 | ((n >> 6) & 0x3f), 0x80 | (n & 0x3f));
  }

  function parseEscape(out) {
    if (i >= len) throw fail(EOF_STRING);
    const c = b[i++];
    switch (c) {
      case 0x22: case 0x5c: case 0x2f: out.push(c); return;
      case 0x62: out.push(0x08); return;
      case 0x66: out.push(0x0c); return;
      case 0x6e: out.push(0x0a); return;
      case 0x72: out.push(0x0d); return;
      case 0x74: out.push(0x09); return;
      case 0x75: break;
      default: throw fail(INVALID_ESCAPE);
    }
    const n = hexEscape();
    if (n >= 0xdc00 && n <= 0xdfff) throw fail(LONE_SURROGATE);
    if (n < 0xd800 || n > 0xdbff) return pushCodepoint(n, out);
    if (i >= len) throw fail(EOF_STRING);
    if (b[i] !== 0x5c) {
      i++;
      throw fail(END_OF_HEX);
    }
    i++;
    if (i >= len) throw fail(EOF_STRING);
    if (b[i] !== 0x75) {
      i++;
      throw fail(END_OF_HEX);
    }
    i++;
    const n2 = hexEscape();
    if (n2 < 0xdc00 || n2 > 0xdfff) throw fail(LONE_SURROGATE);
    pushCodepoint((((n - 0xd800) << 10) | (n2 - 0xdc00)) + 0x10000, out);
  }

  // Rust's `str::from_utf8(..).valid_up_to()`, or -1 when valid.
  function invalidUtf8At(s) {
    const n = s.length;
    let k = 0;
    while (k < n) {
      const c = s[k];
      if (c < 0x80) {
        k++;
        continue;
      }
      let width;
      let lo = 0x80;
      let hi = 0xbf;
      if (c >= 0xc2 && c <= 0xdf) width = 2;
      else if (c >= 0xe0 && c <= 0xef) {
        width = 3;
        if (c === 0xe0) lo = 0xa0;
        else if (c === 0xed) hi = 0x9f;
      } else if (c >= 0xf0 && c <= 0xf4) {
        width = 4;
        if (c === 0xf0) lo = 0x90;
        else if (c === 0xf4) hi = 0x8f;
      } else return k;
      if (k + 1 >= n || s[k + 1] < lo || s[k + 1] > hi) return k;
      for (let m = 2; m < width; m++) {
        if (k + m >= n || s[k + m] < 0x80 || s[k + m] > 0xbf) return k;
      }
      k += width;
    }
    return -1;
  }

  function parseString() {
    // the opening quote is consumed
    let start = i;
    let scratch = null;
    for (;;) {
      while (i < len) {
        const c = b[i];
        if (c === 0x22 || c === 0x5c || c < 0x20) break;
        i++;
      }
      if (i === len) throw fail(EOF_STRING);
      const c = b[i];
      if (c === 0x22) {
        let content;
        if (scratch === null) content = b.subarray(start, i);
        else {
          for (let k = start; k < i; k++) scratch.push(b[k]);
          content = scratch;
        }
        i++;
        const bad = invalidUtf8At(content);
        if (bad >= 0) {
          const [line, column] = position(i);
          const back = content.length - bad;
          throw new SyntaxFail('invalid unicode code point', undefined, [line, Math.max(0, column - back)]);
        }
        return;
      }
      if (c === 0x5c) {
        if (scratch === null) scratch = [];
        for (let k = start; k < i; k++) scratch.push(b[k]);
        i++;
        parseEscape(scratch);
        start = i;
        continue;
      }
      i++;
      throw fail('control character (\\u0000-\\u001F) found while parsing a string');
    }
  }

  function parseValue() {
    const c = ws();
    if (c < 0) throw peekFail(EOF_VALUE);
    switch (c) {
      case 0x6e: i++; return parseIdent('ull');
      case 0x74: i++; return parseIdent('rue');
      case 0x66: i++; return parseIdent('alse');
      case 0x2d: i++; return parseInteger();
      case 0x22: i++; return parseString();
      case 0x5b: {
        if (--depth === 0) throw peekFail('recursion limit exceeded');
        i++;
        let first = true;
        for (;;) {
          let p = ws();
          if (p < 0) throw peekFail(EOF_LIST);
          if (p === 0x5d) break;
          if (first) first = false;
          else if (p === 0x2c) {
            i++;
            p = ws();
            if (p === 0x5d) throw peekFail('trailing comma');
            if (p < 0) throw peekFail(EOF_VALUE);
          } else throw peekFail('expected `,` or `]`');
          parseValue();
        }
        i++;
        depth++;
        return;
      }
      case 0x7b: {
        if (--depth === 0) throw peekFail('recursion limit exceeded');
        i++;
        let first = true;
        for (;;) {
          let p = ws();
          if (p < 0) throw peekFail(EOF_OBJECT);
          if (p === 0x7d) break;
          if (first) {
            first = false;
            if (p !== 0x22) throw peekFail('key must be a string');
          } else if (p === 0x2c) {
            i++;
            p = ws();
            if (p === 0x7d) throw peekFail('trailing comma');
            if (p < 0) throw peekFail(EOF_VALUE);
            if (p !== 0x22) throw peekFail('key must be a string');
          } else throw peekFail('expected `,` or `}`');
          i++;
          parseString();
          p = ws();
          if (p < 0) throw peekFail(EOF_OBJECT);
          if (p !== 0x3a) throw peekFail('expected `:`');
          i++;
          parseValue();
        }
        i++;
        depth++;
        return;
      }
      default:
        if (isDigit(c)) return parseInteger();
        throw peekFail('expected value');
    }
  }

  try {
    parseValue();
    if (ws() >= 0) throw peekFail('trailing characters');
    return undefined;
  } catch (e) {
    if (!(e instanceof SyntaxFail)) throw e;
    const [line, column] = e.pos ?? position(e.at);
    return `${e.msg} at line ${line} column ${column}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Bytes

function toBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v === undefined || v === null) return EMPTY;
  if (typeof v === 'string') return encoder.encode(v);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return Uint8Array.from(v);
  throw new TypeError(`kiwano: expected bytes (a Uint8Array), got ${typeof v}`);
}

/** A body to send: a Uint8Array goes as it is, anything else as JSON. */
function outgoing(value) {
  if (value instanceof Uint8Array) return value;
  try {
    return encodeJson(value);
  } catch (e) {
    throw new KiwanoError('PIT-500', e.message);
  }
}

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function';
}

/** `f(v)`, or once `v` settles when it is a promise. */
function then(v, f) {
  return isThenable(v) ? v.then(f) : f(v);
}

function ms64(ms) {
  const n = Math.trunc(Number(ms));
  return BigInt(Number.isFinite(n) && n > 0 ? n : 0);
}

function ms32(ms) {
  if (ms === undefined || ms === null) return undefined;
  const n = Math.trunc(Number(ms));
  return Number.isFinite(n) && n > 0 ? Math.min(n, 4294967295) : 0;
}

// ---------------------------------------------------------------------------------------------
// The call context

/**
 * The session of the message being handled: its id, uid, data, and its client. Valid only
 * during the call it was given to.
 */
export class Context {
  #raw;

  /** Wraps the host's `call-context` (or anything with its methods). */
  constructor(raw) {
    this.#raw = raw;
  }

  /** A Context for a host `call-context`, a Context, or a `testing.MockSession`. */
  static of(x) {
    if (x instanceof Context) return x;
    if (x !== null && typeof x === 'object' && typeof x.asCallContext === 'function') {
      return new Context(x.asCallContext());
    }
    return new Context(x);
  }

  /** The session id (a BigInt), unique within the server process. */
  get sessionId() {
    return this.#raw.sessionId();
  }

  /** The uid bound to the session, or undefined. */
  get uid() {
    return this.#raw.uid() ?? undefined;
  }

  /**
   * Whether a newer session has bound this session's uid since this one did (the player
   * reconnected, or logged in elsewhere). Always false on a backend.
   */
  get displaced() {
    return this.#raw.displaced();
  }

  /**
   * The uid a closing session leaves behind: its uid, unless it has none or a newer session has
   * taken it over. What an `onSessionClose` hook cleans up after.
   */
  get leavingUid() {
    const uid = this.uid;
    return uid !== undefined && !this.displaced ? uid : undefined;
  }

  /** The client's address, `ip:port` (empty on a backend). */
  get remoteAddress() {
    return this.#raw.remoteAddress();
  }

  /** The client's handshake (`{ sys: {..}, user: {..} }`), or null. */
  get handshake() {
    try {
      return JSON.parse(this.#raw.handshake());
    } catch {
      return null;
    }
  }

  /** Binds a uid to the session; another session bound to it is kicked. `PIT-400` for an
   * empty uid or an already bound session. */
  bind(uid) {
    hostCall(() => this.#raw.bind(String(uid)));
  }

  /** One session-data value, decoded from JSON; undefined if absent. */
  get(key) {
    const raw = this.#raw.get(String(key));
    if (raw === undefined || raw === null) return undefined;
    try {
      return JSON.parse(raw);
    } catch {
      return undefined;
    }
  }

  /** One session-data value as JSON text; undefined if absent. */
  getRaw(key) {
    return this.#raw.get(String(key)) ?? undefined;
  }

  /** Sets one session-data value (stored as JSON). */
  set(key, value) {
    const json = jsonText(value);
    hostCall(() => this.#raw.set(String(key), json));
  }

  /** The whole session data, as an object (a copy: change it with `set` or `setData`). */
  data() {
    try {
      const d = JSON.parse(this.#raw.data());
      return d !== null && typeof d === 'object' && !Array.isArray(d) ? d : {};
    } catch {
      return {};
    }
  }

  /** Replaces the whole session data with an object. */
  setData(data) {
    const json = jsonText(data);
    hostCall(() => this.#raw.setData(json));
  }

  /** Pushes a message on `route` to this session: a value as JSON, a Uint8Array as it is.
   * `PIT-499` when the session is closed. */
  push(route, value) {
    const body = outgoing(value);
    hostCall(() => this.#raw.push(String(route), body));
  }

  /** Kicks this session: its client gets a kick packet and is disconnected. */
  kick() {
    hostCall(() => this.#raw.kick());
  }

  /** Pins the session to server `serverId` of `serverType` (frontends only). */
  pin(serverType, serverId) {
    hostCall(() => this.#raw.pin(String(serverType), String(serverId)));
  }
}

function jsonText(value) {
  try {
    return jsonString(value);
  } catch (e) {
    throw new KiwanoError('PIT-500', e.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Host services

function uidList(uids) {
  return (typeof uids === 'string' ? [uids] : Array.from(uids)).map(String);
}

/** Players by uid, wherever their session is. */
export const users = {
  /** Pushes a value (JSON; a Uint8Array as it is) on `route` to the sessions bound to `uids`
   * (an array or one uid). Returns the uids that were not reached. */
  push(route, value, uids) {
    const body = outgoing(value);
    const list = uidList(uids);
    return hostCall(() => host().users.push(String(route), body, list));
  },
  /** Kicks the sessions bound to `uids`; returns the uids that had none. */
  kick(uids) {
    const list = uidList(uids);
    return hostCall(() => host().users.kick(list));
  },
};

/** Named groups of uids held by the host. Errors carry Pitaya's messages (`group not found`..). */
export const groups = {
  /** Creates a group; with `{ ttl }` (ms) it is deleted once not renewed for that long. */
  create(name, { ttl } = {}) {
    const ttlMs = ttl === undefined || ttl === null ? undefined : ms64(ttl);
    hostCall(() => host().groups.create(String(name), ttlMs));
  },
  /** Deletes a group. */
  delete(name) {
    hostCall(() => host().groups.delete(String(name)));
  },
  /** Adds a member. */
  add(name, uid) {
    hostCall(() => host().groups.add(String(name), String(uid)));
  },
  /** Removes a member. */
  remove(name, uid) {
    hostCall(() => host().groups.remove(String(name), String(uid)));
  },
  /** Removes every member; the group stays. */
  removeAll(name) {
    hostCall(() => host().groups.removeAll(String(name)));
  },
  /** Whether a uid is a member. */
  contains(name, uid) {
    return hostCall(() => host().groups.contains(String(name), String(uid)));
  },
  /** The members, in the order they were added. */
  members(name) {
    return hostCall(() => host().groups.members(String(name)));
  },
  /** The number of members. */
  count(name) {
    return hostCall(() => host().groups.count(String(name)));
  },
  /** Restarts the group's TTL. */
  renew(name) {
    hostCall(() => host().groups.renew(String(name)));
  },
  /** Pushes a value (JSON; a Uint8Array as it is) on `route` to every member. */
  broadcast(name, route, value) {
    const body = outgoing(value);
    hostCall(() => host().groups.broadcast(String(name), String(route), body));
  },
};

/** Calls to remotes of other servers (`server-type.service.method`). `{ timeout }` in ms
 * (5 s by default). Errors: `PIT-500 no servers available of this type`, `PIT-404`, `PIT-408`
 * on timeout, or the remote's error. */
export const rpc = {
  /** Calls a JSON remote on a server of its type; returns the decoded answer. */
  call(route, value, { timeout } = {}) {
    return decodeJson(rpc.callRaw(route, outgoing(value), { timeout }));
  },
  /** Calls a JSON remote on the server `serverId` (which may be this one). */
  callTo(serverId, route, value, { timeout } = {}) {
    return decodeJson(rpc.callToRaw(serverId, route, outgoing(value), { timeout }));
  },
  /** Calls `route` with raw bytes; returns the answer's bytes. */
  callRaw(route, body, { timeout } = {}) {
    const bytes = toBytes(body);
    return hostCall(() => host().rpc.call(String(route), bytes, ms32(timeout)));
  },
  /** Calls `route` on the server `serverId` with raw bytes. */
  callToRaw(serverId, route, body, { timeout } = {}) {
    const bytes = toBytes(body);
    return hostCall(() => host().rpc.callTo(String(serverId), String(route), bytes, ms32(timeout)));
  },
};

/** The longest delay or period the host sets a timer for: a year, in milliseconds. */
export const MAX_DELAY_MS = 365 * 24 * 3600 * 1000;

function delay64(ms, what) {
  const n = Number(ms);
  if (n > MAX_DELAY_MS) {
    throw new KiwanoError('PIT-400', `timer not set: the ${what} is longer than a year`);
  }
  return ms64(n);
}

function started(id) {
  if (id === 0n || id === 0) {
    throw new KiwanoError('PIT-500', 'timer not set: this instance holds its maximum of live timers');
  }
  return id;
}

/** Timers delivered to this instance's `onTimer` hook. Ids are BigInts. */
export const timers = {
  /** Fires once after `ms`, with `payload` (a value as JSON, a Uint8Array as it is); returns
   * the timer id. `PIT-500` when the instance already holds its maximum of live timers,
   * `PIT-400` for a delay over a year. */
  after(ms, payload) {
    const delay = delay64(ms, 'delay');
    const body = payload === undefined ? EMPTY : outgoing(payload);
    return started(host().timers.after(delay, body));
  },
  /** Fires every `ms` until cancelled; a tick that comes while the previous one still waits
   * is dropped. */
  every(ms, payload) {
    const period = delay64(ms, 'period');
    const body = payload === undefined ? EMPTY : outgoing(payload);
    return started(host().timers.every(period, body));
  },
  /** Cancels a timer: it never fires afterwards. False if unknown or done. */
  cancel(id) {
    return host().timers.cancel(BigInt(id));
  },
};

function fieldList(fields) {
  if (fields == null) return [];
  const pairs = Array.isArray(fields) || fields instanceof Map ? fields : Object.entries(fields);
  return Array.from(pairs, ([k, v]) => [String(k), typeof v === 'string' ? v : String(v)]);
}

/** The host's log, tagged with server type, instance, route and session. `fields`: an object
 * (or `[key, value]` pairs) of structured fields. */
export const log = {
  log(level, message, fields) {
    host().log.log(level, String(message), fieldList(fields));
  },
  trace(message, fields) {
    log.log('trace', message, fields);
  },
  debug(message, fields) {
    log.log('debug', message, fields);
  },
  info(message, fields) {
    log.log('info', message, fields);
  },
  warn(message, fields) {
    log.log('warn', message, fields);
  },
  error(message, fields) {
    log.log('error', message, fields);
  },
};

// ---------------------------------------------------------------------------------------------
// Metrics

/** Every metric defined, in order: `Server.init` declares them all. */
const definedMetrics = [];
/** Metric -> [the host's metrics interface, the id it gave]: one declaration per host. */
const declaredIds = new WeakMap();
const METRIC_OPTIONS = ['help', 'labels', 'labelNames', 'buckets'];

function labelNameList(labels) {
  if (labels === undefined || labels === null) return [];
  // One name is a common slip for an array of one: do not split it into characters.
  return typeof labels === 'string' ? [labels] : Array.from(labels, String);
}

/** The id the host gave `metric`, declaring it on first use (again after `testing.reset()`). */
function metricId(metric) {
  const m = host().metrics;
  const d = declaredIds.get(metric);
  if (d !== undefined && d[0] === m) return d[1];
  const spec = {
    name: metric.name,
    help: metric.help,
    kind: metric.kind,
    labels: [...metric.labelNames],
    buckets: [...metric.buckets],
  };
  const id = hostCall(() => m.declare(spec));
  declaredIds.set(metric, [m, id]);
  return id;
}

/** Records `value` with the host's `op` into the series of `values` (label values in order). */
function record(metric, op, values, value) {
  const v = Number(value);
  const id = metricId(metric);
  hostCall(() => host().metrics[op](id, values, v));
}

/** Label values in declaration order: from an object by name, or an array as it is. */
function labelValues(metric, labels) {
  if (labels === undefined || labels === null) return [];
  if (Array.isArray(labels)) return labels.map(String);
  const names = metric.labelNames;
  const keys = Object.keys(labels);
  if (keys.length !== names.length || !keys.every((k) => names.includes(k))) {
    throw new TypeError(`kiwano: metric ${metric.name} has labels [${names.join(', ')}]: got { ${keys.join(', ')} }`);
  }
  return names.map((n) => String(labels[n]));
}

/** `(labels?, value?)` as prom-client takes them: the labels first when an object (or an array
 * of values in order; undefined or null for none), else the value. Returns [label values, value]. */
function labelsAndValue(metric, a, b, fallback) {
  if (a === undefined || a === null || typeof a === 'object') return [labelValues(metric, a), b === undefined ? fallback : b];
  return [[], a];
}

class Metric {
  constructor(kind, name, options = {}) {
    if (typeof name !== 'string') throw new TypeError(`kiwano: a metric name is a string, not ${typeof name}`);
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`kiwano: metric ${name}: the options are an object: { help, labels, buckets }`);
    }
    for (const key of Object.keys(options)) {
      if (!METRIC_OPTIONS.includes(key)) throw new TypeError(`kiwano: metric ${name}: unknown option ${key}`);
    }
    if (options.labels !== undefined && options.labelNames !== undefined) {
      throw new TypeError(`kiwano: metric ${name}: give labels or labelNames, not both`);
    }
    /** `'counter'`, `'gauge'` or `'histogram'`. */
    this.kind = kind;
    /** The name, as declared (exported as `kiwano_guest_<name>`). */
    this.name = name;
    /** The `# HELP` text. */
    this.help = options.help === undefined ? '' : String(options.help);
    /** The label names, in order. */
    this.labelNames = labelNameList(options.labels ?? options.labelNames);
    /** A histogram's bucket upper bounds (empty: the host's defaults). */
    this.buckets = options.buckets === undefined || options.buckets === null ? [] : Array.from(options.buckets, Number);
    definedMetrics.push(this);
  }

  /** The series of these label values, in order (`labels('red')`) or by name
   * (`labels({ color: 'red' })`), to record on. */
  labels(...values) {
    const one = values.length === 1 ? values[0] : undefined;
    return this.series(one !== null && typeof one === 'object' ? labelValues(this, one) : values.map(String));
  }
}

class Counter extends Metric {
  constructor(name, options) {
    super('counter', name, options);
  }

  /** Adds `value` (1 by default, at least 0): `inc()`, `inc(2)`, `inc({ color: 'red' }, 2)`. */
  inc(labels, value) {
    const [l, v] = labelsAndValue(this, labels, value, 1);
    record(this, 'add', l, v);
  }

  /** @private */
  series(values) {
    return {
      inc: (value = 1) => record(this, 'add', values, value),
    };
  }
}

class Gauge extends Metric {
  constructor(name, options) {
    super('gauge', name, options);
  }

  /** Sets the series to `value`: `set(3)`, `set({ mode: 'duel' }, 3)`. */
  set(labels, value) {
    const [l, v] = labelsAndValue(this, labels, value, undefined);
    record(this, 'set', l, v);
  }

  /** Adds `value` (1 by default). */
  inc(labels, value) {
    const [l, v] = labelsAndValue(this, labels, value, 1);
    record(this, 'add', l, v);
  }

  /** Subtracts `value` (1 by default). */
  dec(labels, value) {
    const [l, v] = labelsAndValue(this, labels, value, 1);
    record(this, 'add', l, -Number(v));
  }

  /** @private */
  series(values) {
    return {
      set: (value) => record(this, 'set', values, value),
      inc: (value = 1) => record(this, 'add', values, value),
      dec: (value = 1) => record(this, 'add', values, -Number(value)),
    };
  }
}

class Histogram extends Metric {
  constructor(name, options) {
    super('histogram', name, options);
  }

  /** Observes `value`: `observe(0.3)`, `observe({ kind: 'small' }, 3)`. */
  observe(labels, value) {
    const [l, v] = labelsAndValue(this, labels, value, undefined);
    record(this, 'observe', l, v);
  }

  /** @private */
  series(values) {
    return {
      observe: (value) => record(this, 'observe', values, value),
    };
  }
}

/** Declares every metric defined so far (`Server.init` does, before the `onInit` hook). */
function declareMetrics() {
  for (const m of definedMetrics) metricId(m);
}

/**
 * A server type's own metrics, exported with the host's (`kiwano_guest_<name>`, a counter's
 * name ending in `_total`, with the labels `server_type` and `game` added). Define them once, at
 * module level, as prom-client does; record them anywhere:
 *
 *   const hits = metrics.counter('hits', { help: 'Hits by color', labels: ['color'] });
 *   hits.inc({ color: 'red' });          // or hits.inc({ color: 'red' }, 2), hits.labels('red').inc()
 *
 * A metric declares itself through the host on first use and keeps its id; `Server.init` also
 * declares every metric defined so far, so a spec the host refuses fails init with its error.
 * The host checks names, labels and values and a recording it refuses throws its `KiwanoError`
 * (a label object that does not name the declared labels is a `TypeError` of the SDK's own).
 */
export const metrics = {
  /** A value that only goes up: `{ help, labels }`. */
  counter: (name, options) => new Counter(name, options),
  /** A value that goes up and down: `{ help, labels }`. */
  gauge: (name, options) => new Gauge(name, options),
  /** Observations counted into buckets: `{ help, labels, buckets }` (no buckets: the
   * Prometheus defaults, 0.005 to 10). */
  histogram: (name, options) => new Histogram(name, options),
};

// ---------------------------------------------------------------------------------------------
// The server type

function affinityOf(a) {
  if (a === undefined || a === null) return undefined;
  if (typeof a === 'string') {
    if (a === 'session' || a === 'uid' || a === 'none') return { tag: a };
    const field = /^data(?:-field)?:(.+)$/.exec(a);
    if (field) return { tag: 'data-field', val: field[1] };
  } else if (typeof a === 'object') {
    if (typeof a.dataField === 'string') return { tag: 'data-field', val: a.dataField };
    if (a.tag === 'data-field' && typeof a.val === 'string') return { tag: a.tag, val: a.val };
    if (a.tag === 'session' || a.tag === 'uid' || a.tag === 'none') return { tag: a.tag };
  }
  throw new TypeError(
    `kiwano: unknown affinity ${JSON.stringify(a)}: use 'session', 'uid', 'none', 'data:<field>' or { dataField: '<field>' }`,
  );
}

function checkRoute(route, fn) {
  if (typeof route !== 'string' || route === '') throw new TypeError('kiwano: a route is a non-empty string');
  if (typeof fn !== 'function') throw new TypeError(`kiwano: the handler of ${route} is not a function`);
}

function encodeResponse(value) {
  try {
    return encodeJson(value);
  } catch (e) {
    throw new KiwanoError('PIT-500', `cannot encode the response: ${e.message}`);
  }
}

function rawResponse(value) {
  return toBytes(value);
}

function discard() {
  return EMPTY;
}

/** Runs a hook that cannot fail the caller: a KiwanoError is logged as a warning. */
function quietly(what, f) {
  const report = (e) => {
    const k = KiwanoError.from(e);
    if (!k) throw e;
    log.warn(`${what} failed: ${k.code} ${k.msg}`);
  };
  let r;
  try {
    r = f();
  } catch (e) {
    return report(e);
  }
  if (isThenable(r)) return r.then(() => undefined, report);
  return undefined;
}

/** The `result` a WIT export returns for a thrown value: a KiwanoError becomes the `err`
 * case; anything else (a bug) is thrown on, trapping the instance (the client gets PIT-500). */
function settle(f) {
  const fail = (e) => {
    const k = KiwanoError.from(e);
    if (!k) throw e;
    return { tag: 'err', val: k.toRecord() };
  };
  let r;
  try {
    r = f();
  } catch (e) {
    return fail(e);
  }
  if (isThenable(r)) return r.then((v) => ({ tag: 'ok', val: v }), fail);
  return { tag: 'ok', val: r };
}

/**
 * A server type: handlers (client routes `service.method`), remotes (server-to-server routes)
 * and lifecycle hooks. Builder methods return the server.
 *
 * Handlers take and return plain JavaScript values, as JSON; with `{ raw: true }` they take a
 * Uint8Array and return bytes (a Uint8Array, a string, or nothing). A handler may be `async`.
 * Throw a `KiwanoError` to fail a call; any other exception is a bug: the instance traps and the
 * client receives `PIT-500`.
 */
export class Server {
  #handlers = new Map();
  #remotes = new Map();
  #affinity = undefined;
  #init = null;
  #shutdown = null;
  #sessionClose = null;
  #timer = null;

  /** A request handler: `(ctx, body) => response`. */
  request(route, fn, { raw = false } = {}) {
    checkRoute(route, fn);
    const run = raw
      ? (ctx, body) => then(fn(ctx, body), rawResponse)
      : (ctx, body) => then(fn(ctx, decodeJson(body)), encodeResponse);
    this.#handlers.set(route, { kind: 'request', run });
    return this;
  }

  /** A notify handler: `(ctx, body) => void`; nothing is sent back (an error is only logged). */
  notify(route, fn, { raw = false } = {}) {
    checkRoute(route, fn);
    const run = raw
      ? (ctx, body) => then(fn(ctx, body), discard)
      : (ctx, body) => then(fn(ctx, decodeJson(body)), discard);
    this.#handlers.set(route, { kind: 'notify', run });
    return this;
  }

  /** A remote, called by other servers: `(body) => response`. */
  remote(route, fn, { raw = false } = {}) {
    checkRoute(route, fn);
    const run = raw
      ? (body) => then(fn(body), rawResponse)
      : (body) => then(fn(decodeJson(body)), encodeResponse);
    this.#remotes.set(route, run);
    return this;
  }

  /** Which instance runs a call: 'session' (the default), 'uid', 'none', or a field of the
   * session data, `'data:room'` or `{ dataField: 'room' }`. The server's configuration may
   * override it. */
  affinity(affinity) {
    this.#affinity = affinityOf(affinity);
    return this;
  }

  /** Runs on every new instance before it serves: `({ serverType, serverId, instance, config })`
   * with `config` the server type's `config` table as an object. A thrown KiwanoError stops the
   * server type. */
  onInit(fn) {
    this.#init = fn;
    return this;
  }

  /** Runs on every instance at shutdown. */
  onShutdown(fn) {
    this.#shutdown = fn;
    return this;
  }

  /** Runs when a session of this frontend type closes, after its last message: `(ctx) => void`. */
  onSessionClose(fn) {
    this.#sessionClose = fn;
    return this;
  }

  /** Runs when a timer set by this instance fires: `(id, payload) => void`, the payload decoded
   * from JSON (an empty payload is null), or the bytes with `{ raw: true }`. */
  onTimer(fn, { raw = false } = {}) {
    this.#timer = { fn, raw };
    return this;
  }

  /** The WIT `description` the host reads at load. */
  describe() {
    const byRoute = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    return {
      handlers: [...this.#handlers.keys()].sort(byRoute).map((route) => ({ route, kind: this.#handlers.get(route).kind })),
      remotes: [...this.#remotes.keys()].sort(byRoute),
      affinity: this.#affinity,
    };
  }

  /** Declares every metric defined so far (`metrics`; a KiwanoError if the host refuses one),
   * then runs the init hook with the WIT `init-info`. */
  init(info = {}) {
    declareMetrics();
    if (!this.#init) return undefined;
    let config = {};
    if (typeof info.config === 'string') {
      try {
        config = JSON.parse(info.config);
      } catch {
        config = {};
      }
    } else if (info.config !== undefined) {
      config = info.config;
    }
    return this.#init({ serverType: info.serverType, serverId: info.serverId, instance: info.instance, config });
  }

  /** Runs the shutdown hook. */
  shutdown() {
    if (!this.#shutdown) return undefined;
    return quietly('onShutdown', () => this.#shutdown());
  }

  /** Dispatches a client message; returns the response bytes (empty for a notify). Throws
   * `PIT-404` for an unknown route. `ctx`: the host's call context, a Context or a MockSession. */
  handle(ctx, route, body) {
    const h = this.#handlers.get(route);
    if (!h) throw new KiwanoError('PIT-404', `no handler for ${route}`);
    return h.run(Context.of(ctx), toBytes(body));
  }

  /** Dispatches a remote call; `PIT-404 route not found` for an unknown route. */
  remoteCall(route, body) {
    const f = this.#remotes.get(route);
    if (!f) throw new KiwanoError('PIT-404', 'route not found', { route });
    return f(toBytes(body));
  }

  /** Runs the session-close hook. A KiwanoError it throws is logged as a warning. */
  sessionClosed(ctx) {
    if (!this.#sessionClose) return undefined;
    const fn = this.#sessionClose;
    return quietly('onSessionClose', () => fn(Context.of(ctx)));
  }

  /** Runs the timer hook. A KiwanoError it throws is logged as a warning. */
  timer(id, payload = EMPTY) {
    if (!this.#timer) return undefined;
    const { fn, raw } = this.#timer;
    return quietly('onTimer', () => fn(BigInt(id), raw ? toBytes(payload) : decodeJson(toBytes(payload))));
  }

  /** Test helper: calls `route` for `session` with a value (JSON; a Uint8Array as it is) and
   * decodes the JSON answer (null for a notify). */
  call(session, route, value) {
    return then(this.handle(session, route, outgoing(value)), decodeJson);
  }

  /** Test helper: calls the remote `route` with a value and decodes the JSON answer. */
  callRemote(route, value) {
    return then(this.remoteCall(route, outgoing(value)), decodeJson);
  }

  /** The object to export as the component's `guest` interface:
   * `export const guest = server.guest();` */
  guest() {
    return {
      describe: () => this.describe(),
      init: (info) => settle(() => this.init(info)),
      shutdown: () => this.shutdown(),
      handle: (ctx, route, body) => settle(() => this.handle(ctx, route, body)),
      remote: (route, body) => settle(() => this.remoteCall(route, body)),
      onSessionClose: (ctx) => this.sessionClosed(ctx),
      onTimer: (id, payload) => this.timer(id, payload),
    };
  }
}
