// Hooks that load data from the API and keep it fresh.

import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, ended } from './api';
import type { Build, Info } from './api';

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
  reload: () => void;
}

/**
 * usePoll loads with f, then again every `every` ms while the page is
 * visible (at once when it becomes visible again). every(data) may depend
 * on what was loaded: faster while builds run.
 */
export function usePoll<T>(f: (signal: AbortSignal) => Promise<T>, deps: unknown[], every: (d: T | null) => number | null): Loaded<T> {
  const [state, setState] = useState<{ data: T | null; error: string | null; loading: boolean }>({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  const everyRef = useRef(every);
  everyRef.current = every;
  useEffect(() => {
    setState({ data: null, error: null, loading: true });
  }, deps);
  useEffect(() => {
    const ctl = new AbortController();
    let timer = 0;
    let stopped = false;
    const load = async () => {
      clearTimeout(timer);
      let data: T | null = null;
      try {
        data = await f(ctl.signal);
        if (stopped) return;
        setState({ data, error: null, loading: false });
      } catch (e) {
        if (stopped || (e as Error).name === 'AbortError') return;
        setState((s) => ({ data: s.data, error: e instanceof ApiError ? e.message : String(e), loading: false }));
      }
      const next = everyRef.current(data);
      if (next != null && !stopped) timer = window.setTimeout(() => document.visibilityState === 'visible' && load(), next);
    };
    const visible = () => {
      if (document.visibilityState === 'visible') void load();
    };
    void load();
    document.addEventListener('visibilitychange', visible);
    return () => {
      stopped = true;
      ctl.abort();
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', visible);
    };
  }, [...deps, tick]);
  return { ...state, reload };
}

/** useBuilds lists builds (of one app), refreshed live: every 2 s while any runs. */
export function useBuilds(app?: string): Loaded<Build[]> {
  return usePoll((s) => api.builds(app, 50, s), [app], (bs) => (bs && bs.some((b) => !ended(b.status)) ? 2000 : 5000));
}

let infoPromise: Promise<Info | null> | null = null;

/** useInfo is the server's /api/v1/info, loaded once. */
export function useInfo(): Info | null | undefined {
  const [info, setInfo] = useState<Info | null | undefined>(undefined);
  useEffect(() => {
    if (!infoPromise) {
      infoPromise = api.info().catch(() => {
        infoPromise = null;
        return null;
      });
    }
    let live = true;
    void infoPromise.then((i) => live && setInfo(i));
    return () => {
      live = false;
    };
  }, []);
  return info;
}

/** useTitle sets the document's title. */
export function useTitle(t: string) {
  useEffect(() => {
    document.title = t ? `${t} · Hangar` : 'Hangar';
  }, [t]);
}
