/**
 * The ImagePublisher seam: how an image that exists where Mayfly builds (the local Docker Engine)
 * becomes one a cluster can pull. A runtime that runs images elsewhere (Kubernetes) asks it for
 * every workload's image; the Docker Engine's push to a registry is one publisher
 * (`runtime/docker/docker-image-publisher.ts`), as `kind load` makes local images usable there.
 */

export interface PublishedImage {
  /** The reference the cluster pulls. */
  ref: string;
  /** The ports the image exposes (`EXPOSE`): Compose services reach each other on any of them. */
  ports: { port: number; protocol: 'tcp' | 'udp' }[];
}

export interface ImagePublisher {
  /**
   * Makes `ref` pullable by the cluster: pushed to the configured registry (pulled first when it is
   * not present locally and is a reference, not a build). Idempotent and cheap when already done.
   */
  publish(ref: string, signal: AbortSignal): Promise<PublishedImage>;
}

/**
 * Where `ref` lives in `registry`: the same repository path and tag under the registry's host
 * (`mayfly-build/shop:abc` → `127.0.0.1:5000/mayfly-build/shop:abc`). A registry host of the
 * original reference is dropped; a digest becomes a tag of its own.
 */
export function registryRef(registry: string, ref: string): string {
  const [name, digest] = ref.split('@') as [string, string | undefined];
  const parts = name.split('/');
  // A first part with a dot, a colon or `localhost` names a registry (Docker's rule).
  if (parts.length > 1 && /[.:]|^localhost$/.test(parts[0]!)) parts.shift();
  let path = parts.join('/');
  let tag = 'latest';
  const colon = path.lastIndexOf(':');
  if (colon > path.lastIndexOf('/')) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
  }
  if (digest) tag = `digest-${digest.replace(/^sha256:/, '').slice(0, 64)}`;
  if (!path.includes('/')) path = `library/${path}`;
  return `${registry}/${path}:${tag}`;
}
