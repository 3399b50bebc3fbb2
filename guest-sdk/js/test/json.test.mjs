// JSON as the Rust SDK reads and writes it. The expected messages were produced by the Rust chat
// guest (serde_json 1.0) for the same bytes; component.test.mjs compares thousands more against
// it when it is built.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { KiwanoError, decodeJson, encodeJson } from '../kiwano.js';

const enc = new TextEncoder();
const rep = (s, n) => s.repeat(n);

// [body, serde_json's message, or null when it accepts the body]
const SERDE = [
  ['', null],
  [' ', 'EOF while parsing a value at line 1 column 1'],
  ['nul', 'EOF while parsing a value at line 1 column 3'],
  ['nulx', 'expected ident at line 1 column 4'],
  ['trUe', 'expected ident at line 1 column 3'],
  ['null null', 'trailing characters at line 1 column 6'],
  ['{} x', 'trailing characters at line 1 column 4'],
  ['{"a" 1}', 'expected `:` at line 1 column 6'],
  ['{"a":1,}', 'trailing comma at line 1 column 8'],
  ['[1,]', 'trailing comma at line 1 column 4'],
  ['[1 2]', 'expected `,` or `]` at line 1 column 4'],
  ['{1:2}', 'key must be a string at line 1 column 2'],
  ['{"a":1 "b":2}', 'expected `,` or `}` at line 1 column 8'],
  ['{,}', 'key must be a string at line 1 column 2'],
  ['{"a"', 'EOF while parsing an object at line 1 column 4'],
  ['[1', 'EOF while parsing a list at line 1 column 2'],
  ['-', 'EOF while parsing a value at line 1 column 1'],
  ['-a', 'invalid number at line 1 column 2'],
  ['01', 'invalid number at line 1 column 2'],
  ['1.', 'EOF while parsing a value at line 1 column 2'],
  ['1.e5', 'invalid number at line 1 column 3'],
  ['.5', 'expected value at line 1 column 1'],
  ['+1', 'expected value at line 1 column 1'],
  ['1e', 'EOF while parsing a value at line 1 column 2'],
  ['1e+', 'EOF while parsing a value at line 1 column 3'],
  ['1x', 'trailing characters at line 1 column 2'],
  ['1e400', 'number out of range at line 1 column 5'],
  ['-1e400', 'number out of range at line 1 column 6'],
  ['1.7976931348623157e308', null],
  ['17976931348623157e292', null],
  ['2e308', 'number out of range at line 1 column 5'],
  ['0e99999999999', null],
  ['1e-400', null],
  ['1e2147483648', 'number out of range at line 1 column 12'],
  [`1${rep('0', 309)}`, 'number out of range at line 1 column 310'],
  [`0.${rep('0', 400)}1`, null],
  [`${rep('[', 127)}${rep(']', 127)}`, null],
  [`${rep('[', 128)}${rep(']', 128)}`, 'recursion limit exceeded at line 1 column 128'],
  [`${rep('{"a":', 128)}1${rep('}', 128)}`, 'recursion limit exceeded at line 1 column 636'],
  ['"abc', 'EOF while parsing a string at line 1 column 4'],
  ['"\\', 'EOF while parsing a string at line 1 column 2'],
  ['"\\x"', 'invalid escape at line 1 column 3'],
  ['"\\u12"', 'EOF while parsing a string at line 1 column 6'],
  ['"\\u12g4"', 'invalid escape at line 1 column 7'],
  ['"\\ud800\\udc00"', null],
  ['"\\udc00"', 'lone leading surrogate in hex escape at line 1 column 7'],
  ['"\\ud800x"', 'unexpected end of hex escape at line 1 column 8'],
  ['"\\ud800\\u0041"', 'lone leading surrogate in hex escape at line 1 column 13'],
  ['"\\ud800\\', 'EOF while parsing a string at line 1 column 8'],
  ['"a\u0001b"', 'control character (\\u0000-\\u001F) found while parsing a string at line 1 column 3'],
  ['\n\n  [1,\n   2,\n   x]', 'expected value at line 5 column 4'],
  ['\r\n{"a":\r\n}', 'expected value at line 3 column 1'],
  [[0xef, 0xbb, 0xbf, 0x7b, 0x7d], 'expected value at line 1 column 1'],
  [[0x22, 0xff, 0x22], 'invalid unicode code point at line 1 column 2'],
  [[0x22, 0x61, 0xc3, 0x22], 'invalid unicode code point at line 1 column 3'],
  [[0x22, 0xe0, 0x80, 0x80, 0x22], 'invalid unicode code point at line 1 column 2'],
  [[0x22, 0xed, 0xa0, 0x80, 0x22], 'invalid unicode code point at line 1 column 2'],
  [[0x22, 0x5c, 0x6e, 0xff, 0x22], 'invalid unicode code point at line 1 column 4'],
  [[0x0a, 0x22, 0x61, 0x0a, 0xff, 0x22], 'control character (\\u0000-\\u001F) found while parsing a string at line 3 column 0'],
  [[0xff], 'expected value at line 1 column 1'],
];

