/** Where published images go in the cluster's registry: by content, never where a template says. */
import { describe, expect, it } from 'vitest';
import { registryRef } from './image-publisher.js';

const ID = `sha256:${'ab12'.repeat(16)}`;
const HEX = 'ab12'.repeat(16);

describe('registryRef', () => {
  it('names an image by its content under mayfly-env/, keeping only a readable name', () => {
    expect(registryRef('127.0.0.1:5000', 'mayfly-build/shop:0123abcd', ID)).toBe(
      `127.0.0.1:5000/mayfly-env/shop:${HEX}`,
    );
    expect(registryRef('reg.local:5000', 'postgres', ID)).toBe(`reg.local:5000/mayfly-env/postgres:${HEX}`);
    expect(registryRef('r:5000', `library/redis@sha256:${'c'.repeat(64)}`, ID)).toBe(
      `r:5000/mayfly-env/redis:${HEX}`,
    );
    expect(registryRef('r:5000', 'localhost:5000/Team/My_App:v1', ID)).toBe(
      `r:5000/mayfly-env/my_app:${HEX}`,
    );
  });

  it("never lands on another image's reference, whatever the template names", () => {
    // A hostile template naming Mayfly's own image (or another environment's) in another registry.
    for (const ref of [
      'evil.example/mayfly/mayfly:0.1.0-abc1234',
      'evil.example/mayfly/postgres:15',
      '127.0.0.1:5000/mayfly/postgres:15',
      'evil.example/mayfly-build/shop:0123abcd',
      'evil.example/mayfly-env/shop:aaaa',
    ]) {
      const target = registryRef('127.0.0.1:5000', ref, ID);
      expect(target.startsWith('127.0.0.1:5000/mayfly-env/')).toBe(true);
      expect(target.endsWith(`:${HEX}`)).toBe(true);
    }
    expect(registryRef('r:5000', '../../x:../y', ID)).toBe(`r:5000/mayfly-env/y:${HEX}`);
    expect(registryRef('r:5000', '-_-', ID)).toBe(`r:5000/mayfly-env/image:${HEX}`);
  });

  it('refuses what is not an image id', () => {
    expect(() => registryRef('r:5000', 'shop', 'latest')).toThrow('not an image id');
  });
});
