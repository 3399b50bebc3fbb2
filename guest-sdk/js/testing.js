// An in-memory Kiwano host, so a server type's logic runs under plain Node (`node --test`),
// like the Rust SDK's `kiwano_guest::testing`.
//
//   import { MockSession, reset, bindUser, groupMembers } from './testing.js';
//   import { server } from '../src/main.js';
//
//   reset();
//   const alice = new MockSession(1);
//   server.call(alice, 'room.join', { name: 'alice' });   // the decoded JSON answer
//   alice.uid;        // 'alice' after ctx.bind('alice')
//   alice.pushes;     // [['onMembers', '{"members":[]}'], ...]
//
// Importing this module installs the host (groups, uid bindings, recorded timers, log records
// and metric values, an RPC responder) for the whole process; `reset()` clears it between tests.
// Metrics are checked as the host checks them, with its messages; `metricValue`, `histogram`
// and `declaredMetrics` read what was recorded.
// `MockSession` stands for a client's session: bind it with `ctx.bind(..)` (or `bindUser`) and
// pushes to its uid are recorded on it.

import { KiwanoError, decodeJson, encodeJson } from './kiwano.js';

const HOST = Symbol.for('kiwano.host');
const text = new TextDecoder();

let state;

/** Clears the in-memory host: users, groups, the RPC responder, timers, logs and metrics
 * (metrics declare themselves again on their next use, or at `server.init()`). */
export function reset() {
  state = {
    users: new Map(),
    groups: new Map(),
    rpc: null,
    rpcCalls: [],
    timers: [],
    nextTimer: 0n,
    maxTimers: 1024,
    logs: [],
    metrics: [], // by id: { id, name, help, kind, labels, buckets }
    metricIds: new Map(), // exported name -> { id, help, kind, labels, buckets in effect }
    metricNames: new Map(), // every name declared -> id
    series: new Map(), // JSON [id, label values] -> value, or { count, sum } for a histogram
    maxMetricSeries: 1000,
  };
  // A new interface object per reset: the SDK's metrics see a new host and declare again.
  state.metricsHost = metricsHost(state);
}
reset();

const sessions = new WeakMap(); // MockSession -> its state

function rustDebug(s) {
  // How Rust's `{:?}` writes a string, as the host's messages do.
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c === 0) out += '\\0';
    else if (c < 0x20 || c === 0x7f) out += `\\u{${c.toString(16)}}`;
    else out += ch;
  }
  return `${out}"`;
}

function jsonObject(json, what) {
  const v = decodeJson(new TextEncoder().encode(json));
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new KiwanoError('PIT-400', `${what} must be a JSON object`);
  }
  return v;
}

/** A session for unit tests: holds uid and data, and records the pushes and kick it received. */
export class MockSession {
  /**
   * A session with id `id` (a number or BigInt), an empty handshake and address
   * `127.0.0.1:5000`. Options: `handshake` (an object), `remoteAddress`.
   */
  constructor(id = 1, { handshake = {}, remoteAddress = '127.0.0.1:5000' } = {}) {
    sessions.set(this, {
      id: BigInt(id),
      handshake: JSON.stringify(handshake),
      remoteAddress,
      uid: undefined,
      data: {},
      pushes: [],
      kicked: false,
      displaced: false,
      pins: [],
    });
  }

  /** The session id, a BigInt. */
  get id() {
    return sessions.get(this).id;
  }

  /** The bound uid, or undefined. */
  get uid() {
    return sessions.get(this).uid;
  }

  /** The session data (a copy). */
  get data() {
    return structuredClone(sessions.get(this).data);
  }

  /** Messages pushed to this session, as `[route, body text]` pairs. */
  get pushes() {
    return sessions.get(this).pushes.map(([route, body]) => [route, text.decode(body)]);
  }

  /** Messages pushed to this session, as `[route, Uint8Array]` pairs. */
  get rawPushes() {
    return sessions.get(this).pushes.map(([route, body]) => [route, body.slice()]);
  }

