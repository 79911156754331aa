/**
 * Sandboxes: one isolated, limited machine for untrusted code or an agent, killed by itself when its
 * time is up. Shared by the server (API validation), the SDK and the CLI.
 */
import { z } from 'zod';

/** Sandbox ids are `[a-z0-9]+` (they go into host names: `<port>--<id>.<domain>`). */
export const SandboxId = z.string().regex(/^[a-z0-9]{1,40}$/, 'a sandbox id: lowercase letters and digits');

export const SANDBOX_STATES = ['running', 'paused', 'ended'] as const;
export const SandboxState = z.enum(SANDBOX_STATES);
export type SandboxState = z.infer<typeof SandboxState>;

export const SANDBOX_END_REASONS = ['timeout', 'killed', 'oom', 'error'] as const;
export type SandboxEndReason = (typeof SANDBOX_END_REASONS)[number];

const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a variable name: letters, digits and "_"');
const Envs = z
  .record(EnvName, z.string().max(64 * 1024))
  .refine((r) => Object.keys(r).length <= 200, 'at most 200 variables');
const Metadata = z
  .record(z.string().min(1).max(128), z.string().max(1024))
  .refine((r) => Object.keys(r).length <= 50, 'at most 50 entries');

/** Longest a sandbox may be asked to live (its timeout, from now). */
export const SANDBOX_MAX_TIMEOUT_MS = 24 * 60 * 60 * 1000;

/** An IPv4 address or CIDR as `allowOut` takes it. */
export const EGRESS_CIDR =
  /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}(\/(3[0-2]|[12]?\d))?$/;
const EGRESS_HOST =
  /^(?=.{1,253}$)(?=.*[a-z])([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

export const CreateSandboxRequest = z.strictObject({
  template: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,62}$/)
    .default('base'),
  /** Killed this long after creation unless extended; default 5 minutes. */
  timeoutMs: z.number().int().min(1_000).max(SANDBOX_MAX_TIMEOUT_MS).default(300_000),
  envs: Envs.default({}),
  metadata: Metadata.default({}),
  cpu: z.number().min(0.1).max(64).optional(),
  memoryMb: z.number().int().min(32).max(65_536).optional(),
  /**
   * Where it may open connections: IPv4 addresses or CIDRs, and host names (resolved by the server
   * when it is created). Nothing else is reachable; without it, it has no network at all. The host,
   * other sandboxes and environments stay out of reach whatever is listed; private address space
   * (the LAN, other Docker networks) too, but for ranges the server's operator permits.
   */
  allowOut: z
    .array(
      z
        .string()
        .max(253)
        .refine(
          (entry) => EGRESS_CIDR.test(entry) || EGRESS_HOST.test(entry),
          'an IPv4 address or CIDR (a.b.c.d[/n]), or a host name',
        ),
    )
    .max(32)
    .default([]),
});
export type CreateSandboxRequest = z.input<typeof CreateSandboxRequest>;

export const SandboxInfo = z.object({
  id: z.string(),
  template: z.string(),
  state: SandboxState,
  endedReason: z.enum(SANDBOX_END_REASONS).nullable(),
  metadata: z.record(z.string(), z.string()),
  startedAt: z.string(),
  expiresAt: z.string(),
  endedAt: z.string().nullable(),
  cpu: z.number().nullable(),
  memoryMb: z.number(),
  /** Highest memory use seen, in bytes (recorded when it ends). */
  peakMemoryBytes: z.number().nullable(),
  /** The URL of one of its ports through the gateway, with `{port}` in place of the port. */
  urlTemplate: z.string(),
});
export type SandboxInfo = z.infer<typeof SandboxInfo>;

/** One reading of what a sandbox uses (`GET /v1/sandboxes/{id}/usage`). */
export const SandboxUsage = z.object({
  /** When the platform read it: a CPU rate is the change of `cpuSeconds` over the change of this. */
  sampledAt: z.string(),
  /** CPU time its processes have used since it started, in seconds, all CPUs together. */
  cpuSeconds: z.number(),
  /** Memory in use now, in bytes (without page cache the kernel may drop; its tmpfs files count). */
  memoryBytes: z.number(),
  /** The most it has used so far, in bytes. */
  memoryPeakBytes: z.number(),
  /** Processes and threads in it, its agent's too. */
  pids: z.number(),
});
export type SandboxUsage = z.infer<typeof SandboxUsage>;

/** `usage` is null where the platform does not count it (Kubernetes without a metrics server). */
export const SandboxUsageAnswer = z.object({ usage: SandboxUsage.nullable() });
export type SandboxUsageAnswer = z.infer<typeof SandboxUsageAnswer>;

