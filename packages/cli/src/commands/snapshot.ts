import { CreateSnapshotRequest, type Snapshot } from '@mayfly/contract';
import type { Command } from 'commander';
import { UsageError } from '../cli-error.js';
import { connect } from '../connection.js';
import { ago, formatBytes, printable, table } from '../format.js';
import { printJson, printStderr, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

/** `mayfly snapshot ls|rm|create`: seeded data kept for new environments, and snapshots made by hand. */
export function registerSnapshot(program: Command): void {
  const snapshot = program
    .command('snapshot')
    .description('snapshots of seeded volumes (x-mayfly.data) and ones made by hand: ls, rm, create')
    .addHelpText(
      'after',
      `
A volume a template marks seeded by a job (x-mayfly: { data: { dbdata: { seededBy: migrate } } })
is snapshotted after the job's first success; later environments of the project with the same
seed start from a clone of it and skip the job. A changed job, image or setting is another seed.

Examples:
  mayfly snapshot ls
  mayfly snapshot create shop-42 dbdata --name anonymised-2026-12   # then: { snapshot: anonymised-2026-12 }
  mayfly snapshot rm dbdata-1a2b3c4d5e6f
  mayfly up --no-snapshot                                             # seed again, snapshot again`,
    );

  snapshot
    .command('ls')
    .alias('list')
    .description('list snapshots: name, project, kind, size, source environment, last use')
    .option('-p, --project <project>', 'only this project')
    .action(async (options: { project?: string }, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const snapshots = await client.snapshots.list({ project: options.project });
      if (globals.json) return printJson(snapshots);
      if (snapshots.length === 0) return printStdout('no snapshots');
      for (const line of table([
        ['NAME', 'PROJECT', 'KIND', 'VOLUME', 'SIZE', 'FROM', 'STATE', 'LAST USED'],
        ...snapshots.map(snapshotRow),
      ]))
        printStdout(line);
    });

  snapshot
    .command('rm')
    .alias('remove')
    .description('remove a snapshot (environments made from it keep their data)')
    .argument('<name>', 'the snapshot name')
    .option('-p, --project <project>', 'its project', 'default')
    .action(async (name: string, options: { project: string }, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const removed = await client.snapshots.remove(options.project, name);
      if (globals.json) return printJson(removed);
      printStderr(`removed snapshot ${printable(removed.name)} of project ${printable(removed.project)}`);
    });

  snapshot
    .command('create')
    .description("snapshot a ready environment's volume under a name templates can give")
    .argument('<environment>', 'the environment (name or id)')
    .argument('<volume>', 'a volume of it, as its template names it')
    .requiredOption('--name <name>', 'the snapshot name (lowercase letters, digits, ".", "_", "-")')
    .action(async (environment: string, volume: string, options: { name: string }, command: Command) => {
      const globals = globalOptions(command);
      const request = { volume, name: options.name };
      const check = CreateSnapshotRequest.safeParse(request);
      if (!check.success) throw new UsageError(check.error.issues[0]?.message ?? 'invalid snapshot');
      const client = await connect(globals);
      printStderr(`snapshotting ${volume} of ${environment} (what writes it is paused for the copy)…`);
      const made = await client.snapshots.create(environment, request);
      if (globals.json) return printJson(made);
      printStdout(made.name);
      printStderr(
        `snapshot ${printable(made.name)} of project ${printable(made.project)}: ${formatBytes(made.sizeBytes ?? 0)}; templates name it as x-mayfly: { data: { ${volume}: { snapshot: ${made.name} } } }`,
      );
    });
}

function snapshotRow(s: Snapshot): string[] {
  return [
    printable(s.name),
    printable(s.project),
    s.kind,
    printable(s.volume),
    s.sizeBytes === null ? '-' : formatBytes(s.sizeBytes),
    printable(s.sourceEnvironment.name),
    s.state,
    ago(s.lastUsedAt),
  ];
}
