import { useEffect, useState } from 'preact/hooks';
import { ApiError, api, type Session } from './api.js';
import { EnvironmentPage } from './pages/environment.js';
import { EnvironmentsPage } from './pages/environments.js';
import { LoginPage } from './pages/login.js';
import { SandboxPage } from './pages/sandbox.js';
import { SandboxesPage } from './pages/sandboxes.js';
import { navigate, onLinkClick, usePath } from './router.js';

/** The page a path names. */
function page(path: string) {
  const env = /^\/environments\/([^/]+)$/.exec(path);
  if (env) return <EnvironmentPage name={decodeURIComponent(env[1]!)} />;
  const sandbox = /^\/sandboxes\/([a-z0-9]+)$/.exec(path);
  if (sandbox) return <SandboxPage id={sandbox[1]!} />;
  if (path === '/sandboxes') return <SandboxesPage />;
  return <EnvironmentsPage />;
}

export function App() {
  const path = usePath();
  const [session, setSession] = useState<Session | null | undefined>(undefined);

  useEffect(() => {
    if (path === '/login') return;
    api<Session>('GET', '/dashboard/session').then(setSession, (err: unknown) => {
      setSession(null);
      if (err instanceof ApiError && err.status === 401) navigate('/login', { replace: true });
    });
  }, [path === '/login']);

  if (path === '/login') return <LoginPage onSession={setSession} />;
  if (session === undefined) return <p class="muted">Loading…</p>;
  if (session === null) return null;

  const logout = async () => {
    await api('DELETE', '/dashboard/session').catch(() => {});
    setSession(null);
    navigate('/login');
  };
  return (
    <>
      <header>
        <strong>Mayfly</strong>
        <nav>
          <a href="/" onClick={onLinkClick}>
            Environments
          </a>
          <a href="/sandboxes" onClick={onLinkClick}>
            Sandboxes
          </a>
          <a href="/metrics">Metrics</a>
        </nav>
        <span class="muted">
          {session.scope}
          {session.project ? ` · ${session.project}` : ''}
        </span>
        <button type="button" onClick={logout}>
          Log out
        </button>
      </header>
      <main>{page(path)}</main>
    </>
  );
}
