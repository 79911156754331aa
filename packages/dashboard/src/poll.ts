import { useEffect, useState } from 'preact/hooks';

/**
 * Reads `load()` now and every 2 s while the component is shown (again when `key` changes): its
 * latest answer, the error of the latest read (null once one succeeds), and the time of the last
 * tick (for ages and time left).
 */
export function usePolling<T>(load: () => Promise<T>, key: string) {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    let stopped = false;
    const read = async () => {
      try {
        const answer = await load();
        if (stopped) return;
        setValue(answer);
        setError(null);
      } catch (err) {
        if (!stopped) setError(err);
      }
    };
    void read();
    const timer = setInterval(() => {
      setNow(Date.now());
      void read();
    }, 2000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [key]);
  return { value, error, now };
}
