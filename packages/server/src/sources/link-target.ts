/**
 * Which symbolic links may live in a tree we unpack or pack. Imported by the CLI: node only.
 *
 * Checking where a link points by normalising its target is not enough: `a -> b/..` looks like
 * it stays in place, but if `b -> .` sits at the root, `a` really resolves to the root's parent.
 * The rule below needs no knowledge of the other links: a target is a run of leading `..`
 * (which walks up real folders, never past the root) followed by names only (each of which is a
 * real entry or a link that obeys the same rule). Such a link can never leave the tree.
 */

/**
 * Why a symbolic link at `linkPath` (relative POSIX path of the link inside the tree) pointing at
 * `target` could resolve outside the tree, or `undefined` when it cannot.
 */
export function unsafeLinkTarget(linkPath: string, target: string): string | undefined {
  if (target === '') return 'its target is empty';
  if (target.includes('\0')) return 'its target contains a NUL byte';
  if (target.startsWith('/')) return `its target "${target}" is an absolute path`;
  // Folders above the link: `a/b/link` may climb two levels, a link at the root none.
  const depth = linkPath.split('/').length - 1;
  let climbs = 0;
  let sawName = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (sawName) return `its target "${target}" goes up (..) after a name, which may pass through a link`;
      climbs += 1;
      if (climbs > depth) return `its target "${target}" leads outside the folder`;
    } else {
      sawName = true;
    }
  }
  return undefined;
}
