/**
 * Sandboxes: create (cold path for now), run commands, move files, reach ports, pause, extend, kill;
 * each killed by itself when its time is up, and every end recorded with why. The only module that
 * touches the sandbox store and the sandbox runtime; API routes call it.
 */

import { mkdir, readdir, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  CreateSandboxRequest,
  CreateSandboxTemplateRequest,
  EGRESS_CIDR,
  RunCommandRequest,
  type SandboxEndReason,
  type SandboxFileEntry,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxTemplateInfo,
  type SandboxUsageAnswer,
  SetSandboxTimeoutRequest,
  SignalRequest,
  TerminalSize,
} from '@mayfly/contract';
import type * as z from 'zod';
import type { Access } from '../access/access.js';
import {
  ConflictError,
  ForbiddenError,
  InvalidRequestError,
  NotFoundError,
  QuotaExceededError,
} from '../controller/errors.js';
import { serviceUrl, type UrlScheme } from '../controller/urls.js';
import type { Logger } from '../observability/logger.js';
import { eachLimited } from '../runtime/abort.js';
import { RuntimeUnavailableError } from '../runtime/runtime.js';
import type { SandboxRecord, Store } from '../store/store.js';
import { type AgentChannel, AgentError, AgentUnavailableError, readBounded } from './agent-channel.js';
import {
  canonicalCidr,
  EgressRefusedError,
  egressRefusal,
  egressRules,
  MAX_LISTED_RANGES,
  permittedRangeProblem,
  resolveListedName,
} from './egress-policy.js';
import {
  type IsolationSupport,
  type ObservedSandbox,
  SandboxImageRefusedError,
  type SandboxRuntime,
  type SandboxSpec,
  type SandboxUsage,
} from './sandbox-runtime.js';
import type { SandboxTemplate, SandboxTemplates } from './sandbox-templates.js';
import { newSandboxId, POOL_LABEL, POOL_OWNER_LABEL, poolOwnerTag, WarmPool } from './warm-pool.js';

const MiB = 1024 * 1024;

export interface SandboxServiceOptions {
  store: Store;
  runtime: SandboxRuntime;
  templates: SandboxTemplates;
  /** `<dataDir>/sandboxes/<id>/` holds each sandbox's agent socket. */
  dataDir: string;
  logger: Logger;
  /** How long a new sandbox's agent has to connect; default 15 s. */
  agentTimeoutMs?: number;
  /** How often expired sandboxes are looked for; default 1 s. */
  sweepIntervalMs?: number;
  /** How long an ended sandbox's record is kept; default 24 h. */
  retentionMs?: number;
  /** How the gateway's URLs look, for each sandbox's `urlTemplate`. */
  urls: UrlScheme;
  /** Sandboxes running or paused at once; past it a create is refused (429); default 250. */
  maxSandboxes?: number;
  /** Sandboxes kept ready per template (none for templates not named); default none. */
  poolSizes?: Record<string, number>;
  /** The pool's sandboxes' memory limits add up to at most this; default 4 GiB. */
  poolMemoryBytes?: number;
  /**
   * Private address ranges (the LAN, other Docker networks) a sandbox may list in `allowOut`;
   * none by default: listing `0.0.0.0/0` opens only the public internet (egress-policy.ts).
   */
  permittedPrivateRanges?: string[];
  /** Templates built before start filling their pools this long after the start; default 10 s. */
  poolStartDelayMs?: number;
  /**
   * This process among the replicas sharing the store (its lease owner). Its pooled sandboxes are
   * labelled with it, and other replicas leave them alone while it says it is alive.
   */
  replica: string;
  /**
   * It says so again every third of this; its last word older than this, it hands nothing out of
   * its pool; silent twice this long, it counts as gone. Default 30 s.
   */
  replicaTtlMs?: number;
}

/** Sandboxes ended or checked at once by housekeeping; never aborted. */
const HOUSEKEEPING_CONCURRENCY = 4;
const housekeeping = new AbortController().signal;
/** How long one reading of a sandbox's counters answers every asker. */
const USAGE_SHARED_MS = 1000;

export class SandboxService {
  private readonly channels = new Map<string, AgentChannel>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private readonly root: string;

  private readonly pool: WarmPool;
  /** This replica as its pooled sandboxes' owner label says it. */
  private readonly ownerTag: string;
  private beatTimer: NodeJS.Timeout | undefined;
  /**
   * Each sandbox's last reading of the platform's counters, shared for a second: pages polling the
   * same sandbox (or one page many times) cost the engine one reading, not one each.
   */
  private readonly usageReadings = new Map<string, { at: number; reading: Promise<SandboxUsage | null> }>();

  constructor(private readonly options: SandboxServiceOptions) {
    for (const range of options.permittedPrivateRanges ?? []) {
      const problem = permittedRangeProblem(range);
      if (problem) throw new Error(`--sandbox-allow-private: ${problem}`);
    }
    this.root = path.join(options.dataDir, 'sandboxes');
    this.ownerTag = poolOwnerTag(options.replica);
    this.pool = new WarmPool({
      sizeOf: (name) => options.poolSizes?.[name] ?? options.templates.get(name)?.pool ?? 0,
      memoryBudgetBytes: options.poolMemoryBytes ?? 4 * 1024 * MiB,
      memoryBytesOf: (name) => (options.templates.get(name)?.memoryMb ?? 0) * MiB,
      make: (template, id) => this.makePooled(template, id),
      discard: (id, channel) => this.discard(id, channel),
      logger: options.logger,
    });
  }

