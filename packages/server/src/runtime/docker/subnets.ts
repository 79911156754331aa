/**
 * Subnets for environment networks, carved from Mayfly's own pool. The Engine's default pools
 * hold about 30 bridge networks, far fewer than the environments one machine can run, so each
 * environment network gets a /24 (by default) from a range reserved for Mayfly instead.
 */

const toInt = (ip: string) => ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
const toIp = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

export interface SubnetPool {
  /** e.g. `10.213.0.0/16` */
  base: string;
  /** prefix length of each environment's subnet, e.g. 24 */
  size: number;
}

export function parseCidr(cidr: string): { start: number; prefix: number } {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr.trim());
  if (!match) throw new Error(`not an IPv4 CIDR: "${cidr}"`);
  const prefix = Number(match[2]);
  const block = 2 ** (32 - prefix);
  return { start: Math.floor(toInt(match[1]!) / block) * block, prefix };
}

function overlaps(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  const xEnd = x.start + 2 ** (32 - x.prefix);
  const yEnd = y.start + 2 ** (32 - y.prefix);
  return x.start < yEnd && y.start < xEnd;
}

/** Every subnet of the pool that overlaps none of `used`, in order. */
export function* freeSubnets(pool: SubnetPool, used: string[]): Generator<string> {
  const base = parseCidr(pool.base);
  if (pool.size < base.prefix || pool.size > 30)
    throw new Error(`subnet size /${pool.size} does not fit ${pool.base}`);
  const step = 2 ** (32 - pool.size);
  const count = 2 ** (pool.size - base.prefix);
  for (let i = 0; i < count; i++) {
    const subnet = `${toIp(base.start + i * step)}/${pool.size}`;
    if (!used.some((u) => overlaps(u, subnet))) yield subnet;
  }
}
