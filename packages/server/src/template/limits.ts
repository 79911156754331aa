/**
 * Bounds on the work one template may cause. A template comes from a pull request or from anyone
 * with a token, and it is loaded inside an API request on the server's event loop: every step of
 * loading must finish in time and memory proportional to these numbers, whatever the input.
 * Each limit is far above what a real template needs (a large Compose file has a few thousand
 * YAML nodes, nests fewer than 10 levels and uses a handful of anchors).
 */
import { TEMPLATE_MAX_BYTES } from '@mayfly/contract';
import type { Path, Position } from './yaml-positions.js';

export { TEMPLATE_MAX_BYTES };

/** Every limit of template loading, in one place so tests and messages agree on them. */
export const TEMPLATE_LIMITS = {
  /** Template size, in UTF-8 bytes; checked before anything is parsed. */
  maxBytes: TEMPLATE_MAX_BYTES,
  /**
   * YAML tokens (scalars, indicators, spaces, line breaks, comments) the parser reads. A real
   * template has about one token per 3 bytes (a long string or block is one token), so this is
   * more than half a megabyte of dense YAML; the limit keeps the parser's own cost (a few
   * microseconds per token) bounded on hostile input, such as a megabyte of `- a` lines.
   */
  maxYamlTokens: 200_000,
  /** Syntax errors collected before parsing gives up: a broken template gets its first ones. */
  maxYamlErrors: 50,
  /** Nesting of collections, in the source and once aliases are expanded. */
  maxDepth: 100,
  /** Nodes (keys and values) of the document once aliases and merge keys are expanded. */
  maxNodes: 100_000,
  /** Aliases being expanded inside one another (`*a` whose anchor holds `*b`, and so on). */
  maxAliasDepth: 50,
  /**
   * Characters a template may produce, in all: every key and string of the document once aliases
   * and merge keys are expanded (a string counted at the larger of its length before and after
   * interpolation), plus what loading copies into workloads besides (env files, values taken from
   * inputs, builds shared between services, port ranges: see {@link Budget}). The plan that is
   * stored, and every copy made of it, is about this size: twice the largest template, so that a
   * small template cannot grow into a large plan (a 100 KiB anchor used in 80 variables is 8 MB).
   */
  maxChars: 2 * TEMPLATE_MAX_BYTES,
  /** One string after interpolation. */
  maxInterpolatedLength: 2 * TEMPLATE_MAX_BYTES,
  /** `${A:-${B:-...}}` nesting. */
  maxInterpolationDepth: 32,
  /**
   * Services and jobs of one template: each becomes at least one container (so this is
   * `maxContainers`), and each costs validation work; a template with more is refused before any
   * of them is read.
   */
  maxWorkloads: 100,
  /** Replicas of one service (`deploy.replicas`, `scale`, mayfly.yaml's `replicas`). */
  maxReplicas: 20,
  /** Containers of one environment: the replicas of every service, plus one per job. */
  maxContainers: 100,
  /** One env file, in bytes. */
  maxEnvFileBytes: TEMPLATE_MAX_BYTES,
  /** Issues of each kind (errors, warnings) a TemplateError lists; the rest are counted. */
  maxIssues: 100,
} as const;

/**
 * Thrown when a template goes past one of {@link TEMPLATE_LIMITS}: loading stops there, and the
 * error becomes an issue at `position` (or at `path` when there is no position).
 */
export class TemplateLimitError extends Error {
  override name = 'TemplateLimitError';

  constructor(
    message: string,
    readonly path: Path = [],
    readonly position?: Position,
  ) {
    super(message);
  }
}

/**
 * What {@link Budget} charges for one entry copied into a workload (a variable, a build arg, a
 * port) besides its characters: about what it costs in memory and in the work around it.
 */
export const ENTRY_COST = 64;

/**
 * A running total against a limit, for work whose size the document alone does not bound
 * (an env file read for every service, an input copied into every service).
 */
export class Budget {
  private used = 0;

  constructor(
    readonly limit: number,
    /** Ends "… past N characters", so it must say what is counted. */
    private readonly describe: (limit: number) => string,
  ) {}

  /** Adds `amount`; throws {@link TemplateLimitError} at `path` once the total is past the limit. */
  spend(amount: number, path: Path, position?: Position): void {
    this.used += amount;
    if (this.used > this.limit) throw new TemplateLimitError(this.describe(this.limit), path, position);
  }
}

/** A user-given string shortened for a message: the start, then `…`. */
export function excerpt(text: string, max = 40): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
