import type { Delivery, Preview, ReadinessStats } from '@mayfly/contract';
import { useState } from 'preact/hooks';
import { api } from '../api.js';
import { usePolling } from '../poll.js';
import { onLinkClick, safeLink } from '../router.js';
import { age } from '../time.js';

/** A project: its pull requests and their environments, webhook deliveries, time from webhook to ready. */
export function ProjectPage({ name }: { name: string }) {
  const base = `/v1/projects/${encodeURIComponent(name)}`;
  const { value, error, now } = usePolling(
    () =>
      Promise.all([
        api<{ items: Preview[] }>('GET', `${base}/previews`),
        api<{ items: Delivery[] }>('GET', `${base}/deliveries?limit=50`),
        api<ReadinessStats>('GET', `${base}/readiness?days=30`),
      ]),
    `project ${name}`,
  );
  const [previews, deliveries, readiness] = value ?? [null, null, null];
  return (
    <section>
      <p>
        <a href="/projects" onClick={onLinkClick}>
          ← Projects
        </a>
      </p>
      <h1>{name}</h1>
      {error ? (
        <p class="error" role="alert">
          {(error as Error).message}
        </p>
      ) : null}
      {previews === null ? (
        <p class="muted">Loading…</p>
      ) : (
        <>
          <h2>Pull requests</h2>
          <Previews items={previews.items} now={now} />
          <h2>Time from webhook to ready</h2>
          <Readiness stats={readiness!} />
          <h2>Webhook deliveries</h2>
          <Deliveries project={name} items={deliveries!.items} now={now} />
        </>
      )}
    </section>
  );
}

