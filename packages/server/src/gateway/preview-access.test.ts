/** Preview access decisions, without a server: every outcome, the cookie, and what the app is sent. */
import * as crypto from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, expect, it, vi } from 'vitest';
import {
  decidePreviewAccess,
  hashPreviewToken,
  newPreviewToken,
  type PreviewDecision,
  type PreviewPolicy,
  type PreviewRequest,
  PUBLIC_PREVIEW,
  previewTokenMatches,
} from './preview-access.js';

vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return { ...actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) };
});

const { token, hash } = newPreviewToken();
const other = newPreviewToken().token;
const apiToken = `mfy_${'a'.repeat(43)}`;
const policy: PreviewPolicy = { access: 'token', tokenHash: hash, project: 'shop' };

function request(overrides: Partial<PreviewRequest> = {}): PreviewRequest {
  return {
    method: 'GET',
    url: '/',
    headers: { host: 'web--shop-pr-1.localhost' },
    envName: 'shop-pr-1',
    secure: false,
    upgrade: false,
    ...overrides,
  };
}

function expectDeny(decision: PreviewDecision, ...phrases: string[]) {
  expect(decision.kind).toBe('deny');
  if (decision.kind !== 'deny') return;
  expect(decision.status).toBe(401);
  expect(decision.headers['content-type']).toBe('text/html; charset=utf-8');
  expect(decision.headers['cache-control']).toBe('no-store');
  expect(decision.headers['www-authenticate']).toMatch(/^Mayfly-Preview /);
  expect(decision.headers['content-length']).toBe(Buffer.byteLength(decision.body));
  expect(decision.body).toContain('401 · Preview token needed');
  expect(decision.body).toContain('X-Mayfly-Bypass');
  expect(decision.body).toContain('?mayfly-token=');
  expect(decision.body).not.toContain(token);
  expect(decision.body).not.toContain(hash);
  for (const phrase of phrases) expect(decision.body).toContain(phrase);
}

describe('preview tokens', () => {
  it('are mfyp_ and 32 random bytes in base64url, kept as their SHA-256', () => {
    expect(token).toMatch(/^mfyp_[A-Za-z0-9_-]{43}$/);
    expect(hash).toBe(crypto.createHash('sha256').update(token).digest('hex'));
    expect(hashPreviewToken(token)).toBe(hash);
    expect(other).not.toBe(token);
  });

  it('match their hash only, compared in constant time', () => {
    const timingSafeEqual = vi.mocked(crypto.timingSafeEqual);
    timingSafeEqual.mockClear();
    expect(previewTokenMatches(token, hash)).toBe(true);
    expect(timingSafeEqual).toHaveBeenCalledTimes(1);
    expect(previewTokenMatches(other, hash)).toBe(false);
    expect(timingSafeEqual).toHaveBeenCalledTimes(2);
    expect(previewTokenMatches(token, null)).toBe(false);
    expect(previewTokenMatches(token, 'not hex of the right length')).toBe(false);
    expect(previewTokenMatches(`${token}x`.repeat(10), hash)).toBe(false);
  });

  it('never take an API token, even one whose hash is the one stored', () => {
    const timingSafeEqual = vi.mocked(crypto.timingSafeEqual);
    timingSafeEqual.mockClear();
    expect(previewTokenMatches(apiToken, hashPreviewToken(apiToken))).toBe(false);
    // refused by its prefix, before anything is compared
    expect(timingSafeEqual).not.toHaveBeenCalled();
  });
});

