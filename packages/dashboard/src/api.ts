/**
 * The dashboard's way to the API: same-origin requests carrying the session cookie and the header
 * that says they come from this page (the server takes the cookie only with it, so another site
 * cannot make a browser use the session).
 */
import { HIDDEN_TEXT } from '@mayfly/contract';

export const DASHBOARD_HEADER = 'x-mayfly-dashboard';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: {
      [DASHBOARD_HEADER]: '1',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  const json = text ? (JSON.parse(text) as unknown) : undefined;
  if (!res.ok) {
    const message =
      (json as { error?: { message?: string } } | undefined)?.error?.message ??
      `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, message);
  }
  return json as T;
}

/** The error of an answer that is not ok: its `error.message` when it has one, else its status. */
async function failure(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  let message: string | undefined;
  try {
    message = (JSON.parse(text) as { error?: { message?: string } }).error?.message;
  } catch {
    // not JSON
  }
  return new ApiError(res.status, message ?? `${res.status} ${res.statusText}`);
}

/** Sends raw bytes (`application/octet-stream`) to the API; its JSON answer. */
export async function apiSendBytes<T>(method: string, path: string, body: Blob): Promise<T> {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: { [DASHBOARD_HEADER]: '1', 'content-type': 'application/octet-stream' },
    body,
  });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

/** A name from a sandbox as shown: what hides or reorders text written out (`⟨U+202E⟩`). */
export const shownName = (name: string) =>
  name.replace(HIDDEN_TEXT, (c) => `⟨U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}⟩`);

/**
 * The last part of a path, for a file name to save under: never a folder, never `.` or `..`,
 * nothing that hides or reorders text.
 */
export function baseName(path: string): string {
  const name = (path.split(/[\\/]/).pop() ?? '').replace(HIDDEN_TEXT, '').trim();
  return name === '' || name === '.' || name === '..' ? 'download' : name;
}

/**
 * Has the browser download `url` (a one-use link of this server that answers an attachment) and
 * save it by itself, streamed to disk: nothing is held in the page. `<a download>` under the
 * file's base name; a download is no navigation, so the page stays.
 */
export function saveLink(url: string, name: string): void {
  const link = document.createElement('a');
  link.href = url;
  link.download = baseName(name);
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
}

export interface Session {
  scope: string;
  project: string | null;
  expiresAt: string;
}
