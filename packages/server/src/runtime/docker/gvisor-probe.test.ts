/**
 * The gVisor probe leaves no container behind, even when the process running it is killed: the
 * server runs it in the background at every start, and a crash test (or a real crash) may land
 * while it runs.
 */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { requiredAgentBinary, testInstanceName } from '../../test-support/global-setup.js';
import { until } from '../../test-support/until.js';
import { LABELS, MANAGED_BY } from '../runtime.js';
import { gvisorProblem, PROBE_IMAGE, PROBE_LABEL } from './gvisor-probe.js';

const docker = new Docker();
const probeModule = fileURLToPath(new URL('./gvisor-probe.ts', import.meta.url));

/** This installation's probe containers, as `id state`. */
const probeContainers = (instance: string) =>
  execFileSync(
    'docker',
    [
      'ps',
      '-a',
      '--filter',
      `label=${PROBE_LABEL}`,
      '--filter',
      `label=${LABELS.instance}=${instance}`,
      '--format',
      '{{.ID}} {{.State}}',
    ],
    { encoding: 'utf8' },
  )
    .split('\n')
    .filter(Boolean);

describe('the gVisor probe', () => {
  it('answers and removes its container', async () => {
    const instance = `${testInstanceName()}-probe-ok`;
    expect(
      await gvisorProblem(docker, { instance, agentBinary: requiredAgentBinary(), runtime: 'runsc' }),
    ).toBe(null);
    expect(probeContainers(instance)).toEqual([]);
  });

  it('leaves nothing when its process is killed once the probe container started', async () => {
    const instance = `${testInstanceName()}-probe-killed`;
    // The Engine's start event of this installation's probe: the moment to kill the process.
    const events = (await docker.getEvents({
      filters: { type: ['container'], event: ['start'], label: [`${LABELS.instance}=${instance}`] },
    })) as NodeJS.ReadableStream & { destroy(): void };
    const started = new Promise<void>((resolve) => events.once('data', () => resolve()));
    const script = `
      import Docker from 'dockerode';
      import { gvisorProblem } from ${JSON.stringify(probeModule)};
      await gvisorProblem(new Docker(), ${JSON.stringify({ instance, agentBinary: requiredAgentBinary(), runtime: 'runsc' })});
      process.stdout.write('finished');
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await started;
      child.kill('SIGKILL');
      await exited;
      // Killed before it could see the probe end (and remove it itself).
      expect(out).toBe('');
    } finally {
      events.destroy();
      child.kill('SIGKILL');
    }
    await until('the probe container to be removed by the Engine', () =>
      probeContainers(instance).length === 0 ? true : undefined,
    );
  });

  it('removes a dead process’s probe container that never started', async () => {
    const instance = `${testInstanceName()}-probe-stale`;
    // What a process killed between create and start leaves: a created, never started container.
    await docker.createContainer({
      Image: PROBE_IMAGE,
      Entrypoint: ['/mayfly-agent'],
      Labels: { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: instance, [PROBE_LABEL]: 'gvisor' },
    });
    expect(probeContainers(instance)).toEqual([expect.stringMatching(/ created$/)]);
    expect(
      await gvisorProblem(docker, {
        instance,
        agentBinary: requiredAgentBinary(),
        runtime: 'runsc',
        staleAfterMs: 0,
      }),
    ).toBe(null);
    expect(probeContainers(instance)).toEqual([]);
  });
});
