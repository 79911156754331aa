/**
 * Telling a Compose file from a mayfly.yaml, by name first, then by content:
 * 1. `mayfly.yaml`, `mayfly.yml`, `*.mayfly.yaml` → mayfly.yaml;
 * 2. `compose.yaml`, `docker-compose.yml`, `compose.prod.yaml`, `*.compose.yaml` → Compose;
 * 3. any other name: a top-level `jobs`, `lifecycle` or `isolation`, or a service using a key only
 *    mayfly.yaml has (`env`, `envFile`, `dependsOn`, `resources`, `replicas`, `workingDir`) →
 *    mayfly.yaml; anything else (including unparsable YAML) → Compose, the more common format.
 *
 * The content is read with the same bounded parser and walk as the template itself (never
 * `yaml`'s own `parse`, which has no bound on nesting and expands merge keys without limit).
 */
import { basename } from 'node:path';
import { TEMPLATE_LIMITS } from './limits.js';
import { isPlainObject } from './schema-kit.js';
import { parseYaml } from './yaml-positions.js';

const MAYFLY_NAME = /(^|\.)mayfly\.ya?ml$/i;
const COMPOSE_NAME = /^(docker-)?compose(\.[\w-]+)*\.ya?ml$|\.compose\.ya?ml$/i;
const MAYFLY_TOP_KEYS = ['jobs', 'lifecycle', 'isolation'];
const MAYFLY_SERVICE_KEYS = ['env', 'envFile', 'dependsOn', 'resources', 'replicas', 'workingDir'];

/** True when `filename`/`content` is a Compose file rather than a mayfly.yaml (rules above). */
export function isComposeFile(filename: string, content: string): boolean {
  const byName = formatByName(filename);
  if (byName !== null) return byName === 'compose';
  if (content.length > TEMPLATE_LIMITS.maxBytes) return true;
  const parsed = parseYaml(content, (value) => value);
  return formatByContent(parsed.errors.length > 0 ? undefined : parsed.value) === 'compose';
}

/** The format a file name says (rules 1 and 2 above), or null when it says neither. */
export function formatByName(filename: string): 'mayfly' | 'compose' | null {
  const name = basename(filename);
  if (MAYFLY_NAME.test(name)) return 'mayfly';
  if (COMPOSE_NAME.test(name)) return 'compose';
  return null;
}

/** The format of a parsed document by its keys (rule 3 above); undefined is what failed to parse. */
export function formatByContent(root: unknown): 'mayfly' | 'compose' {
  if (!isPlainObject(root)) return 'compose';
  if (MAYFLY_TOP_KEYS.some((key) => Object.hasOwn(root, key))) return 'mayfly';
  const services = isPlainObject(root.services) ? Object.values(root.services) : [];
  const mayfly = services.some(
    (s) => isPlainObject(s) && MAYFLY_SERVICE_KEYS.some((key) => Object.hasOwn(s, key)),
  );
  return mayfly ? 'mayfly' : 'compose';
}
