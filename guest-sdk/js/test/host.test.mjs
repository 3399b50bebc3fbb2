// The call context and the host services (users, groups, rpc, timers, log) against the
// in-memory host of testing.js.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { Context, KiwanoError, Server, groups, log, rpc, timers, users } from '../kiwano.js';
import {
  MockSession,
  bindUser,
  groupMembers,
  logRecords,
  logs,
  onRpc,
  reset,
  rpcCalls,
  setMaxTimers,
  timers as liveTimers,
} from '../testing.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

beforeEach(reset);

test('the context: ids, uid, bind', () => {
  const session = new MockSession(7, { handshake: { sys: { platform: 'test' } }, remoteAddress: '10.0.0.1:4000' });
  const ctx = Context.of(session);
  assert.equal(ctx.sessionId, 7n);
  assert.equal(ctx.uid, undefined);
  assert.equal(ctx.remoteAddress, '10.0.0.1:4000');
  assert.deepEqual(ctx.handshake, { sys: { platform: 'test' } });
  assert.throws(() => ctx.bind(''), { code: 'PIT-400', msg: 'illegal uid: the uid is empty' });
  ctx.bind('p1');
  assert.equal(ctx.uid, 'p1');
  assert.equal(session.uid, 'p1');
  assert.equal(ctx.leavingUid, 'p1');
  assert.equal(ctx.displaced, false);
  assert.throws(() => ctx.bind('p2'), { code: 'PIT-400', msg: 'session is already bound to an uid ("p1")' });
});

test('the context: session data as JSON values', () => {
  const session = new MockSession();
  const ctx = Context.of(session);
  assert.equal(ctx.get('room'), undefined);
  ctx.set('room', { name: 'a', seats: [1, 2] });
  ctx.set('level', 3);
  ctx.set('gone', undefined);
  assert.deepEqual(ctx.get('room'), { name: 'a', seats: [1, 2] });
  assert.equal(ctx.getRaw('room'), '{"name":"a","seats":[1,2]}');
  assert.equal(ctx.get('gone'), null);
  assert.deepEqual(ctx.data(), { room: { name: 'a', seats: [1, 2] }, level: 3, gone: null });
  ctx.setData({ only: true });
  assert.deepEqual(session.data, { only: true });
  assert.throws(() => ctx.setData([1]), { code: 'PIT-400', msg: 'session data must be a JSON object' });
  const cycle = {};
  cycle.self = cycle;
  assert.throws(() => ctx.set('x', cycle), { code: 'PIT-500' });
  ctx.set('big', 2n ** 40n);
  assert.equal(ctx.get('big'), 2 ** 40);
});

test('the context: push, kick, pin', () => {
  const session = new MockSession();
  const ctx = Context.of(session);
  ctx.push('onHello', { a: 1 });
  ctx.push('onRaw', Uint8Array.of(0xff, 0));
  assert.deepEqual(session.pushes[0], ['onHello', '{"a":1}']);
  assert.deepEqual(session.rawPushes[1], ['onRaw', Uint8Array.of(0xff, 0)]);
  assert.deepEqual(session.takePushes().length, 2);
  assert.deepEqual(session.pushes, []);
  ctx.pin('room', 'room-2');
  assert.deepEqual(session.pins, [['room', 'room-2']]);
  assert.equal(session.kicked, false);
  ctx.kick();
  assert.equal(session.kicked, true);
});

test('users: push and kick by uid; the uids not reached come back', () => {
  const a = new MockSession(1);
  const b = new MockSession(2);
  Context.of(a).bind('a');
  bindUser('b', b);
  assert.deepEqual(users.push('onNews', { n: 1 }, ['a', 'b', 'c']), ['c']);
  assert.deepEqual(users.push('onNews', 'x', 'a'), []);
  assert.deepEqual(a.pushes, [
    ['onNews', '{"n":1}'],
    ['onNews', '"x"'],
  ]);
  assert.deepEqual(b.pushes, [['onNews', '{"n":1}']]);
  assert.deepEqual(users.kick(['b', 'z']), ['z']);
  assert.equal(b.kicked, true);
});

test('groups: every operation, and Pitaya errors', () => {
  groups.create('g');
  assert.throws(() => groups.create('g'), { code: 'PIT-400', msg: 'group already exists' });
  groups.add('g', 'a');
  groups.add('g', 'b');
  assert.throws(() => groups.add('g', 'a'), { code: 'PIT-400', msg: 'member already exists in group' });
  assert.throws(() => groups.add('g', ''), { code: 'PIT-400', msg: 'empty uid' });
  assert.deepEqual(groups.members('g'), ['a', 'b']);
  assert.equal(groups.count('g'), 2);
  assert.equal(groups.contains('g', 'a'), true);
  assert.equal(groups.contains('g', 'z'), false);
  const a = new MockSession(1);
  bindUser('a', a);
  groups.broadcast('g', 'onTick', [1, 2]);
  assert.deepEqual(a.pushes, [['onTick', '[1,2]']]);
  groups.remove('g', 'a');
  assert.throws(() => groups.remove('g', 'a'), { code: 'PIT-404', msg: 'member not found in the group' });
  assert.throws(() => groups.renew('g'), { code: 'PIT-404', msg: 'memory group TTL not found' });
  groups.removeAll('g');
  assert.deepEqual(groupMembers('g'), []);
  groups.delete('g');
  assert.equal(groupMembers('g'), undefined);
  assert.throws(() => groups.members('g'), { code: 'PIT-404', msg: 'group not found' });
  groups.create('t', { ttl: 60_000 });
  groups.renew('t');
});

