/** The one pino logger of a server process; components take a child with their name. */
import { type Logger, pino } from 'pino';

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'mayfly' },
      // Secrets and tokens never reach the logs, even when a caller logs a whole request.
      redact: ['req.headers.authorization', 'req.headers.cookie', 'token', '*.token', 'link', 'secrets'],
    },
    destination ?? process.stderr,
  );
}
