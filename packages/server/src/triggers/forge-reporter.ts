/**
 * Status back to the forge: one comment per pull request (GitHub) or merge request (GitLab),
 * found by its marker and edited in place, and on GitHub a Deployment per pushed commit with its
 * statuses. The caller retries a failed report later; nothing here blocks an environment.
 */
import type { PreviewState } from '@mayfly/contract';
import type { PreviewRecord, ProjectRecord } from '../store/store.js';
import type { ForgeRetryOptions } from './forge-http.js';
import { type DeploymentState, GitHubApi } from './github/github-api.js';
import { GitLabApi } from './gitlab/gitlab-api.js';

/** What is reported about one preview. */
export interface PreviewReport {
  state: PreviewState;
  detail: string | null;
  envName: string;
  commit: string;
  /** Service → state (`running`, `exited 0`…), and URL where it has one. */
  services: { name: string; state: string; url: string | null }[];
  /** Time from the webhook to ready, when it is ready. */
  readyInMs: number | null;
}

/** Ids of what was made on the forge, kept with the preview so they are edited, not made again. */
export interface ReportIds {
  commentId: string | null;
  deploymentId: string | null;
  deploymentSha: string | null;
}

export interface ForgeReporterOptions {
  retry?: Partial<ForgeRetryOptions>;
  timeoutMs?: number;
}

const DETAIL_MAX = 1_500;

export class ForgeReporter {
  constructor(private readonly options: ForgeReporterOptions = {}) {}

  /** Whether reports can be made for this project (it has a token). */
  canReport(project: ProjectRecord): boolean {
    return project.forgeToken !== null;
  }

  /**
   * Reports `report`; `previous` is what was reported last (null: nothing yet), so a deployment
   * status is posted only when the deployment's state changes, not on every edit of the comment.
   */
  async report(
    project: ProjectRecord,
    preview: PreviewRecord,
    report: PreviewReport,
    previous: PreviewReport | null,
    signal?: AbortSignal,
  ): Promise<ReportIds> {
    const ids: ReportIds = {
      commentId: preview.commentId,
      deploymentId: preview.deploymentId,
      deploymentSha: preview.deploymentSha,
    };
    if (!project.forgeToken) return ids;
    const marker = `<!-- mayfly-preview:${project.name}:${preview.number ?? preview.branch} -->`;
    const body = commentBody(report, marker);
    const common = {
      token: project.forgeToken,
      ...(this.options.retry ? { retry: this.options.retry } : {}),
      ...(this.options.timeoutMs !== undefined ? { timeoutMs: this.options.timeoutMs } : {}),
    };
    if (project.forge === 'gitlab') {
      if (preview.number === null) return ids;
      const api = new GitLabApi({
        ...common,
        ...(project.forgeApiUrl ? { baseUrl: project.forgeApiUrl } : {}),
      });
      const known = ids.commentId === null ? null : Number(ids.commentId);
      ids.commentId = String(
        await api.upsertMergeRequestNote(project.forgeRepo, preview.number, marker, body, known, {
          ...(signal ? { signal } : {}),
        }),
      );
      return ids;
    }
    const api = new GitHubApi({
      ...common,
      ...(project.forgeApiUrl ? { baseUrl: project.forgeApiUrl } : {}),
    });
    const call = signal ? { signal } : {};
    if (preview.number !== null) {
      const known = ids.commentId === null ? null : Number(ids.commentId);
      ids.commentId = String(
        await api.upsertIssueComment(project.forgeRepo, preview.number, marker, body, known, call),
      );
    }
    const environment =
      preview.number !== null ? `preview/pr-${preview.number}` : `preview/${preview.branch}`;
    const active = report.state === 'building' || report.state === 'ready' || report.state === 'failed';
    const newDeployment = active && ids.deploymentSha !== report.commit;
    if (newDeployment) {
      ids.deploymentId = String(
        await api.createDeployment(
          project.forgeRepo,
          {
            ref: report.commit,
            environment,
            description: `Mayfly preview ${report.envName}`,
            transientEnvironment: true,
          },
          call,
        ),
      );
      ids.deploymentSha = report.commit;
    }
    if (ids.deploymentId !== null) {
      const state = deploymentState(report);
      const unchanged =
        !newDeployment &&
        previous !== null &&
        previous.commit === report.commit &&
        deploymentState(previous) === state;
      // The entry point: of the services with a URL, the one that depends on the others (the
      // plan lists services in dependency order), e.g. the front end rather than its API.
      const url = report.services.findLast((s) => s.url)?.url;
      if (state && !unchanged) {
        await api.createDeploymentStatus(
          project.forgeRepo,
          Number(ids.deploymentId),
          {
            state,
            ...(state === 'success' && url ? { environmentUrl: url } : {}),
            description:
              state === 'failure'
                ? `failed: ${report.detail ?? 'see mayfly get'}`
                : state === 'success'
                  ? `ready${report.readyInMs !== null ? ` in ${seconds(report.readyInMs)}` : ''}`
                  : state === 'inactive'
                    ? 'torn down'
                    : 'building',
          },
          call,
        );
      }
    }
    return ids;
  }
}

/** The state of the GitHub Deployment of the reported commit; null: none to post. */
function deploymentState(report: PreviewReport): DeploymentState | null {
  switch (report.state) {
    case 'building':
      return 'in_progress';
    case 'ready':
      return 'success';
    case 'failed':
      return 'failure';
    case 'closed':
    case 'skipped':
      return 'inactive';
    default:
      return null;
  }
}

const STATE_LINE: Record<PreviewState, string> = {
  building: '⏳ building',
  ready: '✅ ready',
  failed: '❌ failed',
  'awaiting-approval': '✋ waiting for approval (a pull request from a fork is built once approved)',
  skipped: '⏭️ skipped',
  closed: '🧹 torn down (the pull request was closed)',
};

/** The comment: state, a table of services with URLs and state, the commit and the time to ready. */
export function commentBody(report: PreviewReport, marker: string): string {
  const lines = [marker, `### Mayfly preview \`${report.envName}\`: ${STATE_LINE[report.state]}`, ''];
  if (report.state !== 'closed' && report.services.length > 0) {
    lines.push('| Service | URL | State |', '|---|---|---|');
    for (const s of report.services) {
      lines.push(`| ${cell(s.name)} | ${s.url ? `[${cell(s.url)}](${s.url})` : '—'} | ${cell(s.state)} |`);
    }
    lines.push('');
  }
  if (report.detail) {
    const detail = report.detail.length > DETAIL_MAX ? `…${report.detail.slice(-DETAIL_MAX)}` : report.detail;
    // Container output can hold anything: fenced so it renders as text, never as Markdown or HTML.
    lines.push('```text', detail.replaceAll('```', "'''"), '```', '');
  }
  const facts = [`commit \`${report.commit.slice(0, 12)}\``];
  if (report.state === 'ready' && report.readyInMs !== null)
    facts.push(`ready ${seconds(report.readyInMs)} after the webhook`);
  lines.push(facts.join(' · '));
  return lines.join('\n');
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Text in a Markdown table cell: no pipes, no line breaks, no HTML. */
const cell = (text: string) => text.replace(/[|\r\n<>]/g, ' ').slice(0, 300);
