// Metric specs the host refuses, against the in-memory host of testing.js: the host's error when
// the metric is first used, and from `Server.init`, which declares every metric defined. (Apart
// from metrics.test.mjs: these bad metrics would fail every init there.)
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { KiwanoError, Server, metrics } from '../kiwano.js';
import { declaredMetrics, histogram, metricValue, reset } from '../testing.js';

beforeEach(reset);

function refused(f, code, msg) {
  assert.throws(f, (e) => {
    assert.ok(e instanceof KiwanoError, String(e));
    assert.deepEqual([e.code, e.msg], [code, msg]);
    return true;
  });
}

test('a spec the host refuses: its error on first use', () => {
  const cases = [
    ['counter', 'Hits', {}, 'metric name "Hits" must match [a-z][a-z0-9_]* and be at most 64 bytes'],
    ['counter', 'h'.repeat(65), {}, `metric name "${'h'.repeat(65)}" must match [a-z][a-z0-9_]* and be at most 64 bytes`],
    ['gauge', 'rooms_count', {}, 'metric name "rooms_count" must not end in _bucket, _count or _sum'],
    ['gauge', 'rooms_total', {}, 'metric name "rooms_total": only a counter\'s name may end in _total'],
    ['counter', 'quiet', { help: '' }, 'metric "quiet": help must not be empty'],
    ['counter', 'long', { help: 'é'.repeat(129) }, 'metric "long": help of 258 bytes is over 256'],
    ['counter', 'say "hi"', {}, 'metric name "say \\"hi\\"" must match [a-z][a-z0-9_]* and be at most 64 bytes'],
    ['counter', 'many', { labels: Array.from({ length: 9 }, (_, i) => `l${i}`) }, 'metric "many": at most 8 labels'],
    ['counter', 'bad', { labels: ['Color'] }, 'metric "bad": label name "Color" must match [a-z][a-z0-9_]* and be at most 64 bytes'],
    ['counter', 'res', { labels: ['server_type'] }, 'metric "res": label name "server_type" is reserved'],
    ['counter', 'dup', { labels: ['a', 'a'] }, 'metric "dup": label name "a" appears twice'],
    ['counter', 'cb', { buckets: [1] }, 'metric "cb": only a histogram has buckets'],
    ['histogram', 'dec', { buckets: [2, 1] }, 'metric "dec": buckets must be finite and increasing, at most 32'],
    ['histogram', 'inf', { buckets: [1, Infinity] }, 'metric "inf": buckets must be finite and increasing, at most 32'],
    ['histogram', 'big', { buckets: Array.from({ length: 33 }, (_, i) => i) }, 'metric "big": buckets must be finite and increasing, at most 32'],
  ];
  for (const [kind, name, options, msg] of cases) {
    const m = metrics[kind](name, { help: 'h', ...options });
    refused(() => (kind === 'histogram' ? m.observe(1) : m.inc()), 'PIT-400', msg);
  }
  assert.deepEqual(declaredMetrics(), []);
  metrics.counter('twice', { help: 'one help' }).inc();
  refused(
    () => metrics.counter('twice', { help: 'another help' }).inc(),
    'PIT-400',
    'metric "twice" is already declared with other labels, kind, help or buckets (by server type test); a changed metric needs a new name, or a new version of the one server type declaring it',
  );
  metrics.counter('twice', { help: 'one help' }).inc(2);
  assert.equal(metricValue('twice'), 3);
  // Names are compared as exported: `twice` is `kiwano_guest_twice_total`.
  metrics.counter('twice_total', { help: 'one help' }).inc();
  assert.equal(metricValue('twice_total'), 4);
  assert.deepEqual(declaredMetrics().map((m) => m.name), ['twice']);
  // A histogram without buckets has the default ones.
  metrics.histogram('lat', { help: 'h' }).observe(1);
  metrics.histogram('lat', { help: 'h', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] }).observe(1);
  assert.deepEqual(histogram('lat'), { count: 2, sum: 2 });
});

test('the 128-metric limit', () => {
  for (let i = 0; i < 128; i++) metrics.gauge(`g${i}`, { help: 'h' }).set(i);
  refused(() => metrics.gauge('g128', { help: 'h' }).set(1), 'PIT-500', 'metric limit reached: server type test declares at most 128 metrics');
});

test('init fails with the host error before the hook', () => {
  let ran = false;
  const server = new Server().onInit(() => {
    ran = true;
  });
  refused(() => server.init({ config: '{}' }), 'PIT-400', 'metric name "Hits" must match [a-z][a-z0-9_]* and be at most 64 bytes');
  reset();
  assert.deepEqual(server.guest().init({ config: '{}' }), {
    tag: 'err',
    val: { code: 'PIT-400', msg: 'metric name "Hits" must match [a-z][a-z0-9_]* and be at most 64 bytes', metadata: [] },
  });
  assert.equal(ran, false);
});
