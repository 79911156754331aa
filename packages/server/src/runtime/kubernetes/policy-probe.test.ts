/**
 * The agent's `probe` verb, which the NetworkPolicy check runs in a pod (the real binary, here on
 * the host): which addresses it reached and its exit code, addresses tried at once, and a variable
 * that was not set refused rather than read as "nothing reached".
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requiredAgentBinary } from '../../test-support/global-setup.js';

const run = async (args: string[], env: Record<string, string> = {}) => {
  try {
    const { stdout } = await promisify(execFile)(requiredAgentBinary(), ['probe', ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    return { code: 0, stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
};

describe('mayfly-agent probe', () => {
  let server: net.Server;
  let open: number;
  let closed: number;
  beforeAll(async () => {
    server = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    open = (server.address() as net.AddressInfo).port;
    const spare = net.createServer();
    await new Promise<void>((resolve) => spare.listen(0, '127.0.0.1', resolve));
    closed = (spare.address() as net.AddressInfo).port;
    await new Promise((resolve) => spare.close(resolve));
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  it('exits 3 naming what it reached, 0 when it reached nothing', async () => {
    const reached = await run([`[\${TARGET}]:${open}`, `[127.0.0.1]:${closed}`], { TARGET: '127.0.0.1' });
    expect(reached.code).toBe(3);
    expect(reached.stdout).toBe(`reached 127.0.0.1:${open}\nnot reached 127.0.0.1:${closed}\n`);
    const none = await run([`127.0.0.1:${closed}`]);
    expect(none).toMatchObject({ code: 0, stdout: `not reached 127.0.0.1:${closed}\n` });
  });

  it('refuses an address whose variable was not set (an empty host or port), instead of reaching nothing', async () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the agent expands them
    for (const addr of ['[${UNSET}]:10250', '[127.0.0.1]:${UNSET}', 'nonsense']) {
      const res = await run([addr]);
      expect(res.code, addr).toBe(2);
      expect(res.stderr, addr).toMatch(/is no host:port/);
    }
  });
});
