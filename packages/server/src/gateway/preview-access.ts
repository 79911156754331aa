/**
 * Who may open a preview's URLs (project policy `access`). `public`: anyone. `token`: holders of the
 * project's preview token, presented as a secret link (`?mayfly-token=…`, answered with a cookie
 * for that environment and a redirect that takes the token out of the address bar), as that cookie,
 * or as the header `X-Mayfly-Bypass` (CI, agents). Preview tokens and API tokens are separate: an
 * API token (`mfy_…`) is never a preview token, and the API never accepts a preview token.
 *
 * Pure: the gateway hands in the request and the project's policy and writes out the decision.
 * Whatever the decision, the app never sees a preview credential: the header, the cookie and the
 * query parameter are taken out of what is forwarded.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { previewTokenMatches } from '../access/preview-token.js';
import { SESSION_COOKIE } from '../dashboard/dashboard-sessions.js';
import { type Cookie, parseCookies } from '../net/cookies.js';
import { isApiTokenForm } from '../store/token-repository.js';
import { errorPage } from './error-page.js';

/** The query parameter of a secret link. */
export const PREVIEW_QUERY_PARAM = 'mayfly-token';
/** The header CI and agents send instead of a cookie (lowercase, as Node names headers). */
export const BYPASS_HEADER = 'x-mayfly-bypass';
const COOKIE_PREFIX = 'mayfly-preview-';

export {
  hashPreviewToken,
  newPreviewToken,
  PREVIEW_TOKEN_PREFIX,
  previewTokenMatches,
} from '../access/preview-token.js';

/** The cookie that carries the preview token for one environment. */
export const previewCookieName = (envName: string): string => `${COOKIE_PREFIX}${envName}`;

/** Who may open an environment's URLs, from its project. */
export interface PreviewPolicy {
  access: 'public' | 'token';
  /** SHA-256 (hex) of the project's preview token; null: none made yet (nobody gets in). */
  tokenHash: string | null;
  /** The environment's project, named on the 401 page. */
  project: string;
}

export const PUBLIC_PREVIEW: PreviewPolicy = Object.freeze({
  access: 'public',
  tokenHash: null,
  project: 'default',
});

export interface PreviewRequest {
  method: string;
  /** The request target as received (`/path?query`). */
  url: string;
  headers: IncomingHttpHeaders;
  envName: string;
  /** The public scheme is https: the cookie gets `Secure`. */
  secure: boolean;
  /** A WebSocket upgrade: a secret link lets it through but cannot redirect it. */
  upgrade: boolean;
}

export type PreviewDecision =
  /** Forward the request with this target and these headers (preview credentials taken out). */
  | { kind: 'allow'; url: string; headers: IncomingHttpHeaders }
  /** A 401 page: no app content, no token. */
  | { kind: 'deny'; status: 401; headers: OutgoingHttpHeaders; body: string }
  /** A valid secret link: set the cookie and redirect to the same URL without the token. */
  | { kind: 'grant'; status: 302; headers: OutgoingHttpHeaders; body: string };

/** Why a request was refused; each reason has its own first sentence on the 401 page. */
type DenyReason = 'none' | 'invalid' | 'api-token' | 'no-token-made';

