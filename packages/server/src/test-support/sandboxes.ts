/** Sandboxes in tests: a command run through the API, and whether a sandbox's container exists. */
import { execFileSync } from 'node:child_process';
import type { ProcessEvent } from '@mayfly/contract';
import type { TestServer } from './test-server.js';

/** Runs a command through the API and collects its events. */
export async function runInSandbox(t: TestServer, id: string, body: Record<string, unknown>) {
  const res = await fetch(`${t.server.url}/v1/sandboxes/${id}/processes`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 200)
    return {
      status: res.status,
      error: JSON.parse(text) as { error: { code: string; message: string } },
      events: [],
    };
  const events = text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as ProcessEvent);
  const out = (stream: 'stdout' | 'stderr') =>
    events
      .flatMap((e) => (e.type === stream ? [Buffer.from(e.data, 'base64')] : []))
      .reduce((a, b) => Buffer.concat([a, b]), Buffer.alloc(0))
      .toString();
  const end = events.at(-1) as Extract<ProcessEvent, { type: 'end' }>;
  return { status: 200, events, stdout: out('stdout'), stderr: out('stderr'), end };
}

export const containerExists = (id: string) =>
  execFileSync('docker', ['ps', '-aq', '--filter', `name=^mayfly-sbx-${id}$`], {
    encoding: 'utf8',
  }).trim() !== '';
