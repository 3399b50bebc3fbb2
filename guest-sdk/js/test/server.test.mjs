// The Server builder, dispatch and the `guest` export, against the in-memory host.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { Context, KiwanoError, Server, groups, log } from '../kiwano.js';
import { MockSession, bindUser, groupMembers, logs, reset } from '../testing.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

beforeEach(reset);

// The Rust SDK's doc example (guest-sdk/src/lib.rs), in JavaScript.
function example() {
  return new Server()
    .request('room.join', (ctx, req) => {
      ctx.bind(req.name);
      try {
        groups.create('room'); // already there after the first join
      } catch {}
      const members = groups.members('room');
      groups.add('room', req.name);
      log.info(`${req.name} joined`);
      return { code: 0, members };
    })
    .notify('room.say', (ctx, msg) => {
      groups.broadcast('room', 'onMessage', { from: ctx.uid ?? '', text: msg.text });
    })
    // Not when the player is back on a newer session: that one has joined again.
    .onSessionClose((ctx) => {
      const uid = ctx.leavingUid;
      if (uid !== undefined) groups.remove('room', uid);
    });
}

test('the Rust SDK example, in JavaScript', () => {
  const server = example();
  const alice = new MockSession(1);
  assert.deepEqual(server.call(alice, 'room.join', { name: 'alice' }), { code: 0, members: [] });
  assert.equal(alice.uid, 'alice');
  const bob = new MockSession(2);
  assert.deepEqual(server.call(bob, 'room.join', { name: 'bob' }).members, ['alice']);
  assert.equal(server.call(alice, 'room.say', { text: 'hi' }), null);
  assert.deepEqual(bob.pushes, [['onMessage', '{"from":"alice","text":"hi"}']]);
  assert.deepEqual(logs(), [
    ['info', 'alice joined'],
    ['info', 'bob joined'],
  ]);
  // Alice reconnects: her new session binds her uid, then the old session's close arrives.
  const again = new MockSession(3);
  Context.of(again).bind('alice');
  server.sessionClosed(alice);
  assert.deepEqual(groupMembers('room'), ['alice', 'bob'], 'still in the room');
  server.sessionClosed(again);
  assert.deepEqual(groupMembers('room'), ['bob']);
});

test('describe lists handlers and remotes by route, with the affinity', () => {
  const s = new Server()
    .notify('b.note', () => {})
    .request('a.ask', () => 1)
    .remote('z.r', () => 1)
    .remote('c.r', () => 1);
  assert.deepEqual(s.describe(), {
    handlers: [
      { route: 'a.ask', kind: 'request' },
      { route: 'b.note', kind: 'notify' },
    ],
    remotes: ['c.r', 'z.r'],
    affinity: undefined,
  });
  const affinity = (a) => new Server().affinity(a).describe().affinity;
  assert.deepEqual(affinity('session'), { tag: 'session' });
  assert.deepEqual(affinity('uid'), { tag: 'uid' });
  assert.deepEqual(affinity('none'), { tag: 'none' });
  assert.deepEqual(affinity({ dataField: 'room' }), { tag: 'data-field', val: 'room' });
  assert.deepEqual(affinity('data:room'), { tag: 'data-field', val: 'room' });
  assert.deepEqual(affinity({ tag: 'data-field', val: 'room' }), { tag: 'data-field', val: 'room' });
  assert.throws(() => affinity('room'), TypeError);
  assert.throws(() => new Server().request('', () => {}), TypeError);
  assert.throws(() => new Server().request('a.b'), TypeError);
});

test('unknown routes fail as in the Rust SDK', () => {
  const s = new Server();
  assert.throws(() => s.handle(new MockSession(), 'room.nope', new Uint8Array()), {
    code: 'PIT-404',
    msg: 'no handler for room.nope',
    metadata: {},
  });
  assert.throws(() => s.remoteCall('room.count', new Uint8Array()), {
    code: 'PIT-404',
    msg: 'route not found',
    metadata: { route: 'room.count' },
  });
});

test('JSON handlers: bodies in, values out; notify answers nothing', () => {
  const seen = [];
  const s = new Server()
    .request('a.echo', (_ctx, body) => body)
    .request('a.nothing', () => undefined)
    .notify('a.note', (_ctx, body) => {
      seen.push(body);
      return 'ignored';
    });
  const session = new MockSession();
  assert.equal(dec.decode(s.handle(session, 'a.echo', enc.encode(' {"x": [1, "é"]} '))), '{"x":[1,"é"]}');
  assert.equal(dec.decode(s.handle(session, 'a.echo', new Uint8Array())), 'null');
  assert.equal(dec.decode(s.handle(session, 'a.nothing', enc.encode('{}'))), 'null');
  assert.equal(s.handle(session, 'a.note', enc.encode('[1]')).length, 0);
  assert.deepEqual(seen, [[1]]);
  assert.throws(() => s.handle(session, 'a.echo', enc.encode('{"x":')), {
    code: 'PIT-400',
    msg: 'invalid JSON: EOF while parsing a value at line 1 column 5',
  });
});

