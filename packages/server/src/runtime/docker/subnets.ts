/**
 * Subnets for environment networks, carved from Mayfly's own pool. The Engine's default pools
 * hold about 30 bridge networks, far fewer than the environments one machine can run, so each
 * environment network gets a /24 (by default) from a range reserved for Mayfly instead.
 */

import { cidrsOverlap, intToIpv4, isIpv4Cidr, parseCidr } from '../../net/ipv4-cidr.js';

export interface SubnetPool {
  /** e.g. `10.213.0.0/16` */
  base: string;
  /** prefix length of each environment's subnet, e.g. 24 */
  size: number;
}

/**
 * Every subnet of the pool that overlaps none of `used`, in order. `used` is what the engine's
 * networks hold, whatever made them: IPv6 subnets (and anything else that is not IPv4) cannot
 * overlap an IPv4 pool and are skipped, so one dual-stack network never blocks allocation.
 */
export function* freeSubnets(pool: SubnetPool, usedSubnets: string[]): Generator<string> {
  const base = parseCidr(pool.base);
  const used = usedSubnets.filter(isIpv4Cidr);
  if (pool.size < base.prefix || pool.size > 30)
    throw new Error(`subnet size /${pool.size} does not fit ${pool.base}`);
  const step = 2 ** (32 - pool.size);
  const count = 2 ** (pool.size - base.prefix);
  for (let i = 0; i < count; i++) {
    const subnet = `${intToIpv4(base.start + i * step)}/${pool.size}`;
    if (!used.some((u) => cidrsOverlap(u, subnet))) yield subnet;
  }
}
