/** All settings of the server, in one zod schema, parsed once in main.ts and passed down. */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

export const defaultDataDir = () => process.env.MAYFLY_HOME ?? path.join(os.homedir(), '.mayfly');

export const ServerConfig = z.object({
  /** One port serves the API (any host) and the gateway (`<service>--<env>.<baseDomain>`). */
  port: z.coerce.number().int().min(0).max(65535).default(7070),
  host: z.string().default('127.0.0.1'),
  dataDir: z.string().default(defaultDataDir),
  /** `postgres://…` for PostgreSQL; otherwise SQLite in the data dir. */
  dbUrl: z.string().optional(),
  /** Environments answer at `<service>--<env>.<baseDomain>`; `localhost` needs no DNS. */
  baseDomain: z.string().default('localhost'),
  /** Scheme and port the URLs handed to users carry, when a proxy in front changes them. */
  publicScheme: z.enum(['http', 'https']).default('http'),
  publicPort: z.coerce.number().int().optional(),
  dockerSocket: z.string().optional(),
  /** Environment networks take their subnets from here, not from the Engine's small default pools. */
  dockerSubnetPool: z.string().default('10.213.0.0/16'),
  dockerSubnetSize: z.coerce.number().int().min(16).max(28).default(24),
  reconcileIntervalMs: z.coerce.number().int().positive().default(2_000),
  gcIntervalMs: z.coerce.number().int().positive().default(30_000),
  leaseMs: z.coerce.number().int().positive().default(30_000),
  /** Work-lease owner; defaults per store (stable for SQLite, unique per process for PostgreSQL). */
  replicaId: z.string().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Create an admin token (written to `<dataDir>/admin-token`) when the store has none. */
  bootstrapAdminToken: z.boolean().default(true),
});
export type ServerConfig = z.infer<typeof ServerConfig>;
export type ServerConfigInput = z.input<typeof ServerConfig>;

export function loadConfig(input: ServerConfigInput = {}): ServerConfig {
  return ServerConfig.parse(input);
}
