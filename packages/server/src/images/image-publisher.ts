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
 * Where an image goes in `registry`: `mayfly-env/<name>:<its image id>`, the name the last part of
 * `ref`'s repository (for people reading the registry), the tag the image's content. Never the
 * reference's own path and tag: a template names any reference it likes, and
 * `evil.example/mayfly/mayfly:1` must not land on `REGISTRY/mayfly/mayfly:1` — Mayfly's own
 * image, or another environment's. A tag that is the content cannot hold anything else.
 */
export function registryRef(registry: string, ref: string, imageId: string): string {
  const hex = /^(?:sha256:)?([0-9a-f]{64})$/.exec(imageId)?.[1];
  if (!hex) throw new Error(`not an image id: ${imageId}`);
  const repository = ref.split('@')[0]!.replace(/:[^/:]*$/, '');
  const name =
    (repository.split('/').at(-1) ?? '')
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '')
      .slice(0, 64) || 'image';
  return `${registry}/mayfly-env/${name}:${hex}`;
}
