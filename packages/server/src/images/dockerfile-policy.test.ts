// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfiles with literal ${VAR}
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DockerImageBuilder } from '../runtime/docker/docker-image-builder.js';
import { testInstanceName } from '../test-support/global-setup.js';
import {
  assertDockerfileAllowed,
  checkDockerfile,
  checkOnBuildTriggers,
  DockerfilePolicyError,
  MAX_DOCKERFILE_BYTES,
} from './dockerfile-policy.js';

const URL_REFUSED = /^ADD of a URL \(.*\) is refused: the Docker daemon would fetch it itself/;
const GIT_REFUSED = /^ADD of a git repository \(.*\) is refused/;
const VARIABLE_REFUSED = /^ADD source .* uses a variable.*, which is refused: .*Use COPY .*RUN step/;

/** The line of the refusal, or 'ok'. */
function verdict(text: string | Uint8Array, args: Record<string, string> = {}): number | 'ok' {
  const result = checkDockerfile(text, args);
  return result.ok ? 'ok' : result.line;
}

function refusal(
  text: string | Uint8Array,
  args: Record<string, string> = {},
): { line: number; message: string } {
  const result = checkDockerfile(text, args);
  if (result.ok) throw new Error(`accepted: ${JSON.stringify(text)}`);
  return { line: result.line, message: result.message };
}

