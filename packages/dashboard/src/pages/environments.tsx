import type { Environment } from '@mayfly/contract';
import { Component } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { onLinkClick, safeLink } from '../router.js';
import { age, timeLeft, useNow } from '../time.js';

/**
 * Rows put on the page per frame. Hundreds of rows at once would hold the page for a few hundred
 * milliseconds (their layout alone, as a plain table shows); in pieces, each frame stays short,
 * the first screen shows at once and typing is never kept waiting.
 */
const ROWS_PER_FRAME = 50;

/**
 * Every environment, kept up to date by the server's stream (`/v1/watch/environments`): a
 * snapshot, then each change as it happens. Filter by state and search by name or project.
 */
export function EnvironmentsPage() {
  const [items, setItems] = useState<Map<string, Environment>>(new Map());
  const [connected, setConnected] = useState(false);
  const [query, setQuery] = useState('');
  const [state, setState] = useState('');
  const search = useRef<HTMLInputElement>(null);

  // "/" goes to the search box from anywhere on the page but a field.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
      if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
      e.preventDefault();
      search.current?.focus();
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, []);

  useEffect(() => {
    const source = new EventSource('/v1/watch/environments');
    source.addEventListener('snapshot', (e) => {
      const list = JSON.parse((e as MessageEvent<string>).data) as Environment[];
      setItems(new Map(list.map((env) => [env.id, env])));
      setConnected(true);
    });
    source.addEventListener('change', (e) => {
      const env = JSON.parse((e as MessageEvent<string>).data) as Environment;
      setItems((old) => new Map(old).set(env.id, env));
    });
    source.addEventListener('gone', (e) => {
      const id = (e as MessageEvent<string>).data;
      setItems((old) => {
        const next = new Map(old);
        next.delete(id);
        return next;
      });
    });
    source.onerror = () => setConnected(false);
    return () => source.close();
  }, []);

  const shown = useMemo(() => {
    const q = query.trim().toLowerCase();
    return [...items.values()]
      .filter((env) => !state || env.state === state)
      .filter((env) => !q || env.name.toLowerCase().includes(q) || env.project.toLowerCase().includes(q))
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }, [items, query, state]);

  // How many of them are on the page: the first frame's worth after each new search or filter,
  // a frame's worth more each frame (a live update keeps what is shown).
  const filter = `${state}\u0000${query}`;
  const [progress, setProgress] = useState({ filter, rows: ROWS_PER_FRAME });
  const rows = progress.filter === filter ? progress.rows : ROWS_PER_FRAME;
  useEffect(() => {
    if (rows >= shown.length) return;
    const frame = requestAnimationFrame(() => setProgress({ filter, rows: rows + ROWS_PER_FRAME }));
    return () => cancelAnimationFrame(frame);
  }, [filter, rows, shown.length]);

  return (
    <section>
      <h1>Environments</h1>
      <div class="toolbar">
        <input
          ref={search}
          type="search"
          placeholder="Search name or project (/)"
          aria-label="Search environments"
          value={query}
          onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
        />
        <select
          aria-label="Filter by state"
          value={state}
          onChange={(e) => setState((e.target as HTMLSelectElement).value)}
        >
          <option value="">every state</option>
          {['pending', 'building', 'creating', 'ready', 'sleeping', 'destroying', 'failed'].map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
        <span class="muted" aria-live="polite">
          {connected ? `${shown.length} of ${items.size}` : 'connecting…'}
        </span>
      </div>
      <table>
        <thead>
          <tr>
            <th>Name</th>
            <th>State</th>
            <th class="wide">Project</th>
            <th class="wide">Kind</th>
            <th class="wide">Pull request</th>
            <th class="wide">Created by</th>
            <th>Age</th>
            <th class="wide">Time left</th>
            <th>URLs</th>
          </tr>
        </thead>
        <tbody>
          {shown.slice(0, rows).map((env) => (
            <EnvironmentRow key={env.id} env={env} />
          ))}
        </tbody>
      </table>
    </section>
  );
}

/**
 * One environment's row: rendered again only when the environment changed (the stream sends a
 * new object then); its age and time left tick on their own.
 */
class EnvironmentRow extends Component<{ env: Environment }> {
  override shouldComponentUpdate(next: { env: Environment }): boolean {
    return next.env !== this.props.env;
  }

  override render({ env }: { env: Environment }) {
    const pullRequest = env.pullRequest;
    const pullRequestUrl = safeLink(pullRequest?.url ?? null);
    return (
      <tr data-env={env.name}>
        <td>
          <a href={`/environments/${encodeURIComponent(env.name)}`} onClick={onLinkClick}>
            {env.name}
          </a>
        </td>
        <td class={`state-${env.state}`}>
          {env.state}
          {env.failure && <div class="error">{`${env.failure.step}: ${env.failure.reason}`}</div>}
        </td>
        <td class="wide">{env.project}</td>
        <td class="wide">{env.kind}</td>
        <td class="wide">
          {pullRequest &&
            (pullRequestUrl ? (
              <a href={pullRequestUrl} target="_blank" rel="noreferrer">{`#${pullRequest.number}`}</a>
            ) : (
              `#${pullRequest.number}`
            ))}
        </td>
        <td class="wide">{env.createdBy ?? '—'}</td>
        <td>
          <Age since={env.createdAt} />
        </td>
        <td class="wide">{env.keep ? 'kept' : <TimeLeft until={env.expiresAt} />}</td>
        <td>
          {Object.entries(env.urls).map(([service, url]) => (
            <div key={service}>
              <a href={url} target="_blank" rel="noreferrer">
                {service}
              </a>
            </div>
          ))}
        </td>
      </tr>
    );
  }
}

function Age({ since }: { since: string }) {
  return <>{age(since, useNow())}</>;
}

function TimeLeft({ until }: { until: string | null }) {
  return <>{timeLeft(until, useNow())}</>;
}
