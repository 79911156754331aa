/**
 * The sandbox seam's conformance suite: what every sandbox driver does with Mayfly's agent in it —
 * commands, stdin, files, tunnels, containment, pause, removal, pids — run by each driver's test
 * (Docker under runc and gVisor; Kubernetes on the test cluster).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { type AgentChannel, AgentError } from './agent-channel.js';
import type { Isolation, SandboxRuntime, SandboxSpec } from './sandbox-runtime.js';

export interface SandboxConformance {
  runtime: SandboxRuntime;
  isolation: Isolation;
  /**
   * The sandbox has no network interface but loopback (Docker's `none`). Where it has one (a pod),
   * the driver's own tests show what shuts it.
   */
  loopbackOnly: boolean;
  /** How long the agent may take to answer after `create`; default 10 s. */
  agentTimeoutMs?: number;
}

interface ProcessEvent {
  type: 'start' | 'stdout' | 'stderr' | 'end';
  pid?: number;
  data?: string;
  exitCode?: number;
  signal?: string;
  timedOut?: boolean;
}

async function events(response: http.IncomingMessage): Promise<ProcessEvent[]> {
  let text = '';
  for await (const chunk of response) text += chunk.toString();
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as ProcessEvent);
}
const output = (list: ProcessEvent[], stream: 'stdout' | 'stderr') =>
  list
    .filter((e) => e.type === stream)
    .map((e) => Buffer.from(e.data ?? '', 'base64').toString())
    .join('');

