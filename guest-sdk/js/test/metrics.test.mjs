// The SDK's metrics against the in-memory host of testing.js, which checks as the host does.
// Specs the host refuses are in metrics-refused.test.mjs: `Server.init` declares every metric
// defined in the process, so a bad one would fail the inits here.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { KiwanoError, Server, metrics } from '../kiwano.js';
import { declaredMetrics, histogram, host, metricValue, reset, setMaxMetricSeries } from '../testing.js';

beforeEach(reset);

/** Asserts that `f` throws the host's KiwanoError `code` `msg`. */
function refused(f, code, msg) {
  assert.throws(f, (e) => {
    assert.ok(e instanceof KiwanoError, String(e));
    assert.deepEqual([e.code, e.msg], [code, msg]);
    return true;
  });
}

const hits = metrics.counter('hits', { help: 'Hits by color', labels: ['color'] });
const plain = metrics.counter('plain_total', { help: 'No labels' });
const moves = metrics.counter('moves', { help: 'Moves', labels: ['piece', 'color'] });
const level = metrics.gauge('level', { help: 'Level' });
const rooms = metrics.gauge('rooms', { help: 'Rooms by mode', labelNames: ['mode'] });
const size = metrics.histogram('size', { help: 'Sizes', labels: ['kind'], buckets: [1, 10, 100] });
const latency = metrics.histogram('latency_seconds', { help: 'Latency' });

test('a counter: labels as an object, by position, or none', () => {
  assert.equal(hits.inc({ color: 'red' }), undefined);
  hits.inc({ color: 'red' }, 2);
  assert.equal(hits.labels('blue').inc(0.5), undefined);
  hits.labels({ color: 'blue' }).inc();
  hits.labels('red').inc();
  assert.equal(metricValue('hits', ['red']), 4);
  assert.equal(metricValue('hits', 'blue'), 1.5);
  assert.equal(metricValue('hits', { color: 'blue' }), 1.5);
  assert.equal(metricValue('hits', ['green']), undefined);
  assert.equal(metricValue('nothing'), undefined);
  plain.inc();
  plain.inc(4);
  plain.inc(undefined, 2);
  assert.equal(metricValue('plain_total'), 7);
  hits.labels(7).inc(); // label values are strings
  assert.equal(metricValue('hits', ['7']), 1);
  assert.deepEqual(
    declaredMetrics().map((m) => [m.name, m.kind, m.labels]),
    [
      ['hits', 'counter', ['color']],
      ['plain_total', 'counter', []],
    ],
  );
  assert.deepEqual(declaredMetrics()[0], { id: 0, name: 'hits', help: 'Hits by color', kind: 'counter', labels: ['color'], buckets: [] });
});

test('labels by name go in declared order; wrong names are a TypeError of the SDK', () => {
  moves.inc({ color: 'white', piece: 'pawn' });
  moves.labels({ color: 'black', piece: 'king' }).inc(3);
  assert.equal(metricValue('moves', ['pawn', 'white']), 1);
  assert.equal(metricValue('moves', { piece: 'king', color: 'black' }), 3);
  assert.throws(() => moves.inc({ piece: 'pawn', colour: 'white' }), TypeError);
  assert.throws(() => moves.labels({ piece: 'pawn' }), TypeError);
  assert.throws(() => metrics.counter('typo', { help: 'h', label: ['a'] }), TypeError);
  assert.throws(() => metrics.counter(1, {}), TypeError);
});

test('a gauge: set, inc, dec', () => {
  level.set(3);
  level.inc();
  level.dec(0.5);
  assert.equal(metricValue('level'), 3.5);
  level.dec(10);
  assert.equal(metricValue('level'), -6.5);
  rooms.inc({ mode: 'duel' }, 2);
  rooms.dec({ mode: 'duel' });
  rooms.labels('team').set(-1);
  rooms.labels('team').inc(3);
  rooms.labels('team').dec();
  rooms.set({ mode: 'solo' }, 9);
  assert.equal(metricValue('rooms', ['duel']), 1);
  assert.equal(metricValue('rooms', ['team']), 1);
  assert.equal(metricValue('rooms', ['solo']), 9);
});