describe('ADD from the network is refused', () => {
  test.each([
    ['http', 'FROM alpine\nADD http://127.0.0.1:9999/secret /secret\n', 2],
    ['https', 'FROM alpine\nRUN true\nADD https://example.com/a.tgz /a\n', 3],
    ['ftp', 'FROM alpine\nADD ftp://10.213.0.5/x /x\n', 2],
    ['any scheme', 'FROM alpine\nADD s3://bucket/key /x\n', 2],
    ['upper-case scheme', 'FROM alpine\nADD HTTP://127.0.0.1/x /x\n', 2],
    ['several sources', 'FROM alpine\nADD a.txt http://127.0.0.1/x /dir/\n', 2],
    ['lowercase instruction', 'from alpine\nadd http://127.0.0.1/x /x\n', 2],
    ['mixed case', 'FROM alpine\nAdD http://127.0.0.1/x /x\n', 2],
    ['tabs', 'FROM alpine\n\tADD\thttp://127.0.0.1/x\t/x\n', 2],
    ['leading NBSP (Go trims it)', 'FROM alpine\n\u00a0ADD http://127.0.0.1/x /x\n', 2],
    ['flags', 'FROM alpine\nADD --chown=1:1 --chmod=644 http://127.0.0.1/x /x\n', 2],
    ['--checksum', 'FROM alpine\nADD --checksum=sha256:abc https://127.0.0.1/x /x\n', 2],
    ['--link', 'FROM alpine\nADD --link http://127.0.0.1/x /x\n', 2],
    ['quoted flag value', 'FROM alpine\nADD --chown="a b" http://127.0.0.1/x /x\n', 2],
    ['JSON form', 'FROM alpine\nADD ["http://127.0.0.1/x", "/x"]\n', 2],
    ['JSON form with spaces', 'FROM alpine\nADD   [ "http://127.0.0.1/x" ,   "/x" ]  \n', 2],
    ['JSON form with flags', 'FROM alpine\nADD --chown=1 ["http://127.0.0.1/x","/x"]\n', 2],
    ['JSON escapes', 'FROM alpine\nADD ["\\u0068ttp\\u003a\\/\\/127.0.0.1/x", "/x"]\n', 2],
    ['JSON with trailing text', 'FROM alpine\nADD ["\\u0068ttp:\\/\\/127.0.0.1/x", "/x"] trailing\n', 2],
    ['double quotes in the word', 'FROM alpine\nADD h"ttp"://127.0.0.1/x /x\n', 2],
    ['single quotes', "FROM alpine\nADD 'http://127.0.0.1/x' /x\n", 2],
    ['an escape in the word', 'FROM alpine\nADD h\\ttp:/\\/127.0.0.1/x /x\n', 2],
    ['a URL in a flag', 'FROM alpine\nADD --chown=http://127.0.0.1/x /x /y\n', 2],
  ])('%s', (_, dockerfile, line) => {
    const result = refusal(dockerfile);
    expect(result.line).toBe(line);
    expect(result.message).toMatch(URL_REFUSED);
  });

  test.each([
    ['git@', 'FROM alpine\nADD git@github.com:moby/buildkit.git /src\n'],
    ['scp-like', 'FROM alpine\nADD deploy@10.213.0.5:repo /src\n'],
    ['*.git', 'FROM alpine\nADD vendor/lib.git /src\n'],
    ['*.git#ref', 'FROM alpine\nADD lib.git#main:sub /src\n'],
    ['--keep-git-dir', 'FROM alpine\nADD --keep-git-dir=true git@host:repo /src\n'],
  ])('git: %s', (_, dockerfile) => {
    const result = refusal(dockerfile);
    expect(result.line).toBe(2);
    expect(result.message).toMatch(GIT_REFUSED);
  });

  test.each([
    ['https .git', 'FROM alpine\nADD https://github.com/moby/buildkit.git#v0.10 /src\n'],
    ['git://', 'FROM alpine\nADD git://10.213.0.5/repo /src\n'],
  ])('git URL: %s', (_, dockerfile) => {
    expect(refusal(dockerfile).message).toMatch(URL_REFUSED);
  });

  test.each([
    ['$X', 'FROM alpine\nARG U\nADD $U /x\n'],
    ['${X}', 'FROM alpine\nARG U\nADD ${U} /x\n'],
    ['in the middle', 'FROM alpine\nARG H\nADD http$H/x /x\n'],
    ['${X:-default}', 'FROM alpine\nADD ${U:-a.txt} /x\n'],
    ['JSON form', 'FROM alpine\nADD ["$U", "/x"]\n'],
    ['JSON-escaped dollar', 'FROM alpine\nADD ["\\u0024U", "/x"]\n'],
    ['escaped dollar (refused too)', 'FROM alpine\nADD \\$U /x\n'],
    ['after flags with variables', 'FROM alpine\nADD --chown=$UID:$GID $SRC /x\n'],
    ['one of several', 'FROM alpine\nADD a.txt $SRC /dir/\n'],
  ])('a variable in a source: %s', (_, dockerfile) => {
    const result = refusal(dockerfile);
    expect(result.message).toMatch(VARIABLE_REFUSED);
  });

  test('a refused variable that is a build arg is shown with its value', () => {
    const result = refusal('FROM alpine\nARG U\nADD $U /x\n', { U: 'http://127.0.0.1:9999/secret' });
    expect(result).toEqual({ line: 3, message: expect.stringMatching(VARIABLE_REFUSED) });
    expect(result.message).toContain('(build arg U is "http://127.0.0.1:9999/secret")');
  });

  test.each([
    ['ONBUILD ADD', 'FROM alpine\nONBUILD ADD http://127.0.0.1/x /x\n'],
    ['lowercase', 'FROM alpine\nonbuild add http://127.0.0.1/x /x\n'],
    ['with flags', 'FROM alpine\nONBUILD ADD --chown=1 ["http://127.0.0.1/x", "/x"]\n'],
    ['a variable', 'FROM alpine\nONBUILD ADD $U /x\n'],
    ['Go lowercases İ to i', 'FROM alpine\nONBU\u0130LD ADD http://127.0.0.1/x /x\n'],
    ['split by a continuation', 'FROM alpine\nONBUILD \\\n  ADD \\\n  http://127.0.0.1/x /x\n'],
  ])('%s', (_, dockerfile) => {
    const result = refusal(dockerfile);
    expect(result.line).toBe(2);
    expect(result.message).toMatch(/^ONBUILD ADD /);
  });
});

