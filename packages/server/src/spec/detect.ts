/**
 * Telling a Compose file from a mayfly.yaml, by name first, then by content:
 * 1. `mayfly.yaml`, `mayfly.yml`, `*.mayfly.yaml` → mayfly.yaml;
 * 2. `compose.yaml`, `docker-compose.yml`, `compose.prod.yaml`, `*.compose.yaml` → Compose;
 * 3. any other name: a top-level `jobs`, `lifecycle` or `isolation`, or a service using a key only
 *    mayfly.yaml has (`env`, `envFile`, `dependsOn`, `resources`, `replicas`, `workingDir`) →
 *    mayfly.yaml; anything else (including unparsable YAML) → Compose, the more common format.
 */
import { basename } from 'node:path';
import { parse } from 'yaml';
import { isPlainObject } from './schema-kit.js';

const MAYFLY_NAME = /(^|\.)mayfly\.ya?ml$/i;
const COMPOSE_NAME = /^(docker-)?compose(\.[\w-]+)*\.ya?ml$|\.compose\.ya?ml$/i;
const MAYFLY_TOP_KEYS = ['jobs', 'lifecycle', 'isolation'];
const MAYFLY_SERVICE_KEYS = ['env', 'envFile', 'dependsOn', 'resources', 'replicas', 'workingDir'];

/** True when `filename`/`content` is a Compose file rather than a mayfly.yaml (rules above). */
export function isComposeFile(filename: string, content: string): boolean {
  const name = basename(filename);
  if (MAYFLY_NAME.test(name)) return false;
  if (COMPOSE_NAME.test(name)) return true;
  let root: unknown;
  try {
    root = parse(content);
  } catch {
    return true;
  }
  if (!isPlainObject(root)) return true;
  if (MAYFLY_TOP_KEYS.some((key) => key in root)) return false;
  const services = isPlainObject(root.services) ? Object.values(root.services) : [];
  return !services.some((s) => isPlainObject(s) && MAYFLY_SERVICE_KEYS.some((key) => key in s));
}
