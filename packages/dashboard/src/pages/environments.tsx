import type { Environment } from '@mayfly/contract';
import { Component } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { onLinkClick, safeLink } from '../router.js';
import { age, timeLeft, useTickingTimes } from '../time.js';

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
  const table = useRef<HTMLTableElement>(null);
  useTickingTimes(table);

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

  // Every environment has its row, newest first; a search or filter hides the others (as a
  // plain table would): typing renders again only the rows it shows or hides, it never makes or
  // drops hundreds.
  const sorted = useMemo(
    () => [...items.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt)),
    [items],
  );
  const matches = useMemo(() => {
    const q = query.trim().toLowerCase();
    return (env: Environment) =>
      (!state || env.state === state) &&
      (!q || env.name.toLowerCase().includes(q) || env.project.toLowerCase().includes(q));
  }, [query, state]);
  const shownCount = useMemo(() => sorted.filter(matches).length, [sorted, matches]);

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
          {connected ? `${shownCount} of ${items.size}` : 'connecting…'}
        </span>
      </div>
      <table ref={table}>
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
          {sorted.map((env) => (
            <EnvironmentRow key={env.id} env={env} hidden={!matches(env)} />
          ))}
        </tbody>
      </table>
    </section>
  );
}

interface RowProps {
  env: Environment;
  hidden: boolean;
}

/**
 * One environment's row: rendered again only when the environment changed (the stream sends a
 * new object then) or it is shown or hidden; its age and time left tick by themselves.
 */
class EnvironmentRow extends Component<RowProps> {
  override shouldComponentUpdate(next: RowProps): boolean {
    return next.env !== this.props.env || next.hidden !== this.props.hidden;
  }

  override render({ env, hidden }: RowProps) {
    const pullRequest = env.pullRequest;
    const pullRequestUrl = safeLink(pullRequest?.url ?? null);
    return (
      <tr data-env={env.name} hidden={hidden}>
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
          <span data-since={env.createdAt}>{age(env.createdAt, Date.now())}</span>
        </td>
        <td class="wide">
          {env.keep ? (
            'kept'
          ) : (
            <span data-until={env.expiresAt ?? ''}>{timeLeft(env.expiresAt, Date.now())}</span>
          )}
        </td>
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