test('rpc: JSON and raw calls, to a type or a server', () => {
  assert.throws(() => rpc.call('room.room.count', {}), {
    code: 'PIT-500',
    msg: 'no servers available of this type: room',
  });
  const calls = [];
  onRpc((serverId, route, body) => {
    calls.push([serverId, route, dec.decode(body)]);
    if (route === 'room.room.fail') throw new KiwanoError('RH-009', 'remote says no', { at: 'room' });
    if (route === 'room.room.raw') return Uint8Array.of(1, 2);
    return { echoed: JSON.parse(dec.decode(body)) };
  });
  assert.deepEqual(rpc.call('room.room.count', { room: 'a' }, { timeout: 2000 }), { echoed: { room: 'a' } });
  assert.deepEqual(rpc.callTo('room-1', 'room.room.count', 5), { echoed: 5 });
  assert.deepEqual(rpc.callRaw('room.room.raw', enc.encode('"x"')), Uint8Array.of(1, 2));
  assert.deepEqual(rpc.callToRaw('room-1', 'room.room.raw', 'x'), Uint8Array.of(1, 2));
  assert.throws(() => rpc.call('room.room.fail', {}), { code: 'RH-009', msg: 'remote says no', metadata: { at: 'room' } });
  assert.deepEqual(calls.slice(0, 2), [
    [undefined, 'room.room.count', '{"room":"a"}'],
    ['room-1', 'room.room.count', '5'],
  ]);
  assert.deepEqual(
    rpcCalls().slice(0, 3).map((c) => [c.serverId, c.route, c.timeoutMs]),
    [
      [undefined, 'room.room.count', undefined],
      [undefined, 'room.room.count', 2000],
      ['room-1', 'room.room.count', undefined],
    ],
  );
});

test('rpc passes the timeout to the host in ms', () => {
  const seen = [];
  const h = globalThis[Symbol.for('kiwano.host')];
  const call = h.rpc.call;
  h.rpc.call = (route, body, timeoutMs) => {
    seen.push(timeoutMs);
    return enc.encode('null');
  };
  try {
    rpc.call('a.b.c', {});
    rpc.call('a.b.c', {}, { timeout: 1500.7 });
    assert.deepEqual(seen, [undefined, 1500]);
  } finally {
    h.rpc.call = call;
  }
});

test('timers: after, every, cancel, and the limit', () => {
  const id = timers.after(1000, { room: 'a' });
  const tick = timers.every(250, enc.encode('7')); // bytes go as they are
  assert.equal(typeof id, 'bigint');
  assert.deepEqual(
    liveTimers().map((t) => [t.id, t.ms, t.repeat, dec.decode(t.payload)]),
    [
      [id, 1000, false, '{"room":"a"}'],
      [tick, 250, true, '7'],
    ],
  );
  assert.equal(timers.cancel(id), true);
  assert.equal(timers.cancel(id), false);
  assert.equal(liveTimers().length, 1);
  // A server's hook receives what was set.
  const fired = [];
  new Server().onTimer((tid, payload) => fired.push(payload)).timer(id, liveTimers()[0].payload);
  assert.deepEqual(fired, [7]);
  // The host answers id 0 when the instance holds its maximum of live timers.
  setMaxTimers(1);
  assert.throws(() => timers.after(1, null), {
    code: 'PIT-500',
    msg: 'timer not set: this instance holds its maximum of live timers',
  });
  // A period over a year (or no end at all) is refused before the host is asked.
  assert.throws(() => timers.every(Infinity), { code: 'PIT-400', msg: 'timer not set: the period is longer than a year' });
});

test('log: levels and structured fields', () => {
  log.trace('t');
  log.debug('d');
  log.info('i', { room: 'a', n: 2 });
  log.warn('w', [['k', 'v']]);
  log.error('e');
  log.log('info', 'plain');
  assert.deepEqual(logs(), [
    ['trace', 't'],
    ['debug', 'd'],
    ['info', 'i'],
    ['warn', 'w'],
    ['error', 'e'],
    ['info', 'plain'],
  ]);
  assert.deepEqual(logRecords()[2], { level: 'info', message: 'i', fields: { room: 'a', n: '2' } });
});

test('without a host, a host call is a bug, not a KiwanoError', async () => {
  const h = globalThis[Symbol.for('kiwano.host')];
  delete globalThis[Symbol.for('kiwano.host')];
  try {
    assert.throws(() => groups.members('g'), (e) => !(e instanceof KiwanoError) && /no host/.test(e.message));
  } finally {
    globalThis[Symbol.for('kiwano.host')] = h;
  }
});
