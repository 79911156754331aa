import { describe, expect, test } from 'vitest';
import { readStoredPlan } from './stored-plan.js';

const legacyWorkload = {
  name: 'web',
  kind: 'service',
  image: 'mayfly-build/shop:abc',
  build: { context: '/work/env/web', dockerfile: 'Dockerfile', args: {} },
  env: {},
  ports: [],
  healthcheck: {
    test: ['CMD-SHELL', 'curl -f localhost'],
    intervalMs: 1,
    timeoutMs: 2,
    retries: 3,
    startPeriodMs: 0,
  },
  dependsOn: [],
  mounts: [],
  resources: {},
  replicas: 1,
  restart: 'no',
  specHash: 'h1',
};

describe('plans stored by earlier versions', () => {
  const plan = (workloads: unknown[]) =>
    JSON.stringify({ envId: 'e', envName: 'e', project: 'p', volumes: [], isolation: 'runc', workloads });

  test('a built image string with its build becomes a resolved build, timings and hash kept', () => {
    const [web] = readStoredPlan(plan([legacyWorkload])).workloads;
    expect(web!.image).toEqual({ build: legacyWorkload.build, ref: 'mayfly-build/shop:abc' });
    expect(web!.healthcheck).toEqual({
      command: { shell: 'curl -f localhost' },
      intervalMs: 1,
      timeoutMs: 2,
      retries: 3,
      startPeriodMs: 0,
    });
    expect(web).toMatchObject({
      labels: {},
      files: [],
      aliases: [],
      capDrop: [],
      readOnlyRootFilesystem: false,
      specHash: 'h1',
    });
  });

  test('an unresolved build (empty image) has no ref; a pulled image keeps its ref; CMD and NONE checks', () => {
    const [built, pulled, none] = readStoredPlan(
      plan([
        { ...legacyWorkload, image: '' },
        {
          ...legacyWorkload,
          build: undefined,
          image: 'redis:7',
          healthcheck: { ...legacyWorkload.healthcheck, test: ['CMD', 'redis-cli', 'ping'] },
        },
        {
          ...legacyWorkload,
          build: undefined,
          image: 'x',
          healthcheck: { ...legacyWorkload.healthcheck, test: ['NONE'] },
        },
      ]),
    ).workloads;
    expect(built!.image).toEqual({ build: legacyWorkload.build });
    expect(pulled!.image).toEqual({ ref: 'redis:7' });
    expect(pulled!.healthcheck).toMatchObject({ command: { exec: ['redis-cli', 'ping'] } });
    expect(none!.healthcheck).toBe('disabled');
  });

  test('a current plan reads back unchanged', () => {
    const current = {
      ...legacyWorkload,
      build: undefined,
      image: { ref: 'x' },
      labels: { a: 'b' },
      healthcheck: 'disabled',
    };
    const { build: _none, ...expected } = current;
    expect(readStoredPlan(plan([current])).workloads[0]).toEqual({
      files: [],
      ulimits: [],
      aliases: [],
      extraHosts: [],
      capDrop: [],
      readOnlyRootFilesystem: false,
      ...expected,
    });
  });
});
