// Apps: the list, adding one, and an app's page with its workflows and builds.

import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import type { App, WorkflowCheck, Workflows } from '../api';
import { useBuilds, usePoll, useTitle } from '../data';
import { ago, duration, useNow, when } from '../format';
import { navigate } from '../router';
import { BuildsTable } from './builds';
import { GroupsSection } from './groups';
import { StartBuildDialog } from './startbuild';
import { Alert, Code, Dialog, Empty, Spinner } from './ui';

export function AppsPage() {
  useTitle('Apps');
  const apps = usePoll((s) => api.apps(s), [], () => null);
  const [adding, setAdding] = useState(false);
  const close = useCallback(() => {
    setAdding(false);
    apps.reload();
  }, []);
  const now = useNow(false);
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Apps</h1>
        <button type="button" class="btn btn-primary" onClick={() => setAdding(true)}>
          Add app
        </button>
      </div>
      {apps.error ? <Alert>{apps.error}</Alert> : null}
      {apps.loading && !apps.data ? <Spinner label="Loading apps…" /> : null}
      {apps.data && apps.data.length === 0 ? <Empty>No apps yet. Add one with its git repository to start building.</Empty> : null}
      {apps.data && apps.data.length ? (
        <ul class="cards">
          {apps.data.map((a) => (
            <li class="card app-card" key={a.name}>
              <h2>
                <a href={`/apps/${encodeURIComponent(a.name)}`}>{a.name}</a>
              </h2>
              <p class="mono muted break">{a.repo}</p>
              <p class="muted small">
                Added <time title={when(a.created_at)}>{ago(a.created_at, now)}</time>
              </p>
            </li>
          ))}
        </ul>
      ) : null}
      <AddAppDialog open={adding} onClose={close} />
    </>
  );
}

function AddAppDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  return (
    <Dialog open={open} onClose={onClose} title="Add app">
      <AddAppForm onCancel={onClose} />
    </Dialog>
  );
}

function AddAppForm({ onCancel }: { onCancel: () => void }) {
  const [name, setName] = useState('');
  const [repo, setRepo] = useState('');
  const [secret, setSecret] = useState('');
  const [refuse, setRefuse] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [added, setAdded] = useState<App | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setAdded(await api.addApp({ name: name.trim(), repo: repo.trim(), webhook_secret: secret || undefined, refuse_unsupported: refuse || undefined }));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  if (added) {
    return (
      <div class="form" data-added={added.name}>
        <Alert kind="ok">
          App <strong>{added.name}</strong> was added.
        </Alert>
        <div class="field">
          <span class="label">Webhook URL</span>
          <Code text={added.webhook_url} what="webhook URL" wrap />
        </div>
        {added.webhook_secret ? (
          <div class="field">
            <span class="label">Webhook secret</span>
            <Code text={added.webhook_secret} what="webhook secret" wrap />
            <p class="hint warn-text">Shown only this once: copy it into your Git host’s webhook settings (content type application/json, push events) now.</p>
          </div>
        ) : null}
        <div class="actions">
          <button type="button" class="btn" onClick={onCancel}>
            Done
          </button>
          <button type="button" class="btn btn-primary" autofocus onClick={() => navigate(`/apps/${encodeURIComponent(added.name)}`)}>
            Open {added.name}
          </button>
        </div>
      </div>
    );
  }
  return (
    <form class="form" onSubmit={submit} aria-busy={busy}>
      {error ? <Alert>{error}</Alert> : null}
      <div class="field">
        <label for="app-name">Name</label>
        <input
          id="app-name"
          name="name"
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
          required
          pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,62}"
          autocomplete="off"
          spellcheck={false}
          aria-describedby="app-name-hint"
        />
        <p class="hint" id="app-name-hint">
          Letters, digits, “.”, “_” and “-”, up to 63.
        </p>
      </div>
      <div class="field">
        <label for="app-repo">Repository</label>
        <input
          id="app-repo"
          name="repo"
          value={repo}
          onInput={(e) => setRepo(e.currentTarget.value)}
          required
          autocomplete="off"
          spellcheck={false}
          aria-describedby="app-repo-hint"
          placeholder="https://git.example.com/team/app.git"
        />
        <p class="hint" id="app-repo-hint">
          A git URL (https://, ssh://, git@host:path, file://) or a path on the server. The server clones it now.
        </p>
      </div>
      <div class="field">
        <label for="app-secret">
          Webhook secret <span class="muted">(optional)</span>
        </label>
        <input id="app-secret" name="webhook_secret" value={secret} onInput={(e) => setSecret(e.currentTarget.value)} autocomplete="off" spellcheck={false} aria-describedby="app-secret-hint" />
        <p class="hint" id="app-secret-hint">
          Leave empty and Hangar makes a random one, shown once.
        </p>
      </div>
      <div class="field check">
        <input type="checkbox" id="app-refuse" checked={refuse} onChange={(e) => setRefuse(e.currentTarget.checked)} aria-describedby="app-refuse-hint" />
        <div>
          <label for="app-refuse">Refuse workflows that use unsupported keys</label>
          <p class="hint" id="app-refuse-hint">
            {REFUSE_HINT}
          </p>
        </div>
      </div>
      <div class="actions">
        <button type="button" class="btn" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Cloning…' : 'Add app'}
        </button>
      </div>
    </form>
  );
}

