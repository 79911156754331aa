import { describeRuntime } from '../runtime.case.js';
import { DockerRuntime } from './docker-runtime.js';

// On Linux the host reaches containers on their bridge network directly, as the gateway does.
describeRuntime('docker', {
  make: () => new DockerRuntime({ instance: 'conformance' }),
  reach: async (endpoint) => `http://${endpoint.host}:${endpoint.port}`,
});
