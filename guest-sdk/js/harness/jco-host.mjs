// The in-memory host of testing.js as the imports of a component transpiled by jco
// (`kiwano:server/*` mapped to this module's exports): lets a built component, Rust or
// JavaScript, run under Node against MockSessions. Used by component.test.mjs.
import { host } from '../testing.js';

/** The `call-context` resource: pass `new CallContext(session)` to a guest's `handle`. */
export class CallContext {
  #s;
  constructor(session) {
    this.#s = session.asCallContext();
  }
  sessionId() { return this.#s.sessionId(); }
  uid() { return this.#s.uid(); }
  bind(uid) { return this.#s.bind(uid); }
  displaced() { return this.#s.displaced(); }
  get(key) { return this.#s.get(key); }
  set(key, value) { return this.#s.set(key, value); }
  data() { return this.#s.data(); }
  setData(data) { return this.#s.setData(data); }
  push(route, body) { return this.#s.push(route, body); }
  kick() { return this.#s.kick(); }
  handshake() { return this.#s.handshake(); }
  remoteAddress() { return this.#s.remoteAddress(); }
  pin(serverType, serverId) { return this.#s.pin(serverType, serverId); }
}

export const context = { CallContext };
export const types = {};
export const { log, users, groups, rpc, timers } = host;
/** The metrics of the current in-memory state (`reset()` replaces it). */
export const metrics = {
  declare: (spec) => host.metrics.declare(spec),
  add: (id, labels, value) => host.metrics.add(id, labels, value),
  set: (id, labels, value) => host.metrics.set(id, labels, value),
  observe: (id, labels, value) => host.metrics.observe(id, labels, value),
};