test('raw handlers: bytes in, bytes out', () => {
  const s = new Server()
    .request('a.raw', (_ctx, body) => body.slice().reverse(), { raw: true })
    .request('a.text', () => 'plain text', { raw: true })
    .request('a.empty', () => undefined, { raw: true })
    .notify('a.rawNote', (_ctx, body) => assert.ok(body instanceof Uint8Array), { raw: true })
    .remote('a.rawRemote', (body) => body, { raw: true });
  const session = new MockSession();
  assert.deepEqual(s.handle(session, 'a.raw', Uint8Array.of(1, 2, 3)), Uint8Array.of(3, 2, 1));
  assert.equal(dec.decode(s.handle(session, 'a.text', new Uint8Array())), 'plain text');
  assert.equal(s.handle(session, 'a.empty', new Uint8Array()).length, 0);
  assert.equal(s.handle(session, 'a.rawNote', enc.encode('not json')).length, 0);
  assert.deepEqual(s.remoteCall('a.rawRemote', Uint8Array.of(9)), Uint8Array.of(9));
});

test('remotes take and return JSON', () => {
  const s = new Server().remote('room.count', (req) => ({ room: req.room, count: 2 }));
  assert.deepEqual(s.callRemote('room.count', { room: 'a' }), { room: 'a', count: 2 });
  assert.equal(dec.decode(s.remoteCall('room.count', enc.encode('{"room":"b"}'))), '{"room":"b","count":2}');
});

test('a response that cannot be encoded fails with PIT-500', () => {
  const cycle = {};
  cycle.self = cycle;
  const s = new Server().request('a.bad', () => cycle);
  assert.throws(() => s.call(new MockSession(), 'a.bad', {}), (e) => {
    assert.equal(e.code, 'PIT-500');
    assert.match(e.msg, /^cannot encode the response: /);
    return true;
  });
  const big = new Server().request('a.id', (ctx) => ({ id: ctx.sessionId }));
  assert.deepEqual(big.call(new MockSession(42), 'a.id', {}), { id: 42 });
});

test('the guest export returns WIT results: errors as `err`, bugs thrown', () => {
  const s = new Server()
    .request('a.ok', () => ({ ok: true }))
    .request('a.fail', () => {
      throw new KiwanoError('RH-001', 'nope', { why: 'test' });
    })
    .request('a.host', () => groups.members('missing'))
    .request('a.bug', () => {
      throw new TypeError('a bug');
    })
    .remote('a.r', () => {
      throw KiwanoError.badRequest('bad');
    });
  const g = s.guest();
  const ctx = new MockSession().asCallContext();
  const ok = g.handle(ctx, 'a.ok', enc.encode('{}'));
  assert.equal(ok.tag, 'ok');
  assert.equal(dec.decode(ok.val), '{"ok":true}');
  assert.deepEqual(g.handle(ctx, 'a.fail', new Uint8Array()), {
    tag: 'err',
    val: { code: 'RH-001', msg: 'nope', metadata: [['why', 'test']] },
  });
  assert.deepEqual(g.handle(ctx, 'a.host', new Uint8Array()), {
    tag: 'err',
    val: { code: 'PIT-404', msg: 'group not found', metadata: [] },
  });
  assert.deepEqual(g.handle(ctx, 'a.missing', new Uint8Array()), {
    tag: 'err',
    val: { code: 'PIT-404', msg: 'no handler for a.missing', metadata: [] },
  });
  assert.deepEqual(g.remote('a.r', new Uint8Array()), { tag: 'err', val: { code: 'PIT-400', msg: 'bad', metadata: [] } });
  assert.throws(() => g.handle(ctx, 'a.bug', new Uint8Array()), TypeError);
  assert.deepEqual(g.init({ serverType: 't', serverId: 'i', instance: 0, config: '{}' }), { tag: 'ok', val: undefined });
  assert.equal(g.describe().handlers.length, 4);
});

