/**
 * The Compose service keys beyond images, commands, ports and volumes: labels, tmpfs, init,
 * stop signal and grace period, hostname, container_name, extra_hosts, cap_drop, read_only,
 * shm_size, ulimits, and the secrets and configs a service is granted. Each is read as
 * `docker compose` reads it, into the plan's neutral fields, with a positioned issue when it
 * cannot be honoured.
 */
import { isIP } from 'node:net';
import { posix } from 'node:path';
import type { FilePlan, MountPlan, WorkloadSpec } from '../plan/plan.js';
import type { ComposeFileSource, ComposeService } from './compose-schema.js';
import { excerpt } from './limits.js';
import { hostPath, keyValues, type LoadContext } from './normalize.js';
import { parseMemorySize } from './units.js';
import type { Path } from './yaml-positions.js';

/** Labels Mayfly sets itself; a template may not set (or fake) them. */
const RESERVED_LABEL_PREFIX = 'mayfly.';

/**
 * The resource limits a template may set (`ulimit` names as Docker takes them), with the highest
 * hard limit allowed (-1, unlimited, only where none is given). The Engine runs as root and would
 * raise any of them: these keep a container from locking the host's memory or raising its own
 * scheduling priority over other environments and the control plane.
 */
const ULIMITS: Record<string, number | null> = {
  as: null,
  core: null,
  cpu: null,
  data: null,
  fsize: null,
  locks: 1 << 20,
  memlock: 64 * 1024 * 1024,
  msgqueue: 64 * 1024 * 1024,
  nofile: 1 << 20,
  nproc: 1 << 16,
  rss: null,
  sigpending: 1 << 20,
  stack: null,
};
/** Refused outright: they raise scheduling priority (real-time, or nice below 0). */
const ULIMITS_REFUSED = new Set(['nice', 'rtprio', 'rttime']);
const ULIMIT_NAMES = Object.keys(ULIMITS);

/** Labels read by tools on the host (a reverse proxy, Compose, test frameworks): not passed on. */
const HOST_TOOL_LABELS = /^(traefik\.|com\.docker\.|org\.testcontainers\.|io\.podman\.)/i;

/** Where no secret, config or tmpfs may go. */
const SYSTEM_PATHS = /^\/(proc|sys|dev)(\/|$)/;

/** The largest `shm_size`: it is memory, charged to the container's limit anyway. */
const SHM_MAX_BYTES = 64 * 1024 ** 3;

/** What the keys of this module add to a workload. */
export type ComposeExtras = Pick<
  WorkloadSpec,
  | 'labels'
  | 'ulimits'
  | 'aliases'
  | 'extraHosts'
  | 'capDrop'
  | 'readOnlyRootFilesystem'
  | 'files'
  | 'init'
  | 'stopSignal'
  | 'stopGracePeriodMs'
  | 'hostname'
> & { mounts: MountPlan[]; shmBytes?: number };

/** The top-level `secrets` and `configs` of a Compose file, by name. */
export interface FileSources {
  secrets: Record<string, ComposeFileSource>;
  configs: Record<string, ComposeFileSource>;
}