test('invalid JSON fails with serde_json messages, as in the Rust SDK', () => {
  for (const [body, want] of SERDE) {
    const bytes = typeof body === 'string' ? enc.encode(body) : Uint8Array.from(body);
    const label = JSON.stringify(body).slice(0, 40);
    if (want === null) {
      assert.doesNotThrow(() => decodeJson(bytes), label);
    } else {
      assert.throws(() => decodeJson(bytes), (e) => {
        assert.ok(e instanceof KiwanoError, label);
        assert.deepEqual([e.code, e.msg, e.metadata], ['PIT-400', `invalid JSON: ${want}`, {}], label);
        return true;
      });
    }
  }
});

test('valid JSON decodes to plain values; an empty body is null', () => {
  assert.equal(decodeJson(new Uint8Array()), null);
  assert.deepEqual(decodeJson(enc.encode(' {"a":[1,2.5,"\\u00e9\\ud83d\\ude00"],"b":null} ')), { a: [1, 2.5, 'é😀'], b: null });
  assert.equal(decodeJson(enc.encode('1e-400')), 0);
  assert.ok(Array.isArray(decodeJson(enc.encode(`${rep('[', 127)}${rep(']', 127)}`))));
});

test('values encode as compact JSON; undefined is null, BigInts are integers', () => {
  const text = (v) => new TextDecoder().decode(encodeJson(v));
  assert.equal(text({ code: 0, result: 'success' }), '{"code":0,"result":"success"}');
  assert.equal(text(undefined), 'null');
  assert.equal(text({ id: 12n, list: [1n] }), '{"id":12,"list":[1]}');
  assert.equal(text('a"b\u0001\u2028/é'), '"a\\"b\\u0001\u2028/é"');
  const cycle = {};
  cycle.self = cycle;
  assert.throws(() => encodeJson(cycle), TypeError);
});

test('numbers are written as serde_json writes an f64 (integers as integers)', () => {
  const text = (v) => new TextDecoder().decode(encodeJson(v));
  // Where JavaScript and serde_json differ: 1e-6 <= |x| < 1e-5.
  assert.equal(text(0.0000015), '1.5e-6');
  assert.equal(text([-0.000001, { a: 0.0000099 }]), '[-1e-6,{"a":9.9e-6}]');
  assert.equal(text({ s: '0.000001', n: 0.000001, big: 3n }), '{"s":"0.000001","n":1e-6,"big":3}');
  // Where they agree.
  for (const [v, want] of [[0.00001, '0.00001'], [1e-7, '1e-7'], [2.5, '2.5'], [1e21, '1e+21'], [1.5e300, '1.5e+300'],
    [123456.789, '123456.789'], [3, '3'], [NaN, 'null'], [-Infinity, 'null']]) {
    assert.equal(text(v), want);
  }
});
