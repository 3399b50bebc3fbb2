#!/usr/bin/env node
// Builds a Kiwano guest written in JavaScript into a WebAssembly component for the world
// `kiwano:server/server` (wit/ at the repository root), with componentize-js's API.
//
//   node guest-sdk/js/componentize.mjs <source.js> <out.wasm>
//
// Needs `npm ci` in guest-sdk/js (deploy/setup.sh runs it).
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node componentize.mjs <source.js> <out.wasm>');
  process.exit(2);
}
const witPath = resolve(dirname(fileURLToPath(import.meta.url)), '../../wit');
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath,
  worldName: 'server',
  // The host provides WASI p2 (stdio, clocks, random) but not wasi:http.
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(resolve(out), component);
console.log(`built ${out} (${component.length} bytes)`);
