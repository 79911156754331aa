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
  const out = (stream: OutputStream) => outputOf(events, stream);
  const end = events.at(-1) as Extract<ProcessEvent, { type: 'end' }>;
  return { status: 200, events, stdout: out('stdout'), stderr: out('stderr'), pty: out('pty'), end };
}

/**
 * Starts a command through the API and reads its first event: its pid, a way to type into its
 * stdin, and the rest of its events once it ends.
 */
export async function startInSandbox(t: TestServer, id: string, body: Record<string, unknown>) {
  const res = await fetch(`${t.server.url}/v1/sandboxes/${id}/processes`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`start answered ${res.status}: ${await res.text()}`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  while (!text.includes('\n')) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  const { pid } = JSON.parse(text.slice(0, text.indexOf('\n'))) as { pid: number };
  return {
    pid,
    type: (input: string, options: { close?: boolean } = {}) =>
      fetch(`${t.server.url}/v1/sandboxes/${id}/processes/${pid}/stdin${options.close ? '?close=1' : ''}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' },
        body: input,
      }),
    rest: async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      const events = text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as ProcessEvent);
      return { events, output: (stream: OutputStream) => outputOf(events, stream) };
    },
  };
}

type OutputStream = 'stdout' | 'stderr' | 'pty';

function outputOf(events: ProcessEvent[], stream: OutputStream): string {
  return events
    .flatMap((e) => (e.type === stream ? [Buffer.from(e.data, 'base64')] : []))
    .reduce((a, b) => Buffer.concat([a, b]), Buffer.alloc(0))
    .toString();
}

export const containerExists = (id: string) =>
  execFileSync('docker', ['ps', '-aq', '--filter', `name=^mayfly-sbx-${id}$`], {
    encoding: 'utf8',
  }).trim() !== '';