  private knownIsolations: Promise<IsolationSupport> | undefined;
  private filtersEgress: Promise<boolean> | undefined;

  /**
   * What `allowOut` lets a new sandbox reach: CIDRs as they are, host names resolved now (to all
   * their IPv4 addresses, and written into its hosts file); none when nothing is listed.
   */
  private async egressOf(
    allowOut: readonly string[],
    template: SandboxTemplate,
  ): Promise<SandboxSpec['egress']> {
    if (allowOut.length === 0) return undefined;
    if (template.isolation === 'gvisor')
      throw new InvalidRequestError(
        `template "${template.name}" runs under gvisor, which has no network here: create it without allowOut`,
      );
    this.filtersEgress ??= this.options.runtime.canFilterEgress();
    if (!(await this.filtersEgress))
      throw new InvalidRequestError(
        "this server cannot filter a sandbox's traffic (it needs root and iptables): create it without allowOut",
      );
    const permitted = this.options.permittedPrivateRanges ?? [];
    const listed: string[] = [];
    const hosts: Record<string, string> = {};
    try {
      for (const entry of allowOut.filter((e) => EGRESS_CIDR.test(e))) {
        const cidr = canonicalCidr(entry.includes('/') ? entry : `${entry}/32`);
        const why = egressRefusal(cidr, permitted);
        if (why) throw new EgressRefusedError(why);
        listed.push(cidr);
      }
      // All at once: a create waits for its slowest name, not for the sum of their timeouts.
      const names = [...new Set(allowOut.filter((e) => !EGRESS_CIDR.test(e)))];
      const resolved = await Promise.all(names.map((name) => resolveListedName(name, permitted)));
      names.forEach((name, i) => {
        const addresses = resolved[i]!;
        for (const address of addresses) listed.push(`${address}/32`);
        hosts[name] = addresses[0]!;
      });
    } catch (err) {
      if (err instanceof EgressRefusedError) throw new InvalidRequestError(`allowOut: ${err.message}`);
      throw err;
    }
    const ranges = [...new Set(listed)];
    if (ranges.length > MAX_LISTED_RANGES)
      throw new InvalidRequestError(
        `allowOut: ${ranges.length} addresses and ranges with the names resolved; at most ${MAX_LISTED_RANGES}`,
      );
    return { rules: egressRules(ranges, permitted), hosts };
  }

  /**
   * What `isolation` needs of the platform; 503 where no sandbox may be made at all, saying why.
   * runc is always there: only other classes wait for the detection (a probe container).
   */
  private async supportFor(isolation: string): Promise<IsolationSupport> {
    let refusal: string | undefined;
    try {
      refusal = await this.platformRefusal();
    } catch (err) {
      throw new RuntimeUnavailableError(`sandboxes cannot be made yet: ${(err as Error).message}`);
    }
    if (refusal) throw new RuntimeUnavailableError(`sandboxes cannot be made on this server: ${refusal}`);
    return isolation === 'runc' ? { available: ['runc'], missing: {} } : this.isolations();
  }

  /** The platform's answer (see `platformRefusal`), and until when it stands. */
  private checkedPlatform: { answer: Promise<string | undefined>; until: number } | undefined;

  /**
   * Why no sandbox may be made here, or undefined (logged). A refusal is asked again after 5
   * minutes (the operator may have fixed the cluster), a failure to tell after 30 s; a yes stands.
   */
  private platformRefusal(): Promise<string | undefined> {
    if (this.checkedPlatform && performance.now() < this.checkedPlatform.until)
      return this.checkedPlatform.answer;
    const checked: { answer: Promise<string | undefined>; until: number } = {
      until: Number.POSITIVE_INFINITY,
      answer: this.options.runtime.checkPlatform().then(
        (refusal) => {
          if (refusal) {
            this.options.logger.error(`sandboxes: none will be made: ${refusal}`);
            checked.until = performance.now() + 5 * 60_000;
          }
          return refusal;
        },
        (err: unknown) => {
          checked.until = performance.now() + 30_000;
          throw err;
        },
      ),
    };
    this.checkedPlatform = checked;
    return checked.answer;
  }

  /**
   * What the platform can run, detected once (from start, or at the first create when it was down
   * then); what it cannot, and why, is logged once.
   */
  private isolations(): Promise<IsolationSupport> {
    this.knownIsolations ??= this.options.runtime.isolations().then(
      (support) => {
        for (const [isolation, why] of Object.entries(support.missing))
          this.options.logger.info({ isolation }, `sandboxes: no ${isolation} isolation: ${why}`);
        return support;
      },
      (err: unknown) => {
        this.knownIsolations = undefined;
        throw err;
      },
    );
    return this.knownIsolations;
  }

  /** Resolves once the pool has made what it is missing (tests, the benchmark). */
  poolSettled(): Promise<void> {
    return this.pool.settled();
  }

