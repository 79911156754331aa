import type { EnvEvent } from '@mayfly/contract';
import { formatElapsed, stateColumn } from './format.js';
import { printStderr } from './output.js';

/**
 * An `onEvent` callback that shows each event as a progress line on stderr:
 * time since `start`, the new state for transitions, and the message.
 */
export function progressPrinter(start: number): (event: EnvEvent) => void {
  // Elapsed time is measured on this machine: the server's clock may differ from ours.
  return (event) => {
    printStderr(
      `  ${formatElapsed(Date.now() - start).padStart(6)}  ${stateColumn(event)}  ${event.message}`.trimEnd(),
    );
  };
}
