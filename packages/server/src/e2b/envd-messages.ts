/**
 * What envd's messages are made of, made from the sandbox agent's own answers (which are checked
 * before they get here, or are checked here: the sandbox is not trusted).
 */
import type { SandboxFileEntry } from '@mayfly/contract';

/** `~` is the home (the agent resolves relative paths against it). */
export function resolvePath(p: string): string {
  if (p === '~') return '.';
  return p.startsWith('~/') ? p.slice(2) || '.' : p;
}

const FILE_TYPES: Record<SandboxFileEntry['type'], string> = {
  file: 'FILE_TYPE_FILE',
  dir: 'FILE_TYPE_DIRECTORY',
  symlink: 'FILE_TYPE_SYMLINK',
  other: 'FILE_TYPE_UNSPECIFIED',
};

/** The agent's description of a file as E2B's `EntryInfo`. */
export function entryInfo(e: SandboxFileEntry) {
  const mode = Number.parseInt(e.mode, 8);
  return {
    name: e.name,
    type: FILE_TYPES[e.type],
    path: e.path,
    size: String(e.size),
    mode,
    permissions: permissionString(e.type, mode),
    modifiedTime: e.modifiedAt,
    ...(e.symlinkTarget ? { symlinkTarget: e.symlinkTarget } : {}),
  };
}

function permissionString(type: SandboxFileEntry['type'], mode: number): string {
  const kind = type === 'dir' ? 'd' : type === 'symlink' ? 'l' : '-';
  const bits = 'rwxrwxrwx';
  return kind + [...bits].map((c, i) => (mode & (1 << (8 - i)) ? c : '-')).join('');
}