export function sandboxRuntimeConformance(name: string, setup: () => SandboxConformance): void {
  // Every sandbox behaviour under both isolation classes (the test setup registers gVisor's runsc).
  describe(`Sandbox conformance: ${name}`, () => {
    const { runtime, isolation, loopbackOnly, agentTimeoutMs = 10_000 } = setup();
    const root = mkdtempSync(path.join(os.tmpdir(), 'mayfly-sbx-'));
    const channels: AgentChannel[] = [];
    const ids: string[] = [];

    const spec = (id: string): SandboxSpec => {
      const agentDir = path.join(root, id);
      return {
        id,
        image: TESTKIT_IMAGE,
        user: '1000:1000',
        home: '/home/user',
        env: { GREETING: 'hello' },
        memoryBytes: 128 * 1024 * 1024,
        pids: 64,
        diskBytes: 16 * 1024 * 1024,
        readOnlyRoot: true,
        isolation,
        agentDir,
        labels: {},
      };
    };
    const start = async (id: string) => {
      const s = spec(id);
      const channel = await runtime.openChannel(id, s.agentDir);
      channels.push(channel);
      ids.push(id);
      await runtime.create(s);
      await channel.ready(agentTimeoutMs);
      return channel;
    };
    const run = async (channel: AgentChannel, body: Record<string, unknown>) =>
      events(
        await channel.open('POST', '/v1/processes', {
          body: Buffer.from(JSON.stringify(body)),
          headers: { 'content-type': 'application/json' },
        }),
      );

    let sbx: AgentChannel;
    const id = `t${randomBytes(6).toString('hex')}`;
    beforeAll(async () => {
      expect((await runtime.isolations()).available).toContain(isolation);
      sbx = await start(id);
    }, 180_000);
    afterAll(async () => {
      await Promise.allSettled(ids.map((i) => runtime.remove(i)));
      await Promise.allSettled(channels.map((c) => c.close()));
      rmSync(root, { recursive: true, force: true });
    });

    it('runs a command: exit code, stdout and stderr apart, the sandbox’s environment', async () => {
      const list = await run(sbx, {
        cmd: ['sh', '-c', 'echo "$GREETING $EXTRA"; echo oops >&2; exit 3'],
        envs: { EXTRA: 'there' },
      });
      expect(list[0]).toMatchObject({ type: 'start' });
      expect(output(list, 'stdout')).toBe('hello there\n');
      expect(output(list, 'stderr')).toBe('oops\n');
      expect(list.at(-1)).toMatchObject({ type: 'end', exitCode: 3 });
    });

    it('passes stdin, and kills a command at its timeout', async () => {
      const cat = await sbx.open('POST', '/v1/processes', {
        body: Buffer.from(JSON.stringify({ cmd: ['cat'], stdin: true })),
      });
      const catEvents = events(cat);
      // The pid comes first; the stdin call needs it.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const { processes } = await sbx.json<{ processes: { pid: number; cmd: string[] }[] }>(
        'GET',
        '/v1/processes',
      );
      const pid = processes.find((p) => p.cmd[0] === 'cat')!.pid;
      await sbx.open('POST', `/v1/processes/${pid}/stdin?close=1`, { body: Buffer.from('piped\n') });
      const catList = await catEvents;
      expect(output(catList, 'stdout')).toBe('piped\n');
      expect(catList.at(-1)).toMatchObject({ type: 'end', exitCode: 0 });

      const slow = await run(sbx, { cmd: ['sleep', '100'], timeoutMs: 300 });
      expect(slow.at(-1)).toMatchObject({ type: 'end', signal: 'SIGKILL', timedOut: true });
    });

    it('a command that does not exist, or a user it is not, is refused with a reason', async () => {
      await expect(run(sbx, { cmd: ['no-such-command'] })).rejects.toThrow(/command not found/);
      await expect(run(sbx, { cmd: ['id'], user: 'root' })).rejects.toBeInstanceOf(AgentError);
    });

    it('files: 1 MiB of random bytes round-trip; list, rename, remove; a missing one is 404', async () => {
      const bytes = randomBytes(1024 * 1024);
      await sbx.open('PUT', '/v1/files?path=data/blob.bin', { body: bytes });
      const read = await sbx.open('GET', '/v1/files?path=/home/user/data/blob.bin');
      const chunks: Buffer[] = [];
      for await (const chunk of read) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
      const { entries } = await sbx.json<{ entries: { name: string; type: string; size: number }[] }>(
        'GET',
        '/v1/files/list?path=data',
      );
      expect(entries).toEqual([
        expect.objectContaining({ name: 'blob.bin', type: 'file', size: bytes.length }),
      ]);
      await sbx.json('POST', '/v1/files/rename?path=data/blob.bin&to=data/moved.bin');
      await sbx.open('DELETE', '/v1/files?path=data/moved.bin');
      await expect(sbx.json('GET', '/v1/files/stat?path=data/moved.bin')).rejects.toMatchObject({
        status: 404,
      });
    });

    it('is contained: no network but loopback, no capabilities, not root, the image read-only, the disk bounded', async () => {
      const probe = await run(sbx, {
        cmd: [
          'sh',
          '-c',
          'echo interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1); grep CapEff /proc/self/status; id -u; touch /usr/x 2>&1; grep " / " /proc/mounts; head -c 20000000 /dev/zero 2>&1 >/tmp/fill; echo fill=$?; rm -f /tmp/fill',
        ],
      });
      const text = output(probe, 'stdout');
      if (loopbackOnly) expect(text.split('\n')[0]).toBe('interfaces: lo');
      expect(text).toMatch(/CapEff:\s+0000000000000000/);
      expect(text).toMatch(/^1000$/m);
      // runc says the file system is read-only; gVisor checks the permission first. Either way: mounted ro.
      expect(text).toMatch(/cannot touch '\/usr\/x': (Read-only file system|Permission denied)/);
      expect(text).toMatch(/^\S+ \/ \S+ ro[, ]/m);
      expect(text).toMatch(/No space left on device/);
      expect(text).toMatch(/fill=1/);
    });

    it('reaches a server inside through the agent, with no network', async () => {
      await sbx.open('POST', '/v1/processes', {
        body: Buffer.from(JSON.stringify({ cmd: ['testkit', 'http', '--port', '8080', '--text', 'inside'] })),
      });
      let socket: Awaited<ReturnType<AgentChannel['tunnel']>> | undefined;
      for (let i = 0; i < 50 && !socket; i++) {
        socket = await sbx.tunnel(8080).catch(() => undefined);
        if (!socket) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      socket!.write('GET / HTTP/1.0\r\nHost: x\r\n\r\n');
      let answer = '';
      for await (const chunk of socket!) answer += chunk.toString();
      expect(answer).toMatch(/^HTTP\/1\.[01] 200/);
      expect(answer).toMatch(/inside/);
      await expect(sbx.tunnel(9)).rejects.toMatchObject({ code: 'port_closed' });
    });

    it('pause freezes the processes and keeps their memory; resume goes on where they were', async () => {
      // A loop that counts and notes the time of every round (seconds since boot, 1/100 s).
      const counter = sbx.open('POST', '/v1/processes', {
        body: Buffer.from(
          JSON.stringify({
            cmd: [
              'sh',
              '-c',
              'i=0; while true; do i=$((i+1)); echo $i > /tmp/n; mv /tmp/n /tmp/count; cut -d" " -f1 /proc/uptime >> /tmp/ticks; sleep 0.05; done',
            ],
          }),
        ),
      });
      counter.catch(() => {});
      const read = async (file: string) =>
        output(await run(sbx, { cmd: ['sh', '-c', `cat ${file} 2>/dev/null || echo 0`] }), 'stdout').trim();
      // Counting before it is paused (a process can take a while to start on a busy node).
      let beforePause = 0;
      for (let i = 0; i < 100 && beforePause < 3; i++) {
        beforePause = Number(await read('/tmp/count'));
        if (beforePause < 3) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(beforePause).toBeGreaterThanOrEqual(3);
      await runtime.pause(id);
      expect((await runtime.observe(id)).state).toBe('paused');
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await runtime.resume(id);
      const afterResume = Number(await read('/tmp/count'));
      // It went on from its own count: it did not restart.
      expect(afterResume).toBeGreaterThanOrEqual(beforePause);
      // And goes on counting.
      let later = afterResume;
      for (let i = 0; i < 50 && later <= afterResume; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        later = Number(await read('/tmp/count'));
      }
      expect(later).toBeGreaterThan(afterResume);
      // And it stood still while frozen: one gap of most of the 2 s between two rounds, however
      // long pausing and resuming took.
      const ticks = (await read('/tmp/ticks')).split('\n').map(Number);
      const gaps = ticks.slice(1).map((t, i) => t - ticks[i]!);
      expect(Math.max(...gaps)).toBeGreaterThanOrEqual(1.5);
    });

    it('remove leaves nothing; observe says missing', { timeout: 120_000 }, async () => {
      const other = `t${randomBytes(6).toString('hex')}`;
      await start(other);
      expect((await runtime.list()).map((s) => s.id)).toContain(other);
      await runtime.remove(other);
      expect((await runtime.observe(other)).state).toBe('missing');
      expect((await runtime.list()).map((s) => s.id)).not.toContain(other);
    });

    it('runs in the kernel its isolation says; its processes fit its pids limit', async () => {
      const kernel = output(await run(sbx, { cmd: ['sh', '-c', 'dmesg 2>&1 | head -1'] }), 'stdout');
      if (isolation === 'gvisor') expect(kernel).toMatch(/Starting gVisor/);
      else expect(kernel).not.toMatch(/gVisor/);
      // 50 processes at once under a limit of 64 (gVisor's own host threads are not counted in it).
      const many = await run(sbx, {
        cmd: [
          'sh',
          '-c',
          'i=0; while [ $i -lt 50 ]; do sleep 5 & i=$((i+1)); done; echo started; kill $(jobs -p)',
        ],
      });
      expect(output(many, 'stdout')).toBe('started\n');
    });
  });
}
