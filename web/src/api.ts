// The REST API of `hangar server` (docs/api.md), as the UI uses it.

export type BuildStatus = 'queued' | 'preparing' | 'building' | 'waiting_for_ssh' | 'finished' | 'failed' | 'canceled' | 'timeout';
export type StepStatus = 'pending' | 'running' | 'success' | 'failed' | 'skipped' | 'canceled' | 'paused';
export type SSHState = 'pending' | 'ready' | 'connected' | 'closed';

export interface App {
  id: number;
  name: string;
  repo: string;
  created_at: string;
  webhook_url: string;
  webhook_secret?: string;
  /** builds of workflows that use keys Hangar does not support are refused */
  refuse_unsupported: boolean;
}

export interface Step {
  name: string;
  status: StepStatus;
  exit_code?: number;
  started_at: string | null;
  finished_at: string | null;
  duration_ms?: number;
  /** Why a skipped step was skipped (its when). */
  reason?: string;
  /** Hangar's own steps: cache_restore, artifacts, publishing (a publishing script), cache_save. */
  kind?: 'cache_restore' | 'artifacts' | 'publishing' | 'cache_save';
}

export interface Artifact {
  name: string;
  size: number;
  md5: string;
  sha256: string;
  created_at: string;
  expires_at: string;
  url?: string;
}

export interface SSHSession {
  remote: string;
  client: string;
  user?: string;
  since: string;
}

export interface BuildSSH {
  enabled: boolean;
  /** what the build was started with: SSH from the start, or only if a step fails (enabled turns true then) */
  mode?: 'always' | 'on-failure';
  state?: SSHState;
  command?: string;
  powershell?: string;
  /** when command and powershell stop working (minutes after they were shown) */
  command_expires_at?: string;
  expires_at?: string;
  expires_because?: string;
  closed_reason?: string;
  connections: number;
  sessions?: SSHSession[] | null;
}

export interface Build {
  id: number;
  app: string;
  number: number;
  workflow: string;
  workflow_name: string;
  branch: string;
  commit: string;
  status: BuildStatus;
  trigger: 'manual' | 'webhook';
  started_by?: string;
  message?: string;
  max_build_duration_seconds: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  steps: Step[];
  ssh: BuildSSH;
  rerun_of?: number;
  reruns?: number[];
}

export interface LogLine {
  seq: number;
  step: number;
  time: string;
  text: string;
}

export type InputValue = string | number | boolean;

export interface WorkflowInput {
  id: string;
  description?: string;
  type: 'string' | 'number' | 'boolean' | 'choice';
  default?: InputValue;
  options?: string[];
}

export interface WorkflowCheck {
  steps: string[];
  honoured: string[];
  unsupported: { key: string; why: string }[];
}

export interface Workflow {
  id: string;
  name: string;
  max_build_duration_seconds: number;
  scripts: string[];
  events?: string[];
  inputs?: WorkflowInput[];
  check?: WorkflowCheck;
}

export interface Branches {
  /** the repository's default branch ('' when it has none yet) */
  default: string;
  /** the default branch first, then the most recently committed to */
  branches: string[];
  truncated?: boolean;
}

/** StartRequest is the body of POST /api/v1/builds. */
export interface StartRequest {
  app: string;
  workflow?: string;
  branch?: string;
  ssh?: boolean;
  ssh_on_failure?: boolean;
  /** scripts to pause before: numbers (1 for the first) or names */
  ssh_break_before?: string[];
  inputs?: Record<string, InputValue>;
}

export interface Workflows {
  branch: string;
  commit: string;
  file: string;
  workflows: Workflow[];
}

export interface Info {
  ssh: { enabled: boolean; reason?: string };
  driver: string;
  isolated: boolean;
  /** how the API is served; warning: the one-line command is not safe across a network */
  http?: { tls: boolean; loopback: boolean; warning?: string };
}

export interface SSHAccess {
  alias: string;
  gateway: string;
  config: string;
  expires_at: string;
}

export interface BuildEvent {
  time: string;
  kind: string;
  data?: Record<string, string>;
}

export const ended = (s: BuildStatus) => s === 'finished' || s === 'failed' || s === 'canceled' || s === 'timeout';

// ---- the token ---------------------------------------------------------

const TOKEN_KEY = 'hangar.token';

