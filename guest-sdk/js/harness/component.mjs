// Builds JavaScript guests with componentize.mjs and loads components under Node with jco
// (transpiled, their `kiwano:server/*` imports served by testing.js through jco-host.mjs).
// Components are cached in guest-sdk/js/node_modules/.cache/kiwano-js-test/ and rebuilt when
// older than their inputs; the transpiled JavaScript is written there on every load.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const sdk = resolve(here, '..');
export const repo = resolve(sdk, '../..');
export const cache = join(sdk, 'node_modules', '.cache', 'kiwano-js-test');

/** Whether componentize-js and jco are installed (`npm ci` in guest-sdk/js). */
export const toolsInstalled =
  existsSync(join(sdk, 'node_modules/@bytecodealliance/componentize-js')) &&
  existsSync(join(sdk, 'node_modules/@bytecodealliance/jco'));

/** The latest modification time of a file, or of the files under a directory. */
function newest(path) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let t = 0;
  for (const e of readdirSync(path)) t = Math.max(t, newest(join(path, e)));
  return t;
}

/** Builds `source` (a path from the repository root) into `<cache>/<name>.wasm` with
 * componentize.mjs unless it is newer than `inputs` (paths from the repository root). */
export function build(name, source, inputs) {
  const out = join(cache, `${name}.wasm`);
  const deps = [source, ...inputs, 'guest-sdk/js/componentize.mjs', 'wit'].map((p) => join(repo, p));
  if (existsSync(out) && deps.every((d) => newest(d) <= statSync(out).mtimeMs)) return out;
  const started = Date.now();
  const r = spawnSync(process.execPath, [join(sdk, 'componentize.mjs'), join(repo, source), out], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`building ${source} failed:\n${r.stdout}\n${r.stderr}`);
  const size = statSync(out).size;
  console.log(`# built ${name}.wasm: ${size} bytes in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return out;
}

/** Transpiles a component with jco and imports it: returns its `guest` export. */
export async function load(name, wasm) {
  const dir = join(cache, name);
  const { transpile } = await import('@bytecodealliance/jco');
  const host = pathToFileURL(join(here, 'jco-host.mjs')).href;
  const { files } = await transpile(await readFile(wasm), { name, map: { 'kiwano:server/*': `${host}#*` } });
  await rm(dir, { recursive: true, force: true });
  for (const [file, bytes] of Object.entries(files)) {
    await mkdir(dirname(join(dir, file)), { recursive: true });
    await writeFile(join(dir, file), bytes);
  }
  return (await import(pathToFileURL(join(dir, `${name}.js`)).href)).guest;
}