function Previews({ items, now }: { items: Preview[]; now: number }) {
  if (items.length === 0)
    return <p class="muted">No pull requests yet: they appear with the first webhook.</p>;
  return (
    <table class="previews">
      <thead>
        <tr>
          <th>Pull request</th>
          <th>State</th>
          <th>Environment</th>
          <th class="wide">Commit</th>
          <th class="wide">Updated</th>
        </tr>
      </thead>
      <tbody>
        {items.map((p) => {
          const label = p.number !== null ? `#${p.number}` : `branch ${p.branch ?? '?'}`;
          const link = safeLink(p.url);
          const live =
            p.open && p.state !== 'closed' && p.state !== 'skipped' && p.state !== 'awaiting-approval';
          return (
            <tr key={`${p.number}-${p.branch}`} data-preview={p.number ?? p.branch}>
              <td>
                {link ? (
                  <a href={link} target="_blank" rel="noopener noreferrer">
                    {label}
                  </a>
                ) : (
                  label
                )}{' '}
                {p.title}
                {p.fromFork ? <span class="muted"> (fork{p.approved ? ', approved' : ''})</span> : null}
              </td>
              <td class={`state-${p.state}`}>
                {p.state}
                {p.detail ? <div class="muted">{p.detail}</div> : null}
              </td>
              <td>
                {live ? (
                  <a href={`/environments/${encodeURIComponent(p.environment)}`} onClick={onLinkClick}>
                    {p.environment}
                  </a>
                ) : (
                  <span class="muted">{p.environment}</span>
                )}
              </td>
              <td class="wide">
                <code>{p.headSha.slice(0, 12)}</code>
              </td>
              <td class="wide">{age(p.updatedAt, now)} ago</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** A time to ready: tenths of a second under a minute, then minutes and seconds. */
const ms = (value: number | null) =>
  value === null
    ? '—'
    : value < 60_000
      ? `${(value / 1000).toFixed(1)}s`
      : `${Math.floor(value / 60_000)}m${Math.round((value % 60_000) / 1000)}s`;

/** p50 and p95 per day as a small chart, with the period's own figures beside it. */
function Readiness({ stats }: { stats: ReadinessStats }) {
  if (stats.count === 0) return <p class="muted">No preview made ready in the last {stats.days} days.</p>;
  return (
    <div class="readiness">
      <dl class="usage">
        <div>
          <dt>p50, {stats.days} days</dt>
          <dd data-figure="p50">{ms(stats.p50Ms)}</dd>
        </div>
        <div>
          <dt>p95</dt>
          <dd data-figure="p95">{ms(stats.p95Ms)}</dd>
        </div>
        <div>
          <dt>previews made ready</dt>
          <dd>{stats.count}</dd>
        </div>
      </dl>
      <ReadinessChart stats={stats} />
    </div>
  );
}

const CHART = { width: 600, height: 140, pad: 28 };

function ReadinessChart({ stats }: { stats: ReadinessStats }) {
  // One slot per day of the period, today last; days with no sample are gaps.
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  const days = Array.from({ length: stats.days }, (_, i) =>
    new Date(today - (stats.days - 1 - i) * 86_400_000).toISOString().slice(0, 10),
  );
  const byDay = new Map(stats.perDay.map((d) => [d.day, d]));
  const top = Math.max(...stats.perDay.map((d) => d.p95Ms), 1);
  const { width, height, pad } = CHART;
  const slot = (width - pad) / days.length;
  const y = (v: number) => height - pad / 2 - (v / top) * (height - pad);
  return (
    <svg
      class="chart"
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={`time from webhook to ready per day over ${stats.days} days: p50 ${ms(stats.p50Ms)}, p95 ${ms(stats.p95Ms)}`}
    >
      <text x="0" y="10" class="axis">
        {ms(top)}
      </text>
      <line x1={pad} x2={width} y1={y(0)} y2={y(0)} class="axis" />
      {days.map((day, i) => {
        const d = byDay.get(day);
        if (!d) return null;
        const x = pad + i * slot;
        return (
          <g key={day} data-day={day}>
            <title>
              {day}: p50 {ms(d.p50Ms)}, p95 {ms(d.p95Ms)} ({d.count})
            </title>
            {(['p95', 'p50'] as const).map((p) => (
              <rect
                key={p}
                class={p}
                x={x + 1}
                width={Math.max(slot - 2, 1)}
                y={y(d[`${p}Ms`])}
                height={y(0) - y(d[`${p}Ms`])}
              />
            ))}
          </g>
        );
      })}
      <text x={pad} y={height - 1} class="axis">
        {days[0]}
      </text>
      <text x={width} y={height - 1} class="axis" text-anchor="end">
        today
      </text>
    </svg>
  );
}

function Deliveries({ project, items, now }: { project: string; items: Delivery[]; now: number }) {
  const [busy, setBusy] = useState<string | null>(null);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  if (items.length === 0) return <p class="muted">No delivery in the last week.</p>;
  const redeliver = async (d: Delivery) => {
    setBusy(d.id);
    setMessage(null);
    try {
      const made = await api<Delivery>(
        'POST',
        `/v1/projects/${encodeURIComponent(project)}/deliveries/${encodeURIComponent(d.id)}/redeliver`,
      );
      setMessage({ ok: true, text: `redelivered: ${made.outcome ?? 'acting on it'}` });
    } catch (err) {
      setMessage({ ok: false, text: (err as Error).message });
    } finally {
      setBusy(null);
    }
  };
  return (
    <>
      {message ? (
        <p class={message.ok ? 'muted' : 'error'} role={message.ok ? 'status' : 'alert'}>
          {message.text}
        </p>
      ) : null}
      <table class="deliveries">
        <thead>
          <tr>
            <th>Received</th>
            <th>Event</th>
            <th>What Mayfly did</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {items.map((d) => (
            <tr key={d.id} data-delivery={d.id}>
              <td title={d.receivedAt}>{age(d.receivedAt, now)} ago</td>
              <td>
                {d.summary ?? d.event}
                <div class="muted">
                  {d.event} · {d.redeliveryOf ? `redelivery of ${d.redeliveryOf}` : d.id}
                </div>
              </td>
              <td>{d.outcome ?? <span class="muted">acting on it…</span>}</td>
              <td>
                {d.redeliverable ? (
                  <button type="button" disabled={busy !== null} onClick={() => redeliver(d)}>
                    Redeliver
                  </button>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