export function AppPage({ name }: { name: string }) {
  useTitle(name);
  const app = usePoll((s) => api.app(name, s), [name], () => null);
  const builds = useBuilds(name);
  const [wfs, setWfs] = useState<Workflows | null>(null);
  const [wfError, setWfError] = useState<string | null>(null);
  const [start, setStart] = useState<{ workflow?: string } | null>(null);
  const [deleting, setDeleting] = useState(false);

  useEffect(() => {
    const ctl = new AbortController();
    setWfs(null);
    setWfError(null);
    api.workflows(name, undefined, ctl.signal).then(setWfs, (e) => {
      if (e.name !== 'AbortError') setWfError(e.message);
    });
    return () => ctl.abort();
  }, [name]);

  const closeStart = useCallback(() => setStart(null), []);
  const closeDelete = useCallback(() => setDeleting(false), []);

  if (app.error && !app.data) {
    return (
      <>
        <h1 tabIndex={-1}>{name}</h1>
        <Alert>{app.error}</Alert>
      </>
    );
  }
  return (
    <>
      <nav class="crumbs" aria-label="Breadcrumb">
        <a href="/apps">Apps</a>
        <span aria-hidden="true"> / </span>
      </nav>
      <div class="page-head">
        <h1 tabIndex={-1}>{name}</h1>
        <div class="head-actions">
          <button type="button" class="btn btn-primary" onClick={() => setStart({})}>
            Start new build
          </button>
          <button type="button" class="btn btn-danger-ghost" onClick={() => setDeleting(true)}>
            Delete app
          </button>
        </div>
      </div>
      {app.data ? (
        <dl class="facts">
          <div>
            <dt>Repository</dt>
            <dd class="mono break">{app.data.repo}</dd>
          </div>
          <div>
            <dt>Webhook URL</dt>
            <dd class="mono break">{app.data.webhook_url}</dd>
          </div>
        </dl>
      ) : null}
      {app.data ? (
        <RefuseUnsupportedSetting app={app.data} onChanged={app.reload} />
      ) : (
        <Spinner label="Loading…" />
      )}

      <section aria-labelledby="wf-h">
        <h2 id="wf-h">Workflows</h2>
        {wfError ? <Alert kind="warn">{wfError}</Alert> : null}
        {!wfs && !wfError ? <Spinner label="Reading the workflow file…" /> : null}
        {wfs ? (
          <>
            <p class="muted small">
              From <span class="mono">{wfs.file}</span> on branch <span class="mono">{wfs.branch}</span> at <span class="mono">{wfs.commit.slice(0, 8)}</span>.
            </p>
            {wfs.workflows.length === 0 ? <Empty>The workflow file has no workflows.</Empty> : null}
            <ul class="cards">
              {wfs.workflows.map((w) => (
                <li class="card wf-card" key={w.id}>
                  <div class="wf-head">
                    <h3>{w.name || w.id}</h3>
                    <button type="button" class="btn btn-small" onClick={() => setStart({ workflow: w.id })} aria-label={`Start a build of ${w.name || w.id}`}>
                      Start build
                    </button>
                  </div>
                  <p class="muted small">
                    <span class="mono">{w.id}</span> · at most {duration(w.max_build_duration_seconds * 1000)}
                  </p>
                  <ol class="wf-steps">
                    {w.scripts.map((s, i) => (
                      <li key={i}>{s}</li>
                    ))}
                  </ol>
                  {w.check ? <WorkflowCheckView check={w.check} /> : null}
                </li>
              ))}
            </ul>
          </>
        ) : null}
      </section>

      <GroupsSection app={name} />

      <section aria-labelledby="builds-h">
        <h2 id="builds-h">Builds</h2>
        {builds.error ? <Alert>{builds.error}</Alert> : null}
        {builds.data ? <BuildsTable builds={builds.data} showApp={false} /> : <Spinner label="Loading builds…" />}
      </section>

      <StartBuildDialog open={start !== null} onClose={closeStart} app={name} workflow={start?.workflow} />
      <DeleteAppDialog open={deleting} onClose={closeDelete} name={name} />
    </>
  );
}

