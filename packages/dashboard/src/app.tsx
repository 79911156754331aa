import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api, type Session } from './api.js';
import { EnvironmentPage } from './pages/environment.js';
import { EnvironmentsPage } from './pages/environments.js';
import { LoginPage } from './pages/login.js';
import { OverviewPage } from './pages/overview.js';
import { ProjectPage } from './pages/project.js';
import { ProjectsPage } from './pages/projects.js';
import { SandboxPage } from './pages/sandbox.js';
import { SandboxesPage } from './pages/sandboxes.js';
import { navigate, onLinkClick, usePath } from './router.js';

/** A path segment decoded; a malformed one is taken as it is (it then names nothing). */
function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The page a path names (keyed: another environment's or sandbox's page starts afresh). */
function page(path: string, session: Session) {
  if (path === '/overview') return <OverviewPage scopedToProject={session.project !== null} />;
  const env = /^\/environments\/([^/]+)$/.exec(path);
  if (env) return <EnvironmentPage key={env[1]} name={decoded(env[1]!)} />;
  const sandbox = /^\/sandboxes\/([a-z0-9]+)$/.exec(path);
  if (sandbox) return <SandboxPage key={sandbox[1]} id={sandbox[1]!} />;
  if (path === '/sandboxes') return <SandboxesPage />;
  const project = /^\/projects\/([^/]+)$/.exec(path);
  if (project) return <ProjectPage key={project[1]} name={decoded(project[1]!)} />;
  if (path === '/projects') return <ProjectsPage />;
  return <EnvironmentsPage />;
}

export function App() {
  const path = usePath();
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const main = useRef<HTMLElement>(null);
  const first = useRef(true);

  // After a move to another page, the keyboard (and a screen reader) starts at its content.
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    main.current?.focus({ preventScroll: false });
  }, [path]);

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
      <a class="skip" href="#content">
        Skip to content
      </a>
      <header>
        <strong>Mayfly</strong>
        <nav>
          <a href="/overview" onClick={onLinkClick}>
            Overview
          </a>
          <a href="/" onClick={onLinkClick}>
            Environments
          </a>
          <a href="/sandboxes" onClick={onLinkClick}>
            Sandboxes
          </a>
          <a href="/projects" onClick={onLinkClick}>
            Projects
          </a>
        </nav>
        <span class="muted">
          {session.scope}
          {session.project ? ` · ${session.project}` : ''}
        </span>
        <button type="button" onClick={logout}>
          Log out
        </button>
      </header>
      <main id="content" tabIndex={-1} ref={main}>
        {page(path, session)}
      </main>
    </>
  );
}
