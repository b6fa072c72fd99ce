// A build's page: what it is, its steps with live logs, cancel, and for an
// SSH build the SSH panel.

import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, ApiError, ended, followLogs } from '../api';
import type { Build, Step } from '../api';
import { useTitle } from '../data';
import { ago, buildDuration, duration, shortCommit, stepDuration, useNow, when } from '../format';
import { LogView, StepLog } from '../log';
import { navigate } from '../router';
import { Artifacts } from './artifacts';
import { SSHPanel } from './ssh';
import { Alert, Dialog, Spinner, StatusBadge, StatusIcon, stepStatusText } from './ui';

/** The one-line commands of a build, as last seen. */
interface Commands {
  command?: string;
  powershell?: string;
  command_expires_at?: string;
}

/** keepCommands remembers b's one-line commands if they last longer than those kept. */
function keepCommands(c: Commands, b: Build) {
  const s = b.ssh;
  if (!s?.command) return;
  if (c.command && Date.parse(c.command_expires_at ?? '') > Date.parse(s.command_expires_at ?? '')) return;
  c.command = s.command;
  c.powershell = s.powershell;
  c.command_expires_at = s.command_expires_at;
}

export function BuildPage({ id }: { id: number }) {
  const [build, setBuild] = useState<Build | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [trouble, setTrouble] = useState<string | null>(null);
  const logs = useRef(new Map<number, StepLog>());
  // Bumped when a step gets its first lines, so the step list can tell.
  const [, setStepsWithLines] = useState(0);
  const [canceling, setCanceling] = useState(false);
  const commands = useRef<Commands>({});

  useEffect(() => {
    logs.current = new Map();
    setBuild(null);
    setError(null);
    const ctl = new AbortController();
    // The one-line commands, which the stream's build events may lack:
    // GET /builds/{id} has them while access is open.
    commands.current = {};
    let fetching = false;
    const keep = (b: Build) => keepCommands(commands.current, b);
    const withCommand = (b: Build): Build => {
      const open = b.ssh?.enabled && (b.ssh.state === 'ready' || b.ssh.state === 'connected') && !ended(b.status);
      if (!open || b.ssh.command) {
        keep(b);
        return b;
      }
      const cached = commands.current;
      if (cached.command && Date.parse(cached.command_expires_at ?? '') > Date.now()) return { ...b, ssh: { ...b.ssh, ...cached } };
      if (!fetching) {
        fetching = true;
        api.build(id, ctl.signal).then(
          (full) => {
            fetching = false;
            keep(full);
            const c = commands.current;
            if (c.command) setBuild((cur) => (cur && !cur.ssh.command && !ended(cur.status) && cur.ssh.state !== 'closed' ? { ...cur, ssh: { ...cur.ssh, ...c } } : cur));
          },
          () => {
            fetching = false;
          },
        );
      }
      return b;
    };
    // The build at once; the stream sends it only after the lines so far.
    api.build(id, ctl.signal).then(
      (b) => {
        keep(b);
        setBuild((cur) => cur ?? b);
      },
      (e) => e.name !== 'AbortError' && setError(e.message),
    );
    const stop = followLogs(id, {
      lines(ls) {
        let fresh = false;
        let step = -1;
        let batch: string[] = [];
        const flush = () => {
          if (step < 0 || !batch.length) return;
          let l = logs.current.get(step);
          if (!l) {
            l = new StepLog();
            logs.current.set(step, l);
            fresh = true;
          }
          l.append(batch);
          batch = [];
        };
        for (const line of ls) {
          if (line.step !== step) {
            flush();
            step = line.step;
          }
          batch.push(line.text);
        }
        flush();
        if (fresh) setStepsWithLines((n) => n + 1);
      },
      build: (b) => setBuild(withCommand(b)),
      end: () => setTrouble(null),
      trouble: setTrouble,
    });
    return () => {
      ctl.abort();
      stop();
    };
  }, [id]);

  // A one-line command works for a few minutes after it was shown: renew
  // it a minute before it expires, while access is open.
  const cmdExpiry = build?.ssh.command_expires_at;
  const open = !!build && !ended(build.status) && build.ssh.state !== 'closed';
  useEffect(() => {
    if (!cmdExpiry || !open) return;
    const ctl = new AbortController();
    const timer = window.setTimeout(
      () => {
        api.build(id, ctl.signal).then(
          (full) => {
            keepCommands(commands.current, full);
            const c = commands.current;
            if (c.command) setBuild((cur) => (cur && !ended(cur.status) && cur.ssh.state !== 'closed' ? { ...cur, ssh: { ...cur.ssh, ...c } } : cur));
          },
          () => {},
        );
      },
      Math.max(Date.parse(cmdExpiry) - Date.now() - 60_000, 5_000),
    );
    return () => {
      clearTimeout(timer);
      ctl.abort();
    };
  }, [id, cmdExpiry, open]);

  useTitle(build ? `${build.app} #${build.number}` : `Build ${id}`);
  const closeCancel = useCallback(() => setCanceling(false), []);
  const now = useNow(!!build && !ended(build.status));

  if (!build) {
    return (
      <>
        <h1 tabIndex={-1}>Build {id}</h1>
        {error ? <Alert>{error}</Alert> : <Spinner label="Loading the build…" />}
      </>
    );
  }
  const done = ended(build.status);
  return (
    <>
      <nav class="crumbs" aria-label="Breadcrumb">
        <a href="/">Builds</a>
        <span aria-hidden="true"> / </span>
        <a href={`/apps/${encodeURIComponent(build.app)}`}>{build.app}</a>
        <span aria-hidden="true"> / </span>
      </nav>
      <div class="page-head">
        <h1 tabIndex={-1}>
          {build.app} #{build.number}
          <span class="h-sub">{build.workflow_name || build.workflow}</span>
        </h1>
        <div class="head-actions">
          <StatusBadge status={build.status} />
          {!done ? (
            <button type="button" class="btn btn-danger-ghost" onClick={() => setCanceling(true)}>
              Cancel build
            </button>
          ) : (
            <RerunButtons build={build} />
          )}
        </div>
      </div>
      <dl class="facts">
        <div>
          <dt>Branch</dt>
          <dd class="mono">{build.branch || '—'}</dd>
        </div>
        <div>
          <dt>Commit</dt>
          <dd class="mono" title={build.commit}>
            {shortCommit(build.commit)}
          </dd>
        </div>
        <div>
          <dt>Trigger</dt>
          <dd>
            {build.trigger === 'webhook' ? 'Webhook' : 'Manual'}
            {build.started_by ? `, by ${build.started_by}` : ''}
          </dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>
            <time dateTime={build.created_at} title={when(build.created_at)}>
              {ago(build.created_at, now)}
            </time>
          </dd>
        </div>
        {build.ssh?.mode ? (
          <div>
            <dt>SSH</dt>
            <dd data-testid="ssh-mode">{sshModeText(build)}</dd>
          </div>
        ) : null}
        <div>
          <dt>Duration</dt>
          <dd class="num" data-testid="build-duration">
            {duration(buildDuration(build, now))}
          </dd>
        </div>
      </dl>
      <Reruns build={build} />
      {build.message ? <Alert kind={build.status === 'finished' ? 'info' : build.status === 'canceled' ? 'warn' : 'error'}>{build.message}</Alert> : null}
      {trouble ? <Alert kind="warn">{trouble}</Alert> : null}
      <PausedNotice build={build} />
      {build.ssh?.enabled ? <SSHPanel build={build} now={now} /> : null}
      <Artifacts build={build} />
      <StepsAndLog build={build} logs={logs.current} now={now} />
      <CancelDialog open={canceling} onClose={closeCancel} build={build} />
    </>
  );
}

