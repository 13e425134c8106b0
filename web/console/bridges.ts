/**
 * Bridges (GET /api/bridges, refreshed every 3 s): one row per bridge as `edb bridge show`
 * prints it. Operators and admins may add one, edit one (PUT: its backlog stays) and remove
 * one (DELETE); viewers see the table only.
 */
import { call, get, type Session } from './api.js';
import { clear, every, h } from './dom.js';

interface BridgeRow {
  name: string;
  endpoint: string;
  state: string;
  source: string;
  topics: string[];
  bufferSize: number;
  bufferMax: number;
  bufferDropped: number;
  backlogBytes: number;
  oldestMs: number;
  sentPerSecond: number;
  receivedPerSecond: number;
  lastError?: string;
  settings: Record<string, unknown>;
}

function age(ms: number): string {
  if (!ms) return '—';
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function bridgesPage(root: HTMLElement, session: Session): () => void {
  const mayChange = session.role === 'operator' || session.role === 'admin';
  const table = h('div', { id: 'bridges-table' });
  const note = h('div', { id: 'bridge-note' });
  const name = h('input', { id: 'bridge-name', placeholder: 'name (br0)', 'aria-label': 'bridge name' });
  const url = h('input', { id: 'bridge-url', placeholder: 'mqtt://host:1883 or mqtts://host:8883', 'aria-label': 'endpoint' });
  const topics = h('textarea', { id: 'bridge-topics', rows: 3, placeholder: 'one topic line each: pattern [in|out|both [qos [local-prefix [remote-prefix]]]]', 'aria-label': 'topic lines' });
  const version = h('select', { id: 'bridge-version', 'aria-label': 'MQTT version' }, h('option', { value: '5' }, 'MQTT 5'), h('option', { value: '3.1.1' }, 'MQTT 3.1.1'));
  const username = h('input', { id: 'bridge-username', placeholder: 'user name on the remote (optional)', 'aria-label': 'user name' });
  const password = h('input', { id: 'bridge-password', type: 'password', placeholder: 'password (empty: keep / none)', 'aria-label': 'password' });
  let editing: BridgeRow | undefined;
  const title = h('h2', {}, 'Add a bridge');
  const submit = h('button', { id: 'bridge-submit', type: 'submit' }, 'Add');
  const cancel = h('button', { type: 'button', onclick: () => reset() }, 'Cancel');

  const reset = (): void => {
    editing = undefined;
    name.disabled = false;
    for (const f of [name, url, topics, username, password]) f.value = '';
    version.value = '5';
    title.textContent = 'Add a bridge';
    submit.textContent = 'Add';
  };
  const edit = (b: BridgeRow): void => {
    editing = b;
    name.value = b.name;
    name.disabled = true;
    url.value = b.endpoint;
    topics.value = b.topics.join('\n');
    version.value = String(b.settings['protocolVersion'] ?? '5');
    username.value = String(b.settings['username'] ?? '');
    password.value = '';
    title.textContent = `Edit bridge ${b.name}`;
    submit.textContent = 'Save';
  };

  const form = h(
    'form',
    {
      id: 'bridge-form',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        // an edit keeps the settings this form does not show (TLS, bounds, back-off)
        const body: Record<string, unknown> = { ...(editing?.settings ?? {}), url: url.value.trim(), topics: topics.value.split('\n').map((l) => l.trim()).filter(Boolean), protocolVersion: version.value };
        delete body['passwordSet'];
        if (username.value.trim()) body['username'] = username.value.trim();
        else delete body['username'];
        if (password.value) body['password'] = password.value;
        try {
          if (editing) await call('PUT', `/api/bridges/${encodeURIComponent(editing.name)}`, body);
          else await call('POST', '/api/bridges', { name: name.value.trim(), ...body });
          clear(note, h('span', { class: 'ok' }, editing ? `saved ${editing.name}` : `added ${name.value.trim()}`));
          reset();
          await refresh();
        } catch (err) {
          clear(note, h('span', { class: 'error' }, (err as Error).message));
        }
      },
    },
    h('label', {}, 'name ', name),
    h('label', {}, 'endpoint ', url),
    h('label', {}, 'topics ', topics),
    h('label', {}, 'version ', version),
    h('label', {}, 'user ', username),
    h('label', {}, 'password ', password),
    submit,
    cancel,
  );

  const refresh = async (): Promise<void> => {
    const rows = await get<BridgeRow[]>('/api/bridges');
    clear(
      table,
      h(
        'table',
        {},
        h('tr', {}, ['name', 'endpoint', 'state', 'buffer size', 'buffer max', 'buffer dropped msgs', 'backlog bytes', 'oldest', 'sent/s', 'received/s', 'topics', ''].map((x) => h('th', {}, x))),
        rows.map((b) =>
          h(
            'tr',
            {},
            h('td', { class: 'mono' }, b.name),
            h('td', { class: 'mono' }, b.endpoint),
            h('td', { class: b.state === 'connected' ? 'ok' : 'error', title: b.lastError ?? '' }, b.state),
            h('td', {}, String(b.bufferSize)),
            h('td', {}, String(b.bufferMax)),
            h('td', {}, String(b.bufferDropped)),
            h('td', {}, String(b.backlogBytes)),
            h('td', {}, age(b.oldestMs)),
            h('td', {}, String(b.sentPerSecond)),
            h('td', {}, String(b.receivedPerSecond)),
            h('td', { class: 'mono' }, b.topics.join(', ')),
            h(
              'td',
              {},
              mayChange ? h('button', { onclick: () => edit(b) }, 'Edit') : null,
              mayChange
                ? h(
                    'button',
                    {
                      class: 'danger',
                      onclick: async () => {
                        if (!confirm(`Remove bridge ${b.name}? Its backlog is dropped.`)) return;
                        try {
                          await call('DELETE', `/api/bridges/${encodeURIComponent(b.name)}`);
                          clear(note, h('span', { class: 'ok' }, `removed ${b.name}`));
                          await refresh();
                        } catch (err) {
                          clear(note, h('span', { class: 'error' }, (err as Error).message));
                        }
                      },
                    },
                    'Remove',
                  )
                : null,
            ),
          ),
        ),
      ),
      rows.length === 0 ? h('p', { class: 'muted', id: 'no-bridges' }, 'No bridges. Configure them with EDB_BRIDGE_<NAME>=host:port, the config file\'s bridges: section, or here.') : null,
    );
  };

  clear(root, h('section', { class: 'card' }, h('h2', {}, 'Bridges'), note, table), mayChange ? h('section', { class: 'card' }, title, form) : null);
  return every(3000, refresh);
}