describe('decidePreviewAccess', () => {
  it('lets anyone into a public environment', () => {
    expect(decidePreviewAccess(request({ url: '/a?b=1' }), PUBLIC_PREVIEW)).toEqual({
      kind: 'allow',
      url: '/a?b=1',
      headers: { host: 'web--shop-pr-1.localhost' },
    });
    expect(decidePreviewAccess(request(), { ...policy, access: 'public' }).kind).toBe('allow');
  });

  it('refuses a request with no token, with a 401 page that says how to get in', () => {
    expectDeny(decidePreviewAccess(request(), policy), 'preview token only', 'project &quot;shop&quot;');
  });

  it('refuses everyone while the project has no preview token', () => {
    expectDeny(
      decidePreviewAccess(request({ url: `/?mayfly-token=${token}` }), { ...policy, tokenHash: null }),
      'has no preview token yet',
      'POST /v1/projects/shop/preview-token',
    );
  });

  it('turns a secret link into a cookie and a redirect to the same URL without the token', () => {
    const decision = decidePreviewAccess(
      request({ url: `/cart/items?page=2&mayfly-token=${token}&q=a%20b+c` }),
      policy,
    );
    expect(decision).toEqual({
      kind: 'grant',
      status: 302,
      headers: {
        location: '/cart/items?page=2&q=a%20b+c',
        'set-cookie': `mayfly-preview-shop-pr-1=${token}; HttpOnly; SameSite=Lax; Path=/`,
        'cache-control': 'no-store',
        'content-length': 0,
      },
      body: '',
    });
    const only = decidePreviewAccess(request({ url: `/?mayfly-token=${token}` }), policy);
    expect(only.kind === 'grant' && only.headers.location).toBe('/');
    const head = decidePreviewAccess(request({ method: 'HEAD', url: `/x?mayfly-token=${token}` }), policy);
    expect(head.kind === 'grant' && head.headers.location).toBe('/x');
  });

  it('marks the cookie Secure when the public scheme is https', () => {
    const decision = decidePreviewAccess(request({ url: `/?mayfly-token=${token}`, secure: true }), policy);
    expect(decision.kind === 'grant' && decision.headers['set-cookie']).toBe(
      `mayfly-preview-shop-pr-1=${token}; HttpOnly; SameSite=Lax; Path=/; Secure`,
    );
  });

  it('redirects only to a path of the same host', () => {
    for (const url of [`//evil.example/x?mayfly-token=${token}`, `/\\evil.example/x?mayfly-token=${token}`]) {
      const decision = decidePreviewAccess(request({ url }), policy);
      expect(decision.kind === 'grant' && decision.headers.location).toBe('/evil.example/x');
    }
    const absolute = decidePreviewAccess(
      request({ url: `http://web--shop-pr-1.localhost/p?mayfly-token=${token}&z=1` }),
      policy,
    );
    expect(absolute.kind === 'grant' && absolute.headers.location).toBe('/p?z=1');
  });

  it('lets a link through without a redirect where one cannot work (bodies, WebSockets)', () => {
    for (const r of [
      request({ method: 'POST', url: `/echo?mayfly-token=${token}` }),
      request({ url: `/ws?mayfly-token=${token}`, upgrade: true }),
    ]) {
      const decision = decidePreviewAccess(r, policy);
      expect(decision.kind).toBe('allow');
      expect(decision.kind === 'allow' && decision.url).toBe(r.url.split('?')[0]);
    }
  });

  it('refuses a link with a wrong token, or an API token', () => {
    expectDeny(decidePreviewAccess(request({ url: `/?mayfly-token=${other}` }), policy), 'not valid');
    expectDeny(
      decidePreviewAccess(request({ url: `/?mayfly-token=${apiToken}` }), policy),
      'an API token is not a preview token',
    );
    // a valid cookie does not make a wrong link right: the link decides
    expectDeny(
      decidePreviewAccess(
        request({ url: `/?mayfly-token=${other}`, headers: { cookie: `mayfly-preview-shop-pr-1=${token}` } }),
        policy,
      ),
      'not valid',
    );
  });

  it('lets in the cookie of this environment, not of another one', () => {
    const cookie = (c: string) => request({ headers: { cookie: c } });
    expect(decidePreviewAccess(cookie(`a=1; mayfly-preview-shop-pr-1=${token}`), policy).kind).toBe('allow');
    expect(decidePreviewAccess(cookie(`mayfly-preview-shop-pr-1="${token}"`), policy).kind).toBe('allow');
    expectDeny(decidePreviewAccess(cookie(`mayfly-preview-shop-pr-2=${token}`), policy));
    expectDeny(decidePreviewAccess(cookie(`mayfly-preview-shop-pr-1=${other}`), policy), 'not valid');
    expectDeny(
      decidePreviewAccess(cookie(`mayfly-preview-shop-pr-1=${apiToken}`), policy),
      'an API token is not a preview token',
    );
  });

  it('lets in X-Mayfly-Bypass with the token, and refuses a wrong one or an API token', () => {
    const bypass = (value: string) => request({ headers: { 'x-mayfly-bypass': value } });
    expect(decidePreviewAccess(bypass(token), policy).kind).toBe('allow');
    expect(decidePreviewAccess(bypass(` ${token} `), policy).kind).toBe('allow');
    expectDeny(decidePreviewAccess(bypass(other), policy), 'not valid');
    expectDeny(decidePreviewAccess(bypass(apiToken), policy), 'an API token is not a preview token');
    expectDeny(decidePreviewAccess(bypass(''), policy));
  });

  it('forwards no preview credential: header, preview cookies and the link parameter are taken out', () => {
    const headers: IncomingHttpHeaders = {
      host: 'web--shop-pr-1.localhost',
      'x-mayfly-bypass': token,
      cookie: `session=abc; mayfly-preview-shop-pr-1=${token}; theme=dark; mayfly-preview-other=${other}`,
      'user-agent': 'test',
    };
    const before = structuredClone(headers);
    for (const p of [policy, PUBLIC_PREVIEW]) {
      const decision = decidePreviewAccess(
        request({ url: `/a?x=1&mayfly-token=${token}`, headers, method: 'PUT' }),
        p,
      );
      expect(decision).toEqual({
        kind: 'allow',
        url: '/a?x=1',
        headers: {
          host: 'web--shop-pr-1.localhost',
          cookie: 'session=abc; theme=dark',
          'user-agent': 'test',
        },
      });
    }
    // the request's own headers are left as they were (the gateway swaps them in)
    expect(headers).toEqual(before);
    const onlyOurs = decidePreviewAccess(
      request({ headers: { cookie: `mayfly-preview-shop-pr-1=${token}` } }),
      policy,
    );
    expect(onlyOurs).toEqual({ kind: 'allow', url: '/', headers: {} });
  });
});
