import { formatDuration } from '@mayfly/contract/duration';
import { useEffect, useState } from 'preact/hooks';

export const age = (iso: string, now: number) => formatDuration(now - Date.parse(iso));

/**
 * The time now, again every second: one timer for every component that shows it, each of which
 * renders again alone (a list of 500 rows does not render whole every second for its ages).
 */
export function useNow(): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    clockListeners.add(setNow);
    clock ??= setInterval(() => {
      const at = Date.now();
      for (const listener of clockListeners) listener(at);
    }, 1000);
    return () => {
      clockListeners.delete(setNow);
      if (clockListeners.size === 0) {
        clearInterval(clock);
        clock = undefined;
      }
    };
  }, []);
  return now;
}
const clockListeners = new Set<(now: number) => void>();
let clock: ReturnType<typeof setInterval> | undefined;

export const timeLeft = (iso: string | null, now: number) =>
  iso === null ? 'no limit' : Date.parse(iso) <= now ? 'due' : formatDuration(Date.parse(iso) - now);
