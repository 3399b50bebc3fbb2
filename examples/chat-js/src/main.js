// Pitaya's chat demo in JavaScript: the room of examples/chat (Rust), byte for byte the same for
// a client.
//
// - `room.join` (request): binds the session id as uid, pushes `onMembers` `{"members":[...]}`
//   (the members before the joiner) to the joiner, broadcasts `onNewUser`
//   `{"content":"New user: <uid>"}` to the group `room`, adds the joiner and answers
//   `{"code":0,"result":"success"}`; a failed bind answers `RH-000` with `{"failed":"bind"}`.
// - `room.message` (notify `{"name","content"}`): broadcast as `onMessage` to the group.
// - A member leaves the group when its session closes.
//
// Build: `node ../../guest-sdk/js/componentize.mjs src/main.js ../../target/polyglot/chat-js.wasm`
// (`kiwano run examples/chat-js` does it for you). Test: `node --test test/`.
import { KiwanoError, Server, groups } from '../../../guest-sdk/js/kiwano.js';

const ROOM = 'room';

// What the Rust guest's `UserMessage { name: String, content: String }` accepts: an object with
// two strings (other fields ignored), or serde's sequence form `[name, content]`. The fields are
// written back in that order, whatever the client's order.
function userMessage(body) {
  if (Array.isArray(body)) {
    if (body.length !== 2 || typeof body[0] !== 'string' || typeof body[1] !== 'string') {
      throw KiwanoError.badRequest('invalid JSON: expected [name, content]');
    }
    return { name: body[0], content: body[1] };
  }
  if (body === null || typeof body !== 'object') {
    throw KiwanoError.badRequest('invalid JSON: expected struct UserMessage');
  }
  for (const field of ['name', 'content']) {
    if (!Object.hasOwn(body, field)) throw KiwanoError.badRequest(`invalid JSON: missing field \`${field}\``);
    if (typeof body[field] !== 'string') throw KiwanoError.badRequest(`invalid JSON: \`${field}\` is not a string`);
  }
  return { name: body.name, content: body.content };
}

export const server = new Server()
  .request('room.join', (ctx, _body) => {
    const uid = String(ctx.sessionId);
    try {
      ctx.bind(uid);
    } catch (e) {
      if (!(e instanceof KiwanoError)) throw e;
      throw new KiwanoError('RH-000', e.msg, { failed: 'bind' });
    }
    const members = groups.members(ROOM);
    ctx.push('onMembers', { members });
    groups.broadcast(ROOM, 'onNewUser', { content: `New user: ${uid}` });
    groups.add(ROOM, uid);
    return { code: 0, result: 'success' };
  })
  .notify('room.message', (_ctx, body) => {
    groups.broadcast(ROOM, 'onMessage', userMessage(body));
  })
  .onSessionClose((ctx) => {
    // Not if a newer session holds the uid now: it joined on its own.
    const uid = ctx.leavingUid;
    if (uid === undefined) return;
    try {
      groups.remove(ROOM, uid);
    } catch {
      // not a member: it never joined
    }
  })
  .onInit(() => {
    // Every instance creates it; the first one wins.
    try {
      groups.create(ROOM);
    } catch {
      // already there
    }
  });

export const guest = server.guest();