  /**
   * Takes over after a restart: sandboxes whose time ran out meanwhile are killed, the rest get
   * their channel back (their agents dial in again), and sandboxes of this installation the store
   * does not know are removed (retried while the runtime cannot be reached). Then sweeps for
   * expired ones every second.
   */
  async start(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    // Alive before anything is pooled: no replica takes this one's pool for a dead one's.
    await this.beat();
    this.beatTimer = setInterval(() => void this.beat(), this.replicaTtlMs() / 3);
    this.beatTimer.unref();
    await this.options.templates.load();
    // Not waited for: a probe container may take a moment, and only a create needs the answer.
    this.isolations().catch((err) =>
      this.options.logger.warn({ err }, 'sandboxes: isolation classes not detected yet'),
    );
    this.platformRefusal().catch((err) =>
      this.options.logger.warn({ err }, 'sandboxes: the platform not checked yet'),
    );
    // A sandbox whose main process died, or in which the kernel killed something for memory, is
    // ended (its state is not to be trusted; the agent itself may be what was killed).
    this.unwatch = this.options.runtime.watch((id, cause) => {
      if (this.pool.owns(id)) {
        this.pool.drop(id);
        return;
      }
      if (this.ending.has(id) || !this.channels.has(id)) return;
      void this.end(id, cause === 'oom' ? 'oom' : 'error').catch((err) =>
        this.options.logger.warn({ err, sandbox: id }, 'ending a sandbox that died failed'),
      );
    });
    await this.reconcile().catch((err) => this.options.logger.warn({ err }, 'sandboxes: taking over later'));
    await this.forgetOrphanDirs().catch((err) =>
      this.options.logger.warn({ err }, 'sandboxes: removing folders of gone sandboxes failed'),
    );
    // Templates built before are kept warm from a little after the start (the first environments a
    // fresh server brings up get the machine first); the others once first asked for.
    this.warmTimer = setTimeout(() => {
      void (async () => {
        for (const template of this.options.templates.list()) {
          if (this.stopped) return;
          if (await this.options.templates.built(template).catch(() => false))
            this.pool.activate(template.name);
        }
      })();
    }, this.options.poolStartDelayMs ?? 10_000);
    this.warmTimer.unref();
    this.timer = setInterval(() => {
      this.sweeping ??= this.sweep().finally(() => {
        this.sweeping = undefined;
      });
    }, this.options.sweepIntervalMs ?? 1_000);
    this.timer.unref();
  }

  private replicaTtlMs(): number {
    return this.options.replicaTtlMs ?? 30_000;
  }

  /** When the last beat that got through was sent (this process's monotonic clock). */
  private lastBeatAt = Number.NEGATIVE_INFINITY;

  private async beat(): Promise<void> {
    const sentAt = performance.now();
    try {
      await this.options.store.replicas.beat(this.options.replica, this.replicaTtlMs());
      this.lastBeatAt = sentAt;
    } catch (err) {
      this.options.logger.warn({ err }, 'sandboxes: saying this replica is alive failed');
    }
  }

  /**
   * Whether the others still count this replica alive: its last beat got through less than a
   * TTL ago. They remove its pool only a TTL after that (see `reconcile`); until a beat gets
   * through again its pool is not handed out, so a sandbox being removed never is.
   */
  private surelyAlive(): boolean {
    return performance.now() - this.lastBeatAt < this.replicaTtlMs();
  }

  /** Socket folders of sandboxes no record knows (a crash's pooled ones): removed at start. */
  private async forgetOrphanDirs(): Promise<void> {
    const live = new Set(
      (await this.options.store.sandboxes.list({ states: ['running', 'paused'] })).map((r) => r.id),
    );
    for (const name of await readdir(this.root)) {
      if (live.has(name) || this.creating.has(name) || this.pool.owns(name)) continue;
      await rm(path.join(this.root, name), { recursive: true, force: true });
    }
  }

  private sweeps = 0;
  private warmTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Being created here: housekeeping keeps off until the creation is done or has failed. */
  private readonly creating = new Set<string>();
  /** Creates past the sandbox limit's check, counted until their record is in the store. */
  private readonly admitted = new Set<string>();
  /** The limit's checks, one at a time (see `admit`). */
  private admission: Promise<void> = Promise.resolve();
  private unwatch: (() => void) | undefined;
  /** Sandboxes being ended here: the death that ending causes is not a second end. */
  private readonly ending = new Map<string, Promise<void>>();

