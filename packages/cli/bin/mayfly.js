#!/usr/bin/env node
// Runs the CLI bundled in ../dist (scripts/build.mjs; `npm install` builds it as `prepare`, and
// scripts/setup.sh and the tests' global setup rebuild it when a source is newer). A clone where
// nothing was built yet, or MAYFLY_FROM_SOURCE=1, runs it from the TypeScript sources through tsx
// instead: the same CLI, about a second slower to start.
import { existsSync } from 'node:fs';

const bundle = new URL('../dist/main.js', import.meta.url);

if (process.env.MAYFLY_FROM_SOURCE !== '1' && existsSync(bundle)) {
  // Stack traces that point into the TypeScript sources, where someone will read them: the
  // server's logs, and MAYFLY_DEBUG=1. Not for every command: reading the maps costs ~30 ms.
  if (process.env.MAYFLY_DEBUG || process.argv.includes('serve')) process.setSourceMapsEnabled(true);
  await import(bundle.href);
} else {
  const { register } = await import('tsx/esm/api');
  // tsconfig: false keeps tsx from picking up the tsconfig.json of whatever directory the user is in.
  register({ tsconfig: false });
  await import('../src/main.ts');
}
