import { describe, expect, it } from 'vitest';
import { parseCidr } from '../../net/ipv4-cidr.js';
import { freeSubnets } from './subnets.js';

describe('environment subnets', () => {
  it('hands out the pool in order, skipping what overlaps subnets in use', () => {
    const free = freeSubnets({ base: '10.213.0.0/16', size: 24 }, [
      '10.213.0.0/24',
      '10.213.2.128/25',
      '172.17.0.0/16',
    ]);
    expect([...free].slice(0, 3)).toEqual(['10.213.1.0/24', '10.213.3.0/24', '10.213.4.0/24']);
  });

  it('knows when the pool is exhausted', () => {
    expect([...freeSubnets({ base: '10.213.0.0/23', size: 24 }, ['10.213.0.0/16'])]).toEqual([]);
    expect([...freeSubnets({ base: '10.213.0.0/16', size: 24 }, [])]).toHaveLength(256);
  });

  it('ignores IPv6 and malformed subnets of other networks instead of failing', () => {
    const free = freeSubnets({ base: '10.213.0.0/16', size: 24 }, [
      'fd00:6d61:7966::/64',
      '2001:db8::/32',
      '::/0',
      '10.213.0.0/24',
      'garbage',
      '10.213.1.999/24',
    ]);
    expect([...free].slice(0, 2)).toEqual(['10.213.1.0/24', '10.213.2.0/24']);
  });

  it('rejects what is not a CIDR', () => {
    expect(() => parseCidr('10.0.0.0')).toThrow('not an IPv4 CIDR');
    expect(() => parseCidr('10.0.0.256/24')).toThrow('not an IPv4 CIDR');
    expect(() => parseCidr('10.0.0.0/33')).toThrow('not an IPv4 CIDR');
    expect(() => parseCidr('fd00::/64')).toThrow('not an IPv4 CIDR');
    expect(() => [...freeSubnets({ base: '10.0.0.0/24', size: 16 }, [])]).toThrow('does not fit');
  });
});