  /**
   * Records and containers made to agree (at start, then every few seconds, so a death the event
   * stream missed is seen too): a container no record wants is removed, a record whose container
   * died ends, a live one without a channel here gets one. One sandbox's failure is logged and
   * leaves the others alone.
   */
  private async reconcile(): Promise<void> {
    const observed = await this.options.runtime.list();
    // Records read after the containers: one being created meanwhile has its record already.
    const records = await this.options.store.sandboxes.list({ states: ['running', 'paused'] });
    const known = new Set(records.map((r) => r.id));
    const byId = new Map(observed.map((o) => [o.id, o]));
    // Another live replica's pooled sandboxes are its own; a gone one's (or this one's before a
    // restart, which no pool here owns) are removed. Read after the listing: an owner seen there
    // had said it was alive before it pooled anything. A replica counts as gone only a TTL after
    // its time ran out: it stops handing its pool out as soon as its time may have run out
    // (`surelyAlive`), so what is removed here is never in use.
    const liveOwners = async () =>
      new Set((await this.options.store.replicas.alive(this.replicaTtlMs())).map(poolOwnerTag));
    const alive = await liveOwners();
    const othersPooled = (o: ObservedSandbox, owners: Set<string>) => {
      const owner = o.labels[POOL_OWNER_LABEL];
      return owner !== undefined && owner !== this.ownerTag && owners.has(owner);
    };
    const each = async (id: string, work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (err) {
        this.options.logger.warn({ err, sandbox: id }, 'sandbox housekeeping failed');
      }
    };
    await eachLimited(
      [
        ...observed
          .filter(
            (o) =>
              !known.has(o.id) &&
              !this.creating.has(o.id) &&
              !this.pool.owns(o.id) &&
              !othersPooled(o, alive),
          )
          .map(
            (o) => () =>
              each(o.id, async () => {
                // Asked again: one taken from the pool and recorded while the records were read stays.
                if (
                  this.creating.has(o.id) ||
                  this.pool.owns(o.id) ||
                  (await this.options.store.sandboxes.get(o.id)) ||
                  othersPooled(o, await liveOwners())
                )
                  return;
                await this.options.runtime.remove(o.id);
                await rm(path.join(this.root, o.id), { recursive: true, force: true });
              }),
          ),
        ...records.map(
          (record) => () =>
            each(record.id, async () => {
              if (this.creating.has(record.id)) return;
              const container = byId.get(record.id);
              if (!container || container.state === 'exited') {
                // Looked at again: one whose creation finished after the listing is there now.
                const detail = await this.options.runtime.observe(record.id);
                if (detail.state === 'running' || detail.state === 'paused') return;
                await this.end(record.id, detail.oomKilled ? 'oom' : 'error');
              } else if (!this.channels.has(record.id)) {
                this.channels.set(record.id, await this.listen(record.id));
              }
            }),
        ),
      ],
      HOUSEKEEPING_CONCURRENCY,
      housekeeping,
      (task) => task(),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.warmTimer);
    clearInterval(this.timer);
    this.unwatch?.();
    await this.knownIsolations?.catch(() => {}); // its probe container removed
    // (A platform check under way is not waited for: it can take minutes; the next one removes
    // what it leaves.)
    await this.sweeping;
    await this.pool.close();
    await Promise.all([...this.channels.values()].map((c) => c.close()));
    this.channels.clear();
    // Its pool is gone: nothing is left for the others to keep off.
    clearInterval(this.beatTimer);
    await this.options.store.replicas.leave(this.options.replica).catch(() => {});
  }

  /** Every second: expired sandboxes end (a few at once); every fifth, records and containers agree. */
  private async sweep(): Promise<void> {
    try {
      const expired = await this.options.store.sandboxes.expiredBefore(new Date());
      await eachLimited(
        expired.map(
          (id) => () =>
            this.end(id, 'timeout').catch((err) =>
              this.options.logger.warn({ err, sandbox: id }, 'ending an expired sandbox failed'),
            ),
        ),
        HOUSEKEEPING_CONCURRENCY,
        housekeeping,
        (task) => task(),
      );
      if (this.sweeps++ % 5 === 0) {
        await this.reconcile();
        this.pool.refill(); // after a failed make, in a while
      }
      await this.options.store.sandboxes.forgetEndedBefore(
        new Date(Date.now() - (this.options.retentionMs ?? 24 * 60 * 60 * 1000)),
      );
    } catch (err) {
      this.options.logger.warn({ err }, 'sandbox sweep failed');
    }
  }

  private agentDir(id: string): string {
    return path.join(this.root, id);
  }

  async create(input: unknown, access: Access): Promise<SandboxInfo> {
    unbound(access);
    const request = CreateSandboxRequest.parse(input);
    const template = this.options.templates.get(request.template);
    if (!template) {
      const known = this.options.templates.list().map((t) => t.name);
      throw new InvalidRequestError(
        `no sandbox template "${request.template}" (there are: ${known.join(', ')})`,
      );
    }
    const support = await this.supportFor(template.isolation);
    if (!support.available.includes(template.isolation)) {
      throw new InvalidRequestError(
        `template "${template.name}" needs ${template.isolation} isolation, which this server does not have: ${support.missing[template.isolation] ?? 'unknown'}`,
      );
    }
    const cpu = request.cpu ?? template.cpu;
    const memoryMb = request.memoryMb ?? template.memoryMb;
    // Checked (and its names resolved) before anything is made.
    const egress = await this.egressOf(request.allowOut, template);
    // A pooled sandbox has the template's limits and no network: one asked otherwise is made for it.
    const poolable = cpu === template.cpu && memoryMb === template.memoryMb && !egress;
    const admitted = await this.admit(() => {
      const taken = poolable && this.surelyAlive() ? this.pool.take(template.name) : undefined;
      const id = taken?.id ?? newSandboxId();
      this.creating.add(id); // (same tick as the take: housekeeping never sees it unowned)
      return { id, taken };
    });
    let { id, taken: pooled } = admitted;
    if (
      pooled &&
      !(await pooled.channel.ready(1_000).then(
        () => true,
        () => false,
      ))
    ) {
      // Its agent went away while it waited: removed, and this create takes the cold path.
      const gone = pooled;
      id = newSandboxId();
      this.creating.add(id);
      this.admitted.add(id);
      this.admitted.delete(gone.id); // (never in the store; its place passed on in the same tick)
      this.creating.delete(gone.id);
      await this.discard(gone.id, gone.channel).catch(() => {});
      pooled = undefined;
    }
    try {
      const image = pooled ? undefined : await this.options.templates.image(template);
      const info = await this.createAs(
        id,
        template,
        image,
        cpu,
        memoryMb,
        request,
        access,
        pooled?.channel,
        egress,
      );
      // Built and used now: the pool keeps some ready from here on.
      this.pool.activate(template.name);
      return info;
    } finally {
      this.creating.delete(id);
      // In the store now (or failed): counted from there, once no admission is counting.
      await this.admission.then(() => this.admitted.delete(id));
    }
  }

