/**
 * The server's data dir: private to the user that runs it (0700), and used by one server at a time
 * when the store is SQLite in it. The lock is a kernel lock (SQLite's, on a file of its own), not a
 * pid: the kernel drops it when the process dies, so neither a stale pid file nor a pid the system
 * has since given to another process (or to this very process) can fool it.
 */
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';

/** Creates the data dir if needed and makes it (and only it: contents keep their own modes) 0700. */
export function prepareDataDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

/** `<dataDir>/server.pid`: which process to stop (`kill $(cat ~/.mayfly/server.pid)`); informational only. */
export const PID_FILE = 'server.pid';
const LOCK_FILE = 'server.lock';

/**
 * Takes the data dir's lock for this process's lifetime and writes the pid file; throws when
 * another server (in this or another process) holds it. Returns the release function.
 */
export function lockDataDir(dir: string): () => void {
  const lockPath = path.join(dir, LOCK_FILE);
  const db = new SqliteDatabase(lockPath);
  try {
    chmodSync(lockPath, 0o600);
    db.pragma('busy_timeout = 0');
    // Exclusive locking mode keeps the lock taken by the first write until the connection closes.
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec(
      'CREATE TABLE IF NOT EXISTS holder (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER, since TEXT)',
    );
    db.prepare('INSERT OR REPLACE INTO holder (id, pid, since) VALUES (1, ?, ?)').run(
      process.pid,
      new Date().toISOString(),
    );
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code?.startsWith('SQLITE_BUSY')) {
      const holder = readPid(path.join(dir, PID_FILE));
      throw new Error(
        `another Mayfly server${holder ? ` (pid ${holder})` : ''} is using ${dir}; stop it or use another --data dir`,
      );
    }
    throw err;
  }
  const pidFile = path.join(dir, PID_FILE);
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 });
  return () => {
    if (readPid(pidFile) === process.pid) rmSync(pidFile, { force: true });
    db.close();
  };
}

function readPid(file: string): number | null {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
