// The chat room's logic against the SDK's in-memory host: `node --test examples/chat-js/test/`.
// The same checks as the Rust guest's unit tests (examples/chat/guest/src/lib.rs).
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { KiwanoError } from '../../../guest-sdk/js/kiwano.js';
import { MockSession, bindUser, groupMembers, reset } from '../../../guest-sdk/js/testing.js';
import { server } from '../src/main.js';

const info = { serverType: 'chat', serverId: 'chat-1', instance: 0, config: '{}' };

beforeEach(() => {
  reset();
  server.init(info);
});

test('join then message', () => {
  const a = new MockSession(1);
  assert.deepEqual(server.call(a, 'room.join', {}), { code: 0, result: 'success' });
  assert.deepEqual(a.pushes, [['onMembers', '{"members":[]}']]);
  const b = new MockSession(2);
  server.call(b, 'room.join', {});
  assert.deepEqual(b.pushes[0], ['onMembers', '{"members":["1"]}']);
  assert.deepEqual(a.pushes[1], ['onNewUser', '{"content":"New user: 2"}']);

  // The fields in the Rust struct's order, whatever the client's; other fields dropped.
  server.call(b, 'room.message', { content: 'hi', extra: 1, name: 'bob' });
  const msg = ['onMessage', '{"name":"bob","content":"hi"}'];
  assert.deepEqual(a.pushes[2], msg);
  assert.deepEqual(b.pushes[1], msg);

  // A second join fails to bind: RH-000 with {"failed":"bind"}.
  assert.throws(
    () => server.call(a, 'room.join', {}),
    (e) => {
      assert.ok(e instanceof KiwanoError);
      assert.deepEqual(e.toRecord(), {
        code: 'RH-000',
        msg: 'session is already bound to an uid ("1")',
        metadata: [['failed', 'bind']],
      });
      return true;
    },
  );
  server.sessionClosed(a);
  assert.deepEqual(groupMembers('room'), ['2']);
});

test('a displaced session leaves the room to the newer one', () => {
  const old = new MockSession(1);
  server.call(old, 'room.join', {});
  // The same uid bound by a newer session (a game binding a player id after a reconnect).
  const newer = new MockSession(2);
  bindUser('1', newer);
  assert.ok(old.displaced);
  server.sessionClosed(old);
  assert.deepEqual(groupMembers('room'), ['1'], 'still in the room');
});

test('a message must carry a name and a content', () => {
  const a = new MockSession(1);
  server.call(a, 'room.join', {});
  a.takePushes();
  for (const bad of [{ name: 'bob' }, { name: 1, content: 'x' }, null, ['bob'], 'hi']) {
    assert.throws(() => server.call(a, 'room.message', bad), { code: 'PIT-400' }, JSON.stringify(bad));
  }
  // serde's sequence form of the struct.
  server.call(a, 'room.message', ['bob', 'hi']);
  assert.deepEqual(a.pushes, [['onMessage', '{"name":"bob","content":"hi"}']]);
});

test('invalid JSON is refused as the Rust guest refuses it', () => {
  const a = new MockSession(1);
  assert.throws(() => server.call(a, 'room.join', new TextEncoder().encode('{"a":')), {
    code: 'PIT-400',
    msg: 'invalid JSON: EOF while parsing a value at line 1 column 5',
  });
  assert.equal(a.uid, undefined);
});
