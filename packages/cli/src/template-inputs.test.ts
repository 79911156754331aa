// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Compose references are the subject
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { UsageError } from './cli-error.js';
import { resolveTemplateInputs } from './template-inputs.js';

const dir = mkdtempSync(join(tmpdir(), 'mayfly-inputs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const template = (content: string, dotEnv?: string) => {
  const folder = mkdtempSync(join(dir, 't-'));
  const file = join(folder, 'compose.yaml');
  writeFileSync(file, content);
  if (dotEnv !== undefined) writeFileSync(join(folder, '.env'), dotEnv);
  return { file, content };
};

describe('what mayfly up sends as inputs, as Compose reads variables', () => {
  const content = [
    'services:',
    '  web:',
    '    image: "web:${TAG:-latest}"',
    '    environment: { FROM_SHELL: "${SHELL_ONLY}", FROM_DOTENV: "${DOTENV_ONLY}", BOTH: "${IN_BOTH}", GIVEN: "${GIVEN}" }',
    '    command: "echo $$NOT_A_VARIABLE ${UNSET_EVERYWHERE}"',
    '    profiles: ["${PROFILE_NAME:-web}"]',
    '',
  ].join('\n');

  test('--input wins, then the shell, then .env; only variables the template reads are sent', async () => {
    const { file } = template(content, 'DOTENV_ONLY=from-dotenv\nIN_BOTH=from-dotenv\nUNUSED_IN_DOTENV=x\n');
    const result = await resolveTemplateInputs({
      file,
      content,
      given: { GIVEN: 'from-input', IN_BOTH: 'from-input-too' },
      profiles: [],
      env: {
        SHELL_ONLY: 'from-shell',
        IN_BOTH: 'from-shell',
        HOME: '/root',
        AWS_SECRET_ACCESS_KEY: 'never-sent',
        NOT_A_VARIABLE: 'escaped-so-not-read',
      },
    });
    expect(result.inputs).toEqual({
      SHELL_ONLY: 'from-shell',
      DOTENV_ONLY: 'from-dotenv',
      IN_BOTH: 'from-input-too',
      GIVEN: 'from-input',
    });
    expect(result.sources).toEqual({
      SHELL_ONLY: 'environment',
      DOTENV_ONLY: '.env',
      IN_BOTH: 'input',
      GIVEN: 'input',
    });
  });

  test('the shell wins over .env', async () => {
    const { file } = template(content, 'IN_BOTH=from-dotenv\n');
    const result = await resolveTemplateInputs({
      file,
      content,
      given: {},
      profiles: [],
      env: { IN_BOTH: 'from-shell' },
    });
    expect(result.inputs).toEqual({ IN_BOTH: 'from-shell' });
  });

  test('values the server sets itself are never taken from the shell', async () => {
    const uses =
      'services:\n  web:\n    image: web\n    environment: { U: "${ENV_URL}", I: "${ENV_ID}", N: "${ENV_NAME}" }\n';
    const { file } = template(uses);
    const result = await resolveTemplateInputs({
      file,
      content: uses,
      given: {},
      profiles: [],
      env: { ENV_URL: 'http://evil.example', ENV_ID: 'x', ENV_NAME: 'y' },
    });
    expect(result.inputs).toEqual({});
  });

  test('profiles: --profile, else COMPOSE_PROFILES from the shell, else from .env', async () => {
    const { file } = template(content, 'COMPOSE_PROFILES=from-dotenv\n');
    const base = { file, content, given: {} };
    expect(
      (await resolveTemplateInputs({ ...base, profiles: ['cli'], env: { COMPOSE_PROFILES: 'a,b' } }))
        .profiles,
    ).toEqual(['cli']);
    expect(
      (await resolveTemplateInputs({ ...base, profiles: [], env: { COMPOSE_PROFILES: 'a, b,' } })).profiles,
    ).toEqual(['a', 'b']);
    expect((await resolveTemplateInputs({ ...base, profiles: [], env: {} })).profiles).toEqual([
      'from-dotenv',
    ]);
  });

  test('variables of a template the server will refuse are still found (a ${VAR:?} without its value)', async () => {
    const strict =
      'services:\n  web:\n    image: "web:${REQUIRED:?set it}"\n    environment: { X: "${FROM_SHELL}" }\n';
    const { file } = template(strict);
    const result = await resolveTemplateInputs({
      file,
      content: strict,
      given: {},
      profiles: [],
      env: { FROM_SHELL: '1' },
    });
    expect(result.inputs).toEqual({ FROM_SHELL: '1' });
  });

  test('a broken .env is a usage error naming its line', async () => {
    const { file } = template(content, 'GOOD=1\n=no-key\n');
    await expect(resolveTemplateInputs({ file, content, given: {}, profiles: [], env: {} })).rejects.toThrow(
      UsageError,
    );
    await expect(resolveTemplateInputs({ file, content, given: {}, profiles: [], env: {} })).rejects.toThrow(
      /\.env:2:/,
    );
  });
});