test('a histogram: count and sum', () => {
  assert.equal(size.observe({ kind: 'small' }, 3), undefined);
  size.labels('small').observe(0.5);
  size.labels({ kind: 'big' }).observe(250);
  assert.deepEqual(histogram('size', ['small']), { count: 2, sum: 3.5 });
  assert.deepEqual(histogram('size', 'big'), { count: 1, sum: 250 });
  assert.equal(histogram('size', ['none']), undefined);
  latency.observe(0.02);
  assert.deepEqual(histogram('latency_seconds'), { count: 1, sum: 0.02 });
  assert.deepEqual(
    declaredMetrics().map((m) => [m.name, m.buckets]),
    [
      ['size', [1, 10, 100]],
      ['latency_seconds', []],
    ],
  );
  assert.throws(() => metricValue('size', ['small']), TypeError);
  hits.inc({ color: 'red' });
  assert.throws(() => histogram('hits', ['red']), TypeError);
});

test('the host refuses a recording: its error, unchanged', () => {
  refused(() => hits.inc({ color: 'red' }, -1), 'PIT-400', 'metric "hits": a counter only goes up (add -1)');
  refused(() => hits.labels('red').inc(-0.5), 'PIT-400', 'metric "hits": a counter only goes up (add -0.5)');
  refused(() => hits.labels('red').inc(-1e-7), 'PIT-400', 'metric "hits": a counter only goes up (add -0.0000001)');
  refused(() => hits.inc(), 'PIT-400', 'metric "hits" has labels [color]: 0 values given');
  refused(() => hits.labels('red', 'blue').inc(), 'PIT-400', 'metric "hits" has labels [color]: 2 values given');
  refused(() => hits.inc(['red'], Infinity), 'PIT-400', 'metric "hits": the value must be finite');
  refused(() => hits.labels('x'.repeat(129)).inc(), 'PIT-400', 'metric "hits": a label value of 129 bytes is over 128');
  assert.equal(metricValue('hits', ['red']), undefined);
  refused(() => level.labels('a').set(1), 'PIT-400', 'metric "level" has labels []: 1 values given');
  refused(() => level.set(), 'PIT-400', 'metric "level": the value must be finite');
  refused(() => level.set(NaN), 'PIT-400', 'metric "level": the value must be finite');
  // Op against kind, as the host words it.
  hits.inc({ color: 'red' });
  level.set(1);
  size.observe({ kind: 'a' }, 1);
  const ids = Object.fromEntries(declaredMetrics().map((m) => [m.name, m.id]));
  refused(() => host.metrics.set(ids.hits, ['red'], 1), 'PIT-400', 'metric "hits" is a counter: record it with add');
  refused(() => host.metrics.observe(ids.level, [], 1), 'PIT-400', 'metric "level" is a gauge: record it with add or set');
  refused(() => host.metrics.add(ids.size, ['a'], 1), 'PIT-400', 'metric "size" is a histogram: record it with observe');
  refused(() => host.metrics.add(99, [], 1), 'PIT-400', 'no metric with id 99');
});

test('max_metric_series', () => {
  setMaxMetricSeries(2);
  hits.inc({ color: 'red' });
  hits.inc({ color: 'blue' });
  hits.inc({ color: 'red' }); // not a new series
  refused(
    () => hits.inc({ color: 'green' }),
    'PIT-500',
    'metric series limit reached: server type test records at most 2 series (servers.test.max_metric_series)',
  );
  // The limit counts the series of every metric.
  refused(() => level.set(1), 'PIT-500', 'metric series limit reached: server type test records at most 2 series (servers.test.max_metric_series)');
});

test('a metric declares itself on first use, once per host', () => {
  assert.deepEqual(declaredMetrics(), []); // defining declares nothing
  const seen = [];
  const m = host.metrics;
  const declare = m.declare;
  m.declare = (spec) => {
    seen.push(spec.name);
    return declare(spec);
  };
  hits.inc({ color: 'red' });
  hits.labels('blue').inc();
  assert.deepEqual(seen, ['hits']); // the id is kept
  reset(); // a new host: declared again on the next use
  hits.inc({ color: 'red' });
  assert.deepEqual(declaredMetrics().map((m) => m.name), ['hits']);
  assert.equal(metricValue('hits', ['red']), 1);
});

test('init declares every metric defined so far, before the hook', () => {
  const seen = [];
  const server = new Server().onInit(() => {
    seen.push(declaredMetrics().map((m) => m.name));
  });
  server.init({ config: '{}' });
  assert.deepEqual(seen, [['hits', 'plain_total', 'moves', 'level', 'rooms', 'size', 'latency_seconds']]);
  hits.inc({ color: 'red' }); // declared already
  assert.equal(declaredMetrics().length, 7);
  reset();
  assert.deepEqual(server.guest().init({ config: '{}' }), { tag: 'ok', val: undefined });
  assert.equal(seen.length, 2);
});

test('reset clears metrics', () => {
  level.set(1);
  reset();
  assert.deepEqual([declaredMetrics(), metricValue('level')], [[], undefined]);
});