export function getToken(): string | null {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(t: string | null) {
  if (t) localStorage.setItem(TOKEN_KEY, t);
  else localStorage.removeItem(TOKEN_KEY);
  for (const f of tokenListeners) f(t);
}

const tokenListeners = new Set<(t: string | null) => void>();

/** onToken calls f whenever the token changes (sign-in, sign-out, refused). */
export function onToken(f: (t: string | null) => void): () => void {
  tokenListeners.add(f);
  return () => tokenListeners.delete(f);
}

// Another tab signed in or out.
window.addEventListener('storage', (e) => {
  if (e.key === TOKEN_KEY) for (const f of tokenListeners) f(e.newValue);
});

// ---- requests ----------------------------------------------------------

/**
 * ApiError is an error answer of the API, with its message for people and,
 * for an error about one field of the request, that field's name.
 */
export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public field?: string,
  ) {
    super(message);
  }
}

function headers(extra?: Record<string, string>): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  const t = getToken();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

async function failure(res: Response): Promise<ApiError> {
  let msg = `${res.status} ${res.statusText}`;
  let field: string | undefined;
  try {
    const body = await res.json();
    if (body && typeof body.error === 'string') msg = body.error;
    if (body && typeof body.field === 'string') field = body.field;
  } catch {
    /* not JSON */
  }
  if (res.status === 401 && getToken()) {
    // The token was refused: back to sign-in.
    setToken(null);
  }
  return new ApiError(res.status, msg, field);
}

async function request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: headers(body === undefined ? undefined : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, 'cannot reach the Hangar server: is it running?');
  }
  if (!res.ok) throw await failure(res);
  return res;
}

export async function getJSON<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await request('GET', path, undefined, signal)).json();
}

export async function getText(path: string, signal?: AbortSignal): Promise<string> {
  return (await request('GET', path, undefined, signal)).text();
}

export async function send<T>(method: string, path: string, body?: unknown): Promise<T | null> {
  const res = await request(method, path, body);
  if (res.status === 204) return null;
  return res.json();
}

const enc = encodeURIComponent;

export const api = {
  info: (signal?: AbortSignal) => getJSON<Info>('/api/v1/info', signal),
  apps: (signal?: AbortSignal) => getJSON<App[]>('/api/v1/apps', signal),
  app: (name: string, signal?: AbortSignal) => getJSON<App>(`/api/v1/apps/${enc(name)}`, signal),
  addApp: (a: { name: string; repo: string; webhook_secret?: string; refuse_unsupported?: boolean }) => send<App>('POST', '/api/v1/apps', a) as Promise<App>,
  setApp: (name: string, settings: { refuse_unsupported: boolean }) => send<App>('PATCH', `/api/v1/apps/${enc(name)}`, settings) as Promise<App>,
  deleteApp: (name: string) => send<null>('DELETE', `/api/v1/apps/${enc(name)}`),
  workflows: (app: string, branch?: string, signal?: AbortSignal) =>
    getJSON<Workflows>(`/api/v1/apps/${enc(app)}/workflows${branch ? '?branch=' + enc(branch) : ''}`, signal),
  builds: (app?: string, limit = 50, signal?: AbortSignal) =>
    getJSON<Build[]>(`/api/v1/builds?limit=${limit}${app ? '&app=' + enc(app) : ''}`, signal),
  build: (id: number, signal?: AbortSignal) => getJSON<Build>(`/api/v1/builds/${id}`, signal),
  branches: (app: string, signal?: AbortSignal) => getJSON<Branches>(`/api/v1/apps/${enc(app)}/branches`, signal),
  startBuild: (b: StartRequest) => send<Build>('POST', '/api/v1/builds', b) as Promise<Build>,
  cancel: (id: number) => send<Build>('POST', `/api/v1/builds/${id}/cancel`),
  resume: (id: number) => send<Build>('POST', `/api/v1/builds/${id}/continue`),
  rerun: (id: number, ssh: boolean) => send<Build>('POST', `/api/v1/builds/${id}/rerun`, { ssh }) as Promise<Build>,
  extendSSH: (id: number, by: string) => send<Build>('POST', `/api/v1/builds/${id}/ssh/extend`, { by }),
  sshScript: (id: number, shell: 'bash' | 'powershell') =>
    getText(`/api/v1/builds/${id}/ssh/script${shell === 'powershell' ? '?shell=powershell' : ''}`),
  sshAccess: async (id: number): Promise<SSHAccess> => {
    // Keep only what the page shows: the key and certificate stay out of it.
    const a = await getJSON<SSHAccess & Record<string, unknown>>(`/api/v1/builds/${id}/ssh/access`);
    return { alias: a.alias, gateway: a.gateway, config: a.config, expires_at: a.expires_at };
  },
  events: (id: number, signal?: AbortSignal) => getJSON<BuildEvent[]>(`/api/v1/builds/${id}/events`, signal),
  terminal: (id: number) => send<{ url: string }>('POST', `/api/v1/builds/${id}/terminal`) as Promise<{ url: string }>,
  artifacts: (id: number, signal?: AbortSignal) => getJSON<Artifact[]>(`/api/v1/builds/${id}/artifacts`, signal),
  /** A single-use URL (30 s) that downloads an artifact without the token: the browser's own download. */
  artifactTicket: (id: number, name: string) =>
    send<{ url: string }>('POST', `/api/v1/builds/${id}/artifact-tickets`, { name }) as Promise<{ url: string }>,
};

