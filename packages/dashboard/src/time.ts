import { formatDuration } from '@mayfly/contract/duration';

export const age = (iso: string, now: number) => formatDuration(now - Date.parse(iso));

export const timeLeft = (iso: string | null, now: number) =>
  iso === null ? 'no limit' : Date.parse(iso) <= now ? 'due' : formatDuration(Date.parse(iso) - now);