test('async handlers and hooks are awaited', async () => {
  const s = new Server()
    .request('a.later', async (_ctx, body) => {
      await null;
      return { got: body };
    })
    .request('a.laterFail', async () => {
      await null;
      throw new KiwanoError('RH-002', 'later');
    });
  const g = s.guest();
  const ctx = new MockSession().asCallContext();
  const ok = await g.handle(ctx, 'a.later', enc.encode('7'));
  assert.equal(dec.decode(ok.val), '{"got":7}');
  assert.deepEqual(await g.handle(ctx, 'a.laterFail', new Uint8Array()), {
    tag: 'err',
    val: { code: 'RH-002', msg: 'later', metadata: [] },
  });
  assert.deepEqual(await s.call(new MockSession(), 'a.later', 'x'), { got: 'x' });
});

test('init passes the config as an object; its error stops the server type', () => {
  let seen;
  const s = new Server().onInit((info) => {
    seen = info;
    if (info.config.fail) throw new KiwanoError('RH-003', 'bad config');
  });
  const g = s.guest();
  assert.deepEqual(g.init({ serverType: 'room', serverId: 'room-1', instance: 2, config: '{"max":4}' }), { tag: 'ok', val: undefined });
  assert.deepEqual(seen, { serverType: 'room', serverId: 'room-1', instance: 2, config: { max: 4 } });
  assert.deepEqual(g.init({ serverType: 'room', serverId: 'room-1', instance: 0, config: '{"fail":true}' }), {
    tag: 'err',
    val: { code: 'RH-003', msg: 'bad config', metadata: [] },
  });
});

test('hooks that cannot fail a call log a KiwanoError as a warning', () => {
  const s = new Server()
    .onSessionClose((ctx) => groups.remove('room', ctx.uid ?? ''))
    .onShutdown(() => {
      throw new TypeError('a bug');
    });
  s.sessionClosed(new MockSession());
  assert.deepEqual(logs(), [['warn', 'onSessionClose failed: PIT-404 group not found']]);
  assert.throws(() => s.shutdown(), TypeError);
});

test('timers fire the timer hook with their JSON payload, or bytes when raw', () => {
  const fired = [];
  const s = new Server().onTimer((id, payload) => fired.push([id, payload]));
  s.timer(5n, enc.encode('{"room":"a"}'));
  s.timer(6n, new Uint8Array());
  assert.deepEqual(fired, [
    [5n, { room: 'a' }],
    [6n, null],
  ]);
  const raw = [];
  new Server().onTimer((id, payload) => raw.push([id, payload]), { raw: true }).timer(1n, Uint8Array.of(0xff));
  assert.deepEqual(raw, [[1n, Uint8Array.of(0xff)]]);
  // An undecodable payload is logged, not delivered.
  s.timer(7n, Uint8Array.of(0xff));
  assert.equal(fired.length, 2);
  assert.match(logs()[0][1], /^onTimer failed: PIT-400 invalid JSON: /);
});

test('KiwanoError carries code, message and metadata', () => {
  const e = new KiwanoError('RH-000', 'no', [['a', '1']]).with('b', 2);
  assert.ok(e instanceof Error);
  assert.deepEqual([e.code, e.msg, e.metadata], ['RH-000', 'no', { a: '1', b: '2' }]);
  assert.deepEqual(e.toRecord(), { code: 'RH-000', msg: 'no', metadata: [['a', '1'], ['b', '2']] });
  // componentize-js reads an own `payload` off a thrown value as the WIT error.
  assert.ok(Object.hasOwn(e, 'payload'));
  assert.deepEqual(e.payload, e.toRecord());
  assert.deepEqual(new KiwanoError('X', 'y', new Map([['k', 'v']])).metadata, { k: 'v' });
  assert.deepEqual(new KiwanoError('X', 'y', { __proto__: 'p' }).metadata, {});
  assert.equal(Object.getPrototypeOf(new KiwanoError('X', 'y', [['__proto__', 'p']]).metadata), Object.prototype);
  // A host error as componentize-js throws it.
  const hostError = Object.assign(new Error('host'), { payload: { code: 'PIT-499', msg: 'closed', metadata: [['s', '1']] } });
  assert.deepEqual(KiwanoError.from(hostError).toRecord(), { code: 'PIT-499', msg: 'closed', metadata: [['s', '1']] });
  assert.equal(KiwanoError.from(new Error('bug')), undefined);
  assert.equal(KiwanoError.from({ code: 'A', msg: 'b' }).code, 'A');
});

test('a displaced session is told apart (bindUser)', () => {
  const old = new MockSession(1);
  Context.of(old).bind('p1');
  const newer = new MockSession(2);
  bindUser('p1', newer);
  assert.equal(Context.of(old).displaced, true);
  assert.equal(Context.of(old).leavingUid, undefined);
  assert.equal(Context.of(newer).leavingUid, undefined, 'never bound itself');
});
