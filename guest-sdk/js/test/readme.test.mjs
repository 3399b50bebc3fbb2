// The examples of README.md run as written: the first `js` block is the server, the block that
// starts with `// test/` is its test.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const sdk = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(sdk, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
const server = blocks[0];
const testBlock = blocks.find((b) => b.startsWith('// test/'));

const dir = mkdtempSync(join(tmpdir(), 'kiwano-readme-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const sdkUrl = (file) => pathToFileURL(join(sdk, file)).href;
const fix = (code) =>
  code
    .replaceAll('../../../guest-sdk/js/kiwano.js', sdkUrl('kiwano.js'))
    .replaceAll('../../../guest-sdk/js/testing.js', sdkUrl('testing.js'))
    .replaceAll('../src/main.js', pathToFileURL(join(dir, 'main.mjs')).href);
writeFileSync(join(dir, 'main.mjs'), fix(server));
writeFileSync(join(dir, 'room.test.mjs'), fix(testBlock));
await import(pathToFileURL(join(dir, 'room.test.mjs')).href);
