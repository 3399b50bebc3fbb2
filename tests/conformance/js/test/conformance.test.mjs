// The JavaScript conformance server (tests/conformance/README.md) against the SDK's in-memory
// host, route by route, checking the bytes it answers and pushes:
// `node --test tests/conformance/js/test/`.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { KiwanoError, groups } from '../../../../guest-sdk/js/kiwano.js';
import {
  MockSession,
  bindUser,
  declaredMetrics,
  groupMembers,
  histogram,
  host,
  logs,
  metricValue,
  onRpc,
  reset,
  rpcCalls,
  setMaxMetricSeries,
  timers,
} from '../../../../guest-sdk/js/testing.js';
import { server } from '../src/main.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

beforeEach(() => {
  reset();
  server.init({ serverType: 'conf', serverId: 'conf-1', instance: 0, config: '{}' });
});

/** The answer's text to `body` (text) on `route`. */
function answer(session, route, body) {
  return dec.decode(server.handle(session, route, enc.encode(body)));
}

/** Asserts that `body` on `route` fails with the error record `{ code, msg, metadata }`. */
function refused(session, route, body, code, msg, metadata = []) {
  assert.throws(
    () => server.handle(session, route, enc.encode(body)),
    (e) => {
      assert.ok(e instanceof KiwanoError, String(e));
      assert.deepEqual(e.toRecord(), { code, msg, metadata });
      return true;
    },
  );
}

/** A session bound to `uid` through `conf.bind`. */
function bound(id, uid) {
  const session = new MockSession(id);
  assert.equal(answer(session, 'conf.bind', `{"uid":"${uid}"}`), `{"uid":"${uid}"}`);
  return session;
}

/** Answers `rpc.call('confback.<route>')` with the server's own remotes, as `confback` does. */
function backend(serverId, route, body) {
  const dot = route.indexOf('.');
  assert.deepEqual([serverId, route.slice(0, dot)], [undefined, 'confback'], route);
  return server.remoteCall(route.slice(dot + 1), body);
}

test('describe', () => {
  assert.deepEqual(server.describe(), {
    handlers: [
      { route: 'conf.bind', kind: 'request' },
      { route: 'conf.echo', kind: 'request' },
      { route: 'conf.fail', kind: 'request' },
      { route: 'conf.get', kind: 'request' },
      { route: 'conf.handshake', kind: 'request' },
      { route: 'conf.join', kind: 'request' },
      { route: 'conf.kick', kind: 'request' },
      { route: 'conf.kickusers', kind: 'request' },
      { route: 'conf.leave', kind: 'request' },
      { route: 'conf.members', kind: 'request' },
      { route: 'conf.metric', kind: 'request' },
      { route: 'conf.note', kind: 'notify' },
      { route: 'conf.push', kind: 'request' },
      { route: 'conf.rpc', kind: 'request' },
      { route: 'conf.rpcfail', kind: 'request' },
      { route: 'conf.set', kind: 'request' },
      { route: 'conf.timer', kind: 'request' },
      { route: 'conf.users', kind: 'request' },
    ],
    remotes: ['remote.add', 'remote.fail'],
    affinity: undefined,
  });
});

test('init does nothing but declare the metrics', () => {
  assert.equal(groupMembers('lobby'), undefined);
  assert.deepEqual(logs(), []);
  assert.deepEqual(declaredMetrics(), [
    { id: 0, name: 'conf_hits', help: 'Hits by color', kind: 'counter', labels: ['color'], buckets: [] },
    { id: 1, name: 'conf_level', help: 'Level', kind: 'gauge', labels: [], buckets: [] },
    { id: 2, name: 'conf_size', help: 'Sizes', kind: 'histogram', labels: ['kind'], buckets: [1, 10, 100] },
  ]);
});

