// A build's artifacts: the files its artifacts patterns collected, with
// their sizes and a download button each (the browser downloads through a
// single-use link, so the API token stays out of URLs).

import { useEffect, useState } from 'preact/hooks';
import { api, ended } from '../api';
import type { Artifact, Build } from '../api';
import { when } from '../format';
import { Alert } from './ui';

/** bytes formats a size as "812 B", "3.4 KiB", "12.1 MiB". */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

export function Artifacts({ build }: { build: Build }) {
  const [list, setList] = useState<Artifact[] | null>(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState('');
  const hasStep = build.steps.some((s) => s.kind === 'artifacts');
  const uploaded = build.steps.find((s) => s.kind === 'artifacts')?.status;
  // Load when the artifacts step has ended (and at once for an ended build).
  const ready = hasStep && (ended(build.status) || uploaded === 'success' || uploaded === 'failed');
  useEffect(() => {
    if (!ready) return;
    const ctl = new AbortController();
    api.artifacts(build.id, ctl.signal).then(setList, (e) => e.name !== 'AbortError' && setError(e.message));
    return () => ctl.abort();
  }, [build.id, ready]);
  if (!ready) return null;

  const download = async (a: Artifact) => {
    setBusy(a.name);
    setError('');
    try {
      const t = await api.artifactTicket(build.id, a.name);
      const link = document.createElement('a');
      link.href = t.url;
      link.download = a.name.split('/').pop() ?? a.name;
      document.body.append(link);
      link.click();
      link.remove();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy('');
    }
  };

  return (
    <section class="artifacts" aria-labelledby="artifacts-h">
      <h2 id="artifacts-h">Artifacts</h2>
      {error ? <Alert>{error}</Alert> : null}
      {list && list.length === 0 ? <p class="muted small">No artifacts were kept: the log of “Uploading artifacts” says why.</p> : null}
      {list && list.length > 0 ? (
        <table class="artifact-list">
          <thead>
            <tr>
              <th scope="col">File</th>
              <th scope="col" class="num">
                Size
              </th>
              <th scope="col">Kept until</th>
              <th scope="col">
                <span class="sr-only">Download</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((a) => (
              <tr key={a.name} data-artifact={a.name}>
                <td class="mono" title={`SHA-256 ${a.sha256}`}>
                  {a.name}
                </td>
                <td class="num">{bytes(a.size)}</td>
                <td>
                  <time dateTime={a.expires_at}>{when(a.expires_at)}</time>
                </td>
                <td>
                  <button type="button" class="btn btn-small" onClick={() => download(a)} disabled={busy === a.name} aria-label={`Download ${a.name}`}>
                    Download
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