  /** Returns the pushes (as `pushes`) and forgets them. */
  takePushes() {
    const out = this.pushes;
    sessions.get(this).pushes = [];
    return out;
  }

  /** Whether the session was kicked. */
  get kicked() {
    return sessions.get(this).kicked;
  }

  /** Whether a newer session bound this session's uid since (see `Context.displaced`). */
  get displaced() {
    return sessions.get(this).displaced;
  }

  /** The pins set on this session, as `[serverType, serverId]` pairs. */
  get pins() {
    return sessions.get(this).pins.map((p) => [...p]);
  }

  /** The session as the host's `call-context` (what `Context` wraps). */
  asCallContext() {
    const s = sessions.get(this);
    const self = this;
    return {
      sessionId: () => s.id,
      uid: () => s.uid,
      displaced: () => s.displaced,
      bind(uid) {
        if (uid === '') throw new KiwanoError('PIT-400', 'illegal uid: the uid is empty');
        if (s.uid !== undefined) {
          throw new KiwanoError('PIT-400', `session is already bound to an uid (${rustDebug(s.uid)})`);
        }
        s.uid = uid;
        bindUser(uid, self);
      },
      get: (key) => (Object.hasOwn(s.data, key) ? JSON.stringify(s.data[key]) : undefined),
      set(key, json) {
        const v = decodeJson(new TextEncoder().encode(json));
        Object.defineProperty(s.data, key, { value: v, enumerable: true, writable: true, configurable: true });
      },
      data: () => JSON.stringify(s.data),
      setData(json) {
        s.data = jsonObject(json, 'session data');
      },
      push(route, body) {
        s.pushes.push([route, Uint8Array.from(body)]);
      },
      kick() {
        s.kicked = true;
      },
      handshake: () => s.handshake,
      remoteAddress: () => s.remoteAddress,
      pin(serverType, serverId) {
        s.pins.push([serverType, serverId]);
      },
    };
  }
}

/**
 * Routes pushes and kicks for `uid` to `session`. A session that held the uid before is
 * displaced, as on the host when a player reconnects.
 */
export function bindUser(uid, session) {
  const previous = state.users.get(uid);
  state.users.set(uid, session);
  if (previous && previous !== session) sessions.get(previous).displaced = true;
}

/**
 * Answers RPCs with `fn(serverId, route, body)`: `serverId` is undefined for `rpc.call`, `body`
 * a Uint8Array; return a Uint8Array, or any other value to answer it as JSON; throw a
 * KiwanoError to fail. Without one, RPCs fail with `PIT-500 no servers available of this type`.
 */
export function onRpc(fn) {
  state.rpc = fn;
}

/** The RPCs made so far: `{ serverId, route, body, timeoutMs }` (body a Uint8Array; serverId
 * and timeoutMs undefined when not given). */
export function rpcCalls() {
  return state.rpcCalls.map((c) => ({ ...c, body: c.body.slice() }));
}

/** The most live timers an instance holds (1024, as the host's default `max_timers`); past it
 * `timers.after`/`every` fail as on the host. */
export function setMaxTimers(n) {
  state.maxTimers = n;
}

/** The live timers set so far: `{ id, ms, repeat, payload }` (id a BigInt, payload bytes). */
export function timers() {
  return state.timers.map((t) => ({ ...t, payload: t.payload.slice() }));
}

/** The members of a group, or undefined if it does not exist. */
export function groupMembers(name) {
  const g = state.groups.get(name);
  return g ? [...g.members] : undefined;
}

/** The log records written so far, as `[level, message]` pairs. */
export function logs() {
  return state.logs.map(([level, message]) => [level, message]);
}

/** The log records written so far with their fields: `{ level, message, fields }`. */
export function logRecords() {
  return state.logs.map(([level, message, fields]) => ({ level, message, fields: Object.fromEntries(fields) }));
}