export function decidePreviewAccess(req: PreviewRequest, policy: PreviewPolicy): PreviewDecision {
  const target = splitTarget(req.url);
  const fromQuery = target.params.filter((p) => p.name === PREVIEW_QUERY_PARAM).map((p) => p.value);
  const forwardQuery = target.params.filter((p) => p.name !== PREVIEW_QUERY_PARAM).map((p) => p.raw);
  const forwardUrl = target.path + (forwardQuery.length > 0 ? `?${forwardQuery.join('&')}` : '');
  const cookies = parseCookies(req.headers.cookie);
  const allow: PreviewDecision = {
    kind: 'allow',
    url: forwardUrl,
    headers: forwardedHeaders(req.headers, cookies),
  };
  if (policy.access === 'public') return allow;
  if (policy.tokenHash === null) return deny(req.envName, policy.project, 'no-token-made');

  const matches = (token: string) => previewTokenMatches(token, policy.tokenHash);
  // The first credential presented decides: a link, then the header, then the cookie.
  if (fromQuery.length > 0) {
    const valid = fromQuery.find(matches);
    if (valid === undefined) return deny(req.envName, policy.project, reasonOf(fromQuery));
    const method = req.method.toUpperCase();
    // A redirect would lose a request body, and WebSocket clients do not follow one.
    if ((method !== 'GET' && method !== 'HEAD') || req.upgrade) return allow;
    const location = `/${target.path.replace(/^[/\\]+/, '')}${forwardQuery.length > 0 ? `?${forwardQuery.join('&')}` : ''}`;
    const cookie = `${previewCookieName(req.envName)}=${valid}; HttpOnly; SameSite=Lax; Path=/${req.secure ? '; Secure' : ''}`;
    return {
      kind: 'grant',
      status: 302,
      headers: { location, 'set-cookie': cookie, 'cache-control': 'no-store', 'content-length': 0 },
      body: '',
    };
  }
  const bypass = headerValues(req.headers[BYPASS_HEADER]);
  if (bypass.length > 0) {
    return bypass.some(matches) ? allow : deny(req.envName, policy.project, reasonOf(bypass));
  }
  const fromCookie = cookies.filter((c) => c.name === previewCookieName(req.envName)).map((c) => c.value);
  if (fromCookie.some(matches)) return allow;
  return deny(req.envName, policy.project, fromCookie.length > 0 ? reasonOf(fromCookie) : 'none');
}

function reasonOf(presented: string[]): DenyReason {
  return presented.some(isApiTokenForm) ? 'api-token' : 'invalid';
}

function deny(envName: string, project: string, reason: DenyReason): PreviewDecision {
  const how =
    "Open the secret link to this environment (its URL with ?mayfly-token=…) that the project's " +
    'admins share, or send the header X-Mayfly-Bypass with the preview token (CI, agents).';
  const first: Record<DenyReason, string> = {
    none: `Environment "${envName}" of project "${project}" is open to holders of the project's preview token only.`,
    invalid: 'The preview token given is not valid (it may have been rotated).',
    'api-token': 'The token given is an API token: an API token is not a preview token.',
    'no-token-made': `Project "${project}" has no preview token yet: an admin makes one with POST /v1/projects/${project}/preview-token.`,
  };
  const body = errorPage(401, 'Preview token needed', `${first[reason]} ${how}`);
  return {
    kind: 'deny',
    status: 401,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'www-authenticate': `Mayfly-Preview realm="${envName}"`,
    },
    body,
  };
}

interface QueryParam {
  /** Decoded name. */
  name: string;
  /** Decoded value. */
  value: string;
  /** As received, forwarded unchanged. */
  raw: string;
}

/** Path and query parameters of a request target; the parameters others than ours are kept byte for byte. */
function splitTarget(url: string): { path: string; params: QueryParam[] } {
  let path = url;
  let query = '';
  if (!url.startsWith('/')) {
    // absolute-form (`http://host/path`), which a client talking to a proxy may send
    try {
      const parsed = new URL(url);
      path = parsed.pathname;
      query = parsed.search.slice(1);
    } catch {
      return { path: url, params: [] };
    }
  } else {
    const q = url.indexOf('?');
    if (q >= 0) {
      path = url.slice(0, q);
      query = url.slice(q + 1);
    }
  }
  const params = query
    .split('&')
    .filter((raw) => raw !== '')
    .map((raw) => {
      const eq = raw.indexOf('=');
      return {
        name: decode(eq >= 0 ? raw.slice(0, eq) : raw),
        value: decode(eq >= 0 ? raw.slice(eq + 1) : ''),
        raw,
      };
    });
  return { path, params };
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

function headerValues(value: string | string[] | undefined): string[] {
  return [value ?? []]
    .flat()
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** The headers forwarded to the app: without the bypass header and without any preview cookie. */
function forwardedHeaders(headers: IncomingHttpHeaders, cookies: Cookie[]): IncomingHttpHeaders {
  const { [BYPASS_HEADER]: _bypass, cookie: _cookie, ...rest } = headers;
  // (Nor a dashboard session, were one ever sent to an app's host.)
  const kept = cookies
    .filter((c) => !c.name.startsWith(COOKIE_PREFIX) && !c.name.endsWith(SESSION_COOKIE))
    .map((c) => c.raw);
  return kept.length > 0 ? { ...rest, cookie: kept.join('; ') } : rest;
}