const REFUSE_HINT =
  'A build (by hand, rerun or webhook) of a workflow with keys Hangar does not run is refused, listing them, instead of running without them.';

// The app's refuse_unsupported setting, changed at once when ticked.
function RefuseUnsupportedSetting({ app, onChanged }: { app: App; onChanged: () => void }) {
  // What the box shows: the saved setting, or the one being saved.
  const [on, setOn] = useState(app.refuse_unsupported);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setOn(app.refuse_unsupported), [app.refuse_unsupported]);
  const change = async (refuse: boolean) => {
    setOn(refuse);
    setBusy(true);
    setError(null);
    try {
      setOn((await api.setApp(app.name, { refuse_unsupported: refuse })).refuse_unsupported);
      onChanged();
    } catch (e) {
      setOn(!refuse);
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="field check" data-refuse-unsupported={busy ? 'saving' : String(app.refuse_unsupported)}>
      <input
        type="checkbox"
        id="app-refuse-setting"
        checked={on}
        disabled={busy}
        onChange={(e) => void change(e.currentTarget.checked)}
        aria-describedby="app-refuse-setting-hint"
      />
      <div>
        <label for="app-refuse-setting">Refuse workflows that use unsupported keys</label>
        <p class="hint" id="app-refuse-setting-hint">
          {REFUSE_HINT}
        </p>
        {error ? <Alert>{error}</Alert> : null}
      </div>
    </div>
  );
}

// What Hangar honours and does not run of a workflow, before any build.
function WorkflowCheckView({ check }: { check: WorkflowCheck }) {
  return (
    <details class="wf-check">
      <summary>
        {check.unsupported.length === 0
          ? 'Everything in this workflow is run by Hangar'
          : `${check.unsupported.length} ${check.unsupported.length === 1 ? 'key is' : 'keys are'} not run by Hangar`}
      </summary>
      <h4>Honoured</h4>
      <ul class="wf-honoured">
        {check.honoured.map((h, i) => (
          <li key={i}>{h}</li>
        ))}
      </ul>
      {check.unsupported.length ? (
        <>
          <h4>Not supported</h4>
          <ul class="wf-unsupported">
            {check.unsupported.map((u) => (
              <li key={u.key}>
                <span class="mono">{u.key}</span>: {u.why}
              </li>
            ))}
          </ul>
        </>
      ) : null}
    </details>
  );
}

function DeleteAppDialog({ open, onClose, name }: { open: boolean; onClose: () => void; name: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const del = async () => {
    setBusy(true);
    setError(null);
    try {
      await api.deleteApp(name);
      navigate('/apps');
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
      setBusy(false);
    }
  };
  return (
    <Dialog open={open} onClose={onClose} title={`Delete ${name}?`}>
      <div class="form">
        {error ? <Alert>{error}</Alert> : null}
        <p>The app and all its builds and logs are deleted. This cannot be undone.</p>
        <div class="actions">
          <button type="button" class="btn" autofocus onClick={onClose}>
            Keep it
          </button>
          <button type="button" class="btn btn-danger" onClick={del} disabled={busy}>
            {busy ? 'Deleting…' : 'Delete app'}
          </button>
        </div>
      </div>
    </Dialog>
  );
}