/** Caps the series recorded over all metrics, as `servers.<type>.max_metric_series` does (1000,
 * the host's default, until changed): past it, recording a new series fails with `PIT-500`. */
export function setMaxMetricSeries(n) {
  state.maxMetricSeries = n;
}

/** The metrics declared so far, in the order they were first declared:
 * `{ id, name, help, kind, labels, buckets }`. */
export function declaredMetrics() {
  return state.metrics.map((m) => ({ ...m, labels: [...m.labels], buckets: [...m.buckets] }));
}

function seriesOf(name, labels) {
  const id = state.metricNames.get(name);
  if (id === undefined) return [undefined, undefined];
  const m = state.metrics[id];
  let values;
  if (labels === undefined || labels === null) values = [];
  else if (typeof labels === 'string') values = [labels];
  else if (Array.isArray(labels)) values = labels;
  else values = m.labels.map((n) => labels[n]);
  return [m, state.series.get(JSON.stringify([id, values]))];
}

/** The value of a counter's or gauge's series (`labels`: its label values in order, or an object
 * by label name), a number; undefined if nothing was recorded there. */
export function metricValue(name, labels) {
  const [m, value] = seriesOf(name, labels);
  if (m && m.kind === 'histogram') throw new TypeError(`metric ${name} is a histogram: read it with histogram()`);
  return value;
}

/** A histogram's series: `{ count, sum }` of its observations; undefined if there were none. */
export function histogram(name, labels) {
  const [m, value] = seriesOf(name, labels);
  if (m && m.kind !== 'histogram') throw new TypeError(`metric ${name} is a ${m.kind}: read it with metricValue()`);
  return value === undefined ? undefined : { ...value };
}

function group(name) {
  const g = state.groups.get(name);
  if (!g) throw new KiwanoError('PIT-404', 'group not found');
  return g;
}

function pushTo(route, body, uids) {
  const missed = [];
  for (const uid of uids) {
    const session = state.users.get(uid);
    if (session) sessions.get(session).pushes.push([route, Uint8Array.from(body)]);
    else missed.push(uid);
  }
  return missed;
}

// The in-memory host's server type, in the messages that name one.
const SERVER_TYPE = 'test';
const METRIC_NAME = /^[a-z][a-z0-9_]*$/;
const RESERVED_LABELS = ['server_type', 'game', 'le', 'quantile'];
// A histogram's buckets when none are given (the Prometheus defaults).
const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const OPS = { counter: ['add'], gauge: ['add', 'set'], histogram: ['observe'] };
const utf8 = new TextEncoder();
const byteLength = (s) => utf8.encode(s).length;

