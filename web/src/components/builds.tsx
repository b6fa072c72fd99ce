// The list of builds, live.

import type { Build } from '../api';
import { ended } from '../api';
import { ago, buildDuration, duration, shortCommit, useNow, when } from '../format';
import { Empty, StatusBadge } from './ui';

export function BuildsTable({ builds, showApp = true }: { builds: Build[]; showApp?: boolean }) {
  const now = useNow(builds.some((b) => !ended(b.status)));
  if (builds.length === 0) return <Empty>No builds yet.</Empty>;
  return (
    <div class="table-wrap">
      <table class="table builds">
        <caption class="sr-only">Builds, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Build</th>
            <th scope="col">Status</th>
            <th scope="col">Workflow</th>
            <th scope="col">Branch</th>
            <th scope="col">Commit</th>
            <th scope="col">Trigger</th>
            <th scope="col">Started by</th>
            <th scope="col" class="num">Duration</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {builds.map((b) => (
            <tr key={b.id} data-build={b.id}>
              <th scope="row" class="b-name">
                <a href={`/builds/${b.id}`}>
                  {showApp ? <span class="b-app">{b.app} </span> : null}#{b.number}
                </a>
                {b.ssh?.mode === 'on-failure' ? (
                  <span class="tag" title={b.ssh.enabled ? 'SSH only if a step fails: a step failed, SSH opened' : 'SSH only if a step fails'}>
                    SSH on failure
                  </span>
                ) : b.ssh?.enabled ? (
                  <span class="tag" title="Started with SSH access">
                    SSH
                  </span>
                ) : null}
              </th>
              <td data-label="Status">
                <StatusBadge status={b.status} />
              </td>
              <td data-label="Workflow">{b.workflow_name || b.workflow || '—'}</td>
              <td data-label="Branch">
                <span class="mono">{b.branch || '—'}</span>
              </td>
              <td data-label="Commit">
                <span class="mono" title={b.commit}>
                  {shortCommit(b.commit)}
                </span>
              </td>
              <td data-label="Trigger">{b.trigger === 'webhook' ? 'Webhook' : 'Manual'}</td>
              <td data-label="Started by">{b.started_by || '—'}</td>
              <td data-label="Duration" class="num">
                {duration(buildDuration(b, now))}
              </td>
              <td data-label="Created">
                <time dateTime={b.created_at} title={when(b.created_at)}>
                  {ago(b.created_at, now)}
                </time>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