/** sshModeText says what SSH access the build was started with. */
function sshModeText(b: Build): string {
  if (b.ssh.mode !== 'on-failure') return 'Always';
  if (b.ssh.enabled) return 'A step failed: opened';
  return ended(b.status) ? 'Only if a step fails: not opened, no key was made' : 'Only if a step fails (no key until then)';
}

/** The step the log shows when the user has not picked one. */
function followed(steps: Step[], logs: Map<number, StepLog>): number {
  const running = steps.findIndex((s) => s.status === 'running');
  if (running >= 0) return running;
  const failed = steps.findIndex((s) => s.status === 'failed');
  if (failed >= 0) return failed;
  for (let i = steps.length - 1; i >= 0; i--) if (steps[i].started_at || logs.get(i)?.length) return i;
  return 0;
}

function StepsAndLog({ build, logs, now }: { build: Build; logs: Map<number, StepLog>; now: number }) {
  const [picked, setPicked] = useState<number | null>(null);
  const steps = build.steps ?? [];
  const shown = picked ?? followed(steps, logs);
  const step = steps[shown];
  const box = useRef<HTMLDivElement>(null);
  const view = useMemo(() => new LogView('Log'), []);
  useLayoutEffect(() => {
    box.current!.append(view.el);
    return () => view.destroy();
  }, [view]);
  const log = logs.get(shown) ?? null;
  const name = step?.name ?? `Step ${shown + 1}`;
  const emptyText = !step
    ? ended(build.status)
      ? `This build did not run: ${build.message || build.status}`
      : 'Waiting for the build to start…'
    : step.status === 'pending'
      ? 'This step has not started.'
      : step.status === 'skipped'
        ? step.reason
          ? `This step was skipped: ${step.reason}.`
          : 'This step was skipped.'
        : step.status === 'paused'
          ? 'The build is paused before this step.'
        : step.status === 'running'
          ? 'Waiting for output…'
          : 'This step printed nothing.';
  useEffect(() => {
    view.show(log, `Log of ${name}`, emptyText, !!step && (step.status === 'running' || step.status === 'pending') && !ended(build.status));
  });

  const download = () => {
    const blob = new Blob([log?.text() ?? ''], { type: 'text/plain' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${build.app}-${build.number}-step-${shown + 1}.log`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };

  return (
    <section class="steps-log" aria-labelledby="steps-h">
      <div class="steps">
        <h2 id="steps-h">Steps</h2>
        {steps.length === 0 ? <p class="muted small">The steps appear when the build machine is ready.</p> : null}
        <ol class="step-list">
          {steps.map((s, i) => (
            <li key={i}>
              <button
                type="button"
                title={s.status === 'skipped' && s.reason ? `Skipped: ${s.reason}` : undefined}
                class={`step st-${s.status}${i === shown ? ' current' : ''}`}
                aria-current={i === shown ? 'step' : undefined}
                aria-controls="log-box"
                onClick={() => {
                  setPicked(i === picked ? null : i);
                  // Stacked (narrow screens): bring the log into view.
                  const pane = box.current?.parentElement;
                  if (pane && pane.getBoundingClientRect().top > window.innerHeight - 120) pane.scrollIntoView({ block: 'nearest' });
                }}
                data-step={i}
              >
                <StatusIcon status={s.status} />
                <span class="step-name">
                  {s.kind === 'publishing' ? <span class="step-kind">Publishing · </span> : null}
                  {s.name}
                </span>
                <span class="step-time">
                  <span class="sr-only">{stepStatusText[s.status]}, </span>
                  {s.status === 'pending' || s.status === 'skipped' ? (s.status === 'skipped' ? 'skipped' : '') : duration(stepDuration(s, now))}
                  {s.status === 'failed' && s.exit_code != null ? <span class="exit"> · exit {s.exit_code}</span> : null}
                </span>
              </button>
            </li>
          ))}
        </ol>
      </div>
      <div class="log-pane">
        <div class="log-head">
          <h2 class="log-title">
            <span class="sr-only">Log: </span>
            {name}
          </h2>
          <div class="log-tools">
            {picked !== null && !ended(build.status) ? (
              <button type="button" class="btn btn-small" onClick={() => setPicked(null)}>
                Follow the build
              </button>
            ) : null}
            <button type="button" class="btn btn-small" onClick={download} disabled={!log?.length}>
              Download
            </button>
          </div>
        </div>
        <div id="log-box" ref={box} />
      </div>
    </section>
  );
}

function CancelDialog({ open, onClose, build }: { open: boolean; onClose: () => void; build: Build }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const cancel = async () => {
    setBusy(true);
    setError(null);
    try {
      await api.cancel(build.id);
      onClose();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog open={open} onClose={onClose} title={`Cancel ${build.app} #${build.number}?`}>
      <div class="form">
        {error ? <Alert>{error}</Alert> : null}
        <p>The running step is stopped, the remaining steps are skipped and the build machine is removed{build.ssh?.enabled ? ', closing every SSH session' : ''}.</p>
        <div class="actions">
          <button type="button" class="btn" autofocus onClick={onClose}>
            Keep running
          </button>
          <button type="button" class="btn btn-danger" onClick={cancel} disabled={busy}>
            {busy ? 'Canceling…' : 'Cancel build'}
          </button>
        </div>
      </div>
    </Dialog>
  );
}

// PausedNotice says that the build waits at a breakpoint, and resumes it.
function PausedNotice({ build }: { build: Build }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const i = build.steps.findIndex((s) => s.status === 'paused');
  if (i < 0 || ended(build.status)) return null;
  const resume = async () => {
    setBusy(true);
    setError('');
    try {
      await api.resume(build.id);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="alert alert-info paused" role="status" data-testid="paused">
      <p>
        Paused before <strong>{build.steps[i].name}</strong>, a breakpoint. Connect with SSH to look around; <code>hangar-steps continue</code> in
        the machine or the button resumes the build. The time paused counts towards the build's maximum duration.
      </p>
      <button type="button" class="btn btn-primary" onClick={resume} disabled={busy}>
        {busy ? 'Resuming…' : 'Continue build'}
      </button>
      {error ? <Alert>{error}</Alert> : null}
    </div>
  );
}

// RerunButtons start a new build of this one's commit, workflow and
// inputs, with or without SSH, and open its page.
function RerunButtons({ build }: { build: Build }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const rerun = async (ssh: boolean) => {
    setBusy(true);
    setError('');
    try {
      const nb = await api.rerun(build.id, ssh);
      navigate(`/builds/${nb.id}`);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" class="btn" onClick={() => rerun(false)} disabled={busy}>
        Rerun
      </button>
      <button type="button" class="btn btn-primary" onClick={() => rerun(true)} disabled={busy} title="A new build of the same commit, workflow and inputs, whose machine you can SSH into">
        Rerun with SSH
      </button>
      {error ? <Alert>{error}</Alert> : null}
    </>
  );
}

// Reruns links a build to the one it reruns and to its reruns.
function Reruns({ build }: { build: Build }) {
  if (!build.rerun_of && !build.reruns?.length) return null;
  return (
    <p class="reruns small" data-testid="reruns">
      {build.rerun_of ? (
        <>
          A rerun of <a href={`/builds/${build.rerun_of}`}>build {build.rerun_of}</a>.{' '}
        </>
      ) : null}
      {build.reruns?.length ? (
        <>
          Rerun as{' '}
          {build.reruns.map((id, i) => (
            <span key={id}>
              {i > 0 ? ', ' : ''}
              <a href={`/builds/${id}`}>build {id}</a>
            </span>
          ))}
          .
        </>
      ) : null}
    </p>
  );
}
