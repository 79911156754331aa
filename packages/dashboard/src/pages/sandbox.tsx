import type { SandboxFileEntry, SandboxInfo, TerminalTicket } from '@mayfly/contract';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, apiSendBytes, baseName, saveLink, shownName } from '../api.js';
import { onLinkClick } from '../router.js';
import { formatBytes, formatPercent } from '../usage.js';
import { useUsage } from './sandboxes.js';

/**
 * A running sandbox: its state, what it uses now, a terminal into it (a shell in a pty, through
 * the API) and its files.
 */
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
      {sandbox?.state === 'running' && (
        <>
          <Usage sandbox={sandbox} />
          <Terminal id={id} />
          <Files id={id} />
        </>
      )}
    </section>
  );
}

/**
 * xterm.js (loaded only on this page) joined to a login shell in the sandbox over a WebSocket:
 * output and keys as binary messages, the size as a text message. The socket opens with a
 * one-use ticket this page asks for with its session (a cookie alone opens no terminal).
 */
function Terminal({ id }: { id: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('starting…');
  useEffect(() => {
    let left = false;
    let dispose = () => {};
    void (async () => {
      const [{ Terminal: XTerm }, { FitAddon }] = await Promise.all([
        import('@xterm/xterm'),
        import('@xterm/addon-fit'),
        import('@xterm/xterm/css/xterm.css'),
      ]);
      if (left || !box.current) return;
      const term = new XTerm({ cursorBlink: true, fontSize: 13, convertEol: false });
      const fit = new FitAddon();
      term.loadAddon(fit);
      term.open(box.current);
      fit.fit();
      dispose = () => term.dispose();
      let ticket: TerminalTicket;
      try {
        ticket = await api<TerminalTicket>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/terminal`);
      } catch (err) {
        setStatus(`could not open a terminal: ${(err as Error).message}`);
        return;
      }
      if (left) return;
      const url = new URL(`${ticket.url}?cols=${term.cols}&rows=${term.rows}`, location.href);
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      const socket = new WebSocket(url, ticket.protocols);
      socket.binaryType = 'arraybuffer';
      const encoder = new TextEncoder();
      const send = (data: string | Uint8Array) => {
        if (socket.readyState === WebSocket.OPEN) socket.send(data);
      };
      term.onData((data) => send(encoder.encode(data)));
      // Mouse reports and the like: bytes that are not text.
      term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
      term.onResize(({ cols, rows }) => send(JSON.stringify({ type: 'resize', cols, rows })));
      let ending = '';
      socket.onopen = () => {
        setStatus('connected');
        term.focus();
      };
      socket.onmessage = (event: MessageEvent<ArrayBuffer | string>) => {
        if (typeof event.data !== 'string') return term.write(new Uint8Array(event.data));
        const message = JSON.parse(event.data) as
          | { type: 'exit'; exitCode: number; signal?: string }
          | { type: 'error'; message: string };
        ending =
          message.type === 'exit'
            ? `the shell exited (${message.signal ?? message.exitCode})`
            : `the terminal ended: ${message.message}`;
      };
      socket.onclose = (event) => {
        if (!left) setStatus(ending || `disconnected${event.reason ? `: ${event.reason}` : ''}`);
      };
      const onWindowResize = () => fit.fit();
      window.addEventListener('resize', onWindowResize);
      const previous = dispose;
      dispose = () => {
        window.removeEventListener('resize', onWindowResize);
        socket.close();
        previous();
      };
    })();
    return () => {
      left = true;
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

/** CPU and memory now against its limits, and its processes, read every 2 s. */
function Usage({ sandbox }: { sandbox: SandboxInfo }) {
  const usage = useUsage([sandbox.id]).get(sandbox.id);
  const shown = (text: string) => (usage === undefined ? '…' : usage === null ? '—' : text);
  return (
    <dl class="usage" aria-label="Using now">
      <div>
        <dt>CPU now</dt>
        <dd data-usage="cpu">
          {shown(formatPercent(usage?.cpuPercent ?? null))}
          <span class="muted"> of {sandbox.cpu ?? '—'} CPU</span>
        </dd>
      </div>
      <div>
        <dt>Memory</dt>
        <dd data-usage="memory">
          {shown(usage ? formatBytes(usage.memoryBytes) : '')}
          <span class="muted"> of {sandbox.memoryMb} MiB</span>
        </dd>
      </div>
      <div>
        <dt title="its processes and threads, its agent's included (the pids limit counts these)">Pids</dt>
        <dd data-usage="pids">{shown(String(usage?.pids ?? ''))}</dd>
      </div>
    </dl>
  );
}

const parentOf = (dir: string) => dir.replace(/\/[^/]*$/, '') || '/';
const joinPath = (dir: string, name: string) => `${dir === '/' ? '' : dir}/${name}`;

/**
 * A folder of the sandbox at a time (its home first): into a folder and back up, a file's bytes
 * downloaded, files uploaded into it. Names are text (never markup); a download is saved under
 * the file's base name.
 */
function Files({ id }: { id: string }) {
  const base = `/v1/sandboxes/${encodeURIComponent(id)}/files`;
  const at = (p: string) => `?path=${encodeURIComponent(p)}`;
  const [dir, setDir] = useState<string | null>(null);
  const [entries, setEntries] = useState<SandboxFileEntry[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [reloads, setReloads] = useState(0);

  useEffect(() => {
    // The home's absolute path: "." is the home for the API.
    api<SandboxFileEntry>('GET', `${base}/stat${at('.')}`).then(
      (home) => setDir(home.path),
      (err: Error) => setError(err.message),
    );
  }, [id]);

  useEffect(() => {
    if (dir === null) return;
    let current = true;
    setError(null);
    api<{ entries: SandboxFileEntry[] }>('GET', `${base}/list${at(dir)}`).then(
      ({ entries }) => {
        if (!current) return;
        const dirsFirst = (e: SandboxFileEntry) => (e.type === 'dir' ? 0 : 1);
        setEntries([...entries].sort((a, b) => dirsFirst(a) - dirsFirst(b) || a.name.localeCompare(b.name)));
      },
      (err: Error) => {
        if (!current) return;
        setEntries(null);
        setError(err.message);
      },
    );
    return () => {
      current = false;
    };
  }, [dir, reloads]);

  const download = async (entry: SandboxFileEntry) => {
    try {
      // A one-use link the browser downloads itself (a file of any size never passes the page).
      const { url } = await api<{ url: string }>(
        'POST',
        `/v1/sandboxes/${encodeURIComponent(id)}/downloads${at(entry.path)}`,
      );
      saveLink(url, entry.name);
      setStatus(`downloading ${shownName(entry.name)} (the browser saves it)`);
    } catch (err) {
      setStatus('');
      setError((err as Error).message);
    }
  };

  const upload = async (input: HTMLInputElement) => {
    const files = [...(input.files ?? [])];
    input.value = '';
    if (dir === null || files.length === 0) return;
    // A file of the same name is replaced: asked first.
    const taken = files.map((f) => baseName(f.name)).filter((n) => entries?.some((e) => e.name === n));
    if (taken.length > 0 && !confirm(`Replace ${taken.join(', ')} in this folder?`)) return;
    setError(null);
    try {
      for (const file of files) {
        const name = baseName(file.name);
        setStatus(`uploading ${name}…`);
        await apiSendBytes('PUT', `${base}${at(joinPath(dir, name))}`, file);
      }
      setStatus(`uploaded ${files.map((f) => baseName(f.name)).join(', ')}`);
    } catch (err) {
      setStatus('');
      setError((err as Error).message);
    }
    setReloads((n) => n + 1);
  };

  const crumbs = dir === null ? [] : dir.split('/').filter(Boolean);
  return (
    <>
      <h2>Files</h2>
      <div class="toolbar files-toolbar">
        <button
          type="button"
          disabled={dir === null || dir === '/'}
          onClick={() => dir && setDir(parentOf(dir))}
        >
          ↑ Up
        </button>
        <button type="button" disabled={dir === null} onClick={() => setReloads((n) => n + 1)}>
          Refresh
        </button>
        <label class="upload">
          Upload here
          <input
            type="file"
            multiple
            aria-label="Upload files to this folder"
            disabled={dir === null}
            onChange={(e) => void upload(e.currentTarget)}
          />
        </label>
      </div>
      {dir !== null && (
        <nav class="crumbs" aria-label="Folder">
          <button type="button" class="link" onClick={() => setDir('/')}>
            /
          </button>
          {crumbs.map((part, i) => (
            <span key={i}>
              <button
                type="button"
                class="link"
                onClick={() => setDir(`/${crumbs.slice(0, i + 1).join('/')}`)}
              >
                {shownName(part)}
              </button>
              {i < crumbs.length - 1 ? '/' : ''}
            </span>
          ))}
        </nav>
      )}
      <p class="muted" aria-live="polite">
        {status}
      </p>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {entries && (
        <table class="files" aria-label="Files">
          <thead>
            <tr>
              <th>Name</th>
              <th>Size</th>
              <th class="wide">Modified</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {entries.length === 0 && (
              <tr>
                <td colSpan={4} class="muted">
                  empty
                </td>
              </tr>
            )}
            {entries.map((entry) => (
              <tr key={entry.path} data-file={entry.name}>
                <td>
                  {entry.type === 'dir' ? (
                    <button type="button" class="link" onClick={() => setDir(entry.path)}>
                      {shownName(entry.name)}/
                    </button>
                  ) : entry.type === 'symlink' ? (
                    <span>
                      {shownName(entry.name)}{' '}
                      <span class="muted">→ {shownName(entry.symlinkTarget ?? '?')}</span>
                    </span>
                  ) : (
                    shownName(entry.name)
                  )}
                </td>
                <td>{entry.type === 'file' ? formatBytes(entry.size) : ''}</td>
                <td class="wide">{new Date(entry.modifiedAt).toLocaleString()}</td>
                <td>
                  {entry.type === 'file' && (
                    <button
                      type="button"
                      aria-label={`Download ${shownName(entry.name)}`}
                      onClick={() => void download(entry)}
                    >
                      Download
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