export function composeExtras(
  name: string,
  service: ComposeService,
  path: Path,
  ctx: LoadContext,
  sources: FileSources,
): ComposeExtras {
  const { sink } = ctx;
  const at = (...rest: (string | number)[]): Path => [...path, ...rest];

  const labels = service.labels ? keyValues(service.labels, at('labels'), ctx) : {};
  for (const key of Object.keys(labels)) {
    if (HOST_TOOL_LABELS.test(key)) {
      // A reverse proxy watching the engine would route a real domain to a pull request's code.
      sink.warn(at('labels', key), `label "${excerpt(key)}" is ignored: tools on the host read it`);
      delete labels[key];
      continue;
    }
    if (key.toLowerCase().startsWith(RESERVED_LABEL_PREFIX))
      sink.error(at('labels', key), `label "${excerpt(key)}" is reserved: Mayfly sets the mayfly.* labels`);
  }

  const mounts: MountPlan[] = [];
  const tmpfs = service.tmpfs === undefined ? [] : [service.tmpfs].flat();
  tmpfs.forEach((entry, i) => {
    const where = typeof service.tmpfs === 'string' ? at('tmpfs') : at('tmpfs', i);
    const mount = tmpfsMount(entry, where, ctx);
    if (mount) mounts.push(mount);
  });

  const aliases: string[] = [];
  if (service.container_name !== undefined) {
    const alias = service.container_name;
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(alias) || alias.length > 63) {
      sink.error(
        at('container_name'),
        `invalid container name "${excerpt(alias)}": use letters, digits, "_", "." and "-" (at most 63)`,
      );
    } else {
      // Containers are named by Mayfly per environment; the name given is what others reach it by.
      aliases.push(alias);
    }
    const replicas = service.deploy?.replicas ?? service.scale ?? 1;
    if (replicas > 1) {
      sink.error(
        at('container_name'),
        `a service with a container_name cannot have ${replicas} replicas: the name must be unique`,
      );
    }
  }

  if (service.hostname !== undefined && !isHostname(service.hostname)) {
    sink.error(
      at('hostname'),
      `invalid hostname "${excerpt(service.hostname)}": use letters, digits, "-" and "." (labels of at most 63)`,
    );
  }

  if (service.stop_signal !== undefined && !/^(SIG)?[A-Z][A-Z0-9+-]*$|^\d{1,2}$/.test(service.stop_signal)) {
    sink.error(
      at('stop_signal'),
      `invalid signal "${excerpt(service.stop_signal)}": expected a name like SIGTERM or SIGQUIT`,
    );
  }

  const capDrop: string[] = [];
  (service.cap_drop ?? []).forEach((cap, i) => {
    const normal = cap.toUpperCase();
    if (normal === 'ALL' || /^(CAP_)?[A-Z][A-Z_]*$/.test(normal)) capDrop.push(normal);
    else
      sink.error(
        at('cap_drop', i),
        `invalid capability "${excerpt(cap)}": expected a name like NET_RAW or ALL`,
      );
  });

  return {
    labels,
    mounts,
    aliases,
    extraHosts: extraHosts(service.extra_hosts, at('extra_hosts'), ctx),
    capDrop,
    ulimits: ulimits(service.ulimits, at('ulimits'), ctx),
    readOnlyRootFilesystem: service.read_only ?? false,
    ...grants(name, service, path, ctx, sources, mounts),
    init: service.init,
    stopSignal: service.stop_signal,
    stopGracePeriodMs: service.stop_grace_period,
    hostname: service.hostname,
    shmBytes: shmSize(service.shm_size, at('shm_size'), ctx),
  };
}

function shmSize(value: number | undefined, path: Path, ctx: LoadContext): number | undefined {
  if (value === undefined || value <= SHM_MAX_BYTES) return value;
  ctx.sink.error(path, `shm_size may be at most ${SHM_MAX_BYTES / 1024 ** 3}g`);
  return undefined;
}

/**
 * A `container_name` is a second DNS name of its service in the environment: it may not be the
 * name of another service, nor another service's `container_name` (Compose refuses the same).
 */
export function checkAliases(
  workloads: readonly { name: string; aliases: readonly string[]; path: Path }[],
  sink: LoadContext['sink'],
): void {
  const owner = new Map<string, string>(workloads.map((w) => [w.name.toLowerCase(), w.name]));
  for (const w of workloads) {
    for (const alias of w.aliases) {
      const key = alias.toLowerCase();
      const taken = owner.get(key);
      if (taken !== undefined && taken !== w.name) {
        sink.error(
          [...w.path, 'container_name'],
          `container_name "${excerpt(alias)}" is already the name of ${taken}`,
        );
      } else {
        owner.set(key, w.name);
      }
    }
  }
}

function isHostname(value: string): boolean {
  return (
    value.length <= 253 &&
    value.split('.').every((label) => /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(label))
  );
}

