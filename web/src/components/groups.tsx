// An app's environment variable groups on its page: names and keys only;
// values are write-only (set or replaced here, never shown again).

import { useEffect, useState } from 'preact/hooks';
import { ApiError, getJSON, send } from '../api';
import { Alert, Empty, Spinner } from './ui';

/** A group as the API shows it: never its values. */
export interface Group {
  name: string;
  global: boolean;
  keys: string[];
  updated_at: string;
}

/** A keystore as the API shows it: without the file or passwords. */
export interface Keystore {
  reference: string;
  key_alias: string;
  created_at: string;
}

const enc = encodeURIComponent;
const groupsPath = (app: string) => `/api/v1/apps/${enc(app)}/groups`;

const message = (e: unknown) => (e instanceof ApiError ? e.message : String(e));

export function GroupsSection({ app }: { app: string }) {
  const [groups, setGroups] = useState<Group[] | null>(null);
  const [keystores, setKeystores] = useState<Keystore[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [version, setVersion] = useState(0);
  const reload = () => setVersion((v) => v + 1);

  useEffect(() => {
    const ctl = new AbortController();
    Promise.all([
      getJSON<Group[]>(groupsPath(app), ctl.signal),
      getJSON<Group[]>('/api/v1/groups', ctl.signal),
      getJSON<Keystore[]>(`/api/v1/apps/${enc(app)}/keystores`, ctl.signal),
    ]).then(
      ([own, global, ks]) => {
        setGroups([...own, ...global]);
        setKeystores(ks);
        setError(null);
      },
      (e) => {
        if (e.name !== 'AbortError') setError(message(e));
      },
    );
    return () => ctl.abort();
  }, [app, version]);

  const removeKey = async (g: Group, key: string) => {
    try {
      await send('DELETE', `${groupsPath(app)}/${enc(g.name)}/variables/${enc(key)}`);
      reload();
    } catch (e) {
      setError(message(e));
    }
  };
  const removeGroup = async (g: Group) => {
    try {
      await send('DELETE', `${groupsPath(app)}/${enc(g.name)}`);
      reload();
    } catch (e) {
      setError(message(e));
    }
  };

  return (
    <section aria-labelledby="groups-h" class="groups">
      <h2 id="groups-h">Environment variable groups</h2>
      <p class="muted small">
        Workflows import groups with <span class="mono">environment.groups</span>. Values are encrypted, never shown again after saving, and appear as{' '}
        <span class="mono">*****</span> in build logs. Global groups (set with <span class="mono">hangar group set --global</span>) serve every app; an app’s
        own group of the same name takes their place.
      </p>
      {error ? <Alert>{error}</Alert> : null}
      {!groups && !error ? <Spinner label="Loading groups…" /> : null}
      {groups && groups.length === 0 ? <Empty>No groups yet.</Empty> : null}
      {groups && groups.length ? (
        <div class="table-wrap">
          <table class="table groups-table">
            <thead>
              <tr>
                <th scope="col">Group</th>
                <th scope="col">Scope</th>
                <th scope="col">Variables</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {groups.map((g) => (
                <tr key={(g.global ? 'global/' : 'app/') + g.name} data-group={g.name}>
                  <td class="mono">{g.name}</td>
                  <td>{g.global ? 'global' : 'this app'}</td>
                  <td class="group-keys">
                    {g.keys.length === 0 ? <span class="muted">empty</span> : null}
                    {g.keys.map((k) => (
                      <span class="key-chip mono" key={k} data-key={k}>
                        {k}
                        {g.global ? null : (
                          <button type="button" class="chip-x" aria-label={`Delete ${k} from ${g.name}`} onClick={() => removeKey(g, k)}>
                            ×
                          </button>
                        )}
                      </span>
                    ))}
                  </td>
                  <td>
                    {g.global ? null : (
                      <button type="button" class="btn btn-small btn-danger-ghost" onClick={() => removeGroup(g)} aria-label={`Delete group ${g.name}`}>
                        Delete
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      <SetVariableForm app={app} groups={(groups ?? []).filter((g) => !g.global).map((g) => g.name)} onSaved={reload} />
      {keystores.length ? (
        <p class="muted small keystores">
          Keystores (<span class="mono">environment.android_signing</span>):{' '}
          {keystores.map((k, i) => (
            <span key={k.reference}>
              {i ? ', ' : ''}
              <span class="mono">{k.reference}</span> (alias {k.key_alias})
            </span>
          ))}
          . Add one with <span class="mono">hangar app keystore add</span>.
        </p>
      ) : null}
    </section>
  );
}

function SetVariableForm({ app, groups, onSaved }: { app: string; groups: string[]; onSaved: () => void }) {
  const [group, setGroup] = useState('');
  const [key, setKey] = useState('');
  const [value, setValue] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setSaved(null);
    try {
      await send('PUT', `${groupsPath(app)}/${enc(group.trim())}`, { variables: [{ name: key.trim(), value }] });
      // Write-only: the value leaves the page once saved.
      setValue('');
      setSaved(`Saved ${key.trim()} in group ${group.trim()}. Its value is not shown again.`);
      setKey('');
      onSaved();
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="form group-form" onSubmit={submit} aria-busy={busy} aria-labelledby="group-form-h">
      <h3 id="group-form-h">Add or replace a variable</h3>
      {error ? <Alert>{error}</Alert> : null}
      {saved ? <Alert kind="ok">{saved}</Alert> : null}
      <div class="group-fields">
        <div class="field">
          <label for="group-name">Group</label>
          <input
            id="group-name"
            name="group"
            list="group-names"
            value={group}
            onInput={(e) => setGroup(e.currentTarget.value)}
            required
            pattern="[A-Za-z0-9_][A-Za-z0-9_.\-]*"
            autocomplete="off"
            spellcheck={false}
          />
          <datalist id="group-names">
            {groups.map((g) => (
              <option key={g} value={g} />
            ))}
          </datalist>
        </div>
        <div class="field">
          <label for="group-key">Name</label>
          <input
            id="group-key"
            name="key"
            value={key}
            onInput={(e) => setKey(e.currentTarget.value)}
            required
            pattern="[A-Za-z_][A-Za-z0-9_]*"
            autocomplete="off"
            spellcheck={false}
          />
        </div>
        <div class="field">
          <label for="group-value">Value</label>
          <input
            id="group-value"
            name="value"
            type="password"
            value={value}
            onInput={(e) => setValue(e.currentTarget.value)}
            autocomplete="new-password"
            spellcheck={false}
            aria-describedby="group-value-hint"
          />
        </div>
      </div>
      <p class="hint" id="group-value-hint">
        Write-only: after saving, the value is encrypted and never shown again. Setting an existing name replaces its value.
      </p>
      <div class="actions">
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Saving…' : 'Save variable'}
        </button>
      </div>
    </form>
  );
}