/** A number as Rust's `{}` writes an f64: the shortest digits, never an exponent. */
function rustF64(v) {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'inf';
  if (v === -Infinity) return '-inf';
  if (Object.is(v, -0)) return '-0';
  const s = String(v);
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(s);
  if (!m) return s;
  const [, sign, int, frac = '', exp] = m;
  const digits = int + frac;
  const point = 1 + Number(exp);
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return sign + digits + '0'.repeat(point - digits.length);
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

function refuse(msg) {
  return new KiwanoError('PIT-400', msg);
}

/** The exported name, which is what makes two declarations one metric. */
function exportedName(name, kind) {
  return kind !== 'counter' || name.endsWith('_total') ? name : `${name}_total`;
}

/** The host's checks of a spec, in its order and words (names quoted as Rust's `{:?}` does);
 * returns the buckets in effect. */
function checkSpec(name, help, kind, labels, buckets) {
  const q = rustDebug(name);
  if (!METRIC_NAME.test(name) || byteLength(name) > 64) {
    throw refuse(`metric name ${q} must match [a-z][a-z0-9_]* and be at most 64 bytes`);
  }
  if (/_(bucket|count|sum)$/.test(name)) throw refuse(`metric name ${q} must not end in _bucket, _count or _sum`);
  if (name.endsWith('_total') && kind !== 'counter') {
    throw refuse(`metric name ${q}: only a counter's name may end in _total`);
  }
  if (help === '') throw refuse(`metric ${q}: help must not be empty`);
  const n = byteLength(help);
  if (n > 256) throw refuse(`metric ${q}: help of ${n} bytes is over 256`);
  if (labels.length > 8) throw refuse(`metric ${q}: at most 8 labels`);
  labels.forEach((label, i) => {
    const ql = rustDebug(label);
    if (!METRIC_NAME.test(label) || byteLength(label) > 64) {
      throw refuse(`metric ${q}: label name ${ql} must match [a-z][a-z0-9_]* and be at most 64 bytes`);
    }
    if (RESERVED_LABELS.includes(label)) throw refuse(`metric ${q}: label name ${ql} is reserved`);
    if (labels.indexOf(label) < i) throw refuse(`metric ${q}: label name ${ql} appears twice`);
  });
  if (kind !== 'histogram') {
    if (buckets.length > 0) throw refuse(`metric ${q}: only a histogram has buckets`);
    return [];
  }
  if (buckets.length === 0) return DEFAULT_BUCKETS;
  if (buckets.length > 32 || buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && buckets[i - 1] >= b))) {
    throw refuse(`metric ${q}: buckets must be finite and increasing, at most 32`);
  }
  return buckets;
}

const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** The WIT interface `metrics` over one state (a new one per `reset()`). */
function metricsHost(st) {
  function series(id, op, labels, value) {
    const m = st.metrics[id];
    if (m === undefined) throw refuse(`no metric with id ${id}`);
    const q = rustDebug(m.name);
    if (!OPS[m.kind].includes(op)) throw refuse(`metric ${q} is a ${m.kind}: record it with ${OPS[m.kind].join(' or ')}`);
    const values = Array.from(labels);
    if (values.length !== m.labels.length) {
      throw refuse(`metric ${q} has labels [${m.labels.join(', ')}]: ${values.length} values given`);
    }
    for (const v of values) {
      const n = byteLength(v);
      if (n > 128) throw refuse(`metric ${q}: a label value of ${n} bytes is over 128`);
    }
    if (!Number.isFinite(value)) throw refuse(`metric ${q}: the value must be finite`);
    if (m.kind === 'counter' && value < 0) throw refuse(`metric ${q}: a counter only goes up (add ${rustF64(value)})`);
    const key = JSON.stringify([id, values]);
    if (!st.series.has(key)) {
      if (st.series.size >= st.maxMetricSeries) {
        throw new KiwanoError(
          'PIT-500',
          `metric series limit reached: server type ${SERVER_TYPE} records at most ${st.maxMetricSeries} series (servers.${SERVER_TYPE}.max_metric_series)`,
        );
      }
      st.series.set(key, m.kind === 'histogram' ? { count: 0, sum: 0 } : 0);
    }
    return key;
  }
  return {
    declare(spec) {
      const { name, help, kind } = spec;
      const labels = Array.from(spec.labels);
      const buckets = Array.from(spec.buckets, Number);
      const effective = checkSpec(name, help, kind, labels, buckets);
      const exported = exportedName(name, kind);
      const known = st.metricIds.get(exported);
      if (known !== undefined) {
        const same = known.help === help && known.kind === kind && sameList(known.labels, labels) && sameList(known.buckets, effective);
        if (!same) {
          throw refuse(
            `metric ${rustDebug(name)} is already declared with other labels, kind, help or buckets (by server type ${SERVER_TYPE}); a changed metric needs a new name, or a new version of the one server type declaring it`,
          );
        }
        st.metricNames.set(name, known.id);
        return known.id;
      }
      if (st.metrics.length >= 128) {
        throw new KiwanoError('PIT-500', `metric limit reached: server type ${SERVER_TYPE} declares at most 128 metrics`);
      }
      const id = st.metrics.length;
      st.metrics.push({ id, name, help, kind, labels, buckets });
      st.metricIds.set(exported, { id, help, kind, labels, buckets: effective });
      st.metricNames.set(name, id);
      return id;
    },
    add(id, labels, value) {
      const key = series(id, 'add', labels, value);
      st.series.set(key, st.series.get(key) + value);
    },
    set(id, labels, value) {
      const key = series(id, 'set', labels, value);
      st.series.set(key, value);
    },
    observe(id, labels, value) {
      const key = series(id, 'observe', labels, value);
      const h = st.series.get(key);
      h.count += 1;
      h.sum += value;
    },
  };
}