/** A `tmpfs` entry: `/path` or `/path:size=64m,mode=1777`. */
function tmpfsMount(entry: string, path: Path, ctx: LoadContext): MountPlan | null {
  const colon = entry.indexOf(':');
  const target = colon < 0 ? entry : entry.slice(0, colon);
  if (!target.startsWith('/')) {
    ctx.sink.error(path, `tmpfs target "${excerpt(target)}" must be an absolute path`);
    return null;
  }
  if (posix.normalize(target) === '/' || SYSTEM_PATHS.test(posix.normalize(target))) {
    ctx.sink.error(path, `a tmpfs cannot be mounted at ${excerpt(target)}`);
    return null;
  }
  let sizeBytes: number | undefined;
  for (const option of colon < 0 ? [] : entry.slice(colon + 1).split(',')) {
    const [key, value = ''] = option.split('=');
    if (key === 'size') {
      const size = parseMemorySize(value);
      if (size === null || size <= 0) {
        ctx.sink.error(path, `invalid tmpfs size "${excerpt(value)}": expected a size like 64m`);
        return null;
      }
      sizeBytes = size;
    } else if (key !== 'mode' && key !== 'uid' && key !== 'gid' && key !== '') {
      ctx.sink.warn(path, `tmpfs option "${excerpt(option)}" is ignored`);
    }
  }
  return {
    type: 'tmpfs',
    target: posix.normalize(target),
    readOnly: false,
    ...(sizeBytes ? { sizeBytes } : {}),
  };
}

/**
 * `extra_hosts` as `name:ip`, `name=ip` or a map. `host-gateway` (the host's own address) is
 * refused: an environment never reaches the machine it runs on.
 */
function extraHosts(
  value: ComposeService['extra_hosts'],
  path: Path,
  ctx: LoadContext,
): { host: string; ip: string }[] {
  if (value === undefined) return [];
  const entries: [string, string, Path][] = Array.isArray(value)
    ? value.map((entry, i) => {
        // `name=ip` first: an IPv6 address has colons of its own.
        const eq = entry.indexOf('=');
        const split = eq >= 0 ? eq : entry.indexOf(':');
        return split < 0
          ? [entry, '', [...path, i]]
          : [entry.slice(0, split), entry.slice(split + 1), [...path, i]];
      })
    : Object.entries(value).flatMap(([host, ips]) =>
        [ips].flat().map((ip): [string, string, Path] => [host, ip, [...path, host]]),
      );
  const out: { host: string; ip: string }[] = [];
  for (const [host, rawIp, at] of entries) {
    const ip = rawIp.replace(/^\[(.*)\]$/, '$1');
    if (!isHostname(host)) {
      ctx.sink.error(at, `invalid host name "${excerpt(host)}" in extra_hosts`);
    } else if (ip === 'host-gateway') {
      ctx.sink.error(at, '"host-gateway" is not allowed: environments never reach the machine they run on');
    } else if (isIP(ip) === 0) {
      ctx.sink.error(at, `invalid address "${excerpt(rawIp)}" for ${host}: expected an IPv4 or IPv6 address`);
    } else {
      out.push({ host, ip });
    }
  }
  return out;
}

function ulimits(
  value: ComposeService['ulimits'],
  path: Path,
  ctx: LoadContext,
): { name: string; soft: number; hard: number }[] {
  const out: { name: string; soft: number; hard: number }[] = [];
  for (const [name, limit] of Object.entries(value ?? {})) {
    if (ULIMITS_REFUSED.has(name)) {
      ctx.sink.error(
        [...path, name],
        `ulimit "${name}" is not allowed: it raises scheduling priority over other environments`,
        'key',
      );
      continue;
    }
    if (!Object.hasOwn(ULIMITS, name)) {
      ctx.sink.error(
        [...path, name],
        `unknown ulimit "${excerpt(name)}": expected one of ${ULIMIT_NAMES.join(', ')}`,
        'key',
      );
      continue;
    }
    const { soft, hard } = typeof limit === 'number' ? { soft: limit, hard: limit } : limit;
    const max = ULIMITS[name];
    if (typeof max === 'number' && (hard === -1 || hard > max || soft === -1 || soft > max)) {
      ctx.sink.error([...path, name], `ulimit "${name}" may be at most ${max} (and not unlimited)`);
      continue;
    }
    // -1 is "unlimited" for both; a soft limit above the hard one is refused at start.
    if (hard !== -1 && (soft === -1 || soft > hard)) {
      ctx.sink.error([...path, name], `soft limit ${soft} is above the hard limit ${hard}`);
      continue;
    }
    out.push({ name, soft, hard });
  }
  return out;
}

