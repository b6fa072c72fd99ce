// Formatting of times and durations, and a clock that ticks once a second
// for everything that counts.

import { useEffect, useState } from 'preact/hooks';
import type { Build } from './api';
import { ended } from './api';

/** duration formats milliseconds as "850 ms", "4.2 s", "3 min 05 s", "1 h 02 min". */
export function duration(ms: number | null | undefined): string {
  if (ms == null || !isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.floor(s)} s`;
  const m = Math.floor(s / 60);
  const rs = Math.floor(s % 60);
  if (m < 60) return rs ? `${m} min ${String(rs).padStart(2, '0')} s` : `${m} min`;
  return m % 60 ? `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min` : `${Math.floor(m / 60)} h`;
}

/** countdown formats milliseconds left as "19:42" or "1:02:03". */
export function countdown(ms: number): string {
  const t = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const s = t % 60;
  const mm = h ? String(m).padStart(2, '0') : String(m);
  return `${h ? h + ':' : ''}${mm}:${String(s).padStart(2, '0')}`;
}

const ms = (t: string | null | undefined) => (t ? Date.parse(t) : NaN);

/** buildDuration is how long a build has run (so far). */
export function buildDuration(b: Build, now: number): number | null {
  const start = ms(b.started_at);
  if (isNaN(start)) return null;
  const end = ended(b.status) ? ms(b.finished_at) : now;
  return isNaN(end) ? null : Math.max(0, end - start);
}

export function stepDuration(s: { started_at: string | null; finished_at: string | null; duration_ms?: number }, now: number): number | null {
  if (s.duration_ms != null) return s.duration_ms;
  const start = ms(s.started_at);
  if (isNaN(start)) return null;
  const end = s.finished_at ? ms(s.finished_at) : now;
  return Math.max(0, end - start);
}

const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });
const dtf = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** ago formats a time as "5 min ago", "yesterday". */
export function ago(t: string | null | undefined, now: number): string {
  const v = ms(t);
  if (isNaN(v)) return '—';
  const s = Math.round((v - now) / 1000);
  const a = Math.abs(s);
  if (a < 45) return s > 0 ? rtf.format(s, 'second') : 'just now';
  if (a < 45 * 60) return rtf.format(Math.round(s / 60), 'minute');
  if (a < 22 * 3600) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

/** when formats a time in full, for titles. */
export const when = (t: string | null | undefined) => (t && !isNaN(ms(t)) ? dtf.format(new Date(ms(t))) : '');

export const shortCommit = (c: string) => (c ? c.slice(0, 8) : '—');

const listeners = new Set<(n: number) => void>();
let timer = 0;

/** useNow returns the time, updated every second while mounted. */
export function useNow(active = true): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    listeners.add(setNow);
    if (!timer) timer = window.setInterval(() => {
      const n = Date.now();
      for (const f of listeners) f(n);
    }, 1000);
    return () => {
      listeners.delete(setNow);
      if (listeners.size === 0) {
        clearInterval(timer);
        timer = 0;
      }
    };
  }, [active]);
  return now;
}