test('metric', () => {
  const a = new MockSession(1);
  assert.equal(answer(a, 'conf.metric', '{"labels":["red"],"metric":"hits","value":2}'), '{"recorded":"hits"}');
  answer(a, 'conf.metric', '{"labels":["red"],"metric":"hits","value":0.5}');
  assert.equal(metricValue('conf_hits', ['red']), 2.5);
  assert.equal(answer(a, 'conf.metric', '{"labels":[],"metric":"level","value":-3}'), '{"recorded":"level"}');
  assert.equal(metricValue('conf_level'), -3);
  assert.equal(answer(a, 'conf.metric', '{"labels":["small"],"metric":"size","value":7}'), '{"recorded":"size"}');
  assert.deepEqual(histogram('conf_size', ['small']), { count: 1, sum: 7 });
  // Host errors as they are: the label values go to the host uncounted.
  for (const [body, msg] of [
    ['{"labels":[],"metric":"hits","value":1}', 'metric "conf_hits" has labels [color]: 0 values given'],
    ['{"labels":["a","b"],"metric":"hits","value":1}', 'metric "conf_hits" has labels [color]: 2 values given'],
    ['{"labels":["red"],"metric":"hits","value":-1}', 'metric "conf_hits": a counter only goes up (add -1)'],
    ['{"labels":["x"],"metric":"level","value":1}', 'metric "conf_level" has labels []: 1 values given'],
    ['{"labels":[],"metric":"size","value":1}', 'metric "conf_size" has labels [kind]: 0 values given'],
  ]) {
    refused(a, 'conf.metric', body, 'PIT-400', msg);
  }
  refused(a, 'conf.metric', '{"labels":[],"metric":"other","value":1}', 'PIT-400', 'no metric other');
  assert.equal(metricValue('conf_hits', ['red']), 2.5);
});

test('metric series limit', () => {
  // kiwano.toml: max_metric_series = 3 for conf.
  setMaxMetricSeries(3);
  const a = new MockSession(1);
  for (const color of ['red', 'green', 'blue']) answer(a, 'conf.metric', `{"labels":["${color}"],"metric":"hits","value":1}`);
  answer(a, 'conf.metric', '{"labels":["red"],"metric":"hits","value":1}');
  refused(
    a,
    'conf.metric',
    '{"labels":[],"metric":"level","value":1}',
    'PIT-500',
    'metric series limit reached: server type test records at most 3 series (servers.test.max_metric_series)',
  );
  assert.equal(metricValue('conf_hits', ['red']), 2);
});

test('echo', () => {
  const a = new MockSession(1);
  assert.equal(answer(a, 'conf.echo', '{"x":[1,2.5,"hé"],"y":null}'), '{"echo":{"x":[1,2.5,"hé"],"y":null}}');
  assert.equal(answer(a, 'conf.echo', '7'), '{"echo":7}');
  assert.equal(answer(a, 'conf.echo', ''), '{"echo":null}');
  refused(a, 'conf.echo', '{', 'PIT-400', 'invalid JSON: EOF while parsing an object at line 1 column 1');
});

test('fail', () => {
  refused(new MockSession(1), 'conf.fail', '', 'CF-001', 'conformance failure', [
    ['route', 'conf.fail'],
    ['kind', 'custom'],
  ]);
});

test('bind', () => {
  const a = bound(1, 'alice');
  assert.equal(a.uid, 'alice');
  // Host errors as they are.
  refused(a, 'conf.bind', '{"uid":"bob"}', 'PIT-400', 'session is already bound to an uid ("alice")');
  refused(new MockSession(2), 'conf.bind', '{"uid":""}', 'PIT-400', 'illegal uid: the uid is empty');
});

test('set and get', () => {
  const a = new MockSession(1);
  assert.equal(answer(a, 'conf.get', '{"key":"k"}'), '{"key":"k","value":null}');
  assert.equal(answer(a, 'conf.set', '{"key":"k","value":{"n":1}}'), '{"data":{"k":{"n":1}}}');
  assert.equal(answer(a, 'conf.set', '{"key":"a","value":[true]}'), '{"data":{"k":{"n":1},"a":[true]}}');
  assert.equal(answer(a, 'conf.get', '{"key":"k"}'), '{"key":"k","value":{"n":1}}');
  assert.equal(answer(a, 'conf.get', '{"key":"a"}'), '{"key":"a","value":[true]}');
  assert.deepEqual(a.data, { k: { n: 1 }, a: [true] });
});