/**
 * The `secrets` and `configs` a service is granted, mounted read-only where Compose mounts them:
 * a secret at `/run/secrets/<name>` (or its relative `target` there), a config at `/<name>` (or
 * its `target`). A `file` source is bound read-only from the template's folder; an `environment`
 * or `content` source is a file of the plan, which the server writes and binds read-only
 * (`controller/plan-policy.ts` `withFilesAsMounts`; Compose copies it in, which a read-only root
 * or a tmpfs above it defeats).
 */
function grants(
  workload: string,
  service: ComposeService,
  path: Path,
  ctx: LoadContext,
  sources: FileSources,
  mounts: MountPlan[],
): { files: FilePlan[] } {
  const files: FilePlan[] = [];
  const targets = new Set<string>();
  for (const kind of ['secrets', 'configs'] as const) {
    (service[kind] ?? []).forEach((grant, i) => {
      const at: Path = [...path, kind, i];
      const long = typeof grant === 'string' ? { source: grant } : grant;
      const source = sources[kind][long.source];
      const singular = kind === 'secrets' ? 'secret' : 'config';
      if (!source) {
        ctx.sink.error(
          at,
          `${singular} "${excerpt(long.source)}" is not declared under the top-level "${kind}"`,
        );
        return;
      }
      for (const id of ['uid', 'gid'] as const) {
        const value = long[id];
        if (value !== undefined && !/^\d{1,9}$/.test(value))
          ctx.sink.error([...at, id], `invalid ${id} "${excerpt(value)}": expected a number`);
      }
      const written = long.target ?? long.source;
      const target =
        kind === 'secrets' ? posix.resolve('/run/secrets', written) : posix.resolve('/', written);
      if (target === '/' || SYSTEM_PATHS.test(target)) {
        ctx.sink.error(at, `a ${singular} cannot be mounted at ${target}`);
        return;
      }
      if (targets.has(target)) {
        ctx.sink.error(at, `two secrets or configs of ${workload} are mounted at ${target}`);
        return;
      }
      targets.add(target);
      const declared: Path = [kind, long.source];
      const content = sourceContent(source, declared, ctx);
      if (content === null) return;
      if ('file' in content) {
        if (long.mode !== undefined || long.uid !== undefined || long.gid !== undefined) {
          // As Compose: a file source is bound as it is on disk.
          ctx.sink.warn(at, 'mode, uid and gid are ignored for a file source: the file is bound as it is');
        }
        mounts.push({ source: content.file, target, type: 'bind', readOnly: true });
        return;
      }
      // Each service granted it gets a copy in its plan.
      ctx.budget.spend(content.text.length + target.length, at);
      files.push({
        target,
        content: content.text,
        // Compose's default: readable by all, written by none.
        mode: long.mode ?? 0o444,
        ...(long.uid !== undefined ? { uid: long.uid } : {}),
        ...(long.gid !== undefined ? { gid: long.gid } : {}),
      });
    });
  }
  return { files };
}

/** Where a declared secret's or config's content is: a host file, or text. */
function sourceContent(
  source: ComposeFileSource,
  path: Path,
  ctx: LoadContext,
): { file: string } | { text: string } | null {
  const given = [source.file, source.environment, source.content].filter((v) => v !== undefined).length;
  if (source.external === true) {
    ctx.sink.error(
      path,
      'external secrets and configs are not supported: give a file, environment or content',
      'key',
    );
    return null;
  }
  if (given !== 1) {
    ctx.sink.error(path, 'needs exactly one of "file", "environment" and "content"', 'key');
    return null;
  }
  if (source.file !== undefined) {
    const file = hostPath(source.file, [...path, 'file'], ctx, 'bind');
    if (file === null) return null;
    if (ctx.files.kind(file) !== 'file') {
      ctx.sink.error([...path, 'file'], `"${excerpt(source.file)}" is not a file`);
      return null;
    }
    return { file };
  }
  if (source.environment !== undefined) {
    const at: Path = [...path, 'environment'];
    const value = ctx.lookup(source.environment, {
      file: ctx.sink.file,
      position: ctx.sink.positions.locate(at),
      path: at,
    });
    if (value === undefined) {
      ctx.sink.error(
        at,
        `variable ${excerpt(source.environment)} is not set: pass it with --input or in the environment`,
      );
      return null;
    }
    return { text: value };
  }
  return { text: source.content ?? '' };
}
