// The SSH panel of a build started with "Enable SSH access": how to connect
// (one-liner, full script, PowerShell, VS Code), the time left and what ends
// it, who is connected, and a terminal in the page.

import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, ended } from '../api';
import type { Build, BuildEvent, SSHSession } from '../api';
import { ago, countdown, duration, when } from '../format';
import type { TerminalSession } from '../terminal';
import { Alert, Code, Spinner } from './ui';

/** what ends access, in words */
function because(b: Build): string {
  const why = b.ssh.expires_because ?? '';
  if (why === 'max_build_duration' || why === '') {
    return `the workflow’s max_build_duration (${duration(b.max_build_duration_seconds * 1000)})`;
  }
  // "10m0s after the steps completed" → "10 min after the steps completed"
  return why.replace(/\b(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?(?= )/, (m, h, mi, s) => {
    if (!m) return m;
    const ms = ((Number(h) || 0) * 3600 + (Number(mi) || 0) * 60 + (Number(s) || 0)) * 1000;
    return duration(ms);
  });
}

export function SSHPanel({ build, now }: { build: Build; now: number }) {
  const ssh = build.ssh;
  const state = ssh.state ?? 'pending';
  const open = (state === 'ready' || state === 'connected') && !ended(build.status);
  const [terminal, setTerminal] = useState(false);
  const closeTerminal = useCallback(() => setTerminal(false), []);

  return (
    <section class="card ssh" aria-labelledby="ssh-h" data-ssh-state={state}>
      <div class="ssh-head">
        <h2 id="ssh-h">SSH access</h2>
        <span class={`badge ssh-${open ? state : 'closed'}`}>
          {open ? (state === 'connected' ? `${ssh.connections || ssh.sessions?.length || 1} connected` : 'Ready') : state === 'pending' && !ended(build.status) ? 'Starting' : 'Closed'}
        </span>
      </div>
      {state === 'pending' && !ended(build.status) ? (
        <p>
          <Spinner label="Waiting for the build machine… the instructions appear here as soon as it accepts connections." />
        </p>
      ) : null}
      {!open && (state === 'closed' || ended(build.status)) ? (
        <p class="muted" data-testid="ssh-closed">
          Access has closed{ssh.closed_reason ? `: ${ssh.closed_reason}` : ended(build.status) ? ' with the build.' : '.'}
        </p>
      ) : null}
      {open ? (
        <>
          <Countdown build={build} now={now} />
          <div class="ssh-grid">
            <div class="ssh-connect">
              <h3>Connect from a terminal</h3>
              <p class="small">Linux, macOS, WSL or Git Bash: paste this into a terminal. It needs only OpenSSH’s ssh.</p>
              {ssh.command ? <Code text={ssh.command} what="SSH command" wrap id="ssh-command" /> : <Spinner label="Loading…" />}
              {ssh.powershell ? (
                <>
                  <p class="small">Windows PowerShell (Windows’ own OpenSSH client):</p>
                  <Code text={ssh.powershell} what="PowerShell command" wrap id="ssh-powershell" />
                </>
              ) : null}
              <Script id={build.id} />
              <VSCode build={build} />
            </div>
            <div class="ssh-side">
              <Sessions sessions={ssh.sessions ?? []} connections={ssh.connections} now={now} />
              <div class="terminal-open">
                <h3>Terminal in the browser</h3>
                {terminal ? (
                  <p class="small muted">Open below.</p>
                ) : (
                  <>
                    <p class="small">A shell on the machine in this page, through the same gateway and rules. No key leaves the server.</p>
                    <button type="button" class="btn btn-primary" onClick={() => setTerminal(true)} id="open-terminal">
                      Open terminal
                    </button>
                  </>
                )}
              </div>
            </div>
          </div>
        </>
      ) : null}
      {terminal ? <TerminalBox id={build.id} onClose={closeTerminal} /> : null}
      <Events id={build.id} build={build} />
    </section>
  );
}

function Countdown({ build, now }: { build: Build; now: number }) {
  const ssh = build.ssh;
  const at = ssh.expires_at ? Date.parse(ssh.expires_at) : NaN;
  const stepsDone = build.steps.length > 0 && build.steps.every((s) => s.status !== 'pending' && s.status !== 'running');
  return (
    <div class="ssh-timer">
      <div class="timer">
        <span class="timer-label">Time left</span>
        <strong class="timer-value num" data-testid="ssh-countdown" title={when(ssh.expires_at)}>
          {isNaN(at) ? '—' : countdown(at - now)}
        </strong>
        <MoreTime build={build} />
      </div>
      <div class="timer-text small">
        <p data-testid="ssh-expiry">
          {stepsDone ? 'The steps are done. ' : 'The steps are running. '}
          Access ends {isNaN(at) ? '' : `at ${new Date(at).toLocaleTimeString()}`}
          {stepsDone ? ': ' : ' at the latest: '}
          {because(build)}
          {stepsDone ? '.' : '. When the steps complete, the machine stays for the server’s SSH window, within that limit.'}
        </p>
        <p>
          <strong>Logging out finishes the build</strong>: when the last login shell (yours, or this page’s terminal) exits. A dropped connection or a
          closed tab is no logout: the shell keeps running, and the next connection (this page’s terminal or the script) re-attaches to it. Commands,
          scp, sftp, port forwards and VS Code do not end it.
        </p>
      </div>
    </div>
  );
}

// MoreTime asks for 10 more minutes of SSH access (never past the build's
// max_build_duration: the server caps it and the log says so).
function MoreTime({ build }: { build: Build }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  if (build.ssh.state === 'closed' || ended(build.status)) return null;
  const extend = async () => {
    setBusy(true);
    setError('');
    try {
      await api.extendSSH(build.id, '10m');
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" class="btn btn-small" onClick={extend} disabled={busy} title="Keep the machine 10 minutes longer, within the build's maximum duration">
        {busy ? 'Extending…' : '+10 min'}
      </button>
      {error ? <Alert>{error}</Alert> : null}
    </>
  );
}

function Sessions({ sessions, connections, now }: { sessions: SSHSession[]; connections: number; now: number }) {
  return (
    <div class="sessions">
      <h3>
        Sessions <span class="muted">({sessions.length || connections || 0})</span>
      </h3>
      {sessions.length === 0 ? (
        <p class="muted small">{connections ? `${connections} open connection${connections === 1 ? '' : 's'}.` : 'No one is connected.'}</p>
      ) : (
        <ul class="session-list" aria-live="polite">
          {sessions.map((s, i) => (
            <li key={`${s.remote}-${s.since}-${i}`}>
              <span class="mono">{s.user || 'builder'}</span> from <span class="mono">{s.remote}</span>
              <span class="muted small">
                {' '}
                · {s.client} · since{' '}
                <time dateTime={s.since} title={when(s.since)}>
                  {ago(s.since, now)}
                </time>
              </span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** The full script, fetched when its section is opened. */
function Script({ id }: { id: number }) {
  const [shell, setShell] = useState<'bash' | 'powershell'>('bash');
  const [text, setText] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [opened, setOpened] = useState(false);
  useEffect(() => {
    if (!opened || text[shell]) return;
    setError(null);
    api.sshScript(id, shell).then(
      (t) => setText((x) => ({ ...x, [shell]: t })),
      (e) => setError(e instanceof ApiError ? e.message : String(e)),
    );
  }, [opened, shell]);
  return (
    <details class="more" onToggle={(e) => setOpened((e.currentTarget as HTMLDetailsElement).open)}>
      <summary>Full script</summary>
      <div class="more-body">
        <p class="small">
          The same as the command, as a file: <span class="mono">bash connect.sh</span> opens a shell, <span class="mono">bash connect.sh CMD ARGS…</span> runs one command. It holds the
          build’s private key: keep it to yourself.
        </p>
        <div class="segmented" role="radiogroup" aria-label="Script for">
          {(['bash', 'powershell'] as const).map((s) => (
            <label key={s} class={shell === s ? 'on' : ''}>
              <input type="radio" name={`shell-${id}`} value={s} checked={shell === s} onChange={() => setShell(s)} />
              {s === 'bash' ? 'bash' : 'PowerShell'}
            </label>
          ))}
        </div>
        {error ? <Alert>{error}</Alert> : null}
        {text[shell] ? <Code text={text[shell]} what={`${shell === 'bash' ? 'bash' : 'PowerShell'} script`} block /> : !error && opened ? <Spinner label="Loading the script…" /> : null}
      </div>
    </details>
  );
}

/** The ssh_config for VS Code Remote-SSH, scp, sftp and rsync. */
function VSCode({ build }: { build: Build }) {
  const [config, setConfig] = useState<string | null>(null);
  const [alias, setAlias] = useState(`build-${build.id}`);
  const [error, setError] = useState<string | null>(null);
  const [opened, setOpened] = useState(false);
  const dir = `~/.hangar/build-${build.id}`;
  useEffect(() => {
    if (!opened || config) return;
    api.sshAccess(build.id).then(
      (a) => {
        setConfig(a.config.replaceAll('@DIR@', dir));
        setAlias(a.alias);
      },
      (e) => setError(e instanceof ApiError ? e.message : String(e)),
    );
  }, [opened]);
  const cmd = `hangar build ssh-config ${build.id} --dir ${dir}`;
  return (
    <details class="more" onToggle={(e) => setOpened((e.currentTarget as HTMLDetailsElement).open)}>
      <summary>VS Code Remote-SSH, scp, sftp, rsync</summary>
      <div class="more-body">
        <ol class="small steps-howto">
          <li>
            Write the build’s key, certificate, known_hosts and config into <span class="mono">{dir}</span>:
            <Code text={cmd} what="ssh-config command" wrap />
          </li>
          <li>
            In VS Code set <span class="mono">remote.SSH.configFile</span> to <span class="mono">{dir}/config</span>, or copy these Host blocks into{' '}
            <span class="mono">~/.ssh/config</span>:
            {error ? <Alert>{error}</Alert> : config ? <Code text={config} what="ssh_config Host blocks" block /> : opened ? <Spinner label="Loading…" /> : null}
          </li>
          <li>
            Connect to host <span class="mono">{alias}</span>. Also: <span class="mono">scp -F {dir}/config FILE {alias}:</span>, <span class="mono">sftp -F {dir}/config {alias}</span>.
          </li>
        </ol>
      </div>
    </details>
  );
}

function TerminalBox({ id, onClose }: { id: number; onClose: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const session = useRef<TerminalSession | null>(null);
  const [state, setState] = useState<'connecting' | 'open' | 'closed'>('connecting');
  const [reason, setReason] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let gone = false;
    (async () => {
      try {
        const [{ startTerminal }, t] = await Promise.all([import('../terminal'), api.terminal(id)]);
        if (gone) return;
        session.current = startTerminal(box.current!, t.url, {
          open: () => setState('open'),
          closed: (r) => {
            setState('closed');
            setReason(r);
          },
        });
      } catch (e) {
        if (!gone) {
          setError(e instanceof ApiError ? e.message : String(e));
          setState('closed');
        }
      }
    })();
    return () => {
      gone = true;
      session.current?.close();
      session.current = null;
    };
  }, [id]);
  return (
    <div class="terminal-wrap" data-terminal-state={state}>
      <div class="terminal-bar">
        <h3 id="term-h">
          Terminal{' '}
          <span class="muted small" role="status">
            {state === 'connecting' ? 'connecting…' : state === 'open' ? 'connected' : `closed${reason ? ': ' + reason : ''}`}
          </span>
        </h3>
        <span>
          {state === 'closed' ? null : (
            <button type="button" class="btn btn-small" onClick={onClose} id="detach-terminal" title="Close this terminal; the shell keeps running">
              Detach
            </button>
          )}{' '}
          <button
            type="button"
            class="btn btn-small"
            onClick={() => (state === 'closed' || !session.current ? onClose() : session.current.logout())}
            id="close-terminal"
          >
            {state === 'closed' ? 'Close' : 'Close terminal (log out)'}
          </button>
        </span>
      </div>
      {error ? <Alert>{error}</Alert> : null}
      <div class="term-box" ref={box} role="group" aria-labelledby="term-h" />
      <p class="muted small">
        Keys go to the shell; press Esc then Tab to move focus out of the terminal. Detach (or leaving the page) keeps the shell running: open the terminal
        again, or run the script, to continue in it. Closing it logs you out.
      </p>
    </div>
  );
}

/** The build's SSH activity: script fetches, connections, logins. */
function Events({ id, build }: { id: number; build: Build }) {
  const [opened, setOpened] = useState(false);
  const [events, setEvents] = useState<BuildEvent[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const key = `${build.ssh.state}/${build.ssh.connections}/${build.status}`;
  useEffect(() => {
    if (!opened) return;
    api.events(id).then(setEvents, (e) => setError(e instanceof ApiError ? e.message : String(e)));
  }, [opened, key]);
  return (
    <details class="more" onToggle={(e) => setOpened((e.currentTarget as HTMLDetailsElement).open)}>
      <summary>Activity</summary>
      <div class="more-body">
        {error ? <Alert>{error}</Alert> : null}
        {events && events.length === 0 ? <p class="muted small">Nothing yet.</p> : null}
        {events && events.length ? (
          <ul class="events small">
            {events.map((ev, i) => (
              <li key={i}>
                <time dateTime={ev.time} class="mono muted">
                  {new Date(ev.time).toLocaleTimeString()}
                </time>{' '}
                <strong>{ev.kind.replaceAll('_', ' ')}</strong>{' '}
                <span class="muted">
                  {Object.entries(ev.data ?? {})
                    .map(([k, v]) => `${k}=${v}`)
                    .join(' ')}
                </span>
              </li>
            ))}
          </ul>
        ) : null}
      </div>
    </details>
  );
}