test('push and note', () => {
  const a = new MockSession(1);
  assert.equal(answer(a, 'conf.push', '{"route":"onThing","body":{"z":1,"a":"b"}}'), '{"pushed":"onThing"}');
  assert.equal(answer(a, 'conf.note', '{"text":"hi"}'), '');
  assert.deepEqual(a.pushes, [
    ['onThing', '{"z":1,"a":"b"}'],
    ['onNote', '{"text":"hi"}'],
  ]);
});

test('kick', () => {
  const a = new MockSession(1);
  assert.equal(answer(a, 'conf.kick', ''), '{"kicked":true}');
  assert.ok(a.kicked);
});

test('join', () => {
  refused(new MockSession(9), 'conf.join', '{"group":"g"}', 'CF-002', 'bind first');
  assert.equal(groupMembers('g'), undefined);
  const a = bound(1, 'alice');
  assert.equal(answer(a, 'conf.join', '{"group":"g"}'), '{"group":"g","members":["alice"],"count":1}');
  const b = bound(2, 'bob');
  // The group exists now: its creation error is ignored.
  assert.equal(answer(b, 'conf.join', '{"group":"g"}'), '{"group":"g","members":["alice","bob"],"count":2}');
  const join = ['onJoin', '{"uid":"bob","members":["alice","bob"]}'];
  assert.deepEqual(a.pushes, [['onJoin', '{"uid":"alice","members":["alice"]}'], join]);
  assert.deepEqual(b.pushes, [join]);
  // Host errors as they are.
  refused(b, 'conf.join', '{"group":"g"}', 'PIT-400', 'member already exists in group');
  assert.deepEqual(groupMembers('g'), ['alice', 'bob']);
});

test('join returns other create errors', (t) => {
  // The in-memory host refuses a create only with "group already exists": stand in one that
  // refuses it otherwise.
  const a = bound(1, 'alice');
  t.mock.method(host.groups, 'create', () => {
    throw new KiwanoError('PIT-500', 'groups unavailable', { name: 'g' });
  });
  refused(a, 'conf.join', '{"group":"g"}', 'PIT-500', 'groups unavailable', [['name', 'g']]);
  assert.equal(groupMembers('g'), undefined);
});

test('leave', () => {
  refused(new MockSession(9), 'conf.leave', '{"group":"g"}', 'CF-002', 'bind first');
  const a = bound(1, 'alice');
  refused(a, 'conf.leave', '{"group":"g"}', 'PIT-404', 'group not found');
  answer(a, 'conf.join', '{"group":"g"}');
  assert.equal(answer(a, 'conf.leave', '{"group":"g"}'), '{"group":"g","contains":false}');
  refused(a, 'conf.leave', '{"group":"g"}', 'PIT-404', 'member not found in the group');
});

test('members', () => {
  const a = bound(1, 'alice');
  refused(a, 'conf.members', '{"group":"g"}', 'PIT-404', 'group not found');
  groups.create('g');
  assert.equal(answer(a, 'conf.members', '{"group":"g"}'), '{"members":[]}');
  answer(a, 'conf.join', '{"group":"g"}');
  assert.equal(answer(a, 'conf.members', '{"group":"g"}'), '{"members":["alice"]}');
});

test('users and kickusers', () => {
  const a = bound(1, 'alice');
  const b = bound(2, 'bob');
  const out = answer(a, 'conf.users', '{"route":"onHi","body":{"n":[1]},"uids":["bob","nobody","alice"]}');
  assert.equal(out, '{"missed":["nobody"]}');
  assert.deepEqual([a.pushes, b.pushes], [[['onHi', '{"n":[1]}']], [['onHi', '{"n":[1]}']]]);
  assert.equal(answer(a, 'conf.kickusers', '{"uids":["ghost","bob"]}'), '{"missed":["ghost"]}');
  assert.deepEqual([a.kicked, b.kicked], [false, true]);
  assert.equal(answer(a, 'conf.kickusers', '{"uids":[]}'), '{"missed":[]}');
});

