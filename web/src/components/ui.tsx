// Small building blocks shared by the pages.

import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { BuildStatus, StepStatus } from '../api';

const statusText: Record<BuildStatus, string> = {
  queued: 'Queued',
  preparing: 'Preparing',
  building: 'Building',
  waiting_for_ssh: 'Waiting for SSH',
  finished: 'Finished',
  failed: 'Failed',
  canceled: 'Canceled',
  timeout: 'Timed out',
};

const icons: Record<string, string> = {
  queued: '○',
  pending: '○',
  preparing: '',
  building: '',
  waiting_for_ssh: '⌨',
  running: '',
  finished: '✓',
  success: '✓',
  failed: '✕',
  canceled: '⊘',
  skipped: '–',
  paused: '⏸',
  timeout: '⏱',
};

export function StatusBadge({ status }: { status: BuildStatus }) {
  return (
    <span class={`badge st-${status}`} data-status={status}>
      <StatusIcon status={status} />
      {statusText[status] ?? status}
    </span>
  );
}

export function StatusIcon({ status }: { status: BuildStatus | StepStatus }) {
  const running = status === 'preparing' || status === 'building' || status === 'running';
  return running ? <span class="spinner" aria-hidden="true" /> : <span class={`icon st-${status}`} aria-hidden="true">{icons[status] ?? '•'}</span>;
}

export const stepStatusText: Record<StepStatus, string> = {
  pending: 'Pending',
  running: 'Running',
  success: 'Succeeded',
  failed: 'Failed',
  skipped: 'Skipped',
  canceled: 'Canceled',
  paused: 'Paused',
};

async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* fall back below */
  }
  // Plain http on another host is not a secure context: no Clipboard API.
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.style.position = 'fixed';
  ta.style.opacity = '0';
  const focused = document.activeElement as HTMLElement | null;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  focused?.focus();
  return ok;
}

export function CopyButton({ text, label = 'Copy', what }: { text: string | (() => string); label?: string; what?: string }) {
  const [state, setState] = useState<'' | 'ok' | 'fail'>('');
  const t = useRef(0);
  useEffect(() => () => clearTimeout(t.current), []);
  const click = async () => {
    const ok = await copyText(typeof text === 'function' ? text() : text);
    setState(ok ? 'ok' : 'fail');
    clearTimeout(t.current);
    t.current = window.setTimeout(() => setState(''), 2000);
  };
  return (
    <button type="button" class="btn btn-small copy" onClick={click} aria-label={what ? `${label} ${what}` : undefined}>
      <span aria-hidden={state !== ''}>{label}</span>
      <span class="copy-state" role="status">
        {state === 'ok' ? 'Copied' : state === 'fail' ? 'Select and copy by hand' : ''}
      </span>
    </button>
  );
}

/** Code shows a command or file with a copy button. */
export function Code({ text, what, block = false, wrap = false, id }: { text: string; what: string; block?: boolean; wrap?: boolean; id?: string }) {
  return (
    <div class={`code${block ? ' code-block' : ''}${wrap ? ' code-wrap' : ''}`}>
      <pre tabIndex={0} aria-label={what} id={id}>
        <code>{text}</code>
      </pre>
      <CopyButton text={text} what={what} />
    </div>
  );
}

export function Alert({ kind = 'error', children }: { kind?: 'error' | 'info' | 'warn' | 'ok'; children: ComponentChildren }) {
  return (
    <div class={`alert alert-${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      {children}
    </div>
  );
}

/**
 * Dialog is a modal <dialog>: the browser keeps focus inside it and closes
 * it with Escape; focus goes back where it was when it closes.
 */
export function Dialog({ open, onClose, title, children, wide = false }: { open: boolean; onClose: () => void; title: string; children: ComponentChildren; wide?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const back = useRef<HTMLElement | null>(null);
  useEffect(() => {
    const d = ref.current!;
    if (open && !d.open) {
      back.current = document.activeElement as HTMLElement | null;
      d.showModal();
      const first = d.querySelector<HTMLElement>('[autofocus], input:not([disabled]), select, textarea, button:not(.dialog-x)');
      first?.focus();
    } else if (!open && d.open) {
      d.close();
    }
  }, [open]);
  useEffect(() => {
    const d = ref.current!;
    const closed = () => {
      back.current?.focus?.();
      onClose();
    };
    d.addEventListener('close', closed);
    return () => d.removeEventListener('close', closed);
  }, [onClose]);
  const titleId = useRef('dlg-' + Math.random().toString(36).slice(2)).current;
  return (
    <dialog
      ref={ref}
      class={wide ? 'dialog dialog-wide' : 'dialog'}
      aria-labelledby={titleId}
      onClick={(e) => {
        // A click on the backdrop closes it.
        const d = ref.current;
        if (d && e.target === d) {
          const r = d.getBoundingClientRect();
          const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
          if (!inside) d.close();
        }
      }}
    >
      <div class="dialog-head">
        <h2 id={titleId}>{title}</h2>
        <button type="button" class="btn btn-ghost dialog-x" aria-label="Close" onClick={() => ref.current?.close()}>
          ✕
        </button>
      </div>
      {open ? children : null}
    </dialog>
  );
}

export function Spinner({ label }: { label: string }) {
  return (
    <span class="loading" role="status">
      <span class="spinner" aria-hidden="true" />
      {label}
    </span>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}
