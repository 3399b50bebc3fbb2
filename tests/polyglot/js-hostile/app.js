// A hostile JavaScript guest (tests/tests/hostile.rs), written with the Kiwano JavaScript SDK:
// each route misbehaves in one way; `hostile.echo` behaves.
import { Server, users } from '../../../guest-sdk/js/kiwano.js';

export const server = new Server()
  .request('hostile.echo', (ctx, body) => body, { raw: true })
  .request('hostile.loop', () => {
    for (;;) {
      // never returns
    }
  })
  .request('hostile.bomb', () => {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(8 << 20).fill(1));
  })
  .request('hostile.recurse', () => {
    const down = (n) => down(n + 1) + 1;
    return down(0);
  })
  .request('hostile.flood', (ctx) => {
    for (let i = 0; i < 1_000_000; i++) users.push('onFlood', { i }, [ctx.uid ?? 'nobody']);
    return { done: true };
  })
  .request('hostile.huge', () => 'x'.repeat(4 << 20));

export const guest = server.guest();
