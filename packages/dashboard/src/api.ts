/**
 * The dashboard's way to the API: same-origin requests carrying the session cookie and the header
 * that says they come from this page (the server takes the cookie only with it, so another site
 * cannot make a browser use the session).
 */
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

export interface Session {
  scope: string;
  project: string | null;
  expiresAt: string;
}
