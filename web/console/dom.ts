/** A few lines instead of a UI library: elements, text, and clearing. */
type Attrs = Record<string, string | number | boolean | ((ev: any) => void) | undefined>;
type Child = Node | string | number | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (k === 'class') el.className = String(v);
    else if (k === 'style') el.style.cssText = String(v); // CSSOM: allowed by the page's CSP, unlike a style attribute
    else if (k === 'value' && 'value' in el) (el as HTMLInputElement).value = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'object' ? c : String(c));
  }
  return el;
}

export function clear(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(typeof c === 'object' ? c : String(c));
}

export function fmtRate(r: number): string {
  return r >= 100 ? `${Math.round(r)}/s` : r >= 0.05 ? `${r.toFixed(1)}/s` : '';
}

export function fmtCount(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(0)}k` : String(n);
}

export function fromBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** JSON pretty-printed, printable UTF-8 as text, anything else as a hex dump. */
export function showPayload(bytes: Uint8Array, forceHex = false): { kind: 'json' | 'text' | 'hex'; text: string } {
  if (!forceHex) {
    let text: string | undefined;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      text = undefined;
    }
    if (text !== undefined && !/[\u0000-\u0008\u000e-\u001f]/.test(text)) {
      try {
        const v = JSON.parse(text);
        if (typeof v === 'object' && v !== null) return { kind: 'json', text: JSON.stringify(v, null, 2) };
      } catch {
        // not JSON
      }
      return { kind: 'text', text };
    }
  }
  const lines: string[] = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const row = bytes.subarray(off, off + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${off.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return { kind: 'hex', text: lines.join('\n') };
}

/** Runs `fn` now and every `ms` while `alive()`; returns a stop function. */
export function every(ms: number, fn: () => Promise<void> | void): () => void {
  let stopped = false;
  let timer: number | undefined;
  const tick = async (): Promise<void> => {
    if (stopped) return;
    try {
      await fn();
    } catch {
      // shown by the page itself
    }
    if (!stopped) timer = window.setTimeout(tick, ms);
  };
  void tick();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
