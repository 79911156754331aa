/** The URLs users get for an environment's services, as the gateway routes them. */
import type { EnvPlan } from '../plan/plan.js';

export interface UrlScheme {
  scheme: 'http' | 'https';
  baseDomain: string;
  /** Omitted from URLs when it is the scheme's default port. */
  port: number;
}

export function hostFor(service: string, envName: string, baseDomain: string): string {
  return `${service}--${envName}.${baseDomain}`;
}

export function serviceUrl(service: string, envName: string, url: UrlScheme): string {
  const defaultPort = url.scheme === 'https' ? 443 : 80;
  const port = url.port === defaultPort ? '' : `:${url.port}`;
  return `${url.scheme}://${hostFor(service, envName, url.baseDomain)}${port}/`;
}

/** Every service with an HTTP port gets a URL; jobs never do. */
export function urlsOf(plan: EnvPlan | null, envName: string, url: UrlScheme): Record<string, string> {
  const urls: Record<string, string> = {};
  for (const w of plan?.workloads ?? []) {
    if (w.kind === 'service' && w.ports.some((p) => p.http)) urls[w.name] = serviceUrl(w.name, envName, url);
  }
  return urls;
}

/** What a host name (`[:port]` dropped, any case) has before `.<baseDomain>`; null when it is not under it. */
function labelUnder(host: string | undefined, baseDomain: string): string | null {
  if (!host) return null;
  const name = host.replace(/:\d+$/, '').toLowerCase();
  const suffix = `.${baseDomain.toLowerCase()}`;
  return name.endsWith(suffix) ? name.slice(0, -suffix.length) : null;
}

/**
 * A sandbox's port in a host name: Mayfly's `<port>--<id>.<domain>`, or E2B's `<port>-<id>.<domain>`
 * (what the e2b SDK's `getHost` builds). An environment's host always has `--`, so a label of
 * digits, one `-` and an id is never one of them.
 */
export function parseSandboxHost(
  host: string | undefined,
  baseDomain: string,
): { port: number; id: string } | null {
  const match = /^(\d{1,5})--?([a-z0-9]{1,40})$/.exec(labelUnder(host, baseDomain) ?? '');
  if (!match) return null;
  const port = Number(match[1]);
  return port >= 1 && port <= 65_535 ? { port, id: match[2]! } : null;
}

/** Splits `<service>--<env>.<baseDomain>[:port]`; null when the host is not an environment's. */
export function parseHost(
  host: string | undefined,
  baseDomain: string,
): { service: string; envName: string } | null {
  const label = labelUnder(host, baseDomain);
  if (label === null) return null;
  const sep = label.indexOf('--');
  if (sep <= 0 || label.includes('.')) return null;
  const service = label.slice(0, sep);
  const envName = label.slice(sep + 2);
  return service && envName ? { service, envName } : null;
}