export const SetSandboxTimeoutRequest = z.strictObject({
  timeoutMs: z.number().int().min(0).max(SANDBOX_MAX_TIMEOUT_MS),
});

/** A terminal's size, in characters. */
export const TerminalSize = z.strictObject({
  cols: z.number().int().min(1).max(1000),
  rows: z.number().int().min(1).max(1000),
});
export type TerminalSize = z.infer<typeof TerminalSize>;

/** What opens a terminal socket into a sandbox (`POST /v1/sandboxes/{id}/terminal`). */
export const TerminalTicket = z.object({
  ticket: z.string().describe('one use, 30 s; carried by the handshake as a subprotocol'),
  protocols: z.array(z.string()).describe('the subprotocols to open the socket with'),
  url: z.string().describe("the socket's path on the API (ws: or wss: as the API is reached)"),
});
export type TerminalTicket = z.infer<typeof TerminalTicket>;

export const RunCommandRequest = z.strictObject({
  /** Run by `/bin/sh -c` in the sandbox. */
  cmd: z
    .string()
    .min(1)
    .max(256 * 1024),
  envs: Envs.default({}),
  cwd: z.string().max(4096).optional(),
  user: z.string().max(64).optional(),
  /** Killed (SIGKILL, its whole process group) after this long; 0: no limit. */
  timeoutMs: z.number().int().min(0).max(SANDBOX_MAX_TIMEOUT_MS).default(60_000),
  /** Keep stdin open for `POST …/processes/{pid}/stdin`. */
  stdin: z.boolean().default(false),
  tag: z.string().max(128).optional(),
  /**
   * Run it in a terminal of this size (a session of its own, the terminal its controlling one):
   * its output — stdout and stderr together, as a terminal shows them — comes as `pty` events, and
   * `…/stdin` types into the terminal (which is never closed: send ^D). `TERM` defaults to
   * `xterm-256color`.
   */
  pty: TerminalSize.optional(),
});
export type RunCommandRequest = z.input<typeof RunCommandRequest>;

/** One line of a command's NDJSON stream. `data` is base64. */
export type ProcessEvent =
  | { type: 'start'; pid: number }
  | { type: 'stdout' | 'stderr' | 'pty'; data: string }
  | { type: 'end'; exitCode: number; signal?: string; timedOut?: boolean };

export const SignalRequest = z.strictObject({
  signal: z.enum([
    'SIGHUP',
    'SIGINT',
    'SIGQUIT',
    'SIGKILL',
    'SIGTERM',
    'SIGUSR1',
    'SIGUSR2',
    'SIGSTOP',
    'SIGCONT',
  ]),
});

/** A command running in a sandbox (`GET …/processes`). */
export const SandboxProcess = z.object({
  pid: z.number(),
  tag: z.string().optional(),
  cmd: z.array(z.string()),
  cwd: z.string(),
});
export type SandboxProcess = z.infer<typeof SandboxProcess>;

/** A file, folder or link in a sandbox, as the file routes describe it. */
export const SandboxFileEntry = z.object({
  name: z.string(),
  path: z.string(),
  type: z.enum(['file', 'dir', 'symlink', 'other']),
  size: z.number(),
  mode: z.string(),
  modifiedAt: z.string(),
  symlinkTarget: z.string().optional(),
});
export type SandboxFileEntry = z.infer<typeof SandboxFileEntry>;

