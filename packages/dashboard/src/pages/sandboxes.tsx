import type { SandboxInfo, SandboxUsage, SandboxUsageAnswer } from '@mayfly/contract';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api.js';
import { usePolling } from '../poll.js';
import { onLinkClick } from '../router.js';
import { age, timeLeft } from '../time.js';
import { cpuPercent, formatBytes, formatPercent } from '../usage.js';

/** Running sandboxes of the list whose use is read (each a reading of the engine every 2 s). */
export const MAX_USAGE_READS = 25;

/** What a sandbox uses now: CPU in percent of one CPU (null until two readings), memory, processes. */
export interface UsageNow {
  cpuPercent: number | null;
  memoryBytes: number;
  pids: number;
}

/**
 * The use of each of `ids` now, read every 2 s while shown (`GET …/usage`, at most
 * {@link MAX_USAGE_READS}). The server keeps nothing between two readings: CPU now is the change
 * of the CPU time between this page's last two readings over the time between them. An id maps
 * to null where the platform does not count use (Kubernetes) or the reading failed; an id not
 * read yet is missing.
 */
export function useUsage(ids: readonly string[]): Map<string, UsageNow | null> {
  const [now, setNow] = useState(() => new Map<string, UsageNow | null>());
  /** Each sandbox's last reading, and the CPU rate worked out when it came. */
  const last = useRef(new Map<string, { reading: SandboxUsage; cpu: number | null }>());
  const key = ids.slice(0, MAX_USAGE_READS).join(',');
  useEffect(() => {
    const wanted = key ? key.split(',') : [];
    let stopped = false;
    let reading = false;
    const read = async () => {
      // (The engine may take a second to answer; a tab nobody looks at asks nothing.)
      if (reading || wanted.length === 0 || document.hidden) return;
      reading = true;
      const answers = await Promise.all(
        wanted.map((id) =>
          api<SandboxUsageAnswer>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/usage`).then(
            (a) => a.usage,
            () => null,
          ),
        ),
      );
      reading = false;
      if (stopped) return;
      const next = new Map<string, UsageNow | null>();
      wanted.forEach((id, i) => {
        const usage = answers[i] ?? null;
        if (!usage) {
          next.set(id, null);
          return;
        }
        const before = last.current.get(id);
        let cpu = before?.cpu ?? null; // the same reading of the engine again: the rate stands
        if (before?.reading.sampledAt !== usage.sampledAt) {
          cpu = before ? cpuPercent(before.reading, usage) : null;
          last.current.set(id, { reading: usage, cpu });
        }
        next.set(id, { cpuPercent: cpu, memoryBytes: usage.memoryBytes, pids: usage.pids });
      });
      // Sandboxes no longer shown are forgotten.
      for (const id of last.current.keys()) if (!next.has(id)) last.current.delete(id);
      setNow(next);
    };
    void read();
    const timer = setInterval(() => void read(), 2000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [key]);
  return now;
}

/** Sandboxes running, paused and recently ended, read again every 2 s. */
export function SandboxesPage() {
  const {
    value,
    error: failed,
    now,
  } = usePolling(
    () => api<{ items: SandboxInfo[] }>('GET', '/v1/sandboxes?state=running,paused,ended'),
    'sandboxes',
  );
  const items = value?.items ?? null;
  const error = failed ? (failed as Error).message : null;
  const running = (items ?? []).filter((s) => s.state === 'running').map((s) => s.id);
  const usage = useUsage(running);

  return (
    <section>
      <h1>Sandboxes</h1>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {items === null ? (
        <p class="muted">Loading…</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Id</th>
              <th>Template</th>
              <th>State</th>
              <th>Age</th>
              <th class="wide">Time left</th>
              <th class="wide">CPU / memory</th>
              <th>Using now</th>
            </tr>
          </thead>
          <tbody>
            {items.map((s) => (
              <tr key={s.id} data-sandbox={s.id}>
                <td>
                  {s.state === 'ended' ? (
                    s.id
                  ) : (
                    <a href={`/sandboxes/${s.id}`} onClick={onLinkClick}>
                      {s.id}
                    </a>
                  )}
                </td>
                <td>{s.template}</td>
                <td class={`state-${s.state}`}>
                  {s.state}
                  {s.endedReason ? ` (${s.endedReason})` : ''}
                </td>
                <td>{age(s.startedAt, now)}</td>
                <td class="wide">{s.state === 'ended' ? '—' : timeLeft(s.expiresAt, now)}</td>
                <td class="wide">
                  {s.cpu ?? '—'} CPU · {s.memoryMb} MiB
                </td>
                <td class="usage-now">
                  {s.state === 'running' ? <UsageCell usage={usage.get(s.id)} /> : '—'}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {running.length > MAX_USAGE_READS && (
        <p class="muted">
          What sandboxes use now is read for the first {MAX_USAGE_READS} running; open one to see its own.
        </p>
      )}
    </section>
  );
}

function UsageCell({ usage }: { usage: UsageNow | null | undefined }) {
  if (usage === undefined) return <span class="muted">…</span>;
  if (usage === null) return <span title="not counted here">—</span>;
  return (
    <span>
      {formatPercent(usage.cpuPercent)} · {formatBytes(usage.memoryBytes)}
    </span>
  );
}
