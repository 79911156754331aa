/** IPv4 CIDR arithmetic: what the environments' subnet pool and sandboxes' egress policy share. */

const IPV4_CIDR = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/;

export const ipv4ToInt = (ip: string) => ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
export const intToIpv4 = (n: number) =>
  [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

/** True for `a.b.c.d/n` with octets up to 255 and n up to 32. */
export function isIpv4Cidr(cidr: string): boolean {
  const match = IPV4_CIDR.exec(cidr.trim());
  return !!match && Number(match[2]) <= 32 && match[1]!.split('.').every((octet) => Number(octet) <= 255);
}

/** Its first address (host bits cleared) and prefix length. */
export function parseCidr(cidr: string): { start: number; prefix: number } {
  if (!isIpv4Cidr(cidr)) throw new Error(`not an IPv4 CIDR: "${cidr}"`);
  const match = IPV4_CIDR.exec(cidr.trim())!;
  const prefix = Number(match[2]);
  const block = 2 ** (32 - prefix);
  return { start: Math.floor(ipv4ToInt(match[1]!) / block) * block, prefix };
}

const span = (cidr: string) => {
  const { start, prefix } = parseCidr(cidr);
  return { start, end: start + 2 ** (32 - prefix) };
};

export function cidrsOverlap(a: string, b: string): boolean {
  const x = span(a);
  const y = span(b);
  return x.start < y.end && y.start < x.end;
}

/** Every address of `inner` is in `outer`. */
export function cidrContains(outer: string, inner: string): boolean {
  const x = span(outer);
  const y = span(inner);
  return x.start <= y.start && y.end <= x.end;
}
