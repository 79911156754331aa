/**
 * Sandboxes in tests: a command run through the API, a terminal socket, and whether a sandbox's
 * container exists.
 */
import { execFileSync } from 'node:child_process';
import type { ProcessEvent } from '@mayfly/contract';
import WebSocket from 'ws';
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

/** A terminal socket as a client sees it: what it showed, its end, and ways to type and resize. */
export interface TerminalClient {
  ws: WebSocket;
  /** Everything the terminal showed so far. */
  shown(): string;
  /** Waits until what it showed matches `pattern`. */
  waitFor(pattern: RegExp): Promise<string>;
  type(keys: string): void;
  /** Text messages the server sent (the exit or an error). */
  messages: unknown[];
  closed: Promise<{ code: number; reason: string }>;
}

/**
 * Asks for a ticket with `token` and opens the terminal with it; the handshake's refusal (its
 * status and body) when the server refuses.
 */
export async function openTerminal(
  t: TestServer,
  id: string,
  options: { token?: string; origin?: string; protocols?: (ticket: string) => string[]; path?: string } = {},
): Promise<TerminalClient | { refused: number; body: string }> {
  const issued = await t.api<{ ticket: string; protocols: string[]; url: string }>(
    'POST',
    `/v1/sandboxes/${id}/terminal`,
    undefined,
    options.token,
  );
  if (issued.status !== 201) return { refused: issued.status, body: JSON.stringify(issued.body) };
  return connectTerminal(
    t,
    options.path ?? issued.body.url,
    options.protocols?.(issued.body.ticket) ?? issued.body.protocols,
    options.origin,
  );
}

/** Opens a terminal socket at `path` (with its query) offering `protocols`. */
export function connectTerminal(
  t: TestServer,
  path: string,
  protocols: string[],
  origin = t.server.url,
): Promise<TerminalClient | { refused: number; body: string }> {
  const ws = new WebSocket(`${t.server.url.replace(/^http/, 'ws')}${path}`, protocols, { origin });
  let output = '';
  const messages: unknown[] = [];
  const listeners = new Set<() => void>();
  ws.on('message', (data, isBinary) => {
    if (isBinary) output += (data as Buffer).toString();
    else messages.push(JSON.parse(data.toString()));
    for (const listener of listeners) listener();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.on('end', () => resolve({ refused: res.statusCode ?? 0, body }));
    });
    ws.once('error', reject);
    ws.once('open', () =>
      resolve({
        ws,
        shown: () => output,
        messages,
        closed,
        type: (keys) => ws.send(Buffer.from(keys), { binary: true }),
        waitFor: (pattern) =>
          new Promise((found, failed) => {
            const check = () => {
              if (pattern.test(output)) {
                listeners.delete(check);
                clearTimeout(timer);
                found(output);
              }
            };
            const timer = setTimeout(() => {
              listeners.delete(check);
              failed(
                new Error(
                  `the terminal never showed ${pattern}; it showed ${JSON.stringify(output.slice(-500))}`,
                ),
              );
            }, 30_000);
            listeners.add(check);
            check();
          }),
      }),
    );
  });
}
