/** Clients and sessions (from /api/clients and /api/subscriptions); admins may disconnect one. */
import { call, get, type Session } from './api.js';
import { clear, every, h } from './dom.js';

interface ClientRow {
  clientId: string;
  username?: string;
  protocolVersion: number;
  transport: string;
  remoteAddress: string;
  connectedAt: number;
  subscriptions: number;
  queued: number;
  inflight: number;
}
interface SubRow {
  clientId: string;
  filter: string;
  qos: number;
  online: boolean;
}

export function clientsPage(root: HTMLElement, session: Session): () => void {
  const isAdmin = session.role === 'admin';
  const clientsEl = h('div', { id: 'clients-table' });
  const subsEl = h('div', { id: 'subscriptions-table' });
  const note = h('div');
  clear(root, h('section', { class: 'card' }, h('h2', {}, 'Clients'), note, clientsEl), h('section', { class: 'card' }, h('h2', {}, 'Sessions and subscriptions'), subsEl));
  return every(3000, async () => {
    const [clients, subs] = await Promise.all([get<ClientRow[]>('/api/clients'), get<SubRow[]>('/api/subscriptions')]);
    clear(
      clientsEl,
      h(
        'table',
        {},
        h('tr', {}, ['client id', 'user', 'MQTT', 'transport', 'address', 'since', 'subs', 'queued', 'inflight', ''].map((x) => h('th', {}, x))),
        clients.map((c) =>
          h(
            'tr',
            {},
            h('td', { class: 'mono' }, c.clientId),
            h('td', {}, c.username ?? '—'),
            h('td', {}, c.protocolVersion === 5 ? '5.0' : '3.1.1'),
            h('td', {}, c.transport),
            h('td', { class: 'mono' }, c.remoteAddress),
            h('td', {}, new Date(c.connectedAt).toLocaleTimeString()),
            h('td', {}, String(c.subscriptions)),
            h('td', {}, String(c.queued)),
            h('td', {}, String(c.inflight)),
            h(
              'td',
              {},
              isAdmin
                ? h(
                    'button',
                    {
                      class: 'danger',
                      onclick: async () => {
                        try {
                          await call('DELETE', `/api/clients?clientId=${encodeURIComponent(c.clientId)}`);
                          clear(note, h('span', { class: 'ok' }, `disconnected ${c.clientId}`));
                        } catch (err) {
                          clear(note, h('span', { class: 'error' }, (err as Error).message));
                        }
                      },
                    },
                    'Disconnect',
                  )
                : null,
            ),
          ),
        ),
      ),
      clients.length === 0 ? h('p', { class: 'muted' }, 'no client connected') : null,
    );
    clear(
      subsEl,
      h('table', {}, h('tr', {}, ['client id', 'filter', 'QoS', 'online'].map((x) => h('th', {}, x))), subs.slice(0, 500).map((s) => h('tr', {}, h('td', { class: 'mono' }, s.clientId), h('td', { class: 'mono' }, s.filter), h('td', {}, String(s.qos)), h('td', {}, s.online ? 'yes' : 'no')))),
      subs.length > 500 ? h('p', { class: 'muted' }, `${subs.length - 500} more`) : null,
    );
  });
}

/** Bridges and cluster: this broker has no API for them yet. */
export function notConfiguredPage(root: HTMLElement, what: string, detail: string): () => void {
  clear(root, h('section', { class: 'card', id: 'not-configured' }, h('h2', {}, what), h('p', {}, 'Not configured.'), h('p', { class: 'muted' }, detail)));
  return () => undefined;
}
