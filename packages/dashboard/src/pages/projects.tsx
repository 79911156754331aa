import type { Project } from '@mayfly/contract';
import { api } from '../api.js';
import { usePolling } from '../poll.js';
import { onLinkClick } from '../router.js';

/** Projects: repositories whose pull requests get previews. */
export function ProjectsPage() {
  const { value, error } = usePolling(() => api<{ items: Project[] }>('GET', '/v1/projects'), 'projects');
  const items = value?.items ?? null;
  return (
    <section>
      <h1>Projects</h1>
      {error ? (
        <p class="error" role="alert">
          {(error as Error).message}
        </p>
      ) : null}
      {items === null ? (
        <p class="muted">Loading…</p>
      ) : items.length === 0 ? (
        <p class="muted">
          No projects yet: <code>mayfly project create</code> or <code>mayfly apply</code> makes one.
        </p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Repository</th>
              <th class="wide">Branch</th>
              <th class="wide">Webhook</th>
            </tr>
          </thead>
          <tbody>
            {items.map((p) => (
              <tr key={p.name} data-project={p.name}>
                <td>
                  <a href={`/projects/${encodeURIComponent(p.name)}`} onClick={onLinkClick}>
                    {p.name}
                  </a>
                </td>
                <td>
                  {p.forge} · {p.forgeRepo}
                </td>
                <td class="wide">{p.branch}</td>
                <td class="wide">{p.hasWebhookSecret ? 'secret set' : 'no secret: webhooks refused'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
