// The "Start new build" dialog: app, branch, workflow and "Enable SSH access".

import { useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import type { App, InputValue, WorkflowInput, Workflows } from '../api';
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

function StartBuildForm({ app: fixedApp, workflow: wantWorkflow, onCancel }: { app?: string; workflow?: string; onCancel: () => void }) {
  const info = useInfo();
  const [apps, setApps] = useState<App[] | null>(null);
  const [app, setApp] = useState(fixedApp ?? '');
  const [branch, setBranch] = useState('');
  const [wfs, setWfs] = useState<Workflows | null>(null);
  const [wfError, setWfError] = useState<string | null>(null);
  const [wfLoading, setWfLoading] = useState(false);
  const [workflow, setWorkflow] = useState(wantWorkflow ?? '');
  const [ssh, setSSH] = useState(false);
  // Input values by workflow id and input id, as the form holds them.
  const [values, setValues] = useState<Record<string, Record<string, InputValue>>>({});
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (fixedApp) return;
    api.apps().then(
      (a) => {
        setApps(a);
        if (!app && a.length) setApp(a[0].name);
      },
      (e) => setError(e.message),
    );
  }, []);

  // The workflows of the branch (the default branch when none is given),
  // read again a moment after the branch is edited.
  useEffect(() => {
    if (!app) return;
    const ctl = new AbortController();
    const t = setTimeout(async () => {
      setWfLoading(true);
      try {
        const w = await api.workflows(app, branch.trim() || undefined, ctl.signal);
        setWfs(w);
        setWfError(null);
        setWorkflow((cur) => (w.workflows.some((x) => x.id === cur) ? cur : (w.workflows[0]?.id ?? '')));
      } catch (e) {
        if ((e as Error).name === 'AbortError') return;
        setWfs(null);
        setWfError(e instanceof ApiError ? e.message : String(e));
      } finally {
        if (!ctl.signal.aborted) setWfLoading(false);
      }
    }, branch ? 400 : 0);
    return () => {
      ctl.abort();
      clearTimeout(t);
    };
  }, [app, branch]);

  const sshOff = info != null && !info.ssh.enabled;
  const chosen = wfs?.workflows.find((w) => w.id === workflow);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const inputs = chosen?.inputs?.length ? inputValues(chosen.inputs, values[chosen.id] ?? {}) : undefined;
      const b = await api.startBuild({ app, workflow: workflow || undefined, branch: branch.trim() || undefined, ssh: ssh && !sshOff, inputs });
      navigate(`/builds/${b.id}`);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
      setBusy(false);
    }
  };

  return (
    <form onSubmit={submit} class="form" aria-busy={busy}>
      {error ? <Alert>{error}</Alert> : null}
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
          value={branch}
          onInput={(e) => setBranch(e.currentTarget.value)}
          placeholder={wfs && !branch ? wfs.branch : 'the default branch'}
          autocomplete="off"
          spellcheck={false}
          aria-describedby="sb-branch-hint"
        />
        <p class="hint" id="sb-branch-hint">
          {wfs ? (
            <>
              Workflows from <span class="mono">{wfs.file}</span> at <span class="mono">{wfs.commit.slice(0, 8)}</span> on {wfs.branch}.
            </>
          ) : (
            'Leave empty for the repository’s default branch.'
          )}
        </p>
      </div>
      <div class="field">
        <label for="sb-workflow">Workflow</label>
        {!wfError && (!wfs || wfLoading) && !(wfs && wfs.workflows.length) ? (
          <select id="sb-workflow" disabled aria-describedby="sb-wf-hint">
            <option>Reading the workflow file…</option>
          </select>
        ) : wfs && wfs.workflows.length ? (
          <select id="sb-workflow" value={workflow} onChange={(e) => setWorkflow(e.currentTarget.value)} required aria-describedby="sb-wf-hint">
            {wfs.workflows.map((w) => (
              <option value={w.id} key={w.id}>
                {w.name && w.name !== w.id ? `${w.name} (${w.id})` : w.id}
              </option>
            ))}
          </select>
        ) : (
          <input
            id="sb-workflow"
            value={workflow}
            onInput={(e) => setWorkflow(e.currentTarget.value)}
            placeholder={wfLoading ? 'Reading the workflow file…' : 'workflow id'}
            autocomplete="off"
            spellcheck={false}
            aria-describedby="sb-wf-hint"
          />
        )}
        <p class="hint" id="sb-wf-hint" aria-live="polite">
          {wfError ? (
            <span class="error-text">{wfError}</span>
          ) : chosen ? (
            `${chosen.scripts.length} ${chosen.scripts.length === 1 ? 'step' : 'steps'}, at most ${duration(chosen.max_build_duration_seconds * 1000)}.`
          ) : wfLoading ? (
            'Reading the workflow file…'
          ) : (
            ''
          )}
        </p>
      </div>
      {chosen?.inputs?.length ? (
        <fieldset class="inputs">
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
        <input type="checkbox" id="sb-ssh" checked={ssh && !sshOff} disabled={sshOff} onChange={(e) => setSSH(e.currentTarget.checked)} aria-describedby="sb-ssh-hint" />
        <div>
          <label for="sb-ssh">Enable SSH access</label>
          <p class="hint" id="sb-ssh-hint">
            {sshOff ? (
              <>Not available: {info!.ssh.reason || 'SSH access is turned off on this server.'}</>
            ) : (
              <>
                Open a shell on the build’s machine as soon as it is up, from your terminal, VS Code or this page. The machine stays a while after the
                steps; logging out finishes the build.
              </>
            )}
          </p>
        </div>
      </div>
      <div class="actions">
        <button type="button" class="btn" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" class="btn btn-primary" disabled={busy || !app}>
          {busy ? 'Starting…' : 'Start build'}
        </button>
      </div>
    </form>
  );
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