  /**
   * The sandbox limit, checked and a place taken in one step: creates admitted but not yet in the
   * store count too, or a burst of creates would all pass while none was recorded. Admissions run
   * one at a time, and an admitted create leaves the count only between them (a listing started
   * before its record was written still sees it admitted). `take` runs in the same step.
   */
  private admit<T extends { id: string }>(take: () => T): Promise<T> {
    const step = this.admission.then(async () => {
      const live = await this.options.store.sandboxes.list({ states: ['running', 'paused'] });
      const counted = new Set([...live.map((r) => r.id), ...this.admitted]).size;
      const max = this.options.maxSandboxes ?? 250;
      if (counted >= max) {
        throw new QuotaExceededError(
          `this server runs at most ${max} sandboxes at once and ${counted} are running, paused or being created: kill one, or wait for one to time out`,
        );
      }
      const taken = take();
      this.admitted.add(taken.id);
      return taken;
    });
    this.admission = step.then(
      () => {},
      () => {},
    );
    return step;
  }

  /**
   * Records the sandbox, then makes it (cold: `image` given) or takes over a pooled one (`pooled`,
   * its agent connected), then applies the caller's variables.
   */
  private async createAs(
    id: string,
    template: SandboxTemplate,
    image: string | undefined,
    cpu: number,
    memoryMb: number,
    request: z.output<typeof CreateSandboxRequest>,
    access: Access,
    pooled: AgentChannel | undefined,
    egress: SandboxSpec['egress'],
  ): Promise<SandboxInfo> {
    const now = new Date();
    const channel = pooled ?? (await this.listen(id));
    this.channels.set(id, channel);
    await this.options.store.sandboxes.insert({
      id,
      template: template.name,
      state: 'running',
      metadata: request.metadata,
      cpu,
      memoryMb,
      createdBy: access.tokenId,
      startedAt: now,
      expiresAt: new Date(now.getTime() + request.timeoutMs),
    });
    try {
      if (image !== undefined) await this.launch(id, template, image, channel, {}, { cpu, memoryMb }, egress);
      if (Object.keys(request.envs).length > 0)
        await channel.json('POST', '/v1/configure', { envs: request.envs });
      const record = await this.options.store.sandboxes.get(id);
      // Killed (or timed out) while it came up: what the creation made goes too (the end below;
      // the first end's reason stays).
      if (!record || record.state === 'ended')
        throw new ConflictError(`sandbox ${id} was killed while it was being created`);
      return this.info(record);
    } catch (err) {
      await this.end(id, 'error');
      if (err instanceof SandboxImageRefusedError) throw new InvalidRequestError(err.message);
      throw err instanceof AgentUnavailableError ? new RuntimeUnavailableError(err.message) : err;
    }
  }

  /** The way to a sandbox's agent (on Docker: a socket it dials, in a directory of its own). */
  private listen(id: string): Promise<AgentChannel> {
    return this.options.runtime.openChannel(id, this.agentDir(id));
  }

  /** Makes the container with the template's limits and waits for its agent. */
  private async launch(
    id: string,
    template: SandboxTemplate,
    image: string,
    channel: AgentChannel,
    labels: Record<string, string>,
    limits: { cpu: number; memoryMb: number } = template,
    egress?: SandboxSpec['egress'],
  ): Promise<void> {
    await this.options.runtime.create({
      id,
      image,
      user: template.user,
      home: template.home,
      env: template.env,
      cpus: limits.cpu,
      memoryBytes: limits.memoryMb * MiB,
      pids: template.pids,
      // Home and /tmp are in memory: with less memory asked than the template's, they shrink to fit.
      diskBytes: Math.min(template.diskMb, Math.floor(limits.memoryMb / 2)) * MiB,
      readOnlyRoot: template.readOnlyRoot,
      isolation: template.isolation,
      agentDir: this.agentDir(id),
      ...(egress ? { egress } : {}),
      labels,
    });
    await channel.ready(this.options.agentTimeoutMs ?? 15_000);
  }