test('rpc', () => {
  const a = new MockSession(1);
  onRpc(backend);
  assert.equal(answer(a, 'conf.rpc', '{"a":2,"b":-5}'), '{"remote":{"sum":-3}}');
  const [add] = rpcCalls();
  assert.deepEqual(
    [add.serverId, add.route, dec.decode(add.body), add.timeoutMs],
    [undefined, 'confback.remote.add', '{"a":2,"b":-5}', undefined],
  );
  // The remote's error as it is.
  refused(a, 'conf.rpcfail', '', 'CF-003', 'remote refused', [['side', 'remote']]);
  const fail = rpcCalls()[1];
  assert.deepEqual([fail.route, dec.decode(fail.body)], ['confback.remote.fail', '{}']);
});

test('rpc host error', () => {
  // No confback server: the host's error as it is.
  const msg = 'no servers available of this type: confback';
  refused(new MockSession(1), 'conf.rpc', '{"a":1,"b":2}', 'PIT-500', msg);
  refused(new MockSession(1), 'conf.rpcfail', '', 'PIT-500', msg);
});

test('remotes', () => {
  assert.equal(dec.decode(server.remoteCall('remote.add', enc.encode('{"a":40,"b":2}'))), '{"sum":42}');
  assert.throws(() => server.remoteCall('remote.fail', new Uint8Array(0)), (e) => {
    assert.deepEqual(e.toRecord(), { code: 'CF-003', msg: 'remote refused', metadata: [['side', 'remote']] });
    return true;
  });
});

test('timer', () => {
  refused(new MockSession(9), 'conf.timer', '{"ms":10,"tag":"t"}', 'CF-002', 'bind first');
  assert.deepEqual(timers(), []);
  const a = bound(1, 'alice');
  assert.equal(answer(a, 'conf.timer', '{"ms":250,"tag":"t1"}'), '{"timer":"set"}');
  const [t] = timers();
  assert.deepEqual([t.id, t.ms, t.repeat, dec.decode(t.payload)], [1n, 250, false, '{"uid":"alice","tag":"t1"}']);
  // The host fires it: the tag goes to the user.
  server.timer(t.id, t.payload);
  assert.deepEqual(a.pushes, [['onTimer', '{"tag":"t1"}']]);
});

test('handshake', () => {
  const handshake = { sys: { platform: 'mac', libVersion: '0.3.5' }, user: { age: 30 } };
  const a = new MockSession(1, { handshake });
  assert.equal(answer(a, 'conf.handshake', ''), '{"platform":"mac","user":{"age":30}}');
});

test('a closing session leaves the lobby', () => {
  const a = bound(1, 'alice');
  const b = bound(2, 'bob');
  answer(a, 'conf.join', '{"group":"lobby"}');
  answer(b, 'conf.join', '{"group":"lobby"}');
  b.takePushes();
  server.sessionClosed(a);
  assert.deepEqual(groupMembers('lobby'), ['bob']);
  assert.deepEqual(b.pushes, [['onLeave', '{"uid":"alice"}']]);
  assert.deepEqual(logs(), []);
});

test('a displaced, unbound or non-member session closes without leaving', () => {
  const a = bound(1, 'alice');
  answer(a, 'conf.join', '{"group":"lobby"}');
  bindUser('alice', new MockSession(2));
  assert.ok(a.displaced);
  server.sessionClosed(a);
  server.sessionClosed(new MockSession(3));
  server.sessionClosed(bound(4, 'carol'));
  assert.deepEqual(groupMembers('lobby'), ['alice']);
  assert.deepEqual(a.pushes, [['onJoin', '{"uid":"alice","members":["alice"]}']]);
  assert.deepEqual(logs(), []);
});

test('errors on session close are logged', () => {
  server.sessionClosed(bound(1, 'alice')); // no group `lobby`
  assert.deepEqual(logs(), [['warn', 'onSessionClose failed: PIT-404 group not found']]);
});