describe('formatting does not dodge the check', () => {
  test('a continuation in the middle of the URL', () => {
    expect(verdict('FROM alpine\nADD http://127.0.0.1:99\\\n99/secret /secret\n')).toBe(2);
  });

  test('a continuation inside the keyword', () => {
    expect(verdict('FROM alpine\nA\\\nDD http://127.0.0.1/x /x\n')).toBe(2);
    expect(verdict('FROM alpine\nAD\\\n\n# note\nD \\\n http://127.0.0.1/x /x\n')).toBe(2);
  });

  test('comments and blank lines inside a continuation', () => {
    const dockerfile = 'FROM alpine\nADD \\\n# a comment\n\n    # another\n  http://127.0.0.1/x \\\n\n  /x\n';
    expect(verdict(dockerfile)).toBe(2);
  });

  test('spaces and tabs after the continuation character', () => {
    expect(verdict('FROM alpine\nADD \\ \t\nhttp://127.0.0.1/x /x\n')).toBe(2);
  });

  test('CRLF line endings', () => {
    expect(verdict('FROM alpine\r\nADD http://127.0.0.1/x /x\r\n')).toBe(2);
    expect(verdict('FROM alpine\r\nADD http://127.0.0.1:99\\\r\n99/x \\\r\n /x\r\n')).toBe(2);
  });

  test('the escape directive', () => {
    const backtick = '# escape=`\nFROM alpine\nADD http://127.0.0.1:99`\n99/x `\n  /x\n';
    expect(verdict(backtick)).toBe(3);
    // With ` as the escape character, a line ending in \ does not continue: the ADD is its own.
    expect(verdict('# escape=`\nFROM alpine\nRUN echo \\\nADD http://127.0.0.1/x /x\n')).toBe(4);
    expect(verdict('#  ESCAPE = `\nFROM alpine\nADD `\n  $U /x\n')).toBe(3);
  });

  test('readings the builders disagree on: an escaped escape, and CR CR LF', () => {
    // Newer parsers do not take `\\` at the end for a continuation, older ones do.
    expect(verdict('FROM alpine\nLABEL a=b\\\\\nADD http://127.0.0.1/x /x\n')).toBe(3);
    // The legacy builder drops one CR only: the line ends in `\ CR`, which does not continue it.
    expect(verdict('FROM alpine\nLABEL a=b \\\r\r\nADD http://127.0.0.1/x /x\n')).toBe(3);
    // Both readings, the other way round: joined in one reading, an ADD in the other.
    expect(verdict('FROM alpine\nADD \\\\\nhttp://127.0.0.1/x /x\n')).toBe(2);
  });

  test('a byte order mark', () => {
    expect(verdict('\ufeffADD http://127.0.0.1/x /x\n')).toBe(1);
  });

  test('flags split where the daemon splits them: bytes 0x85 and 0xA0 of a UTF-8 character are spaces', () => {
    // `à` is C3 A0: the daemon ends the flag there, and `$U` becomes a source.
    expect(verdict('FROM alpine\nADD --chown=0\u00e0$U /x\n')).toBe(2);
    expect(verdict(Buffer.from('FROM alpine\nADD --chown=0\xa0$U /x\n', 'latin1'))).toBe(2);
  });

  test('a heredoc that ends a continuation early (BuildKit)', () => {
    // The terminator `EOF\` ends in a backslash: read without heredocs it joins the next line,
    // and hides the ADD; BuildKit ends the heredoc there, and the ADD is an instruction.
    const dockerfile = "FROM alpine\nRUN <<'EOF\\'\necho hi\nEOF\\\nADD http://127.0.0.1/x /x\n";
    expect(verdict(dockerfile)).toBe(5);
    expect(verdict("FROM alpine\nRUN <<'EOF\\'\necho hi\nEOF\\\nA\\\nDD $U /x\n")).toBe(5);
  });

  test('a Dockerfile larger than the limit is refused', () => {
    const result = refusal(`FROM alpine\n${'#'.repeat(MAX_DOCKERFILE_BYTES)}\n`);
    expect(result).toEqual({ line: 1, message: expect.stringMatching(/larger than 1048576 bytes/) });
  });

  test('hostile files are checked in linear time', () => {
    const cases = [
      // A megabyte of continuations with heredoc markers: every line is a possible start.
      `FROM alpine\nRUN <<EOF\n${' \\\n'.repeat(300_000)}`,
      `FROM alpine\n${'ADD \\\n'.repeat(150_000)}`,
      `FROM alpine\nRUN x<y\n${'add \\\n'.repeat(150_000)}`,
      `FROM alpine\n${'ADD ["'.repeat(150_000)}`,
      `FROM alpine\nADD ${'--a '.repeat(200_000)}a /b\n`,
    ];
    for (const dockerfile of cases) {
      const start = performance.now();
      checkDockerfile(dockerfile.slice(0, MAX_DOCKERFILE_BYTES));
      expect(performance.now() - start).toBeLessThan(2_000);
    }
  });
});

