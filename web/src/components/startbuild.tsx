// The "Start new build" dialog: app, branch (from the repository's
// branches, or typed), workflow, its inputs, and SSH access: always or only
// if a step fails, with breakpoints. What it shows is what it sends.

import { useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import type { App, Branches, InputValue, StartRequest, WorkflowInput, Workflows } from '../api';
import { useInfo } from '../data';
import { duration } from '../format';
import { navigate } from '../router';
import { Alert, Dialog } from './ui';

export function StartBuildDialog({ open, onClose, app, workflow }: { open: boolean; onClose: () => void; app?: string; workflow?: string }) {
  return (
    <Dialog open={open} onClose={onClose} title="Start new build">
      <StartBuildForm app={app} workflow={workflow} onCancel={onClose} />
    </Dialog>
  );
}

type SSHMode = 'always' | 'on-failure';

/** The workflows read for one app and branch ('' for the default branch). */
interface WorkflowsFor {
  key: string;
  wfs: Workflows | null;
  error: string | null;
}

const keyOf = (app: string, branch: string) => `${app}\n${branch.trim()}`;

function StartBuildForm({ app: fixedApp, workflow: wantWorkflow, onCancel }: { app?: string; workflow?: string; onCancel: () => void }) {
  const info = useInfo();
  const [apps, setApps] = useState<App[] | null>(null);
  const [app, setApp] = useState(fixedApp ?? '');
  const [branch, setBranch] = useState('');
  const [branches, setBranches] = useState<Branches | null>(null);
  const [read, setRead] = useState<WorkflowsFor | null>(null);
  // The workflow the user picked (or the caller asked for); what the
  // dialog shows and sends is derived from it and the list (selected).
  const [picked, setPicked] = useState(wantWorkflow ?? '');
  const [sshOn, setSSHOn] = useState(false);
  const [sshMode, setSSHMode] = useState<SSHMode>('always');
  // Breakpoints by workflow id: script numbers, 1 for the first.
  const [breaks, setBreaks] = useState<Record<string, number[]>>({});
  // Input values by workflow id and input id, as the form holds them.
  const [values, setValues] = useState<Record<string, Record<string, InputValue>>>({});
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Problem | null>(null);

  useEffect(() => {
    if (fixedApp) return;
    api.apps().then(
      (a) => {
        setApps(a);
        if (!app && a.length) setApp(a[0].name);
      },
      (e) => setError({ msg: inUIWords(e.message) }),
    );
  }, []);

  // The repository's branches, for the branch field's suggestions.
  useEffect(() => {
    if (!app) return;
    const ctl = new AbortController();
    setBranches(null);
    api.branches(app, ctl.signal).then(setBranches, (e) => {
      if ((e as Error).name !== 'AbortError') setBranches({ default: '', branches: [] });
    });
    return () => ctl.abort();
  }, [app]);

  // The workflows of the branch (the default branch when none is given),
  // read again a moment after the branch is edited.
  useEffect(() => {
    if (!app) return;
    const key = keyOf(app, branch);
    const ctl = new AbortController();
    const t = setTimeout(async () => {
      try {
        const w = await api.workflows(app, branch.trim() || undefined, ctl.signal);
        setRead({ key, wfs: w, error: null });
      } catch (e) {
        if ((e as Error).name === 'AbortError') return;
        setRead({ key, wfs: null, error: e instanceof ApiError ? inUIWords(e.message) : String(e) });
      }
    }, branch ? 400 : 0);
    return () => {
      ctl.abort();
      clearTimeout(t);
    };
  }, [app, branch]);

  // One state: what the fields show is what submit sends.
  const fresh = read != null && read.key === keyOf(app, branch);
  // The list of another app is not shown while this one's is read.
  const wfs = read && read.key.startsWith(app + '\n') ? read.wfs : null;
  const wfError = read && read.key.startsWith(app + '\n') ? read.error : null;
  const list = wfs?.workflows ?? [];
  const selected = list.some((w) => w.id === picked) ? picked : (list[0]?.id ?? picked);
  const chosen = list.find((w) => w.id === selected);
  const sshOff = info != null && !info.ssh.enabled;
  const ssh = sshOn && !sshOff;
  const stepNames = chosen?.scripts ?? [];
  const breakpoints = ssh && sshMode === 'always' && chosen ? (breaks[chosen.id] ?? []).filter((n) => n <= stepNames.length).sort((a, b) => a - b) : [];
  const loading = !!app && !fresh;

  const request = (): StartRequest => ({
    app,
    workflow: selected || undefined,
    branch: branch.trim() || undefined,
    ssh: ssh && sshMode === 'always',
    ssh_on_failure: ssh && sshMode === 'on-failure' ? true : undefined,
    ssh_break_before: breakpoints.length ? breakpoints.map(String) : undefined,
    inputs: chosen?.inputs?.length ? inputValues(chosen.inputs, values[chosen.id] ?? {}) : undefined,
  });

  const submit = async (e: Event) => {
    e.preventDefault();
    if (loading) return;
    setBusy(true);
    setError(null);
    const req = request();
    try {
      const b = await api.startBuild(req);
      navigate(`/builds/${b.id}`);
    } catch (err) {
      const p = err instanceof ApiError ? problem(err, req, { file: wfs?.file, defaultBranch: branches?.default || wfs?.branch }) : { msg: String(err) };
      setError(p);
      setBusy(false);
      if (p.field) document.getElementById(fieldIDs[p.field] ?? '')?.focus();
    }
  };

  const invalid = (f: string) => (error?.field === f ? true : undefined);
  const suggestions = branches?.branches ?? [];
  const unknownBranch = branch.trim() !== '' && branches != null && !branches.truncated && suggestions.length > 0 && !suggestions.includes(branch.trim());

  return (
    <form onSubmit={submit} class="form" aria-busy={busy}>
      {error ? <Alert>{error.msg}</Alert> : null}
      {fixedApp ? null : (
        <div class="field">
          <label for="sb-app">App</label>
          <select id="sb-app" value={app} onChange={(e) => setApp(e.currentTarget.value)} required disabled={!apps}>
            {!apps ? <option value="">Loading…</option> : null}
            {apps?.map((a) => (
              <option value={a.name} key={a.name}>
                {a.name}
              </option>
            ))}
          </select>
          {apps && apps.length === 0 ? (
            <p class="hint">
              No apps yet: <a href="/apps">add one</a> first.
            </p>
          ) : null}
        </div>
      )}
      <div class="field">
        <label for="sb-branch">Branch</label>
        <input
          id="sb-branch"
          list="sb-branches"
          value={branch}
          onInput={(e) => setBranch(e.currentTarget.value)}
          placeholder={branches?.default || (wfs && !branch ? wfs.branch : 'the default branch')}
          autocomplete="off"
          spellcheck={false}
          aria-describedby="sb-branch-hint"
          aria-invalid={invalid('branch')}
        />
        <datalist id="sb-branches" data-testid="branch-list">
          {suggestions.map((b, i) => (
            <option value={b} key={b}>
              {i === 0 && b === branches?.default ? 'default branch' : ''}
            </option>
          ))}
        </datalist>
        <p class="hint" id="sb-branch-hint">
          {unknownBranch ? (
            <span class="warn-text">The repository has no branch “{branch.trim()}” (as of its last fetch).</span>
          ) : wfs && fresh ? (
            <>
              Workflows from <span class="mono">{wfs.file}</span> at <span class="mono">{wfs.commit.slice(0, 8)}</span> on {wfs.branch}.
            </>
          ) : (
            `Pick one of the repository’s ${suggestions.length > 1 ? `${suggestions.length} branches` : 'branches'} or type a name; leave it empty for the default branch.`
          )}
        </p>
      </div>
      <div class="field">
        <label for="sb-workflow">Workflow</label>
        {!wfs && !wfError ? (
          <select id="sb-workflow" disabled aria-describedby="sb-wf-hint">
            <option>Reading the workflow file…</option>
          </select>
        ) : list.length ? (
          <select
            id="sb-workflow"
            value={selected}
            onChange={(e) => setPicked(e.currentTarget.value)}
            required
            aria-describedby="sb-wf-hint"
            aria-invalid={invalid('workflow')}
          >
            {list.map((w) => (
              <option value={w.id} key={w.id}>
                {w.name && w.name !== w.id ? `${w.name} (${w.id})` : w.id}
              </option>
            ))}
          </select>
        ) : (
          <input
            id="sb-workflow"
            value={picked}
            onInput={(e) => setPicked(e.currentTarget.value)}
            placeholder="workflow id"
            autocomplete="off"
            spellcheck={false}
            aria-describedby="sb-wf-hint"
            aria-invalid={invalid('workflow')}
          />
        )}
        <p class="hint" id="sb-wf-hint" aria-live="polite">
          {loading ? (
            'Reading the workflow file…'
          ) : wfError ? (
            <span class="error-text">{wfError}</span>
          ) : chosen ? (
            `${chosen.scripts.length} ${chosen.scripts.length === 1 ? 'step' : 'steps'}, at most ${duration(chosen.max_build_duration_seconds * 1000)}.`
          ) : (
            ''
          )}
        </p>
      </div>
      {chosen?.inputs?.length ? (
        <fieldset class="inputs" id="sb-inputs" tabIndex={-1} aria-invalid={invalid('inputs')}>
          <legend>Inputs</legend>
          {chosen.inputs.map((inp) => (
            <InputField
              key={`${chosen.id}/${inp.id}`}
              input={inp}
              value={values[chosen.id]?.[inp.id]}
              onChange={(v) => setValues((cur) => ({ ...cur, [chosen.id]: { ...(cur[chosen.id] ?? {}), [inp.id]: v } }))}
            />
          ))}
        </fieldset>
      ) : null}
      <div class={`field check${sshOff ? ' disabled' : ''}`}>
        <input type="checkbox" id="sb-ssh" checked={ssh} disabled={sshOff} onChange={(e) => setSSHOn(e.currentTarget.checked)} aria-describedby="sb-ssh-hint" />
        <div>
          <label for="sb-ssh">Enable SSH access</label>
          <p class="hint" id="sb-ssh-hint">
            {sshOff ? (
              <>Not available: {inUIWords(info!.ssh.reason || 'SSH access is turned off on this server.')}</>
            ) : (
              <>
                Open a shell on the build’s machine from your terminal, VS Code or this page. The machine stays a while after the steps; logging out
                finishes the build.
              </>
            )}
          </p>
          {ssh ? (
            <fieldset class="ssh-mode">
              <legend class="sr-only">When SSH access opens</legend>
              <label class="radio">
                <input type="radio" name="sb-ssh-mode" value="always" checked={sshMode === 'always'} onChange={() => setSSHMode('always')} />
                <span>
                  Always <span class="hint">— as soon as the machine is up</span>
                </span>
              </label>
              <label class="radio">
                <input type="radio" name="sb-ssh-mode" value="on-failure" checked={sshMode === 'on-failure'} onChange={() => setSSHMode('on-failure')} />
                <span>
                  Only if a step fails <span class="hint">— a passing build finishes at once, and no key is ever made for it</span>
                </span>
              </label>
            </fieldset>
          ) : null}
        </div>
      </div>
      {ssh && sshMode === 'always' && chosen && stepNames.length ? (
        <fieldset class="inputs breaks" id="sb-breaks" tabIndex={-1} aria-describedby="sb-breaks-hint" aria-invalid={invalid('breaks')}>
          <legend>Pause before (breakpoints)</legend>
          {stepNames.map((name, i) => {
            const n = i + 1;
            const on = breakpoints.includes(n);
            return (
              <label class="radio" key={`${chosen.id}/${n}`}>
                <input
                  type="checkbox"
                  name="sb-break"
                  value={String(n)}
                  checked={on}
                  onChange={(e) => {
                    const want = e.currentTarget.checked;
                    setBreaks((cur) => {
                      const rest = (cur[chosen.id] ?? []).filter((x) => x !== n);
                      return { ...cur, [chosen.id]: want ? [...rest, n] : rest };
                    });
                  }}
                />
                <span>
                  <span class="num muted">{n}.</span> {name}
                </span>
              </label>
            );
          })}
          <p class="hint" id="sb-breaks-hint">
            The build stops before each ticked step with SSH open, until you press Continue on its page or run <code>hangar-steps continue</code> in the
            machine. Paused time counts towards the workflow’s maximum duration.
          </p>
        </fieldset>
      ) : null}
      <div class="actions">
        <button type="button" class="btn" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" class="btn btn-primary" disabled={busy || !app || loading}>
          {busy ? 'Starting…' : 'Start build'}
        </button>
      </div>
    </form>
  );
}

/** Problem is an error as the dialog shows it, and the field it is about. */
interface Problem {
  msg: string;
  field?: 'branch' | 'workflow' | 'inputs' | 'breaks';
}

const fieldIDs: Record<string, string> = { branch: 'sb-branch', workflow: 'sb-workflow', inputs: 'sb-inputs', breaks: 'sb-breaks' };

/**
 * problem words an error of the start request for the dialog: the API
 * names the field an error is about, and the dialog says it with its own
 * labels (the API's messages speak of command-line flags).
 */
function problem(err: ApiError, req: StartRequest, ctx: { file?: string; defaultBranch?: string }): Problem {
  const file = ctx.file ?? 'The workflow file';
  switch (err.field) {
    case 'branch':
      return {
        field: 'branch',
        msg: `The repository has no branch “${req.branch ?? ''}”. Pick one from the list${ctx.defaultBranch ? `, or leave Branch empty for ${ctx.defaultBranch}` : ''}.`,
      };
    case 'workflow':
      return {
        field: 'workflow',
        msg: req.workflow ? `${file} has no workflow “${req.workflow}” on this branch: choose one from the list.` : `Choose a workflow: ${file} defines several.`,
      };
    case 'inputs':
      return { field: 'inputs', msg: inUIWords(err.message) };
    case 'ssh_break_before':
      return { field: 'breaks', msg: 'A breakpoint names a step this workflow does not have: tick the steps to pause before again.' };
  }
  return { msg: inUIWords(err.message) };
}

/**
 * inUIWords takes the command-line advice out of an API message: flags
 * (--workflow), commands (`hangar app list`) and the API's own field names
 * in parentheses.
 */
export function inUIWords(msg: string): string {
  let m = msg
    .replace(/ask an admin for a token with --app (\S+)/, 'ask an admin for a token that covers app $1')
    .replace(/ask an admin for a token without --no-ssh/, 'ask an admin for a token with SSH access')
    .replace(/\s*\([^()]*(?:--|`|API:)[^()]*\)/g, '')
    .replace(/[:;,]?\s*see `[^`]*`/g, '');
  // What is left of a flag or a command ends the message at the clause
  // before it.
  for (let i = m.search(/--[a-z]|`/); i >= 0; i = m.search(/--[a-z]|`/)) {
    const cut = Math.max(m.lastIndexOf(': ', i), m.lastIndexOf('; ', i));
    m = cut > 0 ? m.slice(0, cut) : m.slice(0, i).trimEnd();
  }
  m = m.trim();
  if (!m) return m;
  m = m[0].toUpperCase() + m.slice(1);
  return /[.!?]$/.test(m) ? m : m + '.';
}

// inputValues is what the form sends: the values entered, and the
// defaults of the inputs left alone (the server applies them too).
function inputValues(inputs: WorkflowInput[], entered: Record<string, InputValue>): Record<string, InputValue> {
  const out: Record<string, InputValue> = {};
  for (const inp of inputs) {
    // An empty text input is the empty string, as on Codemagic.
    const v = entered[inp.id] ?? inp.default ?? (inp.type === 'string' ? '' : undefined);
    if (v === undefined) continue;
    out[inp.id] = inp.type === 'number' && typeof v === 'string' && v.trim() !== '' && !isNaN(Number(v)) ? Number(v) : v;
  }
  return out;
}

// One input of the workflow, as its type says: a checkbox, a list of
// options, a number or text. Inputs without a default are required.
function InputField({ input, value, onChange }: { input: WorkflowInput; value?: InputValue; onChange: (v: InputValue) => void }) {
  const id = `sb-in-${input.id}`;
  const v = value ?? input.default;
  const hint = input.description ? (
    <p class="hint" id={`${id}-hint`}>
      {input.description}
    </p>
  ) : null;
  const described = input.description ? `${id}-hint` : undefined;
  if (input.type === 'boolean') {
    return (
      <div class="field check">
        <input type="checkbox" id={id} name={input.id} checked={v === true} onChange={(e) => onChange(e.currentTarget.checked)} aria-describedby={described} />
        <div>
          <label for={id} class="mono">
            {input.id}
          </label>
          {hint}
        </div>
      </div>
    );
  }
  return (
    <div class="field">
      <label for={id} class="mono">
        {input.id}
      </label>
      {input.type === 'choice' ? (
        <select id={id} name={input.id} value={v === undefined ? '' : String(v)} required onChange={(e) => onChange(e.currentTarget.value)} aria-describedby={described}>
          {v === undefined ? <option value="">Choose…</option> : null}
          {(input.options ?? []).map((o) => (
            <option value={o} key={o}>
              {o}
            </option>
          ))}
        </select>
      ) : input.type === 'number' ? (
        <input
          id={id}
          name={input.id}
          type="number"
          step="any"
          value={v === undefined ? '' : String(v)}
          required={input.default === undefined}
          onInput={(e) => onChange(e.currentTarget.value)}
          autocomplete="off"
          aria-describedby={described}
        />
      ) : (
        <input
          id={id}
          name={input.id}
          type="text"
          value={v === undefined ? '' : String(v)}
          onInput={(e) => onChange(e.currentTarget.value)}
          autocomplete="off"
          spellcheck={false}
          aria-describedby={described}
        />
      )}
      {hint}
    </div>
  );
}
