import type { EnvEvent, Environment } from '@mayfly/contract';
import type { Command } from 'commander';
import { connect } from '../connection.js';
import { ago, clockTime, formatElapsed, printable, stateColumn, table, until } from '../format.js';
import { printJson, printStdout } from '../output.js';
import { globalOptions } from './global-options.js';

/** `mayfly get NAME`: details of one environment and its timeline. */
export function registerGet(program: Command): void {
  program
    .command('get')
    .description('show one environment: state, services, URLs and the timeline of events')
    .argument('<name>', 'environment name or id')
    .action(async (name: string, _options: unknown, command: Command) => {
      const globals = globalOptions(command);
      const client = await connect(globals);
      const env = await client.environments.get(name);
      // By id: a name may be reused once its previous owner is destroyed.
      const events = await client.environments.events(env.id);
      if (globals.json) return printJson({ ...env, events });
      printDetails(env, events);
    });
}

function printDetails(env: Environment, events: EnvEvent[]): void {
  const fields: string[][] = [
    ['name', env.name],
    ['id', env.id],
    ['project', env.project],
    ['kind', env.kind],
    [
      'state',
      env.desired === 'absent' && env.state !== 'destroyed' ? `${env.state} (destroy requested)` : env.state,
    ],
    ['created', `${new Date(env.createdAt).toLocaleString()} (${ago(env.createdAt)})`],
    [
      'expires',
      env.expiresAt ? `${new Date(env.expiresAt).toLocaleString()} (${until(env.expiresAt)})` : 'never',
    ],
    ['template', env.templateFile],
  ];
  if (env.createdBy) fields.push(['created by', printable(env.createdBy)]);
  if (env.pullRequest)
    fields.push([
      'pull request',
      `#${env.pullRequest.number}${env.pullRequest.url ? ` ${printable(env.pullRequest.url)}` : ''}`,
    ]);
  for (const d of env.data ?? []) {
    const job = d.job ? printable(d.job) : 'its job';
    fields.push([
      `data ${printable(d.volume)}`,
      d.origin === 'restored'
        ? `restored from snapshot ${printable(d.snapshot ?? '')}${d.job ? ` (${job} not run)` : ''}`
        : `seeded by ${job}${d.snapshot ? `; kept as snapshot ${printable(d.snapshot)}` : ''}`,
    ]);
  }
  const asleep = sleepWords(env);
  if (asleep) fields.push(['sleeping', asleep]);
  if (env.keep) fields.push(['kept', 'yes: no time to live, never put to sleep for being idle']);
  if (env.commit) fields.push(['commit', env.commit]);
  if (env.lastActiveAt) {
    fields.push([
      'last request',
      `${new Date(env.lastActiveAt).toLocaleString()} (${ago(env.lastActiveAt)})`,
    ]);
  }
  if (env.failure) fields.push(['failure', `${env.failure.step}: ${env.failure.reason}`]);
  if (env.updateFailure) {
    const { step, reason, commit, at } = env.updateFailure;
    const which = commit ? `the update to ${commit.slice(0, 12)}` : 'an update';
    fields.push([
      'update failed',
      `${which}, ${ago(at)}, at ${step} (the previous version keeps running): ${reason.trimEnd()}`,
    ]);
  }
  for (const line of table(fields)) printStdout(line);

  if (env.services.length > 0) {
    printStdout('');
    printStdout('services');
    const rows = env.services.map((s) => [
      s.name,
      s.kind,
      s.state,
      s.health ?? '',
      s.exitCode === null ? '' : `exit ${s.exitCode}`,
      env.urls[s.name] ?? '',
    ]);
    for (const line of table(rows)) printStdout(`  ${line}`);
  }
  const unlisted = Object.entries(env.urls).filter(
    ([service]) => !env.services.some((s) => s.name === service),
  );
  if (unlisted.length > 0) {
    printStdout('');
    printStdout('urls');
    for (const line of table(unlisted)) printStdout(`  ${line}`);
  }

  printStdout('');
  printStdout('timeline');
  const first = events[0] ? Date.parse(events[0].at) : 0;
  for (const event of events) {
    const offset = `+${formatElapsed(Date.parse(event.at) - first)}`;
    printStdout(
      `  ${clockTime(event.at)}  ${offset.padStart(7)}  ${stateColumn(event)}  ${event.message}`.trimEnd(),
    );
  }
  if (events.length === 0) printStdout('  (no events)');
}

/** The `sleeping` line: asleep, on its way there, or waking up; null when it is simply awake. */
function sleepWords(env: Environment): string | null {
  if (env.desired === 'absent') return null;
  if (env.state === 'sleeping') {
    return env.sleep
      ? `yes: containers stopped, volumes kept; the next request (or \`mayfly wake ${env.name}\`) wakes it`
      : 'waking up: its services start again';
  }
  return env.sleep ? 'going to sleep: its containers stop, volumes are kept' : null;
}
