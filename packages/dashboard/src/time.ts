import { formatDuration } from '@mayfly/contract/duration';
import type { RefObject } from 'preact';
import { useEffect } from 'preact/hooks';

export const age = (iso: string, now: number) => formatDuration(now - Date.parse(iso));

export const timeLeft = (iso: string | null, now: number) =>
  iso === null ? 'no limit' : Date.parse(iso) <= now ? 'due' : formatDuration(Date.parse(iso) - now);

/**
 * Keeps the ages and times left in the shown rows under `root` current: once a second, one pass
 * over the elements that hold them (`data-since`, `data-until`: an ISO time, empty for none), their
 * text changed where it changed. Nothing renders for it (a list of 500 environments has 1000 of
 * them); a row shown again renders anew, so a hidden one may wait.
 */
export function useTickingTimes(root: RefObject<HTMLElement>): void {
  useEffect(() => {
    const timer = setInterval(() => {
      const now = Date.now();
      const shown = 'tr:not([hidden]) [data-since], tr:not([hidden]) [data-until]';
      for (const el of root.current?.querySelectorAll<HTMLElement>(shown) ?? []) {
        const { since, until } = el.dataset;
        const text = since !== undefined ? age(since, now) : timeLeft(until || null, now);
        // The text node itself, which the page's renderer keeps, not a new one.
        const node = el.firstChild;
        if (node instanceof Text && node.data !== text) node.data = text;
      }
    }, 1000);
    return () => clearInterval(timer);
  }, [root]);
}
