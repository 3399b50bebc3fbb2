// The conformance server in JavaScript (tests/conformance/README.md): the routes and remotes of
// its tables, written with the Kiwano JavaScript SDK, answering byte for byte as the Rust build
// does.
//
// Build: `node ../../../guest-sdk/js/componentize.mjs src/main.js <out.wasm>` from
// tests/conformance/js (`kiwano run tests/conformance/js` does it for you). Test: `node --test test/`.
import { KiwanoError, Server, groups, metrics, rpc, timers, users } from '../../../../guest-sdk/js/kiwano.js';

const LOBBY = 'lobby';

const hits = metrics.counter('conf_hits', { help: 'Hits by color', labels: ['color'] });
const level = metrics.gauge('conf_level', { help: 'Level' });
const size = metrics.histogram('conf_size', { help: 'Sizes', labels: ['kind'], buckets: [1, 10, 100] });

/** `conf.metric`: the label values go as given (the host checks their number). */
function recordMetric(body) {
  const { metric, labels, value } = body;
  if (metric === 'hits') hits.labels(...labels).inc(value);
  else if (metric === 'level') level.labels(...labels).set(value);
  else if (metric === 'size') size.labels(...labels).observe(value);
  else throw KiwanoError.badRequest(`no metric ${metric}`);
  return { recorded: metric };
}

/** The session's uid; `CF-002` when it has none. */
function boundUid(ctx) {
  const uid = ctx.uid;
  if (uid === undefined) throw new KiwanoError('CF-002', 'bind first');
  return uid;
}

export const server = new Server()
  .request('conf.echo', (_ctx, body) => ({ echo: body }))
  .request('conf.fail', () => {
    throw new KiwanoError('CF-001', 'conformance failure', { route: 'conf.fail', kind: 'custom' });
  })
  .request('conf.bind', (ctx, body) => {
    ctx.bind(body.uid);
    return { uid: body.uid };
  })
  .request('conf.set', (ctx, body) => {
    ctx.set(body.key, body.value);
    return { data: ctx.data() };
  })
  .request('conf.get', (ctx, body) => ({ key: body.key, value: ctx.get(body.key) ?? null }))
  .request('conf.push', (ctx, body) => {
    ctx.push(body.route, body.body);
    return { pushed: body.route };
  })
  .notify('conf.note', (ctx, body) => {
    ctx.push('onNote', { text: body.text });
  })
  .request('conf.kick', (ctx) => {
    ctx.kick();
    return { kicked: true };
  })
  .request('conf.join', (ctx, body) => {
    const uid = boundUid(ctx);
    const group = body.group;
    try {
      groups.create(group);
    } catch (e) {
      if (!(e instanceof KiwanoError) || e.msg !== 'group already exists') throw e;
    }
    groups.add(group, uid);
    const members = groups.members(group);
    groups.broadcast(group, 'onJoin', { uid, members });
    return { group, members, count: groups.count(group) };
  })
  .request('conf.leave', (ctx, body) => {
    const uid = boundUid(ctx);
    const group = body.group;
    groups.remove(group, uid);
    return { group, contains: groups.contains(group, uid) };
  })
  .request('conf.members', (_ctx, body) => ({ members: groups.members(body.group) }))
  .request('conf.users', (_ctx, body) => ({ missed: users.push(body.route, body.body, body.uids) }))
  .request('conf.kickusers', (_ctx, body) => ({ missed: users.kick(body.uids) }))
  .request('conf.rpc', (_ctx, body) => ({ remote: rpc.call('confback.remote.add', { a: body.a, b: body.b }) }))
  .request('conf.rpcfail', () => rpc.call('confback.remote.fail', {}))
  .request('conf.timer', (ctx, body) => {
    const uid = boundUid(ctx);
    timers.after(body.ms, { uid, tag: body.tag });
    return { timer: 'set' };
  })
  .request('conf.handshake', (ctx) => ({ platform: ctx.handshake.sys.platform, user: ctx.handshake.user }))
  .request('conf.metric', (_ctx, body) => recordMetric(body))
  .remote('remote.add', (body) => ({ sum: body.a + body.b }))
  .remote('remote.fail', () => {
    throw new KiwanoError('CF-003', 'remote refused', { side: 'remote' });
  })
  .onTimer((_id, payload) => {
    users.push('onTimer', { tag: payload.tag }, [payload.uid]);
  })
  .onSessionClose((ctx) => {
    // A KiwanoError here (say, no group `lobby`) is logged by the SDK.
    const uid = ctx.leavingUid;
    if (uid !== undefined && groups.contains(LOBBY, uid)) {
      groups.remove(LOBBY, uid);
      groups.broadcast(LOBBY, 'onLeave', { uid });
    }
  });

export const guest = server.guest();
