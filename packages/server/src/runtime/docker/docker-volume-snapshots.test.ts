/** Docker's volume snapshots against the shared conformance case (runtime/volume-snapshots.case.ts). */
import { requiredAgentBinary, testInstanceName } from '../../test-support/global-setup.js';
import { describeVolumeSnapshots } from '../volume-snapshots.case.js';
import { DockerRuntime } from './docker-runtime.js';

describeVolumeSnapshots('docker', {
  make: () =>
    new DockerRuntime({ instance: `${testInstanceName()}-snapshots`, agentBinary: requiredAgentBinary() }),
});
