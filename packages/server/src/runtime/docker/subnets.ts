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

const IPV4_CIDR = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/;

/** True for `a.b.c.d/n` with octets up to 255 and n up to 32. */
export function isIpv4Cidr(cidr: string): boolean {
  const match = IPV4_CIDR.exec(cidr.trim());
  return !!match && Number(match[2]) <= 32 && match[1]!.split('.').every((octet) => Number(octet) <= 255);
}

export function parseCidr(cidr: string): { start: number; prefix: number } {
  if (!isIpv4Cidr(cidr)) throw new Error(`not an IPv4 CIDR: "${cidr}"`);
  const match = IPV4_CIDR.exec(cidr.trim())!;
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
    const subnet = `${toIp(base.start + i * step)}/${pool.size}`;
    if (!used.some((u) => overlaps(u, subnet))) yield subnet;
  }
}