describe('what is allowed', () => {
  test.each([
    ['COPY', 'FROM alpine\nCOPY . /app\n'],
    [
      'COPY --from a stage and an image',
      'FROM golang AS build\nRUN go build\nFROM alpine\nCOPY --from=build /out /app\nCOPY --from=nginx:1 /etc/nginx /etc/nginx\n',
    ],
    ['COPY with a URL (the daemon refuses it, never fetches)', 'FROM alpine\nCOPY http://127.0.0.1/x /x\n'],
    ['ADD of local files', 'FROM alpine\nADD app.tar.gz /opt/\nADD --chown=1:1 ["a b.txt", "/x/"]\n'],
    [
      'ADD with variables in flags and destination',
      'FROM alpine\nARG UID\nADD --chown=$UID:${GID} conf/ $HOME/conf/\n',
    ],
    ['ADD of a heredoc', 'FROM alpine\nADD <<EOF /etc/motd\nhello from http://example.com\nEOF\n'],
    [
      'RUN downloads',
      'FROM alpine\nARG URL=https://example.com/x\nRUN curl -fsSLo /x "$URL" && \\\n  wget http://127.0.0.1/y\n',
    ],
    [
      'URLs elsewhere',
      'FROM alpine\nLABEL org.opencontainers.image.source=https://github.com/x/y.git\nENV URL=http://x\n# ADD http://example.com/x /x\n',
    ],
    [
      'a RUN continuation line that starts with "add"',
      'FROM alpine\nRUN git remote \\\n  add origin https://github.com/x/y.git\n',
    ],
    ['a heredoc script', 'FROM alpine\nRUN <<EOF\nset -e\napk add curl\nEOF\n'],
    [
      'ONBUILD of other instructions',
      'FROM alpine\nONBUILD COPY . /app\nONBUILD RUN curl https://example.com\n',
    ],
    ['empty', ''],
    [
      'escape directive with local ADD',
      '# escape=`\nFROM mcr.microsoft.com/windows\nADD `\n  app.zip C:\\app\\\n',
    ],
  ])('%s', (_, dockerfile) => {
    expect(checkDockerfile(dockerfile)).toEqual({ ok: true });
  });

  test('a real multi-stage Dockerfile', () => {
    const dockerfile = [
      '# syntax=docker/dockerfile:1',
      'ARG NODE=20',
      'FROM node:${NODE}-alpine AS deps',
      'WORKDIR /app',
      'COPY package.json package-lock.json ./',
      'RUN --mount=type=cache,target=/root/.npm \\',
      '    npm ci --omit=dev',
      '',
      'FROM node:${NODE}-alpine',
      'ENV NODE_ENV=production PORT=3000',
      'WORKDIR /app',
      'COPY --from=deps /app/node_modules ./node_modules',
      'COPY . .',
      'ADD --chown=node:node static.tar.gz /app/public/',
      'HEALTHCHECK CMD wget -qO- http://localhost:3000/health || exit 1',
      'USER node',
      'CMD ["node", "server.js"]',
      '',
    ].join('\n');
    expect(checkDockerfile(dockerfile, { NODE: '20' })).toEqual({ ok: true });
  });
});

describe('the API', () => {
  test('assertDockerfileAllowed throws a typed error naming the file and the line', () => {
    const run = () =>
      assertDockerfileAllowed('FROM alpine\n\nADD http://127.0.0.1/x /x\n', {}, 'api/Dockerfile');
    expect(run).toThrow(DockerfilePolicyError);
    try {
      run();
    } catch (error) {
      const e = error as DockerfilePolicyError;
      expect(e.line).toBe(3);
      expect(e.reason).toMatch(URL_REFUSED);
      expect(e.message).toBe(`api/Dockerfile line 3: ${e.reason}`);
    }
    expect(() => assertDockerfileAllowed('FROM alpine\nCOPY . /\n')).not.toThrow();
  });

  test('checkOnBuildTriggers checks the triggers of a base image', () => {
    expect(checkOnBuildTriggers(['COPY . /app', 'RUN make'])).toEqual({ ok: true });
    expect(checkOnBuildTriggers(['COPY . /app', 'ADD http://127.0.0.1/x /x'])).toEqual({
      ok: false,
      line: 2,
      message: expect.stringMatching(/^ONBUILD trigger: ADD of a URL/),
    });
  });
});

/**
 * The refused Dockerfiles above are real attacks, not only shapes: the legacy builder of the
 * engine the product uses fetches each of them from a server on the host's loopback.
 */
