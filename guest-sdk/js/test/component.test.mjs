// Real components under Node: examples/chat-js and tests/polyglot/js-echo are built with
// componentize.mjs, transpiled with jco and called through their WIT exports, with testing.js as
// their host. When the Rust chat guest is built (target/wasm/wasm32-wasip2/guest/chat_guest.wasm,
// `cargo build -p chat-guest --target wasm32-wasip2 --profile guest --target-dir target/wasm`),
// the same calls run on it too and every answer, error and push must be the same bytes —
// including serde_json's messages for a corpus of invalid JSON.
//
// Needs `npm ci` in guest-sdk/js (skipped otherwise); set JS_SDK_SKIP_COMPONENT=1 to skip.
// A first run builds for about 10 s; later runs reuse node_modules/.cache/kiwano-js-test/.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';

import { MockSession, groupMembers, reset } from '../testing.js';
import { build, cache, load, repo, toolsInstalled } from '../harness/component.mjs';
import { CallContext } from '../harness/jco-host.mjs';

const skip = !toolsInstalled
  ? 'componentize-js is not installed (npm ci in guest-sdk/js)'
  : process.env.JS_SDK_SKIP_COMPONENT
    ? 'JS_SDK_SKIP_COMPONENT is set'
    : false;
const rustChat = join(repo, 'target/wasm/wasm32-wasip2/guest/chat_guest.wasm');

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (s) => (typeof s === 'string' ? enc.encode(s) : Uint8Array.from(s));
const info = { serverType: 'chat', serverId: 'chat-1', instance: 0, config: '{}' };

/** Calls an export; returns ['ok', text] or ['err', error record] (a trap fails the test). */
function call(f) {
  try {
    const out = f();
    return ['ok', out === undefined ? null : dec.decode(out)];
  } catch (e) {
    if (e && e.payload) return ['err', e.payload];
    throw e;
  }
}

let chatJs;
before(async () => {
  if (skip) return;
  chatJs = await load('chat-js', build('chat-js', 'examples/chat-js/src/main.js', ['examples/chat-js/src', 'guest-sdk/js/kiwano.js']));
});

test('the chat-js component serves the chat contract', { skip }, () => {
  const g = chatJs;
  reset();
  assert.deepEqual(g.describe(), {
    handlers: [
      { route: 'room.join', kind: 'request' },
      { route: 'room.message', kind: 'notify' },
    ],
    remotes: [],
    affinity: undefined,
  });
  g.init(info);
  const [a, b, c] = [1, 2, 3].map((id) => new MockSession(id));
  for (const s of [a, b, c]) {
    assert.deepEqual(call(() => g.handle(new CallContext(s), 'room.join', bytes('{}'))), ['ok', '{"code":0,"result":"success"}']);
  }
  assert.deepEqual(a.takePushes(), [
    ['onMembers', '{"members":[]}'],
    ['onNewUser', '{"content":"New user: 2"}'],
    ['onNewUser', '{"content":"New user: 3"}'],
  ]);
  assert.deepEqual(c.takePushes(), [['onMembers', '{"members":["1","2"]}']]);
  b.takePushes();

  assert.deepEqual(call(() => g.handle(new CallContext(b), 'room.message', bytes('{"name":"bob","content":"hello all"}'))), ['ok', '']);
  for (const s of [a, b, c]) assert.deepEqual(s.takePushes(), [['onMessage', '{"name":"bob","content":"hello all"}']]);

  assert.deepEqual(call(() => g.handle(new CallContext(a), 'room.join', bytes('{}'))), [
    'err',
    { code: 'RH-000', msg: 'session is already bound to an uid ("1")', metadata: [['failed', 'bind']] },
  ]);
  g.onSessionClose(new CallContext(a));
  assert.deepEqual(groupMembers('room'), ['2', '3']);
  const d = new MockSession(4);
  call(() => g.handle(new CallContext(d), 'room.join', bytes('{}')));
  assert.deepEqual(d.pushes, [['onMembers', '{"members":["2","3"]}']]);
  assert.deepEqual(b.pushes, [['onNewUser', '{"content":"New user: 4"}']]);

  // Unknown routes, as the Rust SDK answers them.
  assert.deepEqual(call(() => g.handle(new CallContext(d), 'room.nope', bytes(''))), [
    'err',
    { code: 'PIT-404', msg: 'no handler for room.nope', metadata: [] },
  ]);
  assert.deepEqual(call(() => g.remote('room.count', bytes(''))), [
    'err',
    { code: 'PIT-404', msg: 'route not found', metadata: [['route', 'room.count']] },
  ]);
});

