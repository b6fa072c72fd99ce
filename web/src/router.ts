// Client-side routing with the History API: the server answers every
// non-API path with index.html, and the UI picks the page from the path.

import { useEffect, useState } from 'preact/hooks';

export type Route =
  | { page: 'signin'; next: string }
  | { page: 'builds' }
  | { page: 'apps' }
  | { page: 'app'; name: string }
  | { page: 'build'; id: number }
  | { page: 'notfound'; path: string };

export function parse(path: string, search = ''): Route {
  const p = path.replace(/\/+$/, '') || '/';
  let m: RegExpMatchArray | null;
  if (p === '/' || p === '/builds') return { page: 'builds' };
  if (p === '/signin') return { page: 'signin', next: new URLSearchParams(search).get('next') || '/' };
  if (p === '/apps') return { page: 'apps' };
  if ((m = p.match(/^\/apps\/([^/]+)$/))) return { page: 'app', name: decodeURIComponent(m[1]) };
  if ((m = p.match(/^\/builds\/(\d+)$/))) return { page: 'build', id: Number(m[1]) };
  return { page: 'notfound', path };
}

const listeners = new Set<() => void>();

// A page may ask before it is left (an open terminal: leaving logs out).
let guard: string | null = null;
let here = location.pathname + location.search;

/** leaveGuard makes leaving the page ask msg first (null: leave freely). */
export function leaveGuard(msg: string | null) {
  guard = msg;
}

window.addEventListener('beforeunload', (e) => {
  if (guard) e.preventDefault();
});

export function navigate(to: string, replace = false) {
  if (to === location.pathname + location.search) return;
  if (guard && !to.startsWith('/signin') && !window.confirm(guard)) return;
  guard = null;
  here = to;
  if (replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  for (const f of listeners) f();
  if (!replace) window.scrollTo(0, 0);
}

window.addEventListener('popstate', () => {
  if (guard && !window.confirm(guard)) {
    history.pushState(null, '', here); // stay
    return;
  }
  guard = null;
  here = location.pathname + location.search;
  for (const f of listeners) f();
});

/** useLocation re-renders on navigation and returns the path and query. */
export function useLocation(): { path: string; search: string } {
  const [, force] = useState(0);
  useEffect(() => {
    const f = () => force((n) => n + 1);
    listeners.add(f);
    return () => listeners.delete(f);
  }, []);
  return { path: location.pathname, search: location.search };
}

// Links: same-origin clicks without modifier keys stay in the page.
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element).closest?.('a');
  if (!a || a.target || a.hasAttribute('download') || a.origin !== location.origin) return;
  if (a.pathname.startsWith('/api/') || a.pathname.startsWith('/ssh/')) return;
  e.preventDefault();
  navigate(a.pathname + a.search);
});