describe('against the Docker daemon', () => {
  const builder = new DockerImageBuilder({ instance: `${testInstanceName()}-dockerfile-policy` });
  const fetched: string[] = [];
  const server = http.createServer((req, res) => {
    fetched.push(req.url ?? '');
    res.end('secret\n');
  });
  let origin = '';

  beforeAll(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    for (const image of await builder.listBuilt()) await builder.remove(image.ref);
    await new Promise((resolve) => server.close(resolve));
  });

  /** Builds `dockerfile` (latin1 bytes); true when the daemon fetched `/<name>` meanwhile. */
  async function daemonFetches(name: string, dockerfile: string, args: Record<string, string> = {}) {
    const pack = tar.pack();
    pack.entry({ name: 'Dockerfile' }, Buffer.from(dockerfile, 'latin1'));
    pack.finalize();
    const before = fetched.filter((url) => url === `/${name}`).length;
    await builder
      .build(
        `mayfly-test/dockerfile-policy:${name}`,
        { context: '.', dockerfile: 'Dockerfile', args },
        { context: pack as unknown as NodeJS.ReadableStream },
      )
      .catch(() => {}); // some fail after the fetch (a bad --chown): the fetch is what counts
    return fetched.filter((url) => url === `/${name}`).length > before;
  }

  test('each dodge is fetched by the daemon, and refused by the check', async () => {
    const cases: [string, (origin: string) => string, Record<string, string>?][] = [
      ['plain', (o) => `FROM scratch\nADD http://${o}/plain /s\n`],
      ['lower', (o) => `from scratch\nadd http://${o}/lower /s\n`],
      ['quotes', (o) => `FROM scratch\nADD h"ttp"://${o}/quotes /s\n`],
      ['split', (o) => `FROM scratch\nADD http://${o.slice(0, 5)}\\\n  # c\n\n${o.slice(5)}/split /s\n`],
      ['crlf', (o) => `FROM scratch\r\nADD http://${o}/cr\\\r\nlf /s\r\n`],
      ['json', (o) => `FROM scratch\nADD [ "\\u0068ttp://${o}/json" , "/s" ] trailing\n`],
      ['backtick', (o) => `# escape=\`\nFROM scratch\nADD http://${o}/backtick \`\n /s\n`],
      ['escaped-escape', (o) => `FROM scratch\nLABEL a=b\\\\\nADD http://${o}/escaped-escape /s\n`],
      ['cr-cr', (o) => `FROM scratch\nLABEL a=b \\\r\r\nADD http://${o}/cr-cr /s\n`],
      [
        'flag-byte',
        () => `FROM scratch\nARG U\nADD --chown=0\xc3\xa0$U /s\n`,
        { U: `http://${origin}/flag-byte` },
      ],
      ['arg', () => 'FROM scratch\nARG U\nADD ${U} /s\n', { U: `http://${origin}/arg` }],
    ];
    for (const [name, make, args] of cases) {
      const dockerfile = make(origin);
      const bytes = Buffer.from(dockerfile, 'latin1');
      expect(checkDockerfile(bytes, args).ok, `${name} is refused`).toBe(false);
      expect(await daemonFetches(name, dockerfile, args), `${name} is fetched by the daemon`).toBe(true);
    }
  });

  test('an ONBUILD trigger of a base image is fetched in the build that uses it', async () => {
    // The static check of the Dockerfile cannot see it: see checkOnBuildTriggers.
    const parent = `FROM scratch\nONBUILD ADD http://${origin}/onbuild /s\n`;
    expect(checkDockerfile(parent).ok).toBe(false);
    expect(await daemonFetches('onbuild-parent', parent)).toBe(false);
    const child = 'FROM mayfly-test/dockerfile-policy:onbuild-parent\nLABEL x=y\n';
    expect(checkDockerfile(child)).toEqual({ ok: true });
    expect(await daemonFetches('onbuild', child)).toBe(true);
  });

  test('what is allowed does not make the daemon fetch', async () => {
    const dockerfile = `FROM scratch\nCOPY Dockerfile /d\nLABEL url=http://${origin}/allowed\n`;
    expect(checkDockerfile(dockerfile)).toEqual({ ok: true });
    expect(await daemonFetches('allowed', dockerfile)).toBe(false);
  });
});
