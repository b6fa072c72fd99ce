// Hangar's web UI: the shell (header, navigation, sign-in) and the pages.

import './style.css';
import { render } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { getToken, onToken, setToken } from './api';
import { useBuilds, useTitle } from './data';
import { navigate, parse, useLocation } from './router';
import type { Route } from './router';
import { AppPage, AppsPage } from './components/apps';
import { BuildPage } from './components/build';
import { BuildsTable } from './components/builds';
import { StartBuildDialog } from './components/startbuild';
import { Alert, Spinner } from './components/ui';

function useSignedIn(): boolean {
  const [t, setT] = useState(getToken());
  useEffect(() => onToken(setT), []);
  return !!t;
}

function Root() {
  const loc = useLocation();
  const signedIn = useSignedIn();
  const route = parse(loc.path, loc.search);
  const main = useRef<HTMLElement>(null);

  useEffect(() => {
    if (!signedIn && route.page !== 'signin') {
      const next = loc.path + loc.search;
      navigate(`/signin${next && next !== '/' ? '?next=' + encodeURIComponent(next) : ''}`, true);
    }
  }, [signedIn, route.page]);

  // After navigating, move focus to the new page's heading.
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const target = main.current?.querySelector<HTMLElement>('[autofocus]') ?? main.current?.querySelector<HTMLElement>('h1');
    target?.focus({ preventScroll: true });
  }, [loc.path]);

  if (!signedIn || route.page === 'signin') {
    return (
      <main id="main" ref={main} class="signin-main">
        <SignIn next={route.page === 'signin' ? route.next : '/'} />
      </main>
    );
  }
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); main.current?.querySelector<HTMLElement>('h1')?.focus(); }}>
        Skip to content
      </a>
      <Header route={route} />
      <main id="main" ref={main}>
        <Page route={route} />
      </main>
    </>
  );
}

function Header({ route }: { route: Route }) {
  const cur = (p: string) => (p === route.page || (p === 'builds' && route.page === 'build') || (p === 'apps' && route.page === 'app') ? 'page' : undefined);
  return (
    <header class="top">
      <a class="brand" href="/" aria-label="Hangar, builds">
        <svg viewBox="0 0 32 32" width="24" height="24" aria-hidden="true">
          <rect width="32" height="32" rx="7" fill="currentColor" />
          <path d="M6 25V13l10-6 10 6v12h-5v-8H11v8z" fill="var(--brand-fg)" />
        </svg>
        <span>Hangar</span>
      </a>
      <nav aria-label="Main">
        <a href="/" aria-current={cur('builds')}>
          Builds
        </a>
        <a href="/apps" aria-current={cur('apps')}>
          Apps
        </a>
      </nav>
      <button
        type="button"
        class="btn btn-ghost signout"
        onClick={() => {
          setToken(null);
          navigate('/signin', true);
        }}
      >
        Sign out
      </button>
    </header>
  );
}

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case 'builds':
      return <BuildsPage />;
    case 'apps':
      return <AppsPage />;
    case 'app':
      return <AppPage name={route.name} key={route.name} />;
    case 'build':
      return <BuildPage id={route.id} key={route.id} />;
    default:
      return <NotFound />;
  }
}

function BuildsPage() {
  useTitle('Builds');
  const builds = useBuilds();
  const [start, setStart] = useState(false);
  const close = useCallback(() => setStart(false), []);
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Builds</h1>
        <button type="button" class="btn btn-primary" onClick={() => setStart(true)}>
          Start new build
        </button>
      </div>
      {builds.error ? <Alert>{builds.error}</Alert> : null}
      {builds.data ? <BuildsTable builds={builds.data} /> : builds.loading ? <Spinner label="Loading builds…" /> : null}
      {builds.data && builds.data.length === 0 ? (
        <p class="muted">
          <a href="/apps">Add an app</a>, then start a build here or push to its repository with a webhook.
        </p>
      ) : null}
      <StartBuildDialog open={start} onClose={close} />
    </>
  );
}

function NotFound() {
  useTitle('Not found');
  return (
    <>
      <h1 tabIndex={-1}>Not found</h1>
      <p>
        There is no page here. Go to the <a href="/">builds</a> or the <a href="/apps">apps</a>.
      </p>
    </>
  );
}

function SignIn({ next }: { next: string }) {
  useTitle('Sign in');
  const [token, setTok] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    const t = token.trim();
    setBusy(true);
    setError(null);
    try {
      const res = await fetch('/api/v1/apps', { headers: { Authorization: 'Bearer ' + t }, cache: 'no-store' });
      if (res.status === 401) throw new Error('This token was refused: check that you copied all of it.');
      if (!res.ok) throw new Error(`The server answered ${res.status}: try again.`);
      setToken(t);
      navigate(next.startsWith('/') && !next.startsWith('//') ? next : '/', true);
    } catch (err) {
      setError(err instanceof TypeError ? 'Cannot reach the Hangar server: is it running?' : (err as Error).message);
      setBusy(false);
    }
  };
  return (
    <div class="signin card">
      <div class="brand brand-big" aria-hidden="true">
        <svg viewBox="0 0 32 32" width="36" height="36">
          <rect width="32" height="32" rx="7" fill="currentColor" />
          <path d="M6 25V13l10-6 10 6v12h-5v-8H11v8z" fill="var(--brand-fg)" />
        </svg>
        <span>Hangar</span>
      </div>
      <h1 tabIndex={-1}>Sign in</h1>
      <form class="form" onSubmit={submit} aria-busy={busy}>
        {error ? <Alert>{error}</Alert> : null}
        <div class="field">
          <label for="token">API token</label>
          <input
            id="token"
            name="token"
            type="password"
            value={token}
            onInput={(e) => setTok(e.currentTarget.value)}
            required
            autofocus
            autocomplete="off"
            spellcheck={false}
            aria-describedby="token-hint"
          />
          <p class="hint" id="token-hint">
            The admin token is in the server’s data directory, file <span class="mono">admin-token</span>. It stays in this browser until you sign out.
          </p>
        </div>
        <div class="actions">
          <button type="submit" class="btn btn-primary" disabled={busy}>
            {busy ? 'Signing in…' : 'Sign in'}
          </button>
        </div>
      </form>
    </div>
  );
}

render(<Root />, document.getElementById('app')!);
