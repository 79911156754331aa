/**
 * Environment templates: `mayfly.yaml` and Docker Compose files, validated with a position for
 * every issue, interpolated with the environment's inputs, and planned into an `EnvPlan`.
 *
 * ```ts
 * const template = loadTemplate({ filename: 'compose.yaml', content, dir }, { inputs, serviceUrl });
 * // Compose override files (`-f a.yaml -f b.yaml`), merged as Compose merges them:
 * loadTemplate({ filename: 'compose.yaml', content, dir, overrides: [{ filename: 'ci.yaml', content: ci }] });
 * const envPlan = plan(template, { envId, envName, project });
 * ```
 */

export { workloadHash } from '../plan/hash.js';
export { MERGE_LIMITS } from './compose-merge.js';
export { isComposeFile } from './detect.js';
export { parseEnvFile } from './env-file.js';
export { formatIssue, TemplateError } from './issues.js';
export { TEMPLATE_LIMITS, TEMPLATE_MAX_BYTES } from './limits.js';
export {
  type HostPathRef,
  type LoadOptions,
  loadTemplate,
  type Template,
  type TemplateOverride,
  type TemplateSource,
} from './load.js';
export { DESTROY_TRIGGERS } from './mayfly-schema.js';
export { HEALTHCHECK_DEFAULTS } from './normalize.js';
export { plan } from './plan.js';