  /** A pooled sandbox, made ahead: the container, its agent connected, no record yet. */
  private async makePooled(templateName: string, id: string): Promise<AgentChannel> {
    const template = this.options.templates.get(templateName);
    if (!template) throw new Error(`no sandbox template "${templateName}"`);
    // (Failed, it is tried again later, as any failure to fill: the runtime may be back by then.)
    const support = await this.supportFor(template.isolation);
    if (!support.available.includes(template.isolation))
      throw new Error(
        `no ${template.isolation} isolation: ${support.missing[template.isolation] ?? 'unknown'}`,
      );
    const image = await this.options.templates.image(template);
    const channel = await this.listen(id);
    try {
      await this.launch(id, template, image, channel, {
        [POOL_LABEL]: template.name,
        [POOL_OWNER_LABEL]: this.ownerTag,
      });
    } catch (err) {
      await this.discard(id, channel);
      throw err;
    }
    return channel;
  }

  /** Removes a sandbox that has no record (a pooled one) and everything it had. */
  private async discard(id: string, channel: AgentChannel | undefined): Promise<void> {
    try {
      await this.options.runtime.remove(id);
    } finally {
      await channel?.close();
      await rm(path.join(this.root, id), { recursive: true, force: true });
    }
  }

  /** The templates sandboxes can be made from, with their warm pools' levels. */
  async templates(access: Access): Promise<SandboxTemplateInfo[]> {
    unbound(access);
    return Promise.all(this.options.templates.list().map((t) => this.templateInfo(t)));
  }

  /** Makes a template (an uploaded folder built now, or an image), or replaces the one of its name. */
  async putTemplate(input: unknown, access: Access): Promise<SandboxTemplateInfo> {
    unbound(access);
    const request = CreateSandboxTemplateRequest.parse(input);
    const support = await this.supportFor(request.isolation);
    const template = await this.options.templates.put(request, support, async (image) => {
      try {
        await this.options.runtime.checkImage(image);
      } catch (err) {
        throw err instanceof SandboxImageRefusedError ? new InvalidRequestError(err.message) : err;
      }
    });
    // Pooled sandboxes of what it was are not what it is now.
    this.pool.flush(template.name);
    this.pool.activate(template.name);
    return this.templateInfo(template);
  }

  async removeTemplate(name: string, access: Access): Promise<void> {
    unbound(access);
    await this.options.templates.remove(name);
    this.pool.flush(name);
  }

  private async templateInfo(template: SandboxTemplate): Promise<SandboxTemplateInfo> {
    const { size, ready, starting } = this.pool.level(template.name);
    return {
      name: template.name,
      source: template.builtIn ? 'built-in' : 'image' in template.source ? 'image' : 'dockerfile',
      image: await this.options.templates.builtImage(template).catch(() => null),
      user: template.user,
      workdir: template.home,
      env: template.env,
      cpu: template.cpu,
      memoryMb: template.memoryMb,
      pids: template.pids,
      diskMb: template.diskMb,
      isolation: template.isolation,
      readOnlyRoot: template.readOnlyRoot,
      pool: { size, ready, starting },
      createdAt: template.createdAt?.toISOString() ?? null,
    };
  }

  async get(id: string, access: Access): Promise<SandboxInfo> {
    unbound(access);
    return this.info(await this.record(id));
  }

  async list(
    access: Access,
    filter: { states?: SandboxInfo['state'][]; metadata?: Record<string, string> } = {},
  ): Promise<SandboxInfo[]> {
    unbound(access);
    const records = await this.options.store.sandboxes.list({
      states: filter.states ?? ['running', 'paused'],
    });
    const wanted = Object.entries(filter.metadata ?? {});
    return records.filter((r) => wanted.every(([k, v]) => r.metadata[k] === v)).map((r) => this.info(r));
  }

  /**
   * What a running or paused sandbox uses now: one reading of the platform's counters (null where
   * it does not count them, as on Kubernetes without a metrics server). Nothing is kept here: a
   * CPU rate is the change of `cpuSeconds` between two readings, which the caller takes.
   */
  async usage(id: string, access: Access): Promise<SandboxUsageAnswer> {
    unbound(access);
    await this.live(id);
    const now = Date.now();
    for (const [key, kept] of this.usageReadings)
      if (now - kept.at >= USAGE_SHARED_MS) this.usageReadings.delete(key);
    let kept = this.usageReadings.get(id);
    if (!kept) {
      const fresh = { at: now, reading: this.options.runtime.usage(id) };
      this.usageReadings.set(id, fresh);
      // A failed reading is not shared: the next asks again.
      fresh.reading.catch(() => {
        if (this.usageReadings.get(id) === fresh) this.usageReadings.delete(id);
      });
      kept = fresh;
    }
    const usage = await kept.reading;
    return {
      usage: usage && {
        sampledAt: usage.sampledAt.toISOString(),
        cpuSeconds: usage.cpuSeconds,
        memoryBytes: usage.memoryBytes,
        memoryPeakBytes: usage.memoryPeakBytes,
        pids: usage.pids,
      },
    };
  }

  async kill(id: string, access: Access): Promise<void> {
    unbound(access);
    const record = await this.record(id);
    if (record.state !== 'ended') await this.end(id, 'killed');
  }

