import type { EnvEvent, Environment } from '@mayfly/contract';
import { formatDuration } from '@mayfly/contract/duration';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api, DASHBOARD_HEADER } from '../api.js';
import { usePolling } from '../poll.js';
import { navigate, onLinkClick, safeLink } from '../router.js';
import { age, timeLeft } from '../time.js';

/** The most log text a page keeps (older lines are dropped as new ones come). */
const MAX_LOG_CHARS = 256 * 1024;

/**
 * One environment: its services with state and health, the failure in words, the timeline with
 * how long each step took, a service's logs followed live (searchable), and the actions.
 */
export function EnvironmentPage({ name }: { name: string }) {
  const [actionError, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const polled = usePolling(async () => {
    const [current, timeline] = await Promise.all([
      api<Environment>('GET', `/v1/environments/${encodeURIComponent(name)}`),
      api<{ items: EnvEvent[] }>('GET', `/v1/environments/${encodeURIComponent(name)}/events`),
    ]);
    return { current, events: timeline.items };
  }, name);
  const { now } = polled;
  // Gone (404): no environment to show any more, only why.
  const gone = polled.error instanceof ApiError && polled.error.status === 404;
  const env = gone ? null : (polled.value?.current ?? null);
  const events = polled.value?.events ?? [];
  const error = actionError ?? (polled.error ? (polled.error as Error).message : null);

  const act = async (label: string, method: string, path: string) => {
    setBusy(true);
    try {
      await api(method, `/v1/environments/${encodeURIComponent(name)}${path}`);
      setError(null);
      if (label === 'destroy') navigate('/');
    } catch (err) {
      setError(`${label}: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };

  const back = (
    <p>
      <a href="/" onClick={onLinkClick}>
        ← Environments
      </a>
    </p>
  );
  if (!env)
    return (
      <section>
        {back}
        <p class={error ? 'error' : 'muted'} role={error ? 'alert' : undefined}>
          {error ?? 'Loading…'}
        </p>
      </section>
    );

  return (
    <section>
      {back}
      <h1>
        {env.name} <span class={`state-${env.state}`}>{env.state}</span>
      </h1>
      <p class="muted">
        {env.project} · {env.kind} · {age(env.createdAt, now)} old ·{' '}
        {env.keep ? 'kept' : `time left ${timeLeft(env.expiresAt, now)}`}
        {env.createdBy && ` · created by ${env.createdBy}`}
        {env.pullRequest && (
          <>
            {' · '}
            {safeLink(env.pullRequest.url) ? (
              <a href={safeLink(env.pullRequest.url)!} target="_blank" rel="noreferrer">
                {`pull request #${env.pullRequest.number}`}
              </a>
            ) : (
              `pull request #${env.pullRequest.number}`
            )}
          </>
        )}
      </p>
      {env.failure && (
        <p class="error" role="status">
          Failed at <strong>{env.failure.step}</strong>: {env.failure.reason}
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="toolbar">
        <button type="button" disabled={busy} onClick={() => act('extend', 'POST', '/extend?by=1h')}>
          Extend 1h
        </button>
        <button type="button" disabled={busy || env.keep} onClick={() => act('keep', 'POST', '/keep')}>
          Keep
        </button>
        {env.state === 'sleeping' ? (
          <button type="button" disabled={busy} onClick={() => act('wake', 'POST', '/wake')}>
            Wake
          </button>
        ) : (
          <button
            type="button"
            disabled={busy || env.state !== 'ready'}
            onClick={() => act('sleep', 'POST', '/sleep')}
          >
            Sleep
          </button>
        )}
        <button
          type="button"
          title="every service in a new container; volumes and finished jobs kept"
          disabled={busy || env.desired === 'absent' || !['ready', 'failed', 'sleeping'].includes(env.state)}
          onClick={() => act('redeploy', 'POST', '/redeploy')}
        >
          Redeploy
        </button>
        <button
          type="button"
          class="danger"
          disabled={busy || env.desired === 'absent'}
          onClick={() => {
            if (confirm(`Destroy ${env.name}?`)) void act('destroy', 'DELETE', '');
          }}
        >
          Destroy
        </button>
      </div>

      <h2>Services</h2>
      <table>
        <thead>
          <tr>
            <th>Service</th>
            <th>State</th>
            <th>Health</th>
            <th>URL</th>
          </tr>
        </thead>
        <tbody>
          {env.services.map((s) => (
            <tr key={s.name}>
              <td>
                {s.name}
                {s.kind === 'job' ? <span class="muted"> (job)</span> : null}
              </td>
              <td>
                {s.state}
                {s.exitCode !== null ? ` (exit ${s.exitCode})` : ''}
              </td>
              <td>{s.health ?? '—'}</td>
              <td>
                {env.urls[s.name] ? (
                  <a href={env.urls[s.name]} target="_blank" rel="noreferrer">
                    {env.urls[s.name]}
                  </a>
                ) : (
                  '—'
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Timeline</h2>
      <ol class="timeline">
        {events.map((e, i) => {
          const next = events[i + 1];
          const took = next ? Date.parse(next.at) - Date.parse(e.at) : null;
          return (
            <li key={e.id}>
              <span class="muted">{new Date(e.at).toLocaleTimeString()}</span>{' '}
              {e.state ? <strong>{e.state}</strong> : null} {e.message}
              {took !== null && took >= 1000 ? <span class="muted"> · {formatDuration(took)}</span> : null}
            </li>
          );
        })}
      </ol>

      <Logs name={env.name} services={env.services.map((s) => s.name)} />
    </section>
  );
}

/** A service's logs (all of them without one), followed as they come; a search filters the lines. */
function Logs({ name, services }: { name: string; services: string[] }) {
  const [service, setService] = useState('');
  const [build, setBuild] = useState(false);
  const [text, setText] = useState('');
  const [query, setQuery] = useState('');
  const bottom = useRef<HTMLPreElement>(null);

  useEffect(() => {
    const abort = new AbortController();
    setText('');
    const params = new URLSearchParams({ tail: '500', ...(build ? { build: '1' } : { follow: '1' }) });
    if (service) params.set('service', service);
    void (async () => {
      try {
        const res = await fetch(`/v1/environments/${encodeURIComponent(name)}/logs?${params}`, {
          credentials: 'same-origin',
          headers: { [DASHBOARD_HEADER]: '1' },
          signal: abort.signal,
        });
        if (!res.ok || !res.body) {
          const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
          setText(`(${body?.error?.message ?? res.statusText})`);
          return;
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          setText((old) => (old + value).slice(-MAX_LOG_CHARS));
        }
      } catch {
        // aborted: another service chosen, or the page left
      }
    })();
    return () => abort.abort();
  }, [name, service, build]);

  useEffect(() => {
    if (!query) bottom.current?.scrollTo({ top: bottom.current.scrollHeight });
  }, [text, query]);

  const q = query.toLowerCase();
  const shown = q
    ? text
        .split('\n')
        .filter((line) => line.toLowerCase().includes(q))
        .join('\n')
    : text;
  return (
    <>
      <h2>Logs</h2>
      <div class="toolbar">
        <select
          aria-label="Service"
          value={service}
          onChange={(e) => setService((e.target as HTMLSelectElement).value)}
        >
          <option value="">every service</option>
          {services.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
        <label>
          <input
            type="checkbox"
            checked={build}
            onChange={(e) => setBuild((e.target as HTMLInputElement).checked)}
          />{' '}
          build output
        </label>
        <input
          type="search"
          placeholder="Search the logs"
          aria-label="Search the logs"
          value={query}
          onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
        />
      </div>
      <pre class="logs" ref={bottom} role="log" aria-label="Logs">
        {shown}
      </pre>
    </>
  );
}