// ---------------------------------------------------------------------------------------------
// The same calls on the Rust and the JavaScript chat guests.

const rep = (s, n) => s.repeat(n);
const SPECIAL = [
  '', ' ', '\t', '\n', 'null', 'nul', 'nulx', 'tru', 'trUe', 'falsy', 'null null', '{} x', '{}}', '[]]',
  '{"a" 1}', '{"a":1,}', '[1,]', '[1 2]', '{1:2}', '{"a":1 "b":2}', '{,}', '[,1]', '{"a":}', '{"a"', '{"a":1', '[1',
  '-', '--1', '-a', '01', '-01', '1.', '1.e5', '.5', '+1', '1e', '1e+', '1e-', '1E-5', '-0', '0.0', '1x', '0x10',
  '1e400', '-1e400', '1e308', '1.7976931348623157e308', '17976931348623157e292', '1.8e308', '2e308', '0e99999999999',
  '1e-400', '5e-324', '1e2147483647', '1e2147483648', '1e-2147483648', '0e2147483648', `1${rep('0', 400)}`,
  `1${rep('0', 308)}`, `1${rep('0', 309)}`, `-1${rep('0', 309)}`, `0.${rep('0', 400)}1`, `123456789012345678901234567890.5e300`,
  `${rep('9', 30)}e280`, `${rep('9', 30)}e279`, `18446744073709551615`, `18446744073709551616`, `184467440737095516150.5`,
  `18446744073709551615.0e290`, `1844674407370955161.9e290`, '[1e400]', '{"a":1e999}',
  `${rep('[', 127)}${rep(']', 127)}`, `${rep('[', 128)}${rep(']', 128)}`, `${rep('[', 200)}`,
  `${rep('{"a":', 127)}1${rep('}', 127)}`, `${rep('{"a":', 128)}1${rep('}', 128)}`, `[${rep('[1],', 300)}1]`,
  '"abc', '"\\', '"\\x"', '"\\u12"', '"\\u12g4"', '"\\uD800"', '"\\ud800\\udc00"', '"\\udc00"', '"\\ud800x"',
  '"\\ud800\\n"', '"\\ud800\\u0041"', '"\\ud800\\', '"\\ud800\\u', '"\\ud800\\ud800"', '"a\u0001b"', '"\u007f"', '"\\/"',
  '{"a\\u0000b":1}', '\n\n  [1,\n   2,\n   x]', '\r\n{"a":\r\n}', '[\n1,\n2,\n]', ' {\n "a" : [1, 2,\n\n 3 4] }',
  [0xef, 0xbb, 0xbf, 0x7b, 0x7d], [0x22, 0xff, 0x22], [0x22, 0x61, 0xc3, 0x22], [0x22, 0xe0, 0x80, 0x80, 0x22],
  [0x22, 0xed, 0xa0, 0x80, 0x22], [0x22, 0xf4, 0x90, 0x80, 0x80, 0x22], [0x22, 0x5c, 0x6e, 0xff, 0x22],
  [0x22, 0x5c, 0x6e, 0x61, 0x62, 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x22], [0x0a, 0x22, 0x61, 0x0a, 0xff, 0x22], [0xff], [0x00],
  [0x22, 0xc3, 0xa9, 0x22], '"\u00e9\u{1F600}"', '{"\u00e9":"\\u00e9"}',
];
const DOCS = [
  '{"name":"bob","content":"hello all"}',
  '[1, -2.5e3, true, false, null, "x\\n\\u00e9\\ud83d\\ude00"]',
  '{\r\n  "a": [ {"b" : 0.5}, 1e-2, -0 ],\n  "c": "\\"q\\"" \n}',
  ' "st\u00e9" ',
  '12345678901234567890123.25E+1',
];
const REPLACEMENTS = [0x20, 0x22, 0x5c, 0x7d, 0x5d, 0x2c, 0x3a, 0x30, 0x65, 0x2d, 0x2e, 0x00, 0x0a, 0xff, 0x78, 0x75];

