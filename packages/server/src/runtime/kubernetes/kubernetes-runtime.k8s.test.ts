/**
 * The Kubernetes driver against a real cluster: `npm run cluster:up` starts one here and prints its
 * kubeconfig, which `scripts/test.sh` passes as MAYFLY_TEST_KUBECONFIG (any other cluster works
 * too, with a registry it pulls from as MAYFLY_TEST_REGISTRY).
 */
import { describe } from 'vitest';
import { testInstanceName } from '../../test-support/global-setup.js';
import { DockerImagePublisher } from '../docker/docker-image-publisher.js';
import { describeRuntime } from '../runtime.case.js';
import { KubernetesRuntime } from './kubernetes-runtime.js';

const kubeconfig = process.env.MAYFLY_TEST_KUBECONFIG;
const registry = process.env.MAYFLY_TEST_REGISTRY ?? '127.0.0.1:5000';
const instance = `${testInstanceName()}-k8s`;

function makeRuntime(): KubernetesRuntime {
  return new KubernetesRuntime({
    kubeconfig,
    instance,
    publisher: new DockerImagePublisher({ registry }),
    // The test cluster has no DNS; the gateway (this process) runs on the node.
    cluster: {
      dnsPolicy: 'Default',
      gatewayPeers: [{ ipBlock: { cidr: '10.245.0.1/32' } }],
      // No storage provisioner: each claim gets a directory on the node.
      localVolumes: { directory: process.env.MAYFLY_TEST_K8S_VOLUMES ?? '/var/lib/mayfly-cluster/volumes' },
    },
  });
}

describe.skipIf(!kubeconfig)('KubernetesRuntime', () => {
  describeRuntime('kubernetes', {
    make: makeRuntime,
    // The node reaches Service and pod addresses, as the gateway does when it runs on a node.
    reach: async (endpoint) => `http://${endpoint.host}:${endpoint.port}`,
    // What Kubernetes does otherwise (docs/kubernetes.md).
    differences: { noCreatedReplicas: true, sleepLosesContainerFiles: true, fileOwnersIgnored: true },
  });
});