/** The in-memory host, with the functions of the WIT interfaces (`kiwano:server/*`). */
export const host = {
  users: {
    push: (route, body, uids) => pushTo(route, body, uids),
    kick(uids) {
      const missed = [];
      for (const uid of uids) {
        const session = state.users.get(uid);
        if (session) sessions.get(session).kicked = true;
        else missed.push(uid);
      }
      return missed;
    },
  },
  groups: {
    create(name, ttlMs) {
      if (state.groups.has(name)) throw new KiwanoError('PIT-400', 'group already exists');
      state.groups.set(name, { members: [], ttl: ttlMs !== undefined });
    },
    delete(name) {
      group(name);
      state.groups.delete(name);
    },
    add(name, uid) {
      if (uid === '') throw new KiwanoError('PIT-400', 'empty uid');
      const g = group(name);
      if (g.members.includes(uid)) throw new KiwanoError('PIT-400', 'member already exists in group');
      g.members.push(uid);
    },
    remove(name, uid) {
      const g = group(name);
      const i = g.members.indexOf(uid);
      if (i < 0) throw new KiwanoError('PIT-404', 'member not found in the group');
      g.members.splice(i, 1);
    },
    removeAll(name) {
      group(name).members = [];
    },
    contains: (name, uid) => group(name).members.includes(uid),
    members: (name) => [...group(name).members],
    count: (name) => group(name).members.length,
    renew(name) {
      if (!group(name).ttl) throw new KiwanoError('PIT-404', 'memory group TTL not found');
    },
    broadcast(name, route, body) {
      pushTo(route, body, [...group(name).members]);
    },
  },
  rpc: {
    call: (route, body, timeoutMs) => rpc(undefined, route, body, timeoutMs),
    callTo: (serverId, route, body, timeoutMs) => rpc(serverId, route, body, timeoutMs),
  },
  timers: {
    after: (ms, payload) => startTimer(ms, false, payload),
    every: (ms, payload) => startTimer(ms, true, payload),
    cancel(id) {
      const before = state.timers.length;
      state.timers = state.timers.filter((t) => t.id !== BigInt(id));
      return state.timers.length !== before;
    },
  },
  log: {
    log(level, message, fields) {
      state.logs.push([level, message, fields.map(([k, v]) => [k, v])]);
    },
  },
  /** `declare`, `add`, `set`, `observe`: a new object after each `reset()`. */
  get metrics() {
    return state.metricsHost;
  },
};

function rpc(serverId, route, body, timeoutMs) {
  state.rpcCalls.push({ serverId, route, body: Uint8Array.from(body), timeoutMs });
  if (!state.rpc) {
    throw new KiwanoError('PIT-500', `no servers available of this type: ${route.split('.')[0]}`);
  }
  const out = state.rpc(serverId, route, Uint8Array.from(body));
  return out instanceof Uint8Array ? out : encodeJson(out);
}

function startTimer(ms, repeat, payload) {
  if (state.timers.length >= state.maxTimers) return 0n;
  state.nextTimer += 1n;
  const id = state.nextTimer;
  state.timers.push({ id, ms: Number(ms), repeat, payload: Uint8Array.from(payload) });
  return id;
}

globalThis[HOST] = host;