// ---- live logs ---------------------------------------------------------

/** yieldToBrowser lets the browser paint and handle input. */
function yieldToBrowser(): Promise<void> {
  const sched = (globalThis as { scheduler?: { yield?: () => Promise<void> } }).scheduler;
  if (sched?.yield) return sched.yield();
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => resolve();
    ch.port2.postMessage(null);
  });
}

export interface LogStreamHandlers {
  /** lines arrive in batches, in order */
  lines(l: LogLine[]): void;
  build(b: Build): void;
  end(): void;
  /** the stream is down and will be retried (null: up again) */
  trouble(msg: string | null): void;
}

/**
 * followLogs streams a build's log and changes with Server-Sent Events read
 * through fetch (so the token travels in the Authorization header, never in
 * a URL), and reconnects with Last-Event-ID after a network failure until
 * the build has ended. It returns a function that stops it.
 */
export function followLogs(id: number, h: LogStreamHandlers): () => void {
  const ctl = new AbortController();
  let last = 0;
  let done = false;
  let delay = 500;

  const run = async () => {
    while (!done && !ctl.signal.aborted) {
      try {
        const hdr = headers({ Accept: 'text/event-stream' });
        if (last) hdr['Last-Event-ID'] = String(last);
        const res = await fetch(`/api/v1/builds/${id}/logs?follow=1`, { headers: hdr, signal: ctl.signal, cache: 'no-store' });
        if (!res.ok) {
          const err = await failure(res);
          if (res.status < 500) {
            h.trouble(err.message);
            return;
          }
          throw err;
        }
        h.trouble(null);
        delay = 500;
        await readSSE(res.body!, (event, data, eid) => {
          switch (event) {
            case 'log': {
              const l = JSON.parse(data) as LogLine;
              if (eid) last = Number(eid);
              pending.push(l);
              break;
            }
            case 'build':
              flush();
              h.build(JSON.parse(data));
              break;
            case 'end':
              flush();
              done = true;
              h.end();
              break;
          }
        });
        flush();
      } catch (e) {
        flush();
        if (ctl.signal.aborted) return;
        h.trouble(e instanceof ApiError ? e.message : 'lost the connection to the server; reconnecting…');
      }
      if (done || ctl.signal.aborted) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  };

  // Lines are handed over once per chunk read, not one by one.
  const pending: LogLine[] = [];
  const flush = () => {
    if (pending.length) h.lines(pending.splice(0));
  };

  async function readSSE(body: ReadableStream<Uint8Array>, on: (event: string, data: string, id: string) => void) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done: eof } = await reader.read();
      if (eof) return;
      buf += dec.decode(value, { stream: true });
      let start = 0;
      let slice = performance.now();
      for (let n = 1; ; n++) {
        // A big chunk (a finished build's 100,000 lines come at once) is
        // handled in slices of a few milliseconds, so the page stays
        // responsive while it loads.
        if (n % 256 === 0 && performance.now() - slice > 8) {
          flush();
          await yieldToBrowser();
          slice = performance.now();
        }
        const end = buf.indexOf('\n\n', start);
        if (end < 0) break;
        let event = 'message';
        let data = '';
        let eid = '';
        for (const line of buf.slice(start, end).split('\n')) {
          const c = line.indexOf(':');
          if (c === 0) continue; // comment, e.g. keepalive
          const field = c < 0 ? line : line.slice(0, c);
          let v = c < 0 ? '' : line.slice(c + 1);
          if (v.startsWith(' ')) v = v.slice(1);
          if (field === 'event') event = v;
          else if (field === 'data') data = data ? data + '\n' + v : v;
          else if (field === 'id') eid = v;
        }
        start = end + 2;
        on(event, data, eid);
      }
      buf = buf.slice(start);
      flush();
    }
  }

  void run();
  return () => {
    done = true;
    ctl.abort();
  };
}
