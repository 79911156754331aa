#!/usr/bin/env node
// Runs the CLI from its TypeScript sources: no build step, `npx mayfly` works in a fresh clone.
import { register } from 'tsx/esm/api';

// tsconfig: false keeps tsx from picking up the tsconfig.json of whatever directory the user is in.
register({ tsconfig: false });
await import('../src/main.ts');
