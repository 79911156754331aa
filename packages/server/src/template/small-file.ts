/** Reading a small file a template names, from a folder a pull request may have filled. */
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs';

/** A file as read: its text, or why it could not be used. */
export type SmallFileRead = { text: string; bytes: number } | { missing: true } | { refused: string };

/**
 * Reads a regular file of at most `maxBytes` as UTF-8. Opened without blocking and checked again
 * once open, so a FIFO or device put in its place cannot stall the server or feed it without end;
 * one byte more than allowed is read, to tell a file that grew since the check.
 */
export function readSmallFile(path: string, maxBytes: number): SmallFileRead {
  const tooLarge = { refused: `is larger than ${maxBytes} bytes` };
  const notAFile = { refused: 'is not a regular file' };
  const unreadable = (error: unknown) => ({
    refused: `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
  });
  let stats: ReturnType<typeof statSync>;
  try {
    stats = statSync(path);
  } catch {
    return { missing: true };
  }
  if (!stats.isFile()) return notAFile;
  if (stats.size > maxBytes) return tooLarge;
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    return unreadable(error);
  }
  try {
    const opened = fstatSync(fd);
    if (!opened.isFile()) return notAFile;
    const buffer = Buffer.alloc(Math.min(opened.size, maxBytes) + 1);
    let length = 0;
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length > maxBytes) return tooLarge;
    return { text: buffer.toString('utf8', 0, length), bytes: length };
  } catch (error) {
    return unreadable(error);
  } finally {
    closeSync(fd);
  }
}
