// Kiwano's JavaScript echo guest: the polyglot wire test's component (tests/tests/polyglot.rs).
//
// Built with `node guest-sdk/js/componentize.mjs tests/polyglot/js-echo/echo.js out.wasm`.
import { log } from 'kiwano:server/log@0.1.2';

const encoder = new TextEncoder();

function notFound(route) {
  return { code: 'PIT-404', msg: `unknown route ${route}`, metadata: [] };
}

export const guest = {
  describe() {
    return {
      handlers: [
        { route: 'echo.echo', kind: 'request' },
        { route: 'echo.fail', kind: 'request' },
        { route: 'echo.who', kind: 'request' },
        { route: 'echo.note', kind: 'notify' },
      ],
      remotes: [],
      // No preference (option none): the server's configuration decides.
      affinity: undefined,
    };
  },

  init(_info) {},

  shutdown() {},

  // `ctx` is the borrowed call-context resource; `body` a Uint8Array. Throwing a plain
  // { code, msg, metadata } object returns the `error` case of the result.
  handle(ctx, route, body) {
    switch (route) {
      case 'echo.echo':
        return body;
      case 'echo.fail':
        throw {
          code: 'JS-001',
          msg: `javascript refuses session ${ctx.sessionId()}`,
          metadata: [
            ['lang', 'javascript'],
            ['route', route],
          ],
        };
      case 'echo.who':
        return encoder.encode(ctx.remoteAddress());
      case 'echo.note':
        return new Uint8Array(0);
      default:
        throw notFound(route);
    }
  },

  remote(route, _body) {
    throw notFound(route);
  },

  onSessionClose(ctx) {
    log('debug', 'session closed', [['session', `${ctx.sessionId()}`]]);
  },

  onTimer(_id, _payload) {},
};
