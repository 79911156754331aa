import net from 'node:net';

/**
 * How a TCP connection attempt ended: `refused` when something answered no (a closed port, or
 * kube-proxy's reject rule for a Service without endpoints), `unreachable` when nothing answered
 * in time or there is no route.
 */
export type ConnectOutcome = 'connected' | 'refused' | 'unreachable';

export function tryConnect(host: string, port: number, timeoutMs = 1_000): Promise<ConnectOutcome> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: timeoutMs });
    const done = (outcome: ConnectOutcome) => {
      socket.destroy();
      resolve(outcome);
    };
    socket.once('connect', () => done('connected'));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' ? 'refused' : 'unreachable'),
    );
    socket.once('timeout', () => done('unreachable'));
  });
}
