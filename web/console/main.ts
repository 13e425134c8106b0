/**
 * The console: served by the broker at / on the HTTP port, bundled at `npm run build`
 * (esbuild, no UI library, nothing from a CDN). Hash routes: #/topics, #/rules, #/state,
 * #/clients, #/bridges, #/cluster.
 */
import { ApiError, call, get, setCsrf, type Session } from './api.js';
import { clear, h } from './dom.js';
import { explorerPage } from './explorer.js';
import { rulesPage } from './rules.js';
import { statePage } from './state.js';
import { clientsPage, notConfiguredPage } from './clients.js';
import { bridgesPage } from './bridges.js';
import { clusterPage } from './cluster.js';

const PAGES: [string, string][] = [
  ['topics', 'Topics'],
  ['rules', 'Rules'],
  ['state', 'State'],
  ['clients', 'Clients'],
  ['bridges', 'Bridges'],
  ['cluster', 'Cluster'],
];

const app = document.getElementById('app')!;
let stopPage: (() => void) | undefined;
let session: Session | undefined;

function loginView(message?: string): void {
  stopPage?.();
  stopPage = undefined;
  const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', placeholder: 'user', 'aria-label': 'user', required: true });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', placeholder: 'password', 'aria-label': 'password', required: true });
  const note = h('p', { class: 'error', id: 'login-error' }, message ?? '');
  clear(
    app,
    h(
      'form',
      {
        class: 'card login',
        id: 'login-form',
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          try {
            const r = await call<Session>('POST', '/api/login', { user: user.value, password: password.value });
            setCsrf(r.body.csrf);
            await start();
          } catch (err) {
            note.textContent = (err as Error).message;
          }
        },
      },
      h('h1', {}, 'Edge Data Broker'),
      user,
      password,
      h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, 'Log in'),
      note,
    ),
  );
  user.focus();
}

function shell(s: Session): HTMLElement {
  const page = (location.hash.replace(/^#\/?/, '') || 'topics').split('?')[0]!;
  const nav = h(
    'nav',
    {},
    PAGES.map(([id, label]) => h('a', { href: `#/${id}`, class: id === page ? 'active' : '', id: `nav-${id}` }, label)),
    h('a', { href: '/status' }, 'Status'),
  );
  const who = h(
    'span',
    { class: 'who', id: 'who' },
    `${s.user} (${s.role})`,
    s.via === 'session'
      ? h(
          'button',
          {
            id: 'logout',
            onclick: async () => {
              await call('POST', '/api/logout').catch(() => undefined);
              setCsrf(null);
              loginView();
            },
          },
          'Log out',
        )
      : null,
  );
  const main = h('main', { id: 'page' });
  clear(app, h('header', {}, h('strong', {}, 'EDB'), nav, who), main);
  return main;
}

function route(): void {
  if (!session) return;
  stopPage?.();
  const main = shell(session);
  const page = (location.hash.replace(/^#\/?/, '') || 'topics').split('?')[0];
  switch (page) {
    case 'rules':
      stopPage = rulesPage(main, session);
      break;
    case 'state':
      stopPage = statePage(main, session);
      break;
    case 'clients':
      stopPage = clientsPage(main, session);
      break;
    case 'bridges':
      stopPage = bridgesPage(main, session);
      break;
    case 'cluster':
      stopPage = clusterPage(main);
      break;
    default:
      stopPage = explorerPage(main, session);
  }
}

async function start(): Promise<void> {
  try {
    session = await get<Session>('/api/session');
    setCsrf(session.csrf);
    route();
  } catch (err) {
    session = undefined;
    if (err instanceof ApiError && err.status === 401) {
      if (err.body?.login) loginView();
      else clear(app, h('section', { class: 'card login', id: 'no-access' }, h('h1', {}, 'Edge Data Broker'), h('p', {}, err.message)));
    } else clear(app, h('p', { class: 'error' }, (err as Error).message));
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('edb-logged-out', () => {
  if (session?.login) {
    session = undefined;
    loginView('your session ended: log in again');
  }
});
void start();
