import type { SandboxInfo } from '@mayfly/contract';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, DASHBOARD_HEADER } from '../api.js';
import { onLinkClick } from '../router.js';

/** A running sandbox: its state, and a terminal into it (a shell in a pty, through the API). */
export function SandboxPage({ id }: { id: string }) {
  const [sandbox, setSandbox] = useState<SandboxInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<SandboxInfo>('GET', `/v1/sandboxes/${encodeURIComponent(id)}`).then(setSandbox, (err: Error) =>
      setError(err.message),
    );
  }, [id]);
  return (
    <section>
      <p>
        <a href="/sandboxes" onClick={onLinkClick}>
          ← Sandboxes
        </a>
      </p>
      <h1>
        {id} {sandbox && <span class={`state-${sandbox.state}`}>{sandbox.state}</span>}
      </h1>
      {sandbox && (
        <p class="muted">
          {sandbox.template} · {sandbox.cpu ?? '—'} CPU · {sandbox.memoryMb} MiB
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {sandbox?.state === 'running' && <Terminal id={id} />}
    </section>
  );
}

const post = (path: string, body: BodyInit, type: string) =>
  fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { [DASHBOARD_HEADER]: '1', 'content-type': type },
    body,
  });

/**
 * xterm.js (loaded only on this page) joined to a shell in the sandbox: its output streamed as
 * the command's events, keys sent to its stdin, the size to its terminal.
 */
function Terminal({ id }: { id: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('starting…');
  useEffect(() => {
    const abort = new AbortController();
    let dispose = () => {};
    void (async () => {
      const [{ Terminal: XTerm }, { FitAddon }] = await Promise.all([
        import('@xterm/xterm'),
        import('@xterm/addon-fit'),
        import('@xterm/xterm/css/xterm.css'),
      ]);
      if (abort.signal.aborted || !box.current) return;
      const term = new XTerm({ cursorBlink: true, fontSize: 13, convertEol: false });
      const fit = new FitAddon();
      term.loadAddon(fit);
      term.open(box.current);
      fit.fit();
      dispose = () => term.dispose();
      const base = `/v1/sandboxes/${encodeURIComponent(id)}/processes`;
      const res = await fetch(base, {
        method: 'POST',
        credentials: 'same-origin',
        signal: abort.signal,
        headers: { [DASHBOARD_HEADER]: '1', 'content-type': 'application/json' },
        body: JSON.stringify({
          cmd: 'exec sh -c "command -v bash >/dev/null && exec bash -l || exec sh -l"',
          stdin: true,
          timeoutMs: 0,
          pty: { cols: term.cols, rows: term.rows },
        }),
      });
      if (!res.ok || !res.body) {
        setStatus(`could not start a shell: ${res.status} ${(await res.text()).slice(0, 200)}`);
        return;
      }
      let pid: number | undefined;
      const encoder = new TextEncoder();
      term.onData((data) => {
        if (pid !== undefined)
          void post(`${base}/${pid}/stdin`, encoder.encode(data), 'application/octet-stream');
      });
      term.onResize(({ cols, rows }) => {
        if (pid !== undefined)
          void post(`${base}/${pid}/resize`, JSON.stringify({ cols, rows }), 'application/json');
      });
      const onWindowResize = () => fit.fit();
      window.addEventListener('resize', onWindowResize);
      const previous = dispose;
      dispose = () => {
        window.removeEventListener('resize', onWindowResize);
        previous();
      };
      term.focus();
      const lines = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      try {
        for (;;) {
          const { value, done } = await lines.read();
          if (done) break;
          buffer += value;
          let newline = buffer.indexOf('\n');
          while (newline >= 0) {
            const event = JSON.parse(buffer.slice(0, newline)) as
              | { type: 'start'; pid: number }
              | { type: 'pty' | 'stdout' | 'stderr'; data: string }
              | { type: 'end'; exitCode: number };
            buffer = buffer.slice(newline + 1);
            newline = buffer.indexOf('\n');
            if (event.type === 'start') {
              pid = event.pid;
              setStatus('connected');
            } else if (event.type === 'end') {
              setStatus(`the shell exited (${event.exitCode})`);
            } else {
              term.write(Uint8Array.from(atob(event.data), (c) => c.charCodeAt(0)));
            }
          }
        }
      } catch {
        // left the page
      }
    })();
    return () => {
      abort.abort();
      dispose();
    };
  }, [id]);
  return (
    <>
      <h2>Terminal</h2>
      <p class="muted" aria-live="polite">
        {status}
      </p>
      <div class="terminal" ref={box} />
    </>
  );
}