  /** Its time is up `timeoutMs` from now (E2B's `setTimeout`): extends or shortens. */
  async setTimeout(id: string, input: unknown, access: Access): Promise<SandboxInfo> {
    unbound(access);
    const { timeoutMs } = SetSandboxTimeoutRequest.parse(input);
    if (!(await this.options.store.sandboxes.setExpiry(id, new Date(Date.now() + timeoutMs)))) {
      await this.record(id); // 404 when unknown
      throw new ConflictError(`sandbox ${id} has ended`);
    }
    return this.info(await this.record(id));
  }

  async pause(id: string, access: Access): Promise<SandboxInfo> {
    unbound(access);
    await this.live(id);
    await this.options.runtime.pause(id);
    await this.options.store.sandboxes.setState(id, 'paused');
    return this.info(await this.record(id));
  }

  async resume(id: string, access: Access): Promise<SandboxInfo> {
    unbound(access);
    await this.live(id);
    await this.options.runtime.resume(id);
    await this.options.store.sandboxes.setState(id, 'running');
    return this.info(await this.record(id));
  }

  /** Starts `cmd` (by `/bin/sh -c`); the answer is its NDJSON event stream. */
  async run(id: string, input: unknown, access: Access): Promise<IncomingMessage> {
    const { cmd, ...rest } = RunCommandRequest.parse(input);
    return this.startProcess(id, { shell: cmd }, rest, access);
  }

  /**
   * Starts a program with its arguments, no shell between (for adapters of other APIs, whose
   * callers say which shell they want); the answer is the same event stream as `run`'s.
   */
  async runProgram(id: string, argv: string[], input: unknown, access: Access): Promise<IncomingMessage> {
    if (argv.length === 0 || argv.length > 4096 || argv.some((a) => a.length > 256 * 1024))
      throw new InvalidRequestError('a program and at most 4096 arguments, each at most 256 KiB');
    // The same rules as `run`'s for everything but the command.
    return this.startProcess(id, { cmd: argv }, RunCommandRequest.omit({ cmd: true }).parse(input), access);
  }

  private async startProcess(
    id: string,
    what: { shell: string } | { cmd: string[] },
    request: Omit<z.output<typeof RunCommandRequest>, 'cmd'>,
    access: Access,
  ): Promise<IncomingMessage> {
    unbound(access);
    const channel = await this.running(id);
    return agentCall(() =>
      channel.open('POST', '/v1/processes', {
        body: Buffer.from(
          JSON.stringify({
            ...what,
            envs: request.envs,
            ...(request.cwd ? { cwd: request.cwd } : {}),
            ...(request.user ? { user: request.user } : {}),
            stdin: request.stdin,
            timeoutMs: request.timeoutMs,
            ...(request.tag ? { tag: request.tag } : {}),
            ...(request.pty ? { pty: request.pty } : {}),
          }),
        ),
        headers: { 'content-type': 'application/json' },
      }),
    );
  }

  async processes(id: string, access: Access): Promise<SandboxProcess[]> {
    unbound(access);
    const channel = await this.running(id);
    return (await agentCall(() => channel.json<{ processes: SandboxProcess[] }>('GET', '/v1/processes')))
      .processes;
  }

  async attach(id: string, pid: number, access: Access): Promise<IncomingMessage> {
    unbound(access);
    const channel = await this.running(id);
    return agentCall(() => channel.open('GET', `/v1/processes/${pid}/stream`));
  }

  async stdin(id: string, pid: number, body: Readable, close: boolean, access: Access): Promise<void> {
    unbound(access);
    const channel = await this.running(id);
    const response = await agentCall(() =>
      channel.open('POST', `/v1/processes/${pid}/stdin${close ? '?close=1' : ''}`, { body }),
    );
    response.resume();
  }

  async signal(id: string, pid: number, input: unknown, access: Access): Promise<void> {
    unbound(access);
    const { signal } = SignalRequest.parse(input);
    const channel = await this.running(id);
    await agentCall(() => channel.json('POST', `/v1/processes/${pid}/signal`, { signal }));
  }

  /** Resizes the terminal of a command started with one. */
  async resize(id: string, pid: number, input: unknown, access: Access): Promise<void> {
    unbound(access);
    const size = TerminalSize.parse(input);
    const channel = await this.running(id);
    await agentCall(() => channel.json('POST', `/v1/processes/${pid}/resize`, size));
  }

  /** A file's bytes, streamed from the sandbox. */
  async readFile(id: string, filePath: string, access: Access): Promise<IncomingMessage> {
    unbound(access);
    const channel = await this.running(id);
    return agentCall(() => channel.open('GET', `/v1/files?${new URLSearchParams({ path: filePath })}`));
  }

  /** Writes a file (its folders made), streamed into the sandbox: bounded by its disk, not our memory. */
  async writeFile(id: string, filePath: string, body: Readable, access: Access): Promise<SandboxFileEntry> {
    unbound(access);
    const channel = await this.running(id);
    return agentCall(async () => {
      const response = await channel.open('PUT', `/v1/files?${new URLSearchParams({ path: filePath })}`, {
        body,
      });
      return JSON.parse(await readBounded(response, 64 * 1024)) as SandboxFileEntry;
    });
  }

