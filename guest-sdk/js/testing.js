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
// Importing this module installs the host (groups, uid bindings, recorded timers and log
// records, an RPC responder) for the whole process; `reset()` clears it between tests.
// `MockSession` stands for a client's session: bind it with `ctx.bind(..)` (or `bindUser`) and
// pushes to its uid are recorded on it.

import { KiwanoError, decodeJson, encodeJson } from './kiwano.js';

const HOST = Symbol.for('kiwano.host');
const text = new TextDecoder();

let state;

/** Clears the in-memory host: users, groups, the RPC responder, timers and logs. */
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
  };
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