function corpus() {
  const out = SPECIAL.map(bytes);
  for (const doc of DOCS) {
    const b = bytes(doc);
    for (let k = 0; k < b.length; k++) out.push(b.slice(0, k));
    for (let k = 0; k < b.length; k++) {
      for (const r of REPLACEMENTS) {
        if (b[k] === r) continue;
        const m = b.slice();
        m[k] = r;
        out.push(m);
      }
    }
  }
  return out;
}

/** Everything a client of `g` would see for a scripted session and the corpus. */
function transcript(g) {
  reset();
  const seen = [];
  seen.push(call(() => g.init(info)));
  let id = 0;
  const session = () => new MockSession(++id);
  const members = [];
  for (let k = 0; k < 3; k++) {
    const s = session();
    members.push(s);
    seen.push(call(() => g.handle(new CallContext(s), 'room.join', bytes('{}'))));
  }
  for (const body of ['{"name":"bob","content":"hello all"}', '{"content":"a\\"b\\u0001\\u001f\\u007f\\u2028\\ud83d\\ude00/","name":"\u00e9"}',
    '["x","y"]', '{"name":"n","content":"c","extra":[1,2]}', '{"name":1,"content":"c"}', '{"name":"only"}', '["x"]', '["x","y","z"]', 'null', '',
    '{"name":"a","content":"b"} x']) {
    const r = call(() => g.handle(new CallContext(members[1]), 'room.message', bytes(body)));
    // A notify's error never reaches a client; only whether it was broadcast matters.
    seen.push([body, r[0], members[0].takePushes()]);
  }
  seen.push(call(() => g.handle(new CallContext(members[0]), 'room.join', bytes('{}'))));
  g.onSessionClose(new CallContext(members[0]));
  seen.push(groupMembers('room'));
  for (const body of corpus()) {
    const s = session();
    const r = call(() => g.handle(new CallContext(s), 'room.join', body));
    seen.push([Array.from(body).join(','), r, s.pushes]);
    if (r[0] === 'ok') g.onSessionClose(new CallContext(s));
  }
  seen.push(groupMembers('room'));
  for (const s of members) seen.push(s.pushes.length);
  return seen;
}

test('the JavaScript and the Rust chat guests answer byte for byte alike', {
  skip: skip || (!existsSync(rustChat) && 'the Rust chat guest is not built'),
}, async () => {
  // A copy: cargo may be rewriting the original.
  mkdirSync(cache, { recursive: true });
  const copy = join(cache, 'chat-rust.wasm');
  copyFileSync(rustChat, copy);
  const rust = await load('chat-rust', copy);
  const want = transcript(rust);
  const got = transcript(chatJs);
  assert.equal(got.length, want.length);
  const diffs = [];
  for (let k = 0; k < want.length; k++) {
    try {
      assert.deepEqual(got[k], want[k]);
    } catch {
      diffs.push({ rust: want[k], js: got[k] });
    }
  }
  assert.deepEqual(diffs.slice(0, 5), [], `${diffs.length} of ${want.length} differ`);
  console.log(`# ${want.length} answers compared`);
});

test('a raw guest (tests/polyglot/js-echo) builds and answers', { skip }, async () => {
  const g = await load('js-echo', build('js-echo', 'tests/polyglot/js-echo/echo.js', ['tests/polyglot/js-echo']));
  reset();
  const s = new MockSession(7);
  assert.deepEqual(call(() => g.handle(new CallContext(s), 'echo.echo', bytes('{"x":1}'))), ['ok', '{"x":1}']);
  assert.deepEqual(call(() => g.handle(new CallContext(s), 'echo.fail', bytes(''))), [
    'err',
    { code: 'JS-001', msg: 'javascript refuses session 7', metadata: [['lang', 'javascript'], ['route', 'echo.fail']] },
  ]);
  assert.deepEqual(call(() => g.handle(new CallContext(s), 'echo.who', bytes(''))), ['ok', '127.0.0.1:5000']);
  assert.deepEqual(call(() => g.handle(new CallContext(s), 'echo.note', bytes('hello'))), ['ok', '']);
});