  /** The other file operations: small JSON answers, parsed here (the sandbox's word is not passed on raw). */
  async fileOp(
    id: string,
    op: 'stat' | 'list' | 'mkdir' | 'rename' | 'remove',
    query: Record<string, string>,
    access: Access,
  ): Promise<unknown> {
    unbound(access);
    const channel = await this.running(id);
    const search = new URLSearchParams(query).toString();
    if (op === 'remove') return agentCall(() => channel.json('DELETE', `/v1/files?${search}`));
    const method = op === 'mkdir' || op === 'rename' ? 'POST' : 'GET';
    return agentCall(() => channel.json(method, `/v1/files/${op}?${search}`));
  }

  /**
   * Watches a directory in the sandbox (and, `recursive`, every directory under it): the answer is
   * a stream of lines of JSON — `start` once everything is watched, then each change (`name`
   * relative to the directory, `op`, and with `entry` what the entry is now), and `end` with why if
   * the watch ends by itself. Closing the answer ends the watch.
   */
  async watchDir(
    id: string,
    dirPath: string,
    options: { recursive: boolean; entry: boolean },
    access: Access,
  ): Promise<IncomingMessage> {
    unbound(access);
    const channel = await this.running(id);
    const query = new URLSearchParams({
      path: dirPath,
      ...(options.recursive ? { recursive: '1' } : {}),
      ...(options.entry ? { entry: '1' } : {}),
    });
    return agentCall(() => channel.open('GET', `/v1/files/watch?${query}`));
  }

  /** Running here, so the gateway may route to it. */
  async isServing(id: string): Promise<boolean> {
    if (!this.channels.has(id)) return false;
    return (await this.options.store.sandboxes.get(id))?.state === 'running';
  }

  /** A raw connection to `port` on the sandbox's loopback (the gateway's way in). */
  async tunnel(id: string, port: number): Promise<net.Socket> {
    const channel = await this.running(id);
    return agentCall(() => channel.tunnel(port));
  }

  private async record(id: string): Promise<SandboxRecord> {
    const record = /^[a-z0-9]{1,40}$/.test(id) ? await this.options.store.sandboxes.get(id) : null;
    if (!record) throw new NotFoundError(`no sandbox ${id}`);
    return record;
  }

  private async live(id: string): Promise<SandboxRecord> {
    const record = await this.record(id);
    if (record.state === 'ended') throw new ConflictError(`sandbox ${id} has ended (${record.endedReason})`);
    return record;
  }

  private async running(id: string): Promise<AgentChannel> {
    const record = await this.live(id);
    if (record.state === 'paused') throw new ConflictError(`sandbox ${id} is paused: resume it first`);
    const channel = this.channels.get(id);
    if (!channel) throw new ConflictError(`sandbox ${id} is not served by this control plane`);
    return channel;
  }

  /** Ends a sandbox once, recording why and its memory peak, and removes everything it had. */
  /** Ends it once: a second caller while it ends waits for the same end (the first reason stays). */
  private end(id: string, reason: SandboxEndReason): Promise<void> {
    const under = this.ending.get(id);
    if (under) return under;
    const ending = this.endOnce(id, reason).finally(() => this.ending.delete(id));
    this.ending.set(id, ending);
    return ending;
  }

  private async endOnce(id: string, reason: SandboxEndReason): Promise<void> {
    const usage = await this.options.runtime.usage(id).catch(() => null);
    const observed = await this.options.runtime.observe(id).catch(() => undefined);
    const why = reason === 'timeout' || reason === 'killed' ? reason : observed?.oomKilled ? 'oom' : reason;
    // Gone first, then recorded: an ended sandbox has nothing left (a failed removal is retried).
    await this.options.runtime.remove(id);
    await this.options.store.sandboxes.end(id, why, usage?.memoryPeakBytes ?? null);
    await this.channels.get(id)?.close();
    this.channels.delete(id);
    await rm(path.join(this.root, id), { recursive: true, force: true });
  }

  private info(record: SandboxRecord): SandboxInfo {
    return {
      id: record.id,
      template: record.template,
      state: record.state,
      endedReason: record.endedReason,
      metadata: record.metadata,
      startedAt: record.startedAt.toISOString(),
      expiresAt: record.expiresAt.toISOString(),
      endedAt: record.endedAt?.toISOString() ?? null,
      cpu: record.cpu,
      memoryMb: record.memoryMb,
      peakMemoryBytes: record.peakMemoryBytes,
      urlTemplate: serviceUrl('{port}', record.id, this.options.urls),
    };
  }
}

/** Sandboxes belong to no project: a token bound to one cannot reach them. */
function unbound(access: Access): void {
  if (access.project !== null)
    throw new ForbiddenError('sandboxes need a token that is not bound to a project');
}

/** The agent's refusals as domain errors (its words kept), a lost agent as an unavailable runtime. */
async function agentCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof AgentError) {
      if (err.status === 404) throw new NotFoundError(err.message);
      if (err.status === 403) throw new ForbiddenError(err.message);
      if (err.status === 409) throw new ConflictError(err.message);
      if (err.status === 429) throw new QuotaExceededError(err.message);
      if (err.status < 500 || err.status === 507) throw new InvalidRequestError(err.message);
      throw new ConflictError(err.message);
    }
    if (err instanceof AgentUnavailableError) throw new RuntimeUnavailableError(err.message);
    throw err;
  }
}
