// The browser terminal: xterm.js on a WebSocket to the server, which opens
// the shell on the build's machine through the SSH gateway. Loaded only
// when a terminal is opened.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';

export interface TerminalHandlers {
  open(): void;
  closed(reason: string, clean: boolean): void;
}

export interface TerminalSession {
  /** close detaches: the shell keeps running on the machine. */
  close(): void;
  /** logout ends the shell (SIGHUP); the server then closes the terminal. */
  logout(): void;
  focus(): void;
}

/**
 * startTerminal shows a terminal in el and connects it to the WebSocket at
 * path (same host). The terminal fits its box and tells the server its size
 * whenever that changes. Esc then Tab (or Shift+Tab) moves focus out of it.
 */
export function startTerminal(el: HTMLElement, path: string, on: TerminalHandlers): TerminalSession {
  const dark = {
    background: '#0f141b',
    foreground: '#d8dee9',
    cursor: '#d8dee9',
    selectionBackground: '#3b4a63',
  };
  const term = new Terminal({
    cursorBlink: true,
    convertEol: false,
    fontFamily: 'ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace',
    fontSize: window.matchMedia('(max-width: 560px)').matches ? 12 : 14,
    lineHeight: 1.2,
    scrollback: 5000,
    theme: dark,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);

  // The shell (or the detached one it re-attaches to) gets the terminal's
  // size from the start, so a restored screen is drawn at that size.
  try {
    fit.fit();
  } catch {
    // not laid out yet: the server's default size, then a resize
  }
  const url = new URL(path, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('cols', String(term.cols));
  url.searchParams.set('rows', String(term.rows));
  const ws = new WebSocket(url.href);
  ws.binaryType = 'arraybuffer';
  const send = (m: object) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
  };

  let escaped = false;
  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== 'keydown') return true;
    if (e.key === 'Tab' && escaped) {
      escaped = false;
      leave(e.shiftKey ? -1 : 1);
      e.preventDefault();
      return false;
    }
    escaped = e.key === 'Escape';
    return true;
  });

  // Focus the next (or previous) focusable element after the terminal.
  const leave = (dir: 1 | -1) => {
    const all = Array.from(document.querySelectorAll<HTMLElement>('a[href], button:not([disabled]), input:not([disabled]), select, textarea, [tabindex]:not([tabindex="-1"])')).filter(
      (x) => !el.contains(x) && x.offsetParent !== null,
    );
    const after = all.filter((x) => el.compareDocumentPosition(x) & (dir > 0 ? Node.DOCUMENT_POSITION_FOLLOWING : Node.DOCUMENT_POSITION_PRECEDING));
    const target = dir > 0 ? after[0] : after[after.length - 1];
    target?.focus();
  };

  let lastSize = '';
  const refit = () => {
    try {
      fit.fit();
    } catch {
      return;
    }
    const size = `${term.cols}x${term.rows}`;
    if (size !== lastSize) {
      lastSize = size;
      send({ type: 'resize', cols: term.cols, rows: term.rows });
    }
  };
  let frame = 0;
  const ro = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(refit);
  });
  ro.observe(el);

  const input = term.onData((data) => send({ type: 'input', data }));
  const binary = term.onBinary((data) => send({ type: 'input', data }));

  ws.onopen = () => {
    lastSize = '';
    refit();
    term.focus();
    on.open();
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === 'string') term.write(ev.data);
    else term.write(new Uint8Array(ev.data as ArrayBuffer));
  };
  let done = false;
  ws.onclose = (ev) => {
    if (done) return;
    done = true;
    const reason = ev.reason || (ev.code === 1000 ? 'the shell has ended' : `the connection was lost (code ${ev.code})`);
    term.write(`\r\n\x1b[2m[${reason}]\x1b[0m\r\n\x1b[?25l`);
    term.options.cursorBlink = false;
    input.dispose();
    binary.dispose();
    on.closed(reason, ev.code === 1000);
  };
  // Errors are followed by a close event, which reports them.
  ws.onerror = () => {};

  return {
    close() {
      ro.disconnect();
      cancelAnimationFrame(frame);
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, 'detached in the browser');
      term.dispose();
    },
    logout() {
      send({ type: 'logout' });
    },
    focus() {
      term.focus();
    },
  };
}
