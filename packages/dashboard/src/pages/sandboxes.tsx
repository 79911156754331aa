import type { SandboxInfo } from '@mayfly/contract';
import { api } from '../api.js';
import { usePolling } from '../poll.js';
import { onLinkClick } from '../router.js';
import { age, timeLeft } from '../time.js';

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
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
