/**
 * Preview tokens: what opens a project's preview URLs when its access is `token`. Made by the
 * project service, checked by the gateway; stored only as a hash, like API tokens, from which
 * they are told apart by their prefix.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Prefix of every preview token; API tokens start with `mfy_`, so neither can pass for the other. */
export const PREVIEW_TOKEN_PREFIX = 'mfyp_';
/** Longer than any token made here; longer input is refused without hashing it. */
const MAX_TOKEN_LENGTH = 200;

/** SHA-256 of a preview token, lowercase hex: the only form in which it is stored. */
export function hashPreviewToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A new preview token (256 random bits) and its hash; the token is shown once and never stored. */
export function newPreviewToken(): { token: string; hash: string } {
  const token = `${PREVIEW_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashPreviewToken(token) };
}

/**
 * True when `token` is the preview token whose hash is `hash`. The hashes are compared in constant
 * time; an API token is refused by its prefix before anything is compared.
 */
export function previewTokenMatches(token: string, hash: string | null): boolean {
  if (hash === null || token.length > MAX_TOKEN_LENGTH || !token.startsWith(PREVIEW_TOKEN_PREFIX))
    return false;
  const expected = Buffer.from(hash, 'hex');
  const actual = createHash('sha256').update(token, 'utf8').digest();
  return expected.length === actual.length && timingSafeEqual(actual, expected);
}
