/** State store: keys by prefix (paged), a key's value, version and expiry, set and delete (admin), watch. */
import { call, get, type Session } from './api.js';
import { clear, fromBase64, h, showPayload } from './dom.js';

interface KeyRow {
  key: { text?: string; base64: string };
  bytes: number;
  version: string;
  expiresAt: number | null;
}

const keyText = (k: { text?: string; base64: string }): string => k.text ?? `base64:${k.base64}`;

export function statePage(root: HTMLElement, session: Session): () => void {
  const isAdmin = session.role === 'admin';
  const prefix = h('input', { type: 'search', id: 'state-prefix', placeholder: 'key prefix', 'aria-label': 'key prefix' });
  const list = h('div', { id: 'state-keys' });
  const detail = h('div', { id: 'state-detail', class: 'card' }, h('p', { class: 'muted' }, 'Pick a key.'));
  const note = h('div', { id: 'state-note' });
  let pages: (string | undefined)[] = [undefined];
  let stopWatch: (() => void) | undefined;

  const load = async (): Promise<void> => {
    const after = pages[pages.length - 1];
    const r = await get<{ keys: KeyRow[]; more: boolean; next?: string }>(`/api/state/keys?limit=50&prefix=${encodeURIComponent(prefix.value)}${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`);
    clear(
      list,
      h(
        'table',
        {},
        h('tr', {}, h('th', {}, 'key'), h('th', {}, 'bytes'), h('th', {}, 'version'), h('th', {}, 'expires')),
        r.keys.map((k) =>
          h(
            'tr',
            { class: 'clickable', onclick: () => show(k.key.text ?? '') },
            h('td', { class: 'mono', 'data-key': keyText(k.key) }, keyText(k.key)),
            h('td', {}, String(k.bytes)),
            h('td', { class: 'mono' }, k.version),
            h('td', {}, k.expiresAt ? new Date(k.expiresAt).toLocaleString() : '—'),
          ),
        ),
      ),
      r.keys.length === 0 ? h('p', { class: 'muted' }, 'no keys') : null,
      h(
        'div',
        { class: 'row' },
        pages.length > 1 ? h('button', { onclick: () => (pages.pop(), void load()) }, '‹ Previous') : null,
        r.more ? h('button', { onclick: () => (pages.push(r.next), void load()) }, 'Next ›') : null,
      ),
    );
  };

  interface KeyValue {
    key: string;
    value?: { text?: string; base64: string };
    bytes?: number;
    version?: string;
    expiresAt?: number | null;
    absent?: boolean;
  }

  const show = (key: string, watch = false): void => {
    stopWatch?.();
    stopWatch = undefined;
    let lastVersion = '';
    const watchButton = (): HTMLElement => h('button', { id: 'state-watch', onclick: () => show(key, !watch) }, watch ? 'Stop watching' : 'Watch');
    const paint = (v: KeyValue): void => {
      if (v.absent || !v.value) {
        clear(detail, h('h3', { class: 'mono', id: 'state-key' }, key), h('p', { class: 'muted', id: 'state-absent' }, `no key ${JSON.stringify(key)}`), h('div', { class: 'row' }, watchButton()));
        return;
      }
      const shown = showPayload(fromBase64(v.value.base64));
      const changed = lastVersion !== '' && lastVersion !== v.version;
      lastVersion = v.version ?? '';
      clear(
        detail,
        h('h3', { class: 'mono', id: 'state-key' }, key),
        h('div', { class: 'facts' }, h('span', { class: changed ? 'flash' : '' }, `version ${v.version}`), h('span', {}, `${v.bytes} bytes`), h('span', {}, v.expiresAt ? `expires ${new Date(v.expiresAt).toLocaleString()}` : 'no expiry'), watch ? h('span', { id: 'state-watching' }, 'watching') : null),
        h('pre', { class: `payload ${shown.kind}`, id: 'state-value' }, shown.text),
        h('div', { class: 'row' }, watchButton(), isAdmin ? h('button', { class: 'danger', id: 'state-delete', onclick: () => void del(key) }, 'Delete') : null),
      );
    };
    if (watch) {
      // pushed by the broker on each change (server-sent events); the browser reconnects by itself
      const events = new EventSource(`/api/state/watch?key=${encodeURIComponent(key)}`);
      events.addEventListener('value', (e) => paint(JSON.parse((e as MessageEvent<string>).data) as KeyValue));
      stopWatch = () => events.close();
      return;
    }
    get<KeyValue>(`/api/state/key?key=${encodeURIComponent(key)}`).then(paint, (err: Error) => {
      clear(detail, h('h3', { class: 'mono' }, key), h('p', { class: 'muted' }, err.message));
    });
  };

  const del = async (key: string): Promise<void> => {
    try {
      await call('DELETE', `/api/state/key?key=${encodeURIComponent(key)}`);
      clear(note, h('span', { class: 'ok' }, `deleted ${key}`));
      await load();
      show(key);
    } catch (err) {
      clear(note, h('span', { class: 'error' }, (err as Error).message));
    }
  };

  const setKey = h('input', { id: 'state-set-key', placeholder: 'key', 'aria-label': 'key' });
  const setValue = h('textarea', { id: 'state-set-value', rows: 3, placeholder: 'value', 'aria-label': 'value' });
  const setTtl = h('input', { id: 'state-set-ttl', type: 'number', min: 0, placeholder: 'expiry in seconds (empty: none)', 'aria-label': 'expiry in seconds' });
  const setForm = isAdmin
    ? h(
        'form',
        {
          class: 'card',
          id: 'state-set-form',
          onsubmit: async (ev: Event) => {
            ev.preventDefault();
            try {
              const ttlMs = setTtl.value === '' ? 0 : Math.round(Number(setTtl.value) * 1000);
              const r = await call<{ version: string }>('PUT', `/api/state/key?key=${encodeURIComponent(setKey.value)}`, { value: setValue.value, ttlMs });
              clear(note, h('span', { class: 'ok', id: 'state-set-ok' }, `set ${setKey.value} (version ${r.body.version})`));
              await load();
              show(setKey.value);
            } catch (err) {
              clear(note, h('span', { class: 'error' }, (err as Error).message));
            }
          },
        },
        h('h3', {}, 'Set a key'),
        setKey,
        setValue,
        h('div', { class: 'row' }, setTtl, h('button', { type: 'submit', class: 'primary' }, 'Set')),
      )
    : null;

  let t: number | undefined;
  prefix.addEventListener('input', () => {
    window.clearTimeout(t);
    t = window.setTimeout(() => {
      pages = [undefined];
      void load();
    }, 250);
  });
  clear(root, h('div', { class: 'split' }, h('section', { class: 'card' }, h('h2', {}, 'State store'), prefix, list), h('section', {}, detail, setForm, note)));
  void load().catch((err: Error) => clear(list, h('p', { class: 'error' }, err.message)));
  return () => stopWatch?.();
}
