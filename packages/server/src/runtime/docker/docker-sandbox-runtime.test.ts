import { describe, expect, it } from 'vitest';
import { sandboxRuntimeConformance } from '../../sandbox/sandbox-runtime.case.js';
import { requiredAgentBinary, testInstanceName } from '../../test-support/global-setup.js';
import { DockerSandboxRuntime } from './docker-sandbox-runtime.js';

// Every sandbox behaviour under both isolation classes (the test setup registers gVisor's runsc).
for (const isolation of ['runc', 'gvisor'] as const) {
  sandboxRuntimeConformance(`docker, under ${isolation}`, () => {
    const runtime = new DockerSandboxRuntime({
      instance: `${testInstanceName()}-sandbox-${isolation}`,
      agentBinary: requiredAgentBinary(),
    });
    return { runtime, isolation, loopbackOnly: true };
  });
}

describe('DockerSandboxRuntime', () => {
  it('runs both isolation classes here', async () => {
    const runtime = new DockerSandboxRuntime({
      instance: `${testInstanceName()}-sandbox-classes`,
      agentBinary: requiredAgentBinary(),
    });
    expect(await runtime.isolations()).toEqual({ available: ['runc', 'gvisor'], missing: {} });
  });
});

describe('gVisor where the Engine cannot run it', () => {
  it('says why: no such runtime', async () => {
    const runtime = new DockerSandboxRuntime({
      instance: `${testInstanceName()}-sandbox-missing`,
      agentBinary: requiredAgentBinary(),
      gvisorRuntime: 'mayfly-no-such-runtime',
    });
    const support = await runtime.isolations();
    expect(support.available).toEqual(['runc']);
    expect(support.missing.gvisor).toMatch(/the Docker Engine has no "mayfly-no-such-runtime" runtime/);
  });
});
