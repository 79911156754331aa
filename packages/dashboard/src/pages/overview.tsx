import type { Capacity, Environment, SandboxInfo } from '@mayfly/contract';
import { api } from '../api.js';
import { usePolling } from '../poll.js';
import { onLinkClick } from '../router.js';
import { age } from '../time.js';
import { formatBytes } from '../usage.js';

/** Failures shown: the most recent of each kind. */
const RECENT = 10;

/** Capacity used, warm pools, and what failed lately, read every 2 s. */
export function OverviewPage({ scopedToProject }: { scopedToProject: boolean }) {
  const { value, error, now } = usePolling(
    () =>
      Promise.all([
        api<{ items: Environment[] }>('GET', '/v1/environments'),
        // Server-wide figures and sandboxes are for tokens not bound to a project.
        scopedToProject ? null : api<Capacity>('GET', '/v1/capacity'),
        scopedToProject
          ? null
          : api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes?state=ended').catch(() => null),
      ]),
    'overview',
  );
  const [environments, capacity, ended] = value ?? [null, null, null];
  const failedEnvs = (environments?.items ?? [])
    .filter((e) => e.state === 'failed' || e.updateFailure)
    .sort((a, b) => b.updatedAt.localeCompare(a.updatedAt))
    .slice(0, RECENT);
  const failedSandboxes = (ended?.items ?? [])
    .filter((s) => s.endedReason === 'oom' || s.endedReason === 'error')
    .sort((a, b) => (b.endedAt ?? '').localeCompare(a.endedAt ?? ''))
    .slice(0, RECENT);

  return (
    <section>
      <h1>Overview</h1>
      {error ? (
        <p class="error" role="alert">
          {(error as Error).message}
        </p>
      ) : null}
      {environments === null ? (
        <p class="muted">Loading…</p>
      ) : (
        <>
          {capacity ? <CapacityFigures capacity={capacity} /> : null}
          {capacity?.sandboxes && capacity.sandboxes.pools.length > 0 ? (
            <>
              <h2>Warm pools</h2>
              <table class="pools">
                <thead>
                  <tr>
                    <th>Template</th>
                    <th>Ready</th>
                    <th>Being made</th>
                    <th>Kept ready</th>
                  </tr>
                </thead>
                <tbody>
                  {capacity.sandboxes.pools.map((p) => (
                    <tr key={p.template} data-pool={p.template}>
                      <td>{p.template}</td>
                      <td class={p.ready < p.size ? 'state-creating' : 'state-ready'}>{p.ready}</td>
                      <td>{p.starting}</td>
                      <td>{p.size}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          ) : null}
          <h2>Recent failures</h2>
          {failedEnvs.length === 0 && failedSandboxes.length === 0 ? (
            <p class="muted">Nothing failed.</p>
          ) : (
            <ul class="failures">
              {failedEnvs.map((e) => {
                const f = e.state === 'failed' ? e.failure : e.updateFailure;
                return (
                  <li key={e.id} data-failed-env={e.name}>
                    <a href={`/environments/${encodeURIComponent(e.name)}`} onClick={onLinkClick}>
                      {e.name}
                    </a>{' '}
                    <span class="state-failed">{e.state === 'failed' ? 'failed' : 'update failed'}</span>
                    {f ? ` at ${f.step}: ${f.reason}` : ''}{' '}
                    <span class="muted">({age(e.updatedAt, now)} ago)</span>
                  </li>
                );
              })}
              {failedSandboxes.map((s) => (
                <li key={s.id} data-failed-sandbox={s.id}>
                  sandbox {s.id} ({s.template}){' '}
                  <span class="state-failed">
                    {s.endedReason === 'oom' ? 'killed: out of memory' : 'ended by an error'}
                  </span>{' '}
                  {s.endedAt ? <span class="muted">({age(s.endedAt, now)} ago)</span> : null}
                </li>
              ))}
            </ul>
          )}
        </>
      )}
      <p>
        <a href="/metrics">Prometheus metrics</a> <span class="muted">(/metrics, for a scraper)</span>
      </p>
    </section>
  );
}

function Meter({ label, used, max, text }: { label: string; used: number; max: number; text: string }) {
  return (
    <div class="meter" data-meter={label}>
      <dt>{label}</dt>
      <dd>{text}</dd>
      <meter min={0} max={max} value={Math.min(used, max)} high={max * 0.8} optimum={0} aria-label={label} />
    </div>
  );
}

function CapacityFigures({ capacity }: { capacity: Capacity }) {
  const { environments, sandboxes, images, host } = capacity;
  const usedMemory = host.memoryBytes - host.availableMemoryBytes;
  return (
    <dl class="usage meters">
      <Meter
        label="Environments"
        used={environments.used}
        max={environments.max}
        text={`${environments.used} of ${environments.max}`}
      />
      {sandboxes ? (
        <Meter
          label="Sandboxes"
          used={sandboxes.used}
          max={sandboxes.max}
          text={`${sandboxes.used} of ${sandboxes.max} · ${formatBytes(sandboxes.memoryMb * 1024 * 1024)} limits`}
        />
      ) : null}
      <Meter
        label="Memory in use"
        used={usedMemory}
        max={host.memoryBytes}
        text={`${formatBytes(usedMemory)} of ${formatBytes(host.memoryBytes)}`}
      />
      <Meter
        label="Built images"
        used={images.bytes}
        max={images.budgetBytes}
        text={`${formatBytes(images.bytes)} of ${formatBytes(images.budgetBytes)} (${images.count})`}
      />
    </dl>
  );
}
