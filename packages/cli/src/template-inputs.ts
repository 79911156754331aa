/**
 * What a local template is interpolated with, as `docker compose` does it: `--input K=V` first,
 * then the caller's environment, then the `.env` file beside the template (the first `-f` file:
 * Compose's project directory). Only the variables the template reads — in any of its files:
 * override files and the files `extends` names — are sent to the server, never the rest of the
 * environment. Profiles come from `--profile`, else `COMPOSE_PROFILES` (environment, then `.env`).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, join, relative, sep } from 'node:path';
import type { TemplateSource } from '@mayfly/server/template';
import { UsageError } from './cli-error.js';

/** Set by the server for every environment; a value in the caller's environment is not theirs. */
const SERVER_VARIABLES = new Set(['ENV_URL', 'ENV_ID', 'ENV_NAME']);

/** Largest `.env` read (the server's limit for an env file). */
const DOT_ENV_MAX_BYTES = 1024 * 1024;

/** A template file as read from disk. */
export interface TemplateFile {
  /** Absolute path. */
  file: string;
  content: string;
}

/**
 * The template as the server's loader takes it: named by its file name, relative paths from its
 * folder, override files named by their path from that folder.
 */
export function templateSource(
  template: TemplateFile,
  overrides: readonly TemplateFile[] = [],
): TemplateSource {
  const dir = dirname(template.file);
  return {
    filename: basename(template.file),
    content: template.content,
    dir,
    ...(overrides.length > 0
      ? {
          overrides: overrides.map((o) => ({
            filename: relative(dir, o.file).split(sep).join('/'),
            content: o.content,
          })),
        }
      : {}),
  };
}

export interface TemplateInputsRequest {
  /** Absolute path of the template. */
  file: string;
  content: string;
  /** Compose override files (`-f` after the first): their variables are read too. */
  overrides?: readonly TemplateFile[];
  /** `--input K=V` values: they always win, and are always sent. */
  given: Record<string, string>;
  /** `--profile` values, in order. */
  profiles: readonly string[];
  /** The caller's environment (`process.env`). */
  env: Readonly<Record<string, string | undefined>>;
}

export interface TemplateInputs {
  inputs: Record<string, string>;
  profiles: string[];
  /** Where each sent input came from, for `--json`-free messages: `input`, `environment` or `.env`. */
  sources: Record<string, 'input' | 'environment' | '.env'>;
}

type TemplateModule = typeof import('@mayfly/server/template');

export async function resolveTemplateInputs(request: TemplateInputsRequest): Promise<TemplateInputs> {
  // Loaded when needed: the server's template reader is a large part of the CLI.
  const template = await import('@mayfly/server/template');
  const dotEnv = readDotEnv(join(dirname(request.file), '.env'), template.parseEnvFile);
  const fromEnv = (name: string): [string, 'environment' | '.env'] | undefined => {
    const own = request.env[name];
    if (own !== undefined) return [own, 'environment'];
    return Object.hasOwn(dotEnv, name) ? [dotEnv[name]!, '.env'] : undefined;
  };

  const profilesSetting = fromEnv('COMPOSE_PROFILES')?.[0];
  const profiles =
    request.profiles.length > 0
      ? [...request.profiles]
      : (profilesSetting ?? '')
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean);

  const names = variablesOf(request, profiles, template.loadTemplate);
  const inputs: Record<string, string> = {};
  const sources: TemplateInputs['sources'] = {};
  for (const name of names) {
    if (Object.hasOwn(request.given, name) || SERVER_VARIABLES.has(name)) continue;
    const found = fromEnv(name);
    if (!found) continue;
    inputs[name] = found[0];
    sources[name] = found[1];
  }
  for (const [name, value] of Object.entries(request.given)) {
    inputs[name] = value;
    sources[name] = 'input';
  }
  return { inputs, profiles, sources };
}

/** Every variable the template reads, from the server's own loader (errors are the server's to report). */
function variablesOf(
  request: TemplateInputsRequest,
  profiles: string[],
  loadTemplate: TemplateModule['loadTemplate'],
): string[] {
  const names = new Set<string>();
  try {
    loadTemplate(templateSource(request, request.overrides), {
      inputs: request.given,
      profiles,
      onVariable: (name: string) => names.add(name),
    });
  } catch {
    // A template error is reported by the server, with positions, once it has every input.
  }
  return [...names];
}

/** The `.env` file beside the template, as Compose reads it; none is no values. */
function readDotEnv(path: string, parseEnvFile: TemplateModule['parseEnvFile']): Record<string, string> {
  let text: string;
  try {
    const buffer = readFileSync(path);
    if (buffer.length > DOT_ENV_MAX_BYTES) {
      throw new UsageError(`${path} is larger than ${DOT_ENV_MAX_BYTES / 1024 / 1024} MiB`);
    }
    text = buffer.toString('utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return {};
    throw new UsageError(`cannot read ${path}: ${code ?? (err as Error).message}`);
  }
  const { entries, problems } = parseEnvFile(text);
  if (problems.length > 0) {
    const first = problems[0]!;
    throw new UsageError(`${path}:${first.line}:${first.column}: ${first.message}`);
  }
  const values: Record<string, string> = {};
  for (const entry of entries) if (entry.value !== null) values[entry.key] = entry.value;
  return values;
}
