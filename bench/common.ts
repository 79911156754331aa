/** What the benchmarks share: timing, medians, and bringing an example up and down through the API. */
import { readFile } from 'node:fs/promises';
import {
  callApi as call,
  type ControlPlane as Plane,
  uploadBundle,
  waitForState,
} from '../packages/server/src/test-support/control-plane-process.js';

export async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export const waitState = (plane: Plane, name: string, states: string[]) =>
  waitForState(plane, name, states, 600_000);

/** As the CLI does it: the template's folder uploaded as a bundle, then the environment created from it. */
export async function mayflyUp(plane: Plane, name: string, dir: string) {
  const bundle = await uploadBundle(plane, dir);
  await call(plane, 'POST', '/v1/environments', {
    name,
    template: { filename: 'compose.yaml', bundle },
  });
  await waitState(plane, name, ['ready']);
}

/** An environment from a template given inline, waited for until ready. */
export async function mayflyUpInline(plane: Plane, name: string, content: string) {
  await call(plane, 'POST', '/v1/environments', { name, template: { filename: 'compose.yaml', content } });
  await waitState(plane, name, ['ready']);
}

export async function mayflyDown(plane: Plane, name: string) {
  await call(plane, 'DELETE', `/v1/environments/${name}`);
  await waitState(plane, name, ['destroyed']);
}

export async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** CPU time (user + system) a process has used so far, in seconds (clock ticks of 1/100 s). */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