export const SandboxPaths = {
  sandboxes: '/v1/sandboxes',
  sandbox: (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}`,
  timeout: (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}/timeout`,
  pause: (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}/pause`,
  resume: (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}/resume`,
  processes: (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}/processes`,
  processStream: (id: string, pid: number) =>
    `/v1/sandboxes/${encodeURIComponent(id)}/processes/${pid}/stream`,
  stdin: (id: string, pid: number) => `/v1/sandboxes/${encodeURIComponent(id)}/processes/${pid}/stdin`,
  signal: (id: string, pid: number) => `/v1/sandboxes/${encodeURIComponent(id)}/processes/${pid}/signal`,
  resize: (id: string, pid: number) => `/v1/sandboxes/${encodeURIComponent(id)}/processes/${pid}/resize`,
  usage: (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}/usage`,
  files: (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}/files`,
  fileAction: (id: string, action: 'stat' | 'list' | 'mkdir' | 'rename') =>
    `/v1/sandboxes/${encodeURIComponent(id)}/files/${action}`,
  templates: '/v1/sandbox-templates',
  template: (name: string) => `/v1/sandbox-templates/${encodeURIComponent(name)}`,
} as const;

export const SandboxTemplateName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lowercase letters, digits and "-", up to 63');

export const SANDBOX_ISOLATIONS = ['runc', 'gvisor'] as const;

const FORBIDDEN_WORKDIRS = /^\/(proc|sys|dev|tmp|\.mayfly)(\/|$)/;

/**
 * Makes a sandbox template (or replaces the one of that name): from a folder with a Dockerfile,
 * uploaded first as a bundle (`POST /v1/bundles`), or from an image the server's engine has.
 */
export const CreateSandboxTemplateRequest = z
  .strictObject({
    name: SandboxTemplateName,
    /** A bundle id: the uploaded folder, built with its Dockerfile. */
    bundle: z.string().max(128).optional(),
    /** The Dockerfile's path in the bundle. */
    dockerfile: z
      .string()
      .max(255)
      .regex(/^(?!\/)(?!.*(^|\/)\.\.(\/|$))[^\0]+$/, 'a path inside the folder')
      .optional(),
    /** An image the server's Docker Engine has (nothing is pulled). */
    image: z
      .string()
      .max(512)
      .regex(/^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$/, 'an image reference')
      .optional(),
    /** Commands run as this uid:gid (both given: none from the image's files), never root's. */
    user: z
      .string()
      .regex(/^[1-9]\d{0,9}:[1-9]\d{0,9}$/, 'uid:gid, neither of them root (0)')
      .default('1000:1000'),
    /** Home and working directory: private, writable, `diskMb` large; the image's files there are hidden. */
    workdir: z
      .string()
      .max(255)
      .regex(/^(\/[A-Za-z0-9._-]+)+$/, 'an absolute path')
      .refine(
        (p) => p.split('/').every((segment, i) => i === 0 || (segment !== '.' && segment !== '..')),
        'a path without . or .. in it',
      )
      .refine((p) => !FORBIDDEN_WORKDIRS.test(p), 'not a system path')
      .default('/home/user'),
    env: Envs.default({}),
    cpu: z.number().min(0.1).max(64).default(1),
    memoryMb: z.number().int().min(64).max(65_536).default(512),
    pids: z.number().int().min(16).max(32_768).default(256),
    /** Size of the home and of /tmp, each; in memory, so both together fit in `memoryMb`. */
    diskMb: z.number().int().min(1).max(32_768).default(256),
    isolation: z.enum(['runc', 'gvisor']).default('runc'),
    /** Sandboxes of it kept ready by the warm pool. */
    pool: z.number().int().min(0).max(250).default(0),
  })
  .refine((r) => (r.bundle === undefined) !== (r.image === undefined), {
    message: 'give either bundle (a folder with a Dockerfile) or image',
  })
  .refine((r) => r.dockerfile === undefined || r.bundle !== undefined, {
    message: 'dockerfile goes with bundle',
  })
  .refine((r) => 2 * r.diskMb <= r.memoryMb, {
    message: 'the home and /tmp (diskMb each) are in memory: 2 × diskMb must fit in memoryMb',
  });
export type CreateSandboxTemplateRequest = z.input<typeof CreateSandboxTemplateRequest>;

/** A sandbox template: an image and what every sandbox of it gets unless the create says otherwise. */
export const SandboxTemplateInfo = z.object({
  name: z.string(),
  /** `built-in` ships with Mayfly; `dockerfile` was built from an uploaded folder; `image` names one. */
  source: z.enum(['built-in', 'dockerfile', 'image']),
  /** The image sandboxes of it run; `null` until it is first built. */
  image: z.string().nullable(),
  user: z.string(),
  workdir: z.string(),
  env: z.record(z.string(), z.string()),
  cpu: z.number(),
  memoryMb: z.number(),
  pids: z.number(),
  diskMb: z.number(),
  isolation: z.enum(SANDBOX_ISOLATIONS),
  readOnlyRoot: z.boolean(),
  /** The warm pool: how many it keeps ready, how many are, how many are being made. */
  pool: z.object({ size: z.number(), ready: z.number(), starting: z.number() }),
  createdAt: z.string().nullable(),
});
export type SandboxTemplateInfo = z.infer<typeof SandboxTemplateInfo>;

/**
 * Where a Mayfly server serves E2B's API (`E2B_API_URL` = server + this) and its sandboxes' data
 * plane (`E2B_SANDBOX_URL`), apart from Mayfly's own `/v1` routes.
 */
export const E2bPaths = { api: '/e2b/api', sandbox: '/e2b/sandbox' } as const;

/**
 * Characters that hide or reorder text: controls, bidirectional overrides and isolates, zero-width
 * format characters. A file name holding them can pass for another (`\u202etxt.exe` shows as
 * `exe.txt`): the dashboard writes them out, saved names drop them.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
export const HIDDEN_TEXT = /[\u0000-\u001f\u007f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
