/**
 * A sandbox's data-plane key (E2B's `envdAccessToken`, sent back as `X-Access-Token`): an HMAC of
 * its id under a secret of the installation, so every replica can check it, `connect` can hand it
 * out again, and nothing per sandbox is stored. It opens that one sandbox's processes and files
 * while it runs; an ended sandbox is answered as gone whatever the key.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export class EnvdAccess {
  constructor(private readonly secret: Buffer) {}

  keyOf(sandboxId: string): string {
    return createHmac('sha256', this.secret).update(`e2b-envd:${sandboxId}`).digest('hex');
  }

  verify(sandboxId: string, presented: string | undefined): boolean {
    // (Checked as hex first: a string of other characters may be longer in bytes than in length.)
    if (presented === undefined || !/^[0-9a-f]{64}$/.test(presented)) return false;
    return timingSafeEqual(Buffer.from(this.keyOf(sandboxId)), Buffer.from(presented));
  }
}
