import { useEffect, useState } from 'preact/hooks';
import { api, type Session } from '../api.js';
import { navigate } from '../router.js';

/**
 * Logs in with the one-time link `mayfly dashboard` prints (its code is in the URL's fragment,
 * which the browser never sends to a server or in a Referer), or with an API token typed in.
 */
export function LoginPage({ onSession }: { onSession: (session: Session) => void }) {
  const [error, setError] = useState<string | null>(null);
  const [token, setToken] = useState('');

  const start = async (body: { link: string } | { token: string }) => {
    try {
      const session = await api<Session>('POST', '/dashboard/session', body);
      onSession(session);
      navigate('/', { replace: true });
    } catch (err) {
      setError((err as Error).message);
    }
  };

  useEffect(() => {
    const link = location.hash.slice(1);
    if (link) {
      // The code is used once: off the address bar at once.
      history.replaceState(null, '', '/login');
      void (async () => {
        // A link someone else sent must not silently swap the session this browser has.
        const current = await api<Session>('GET', '/dashboard/session').catch(() => null);
        if (
          current &&
          !confirm(
            `You are logged in already (${current.scope}${current.project ? `, project ${current.project}` : ''}). Log in with this link instead?`,
          )
        ) {
          navigate('/', { replace: true });
          return;
        }
        await start({ link });
      })();
    }
  }, []);

  return (
    <form
      class="login"
      onSubmit={(e) => {
        e.preventDefault();
        void start({ token: token.trim() });
      }}
    >
      <h1>Mayfly</h1>
      <p class="muted">
        Run <code>mayfly dashboard</code> for a login link, or log in with an API token.
      </p>
      <label for="token">API token</label>
      <input
        id="token"
        type="password"
        autocomplete="off"
        value={token}
        onInput={(e) => setToken((e.target as HTMLInputElement).value)}
      />
      <button type="submit">Log in</button>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}
