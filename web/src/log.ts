// Build logs: a per-step model that turns lines into HTML as they arrive,
// and a virtualized view that puts only the visible lines in the DOM, so a
// step with 100,000 lines scrolls and streams as smoothly as one with ten.

import { AnsiUp } from 'ansi_up';

const ESC = '\x1b';

const escapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const escapeHTML = (s: string) => s.replace(/[&<>"']/g, (c) => escapes[c]);

// eslint-disable-next-line no-control-regex
const ansiRe = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
/** plain removes ANSI escape sequences. */
export const plain = (s: string) => (s.includes(ESC) ? s.replace(ansiRe, '') : s);

/** A line as a terminal would show it: what follows the last carriage return. */
function overwrite(s: string): string {
  if (!s.includes('\r')) return s;
  const parts = s.split('\r');
  for (let i = parts.length - 1; i >= 0; i--) if (parts[i] !== '') return parts[i];
  return '';
}

interface AnsiState {
  bold: boolean;
  faint: boolean;
  italic: boolean;
  underline: boolean;
  fg: unknown;
  bg: unknown;
}

/** StepLog holds one step's lines as HTML (colours from ANSI escapes). */
export class StepLog {
  html: string[] = [];
  /** the longest line, in characters, for the view's width */
  widest = 0;
  private ansi = new AnsiUp();
  private listeners = new Set<() => void>();

  constructor() {
    this.ansi.use_classes = true;
  }

  get length() {
    return this.html.length;
  }

  append(texts: string[]) {
    const st = this.ansi as unknown as AnsiState;
    for (let t of texts) {
      t = overwrite(t);
      const clean = !st.bold && !st.faint && !st.italic && !st.underline && st.fg === null && st.bg === null;
      let html: string;
      if (clean && !t.includes(ESC)) {
        html = escapeHTML(t); // the common case, and much cheaper
      } else {
        html = this.ansi.ansi_to_html(t);
      }
      const w = plain(t).length;
      if (w > this.widest) this.widest = w;
      this.html.push(html);
    }
    for (const f of this.listeners) f();
  }

  /** plain text of the whole step, e.g. to download it */
  text(): string {
    const div = document.createElement('div');
    return this.html
      .map((h) => {
        if (!h.includes('<') && !h.includes('&')) return h;
        div.innerHTML = h;
        return div.textContent ?? '';
      })
      .join('\n');
  }

  subscribe(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
}

/**
 * LogView shows a StepLog in a fixed-height scroll area (its size is set by
 * CSS, so nothing moves while lines stream in). Only the lines in view, and a
 * margin, are in the DOM; they are re-rendered at most once per animation
 * frame. While scrolled to the bottom it follows new lines; scrolled up, it
 * stays put and offers a button to jump to the end.
 */
export class LogView {
  readonly el: HTMLDivElement;
  private sizer: HTMLDivElement;
  private rows: HTMLDivElement;
  private jump: HTMLButtonElement;
  private empty: HTMLDivElement;
  private log: StepLog | null = null;
  private unsub: (() => void) | null = null;
  private lineHeight = 18;
  private stick = true;
  private frame = 0;
  private first = -1;
  private last = -1;
  private measured = false;
  private resize: ResizeObserver;
  private emptyText = '';

  constructor(label: string) {
    this.el = document.createElement('div');
    this.el.className = 'logview';
    const scroller = document.createElement('div');
    scroller.className = 'log';
    scroller.tabIndex = 0;
    scroller.setAttribute('role', 'region');
    scroller.setAttribute('aria-label', label);
    this.sizer = document.createElement('div');
    this.sizer.className = 'log-sizer';
    this.rows = document.createElement('div');
    this.rows.className = 'log-rows';
    this.sizer.append(this.rows);
    this.empty = document.createElement('div');
    this.empty.className = 'log-empty';
    scroller.append(this.sizer, this.empty);
    this.jump = document.createElement('button');
    this.jump.type = 'button';
    this.jump.className = 'log-jump';
    this.jump.textContent = '↓ Follow new lines';
    this.jump.hidden = true;
    this.jump.addEventListener('click', () => {
      this.stick = true;
      this.schedule();
      scroller.focus({ preventScroll: true });
    });
    this.el.append(scroller, this.jump);
    scroller.addEventListener(
      'scroll',
      () => {
        const atBottom = scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - this.lineHeight;
        this.stick = atBottom;
        this.jump.hidden = atBottom || !this.log || this.log.length === 0;
        this.schedule();
      },
      { passive: true },
    );
    scroller.addEventListener('keydown', (e) => {
      // End/Home jump to the ends, like a text view.
      if (e.key === 'End') {
        this.stick = true;
        this.schedule();
        e.preventDefault();
      } else if (e.key === 'Home') {
        this.stick = false;
        scroller.scrollTop = 0;
        e.preventDefault();
      }
    });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(scroller);
  }

  private get scroller() {
    return this.el.firstElementChild as HTMLDivElement;
  }

  /** show shows log (null: nothing), scrolled to its end; live: lines may still come. */
  show(log: StepLog | null, label: string, emptyText: string, live: boolean) {
    this.scroller.setAttribute('aria-label', label);
    this.emptyText = emptyText;
    this.jump.textContent = live ? '↓ Follow new lines' : '↓ Jump to the end';
    if (log !== this.log) {
      this.unsub?.();
      this.log = log;
      this.unsub = log ? log.subscribe(() => this.schedule()) : null;
      this.stick = true;
      this.first = this.last = -1;
    }
    this.schedule();
  }

  private schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  /** render puts the lines in view into the DOM. */
  render() {
    this.frame = 0;
    const sc = this.scroller;
    if (!sc.isConnected) return;
    const n = this.log?.length ?? 0;
    this.empty.textContent = n === 0 ? this.emptyText : '';
    this.empty.hidden = n !== 0;
    if (!this.measured && this.rows.firstElementChild) {
      // The real line height, once lines exist (zoom, fonts).
      const h = (this.rows.firstElementChild as HTMLElement).getBoundingClientRect().height;
      if (h > 4) {
        this.measured = true;
        if (Math.abs(h - this.lineHeight) > 0.01) {
          this.lineHeight = h;
          this.first = this.last = -1;
        }
      }
    }
    const lh = this.lineHeight;
    const digits = Math.max(3, String(n).length);
    this.sizer.style.height = `${n * lh}px`;
    this.sizer.style.setProperty('--gutter', `${digits + 1}ch`);
    this.sizer.style.minWidth = `calc(${Math.min(this.log?.widest ?? 0, 4000) + digits + 3}ch)`;
    if (this.stick) sc.scrollTop = sc.scrollHeight;
    const overscan = 30;
    const first = Math.max(0, Math.floor(sc.scrollTop / lh) - overscan);
    const last = Math.min(n, Math.ceil((sc.scrollTop + sc.clientHeight) / lh) + overscan);
    // Lines never change once written: re-render only when the window of
    // lines moves (scrolling, or new lines coming into view).
    this.jump.hidden = this.stick || n === 0;
    if (first === this.first && last === this.last) return;
    this.first = first;
    this.last = last;
    const html = this.log?.html ?? [];
    const parts: string[] = [];
    for (let i = first; i < last; i++) {
      parts.push(`<div class="ln"><span class="ln-n" aria-hidden="true">${i + 1}</span><span class="ln-t">${html[i]}</span></div>`);
    }
    this.rows.innerHTML = parts.join('');
    this.rows.style.transform = `translateY(${first * lh}px)`;
  }

  destroy() {
    this.unsub?.();
    this.resize.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
  }
}
