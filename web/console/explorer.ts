/**
 * Topic explorer: the tree by branch (topics, messages and rate under each), the last
 * message of the selected topic, search by filter, and a publish form for operators.
 * Only the open branches and the selected topic are asked for, every 2 s / 1 s.
 */
import { call, get, type Session } from './api.js';
import { clear, every, fmtCount, fmtRate, fromBase64, h, showPayload } from './dom.js';

interface Row {
  name: string;
  path: string;
  topics: number;
  messages: number;
  rate: number;
  isTopic: boolean;
  hasChildren: boolean;
  retained: boolean;
}

export function explorerPage(root: HTMLElement, session: Session): () => void {
  const open = new Set<string>(['']);
  const rows = new Map<string, { rows: Row[]; more: number }>();
  let selected: string | undefined;
  let forceHex = false;
  let total = 0;

  const treeEl = h('div', { class: 'tree', id: 'topic-tree' });
  const summary = h('div', { class: 'muted', id: 'topic-summary' });
  const detail = h('div', { class: 'detail', id: 'topic-detail' }, h('p', { class: 'muted' }, 'Pick a topic to see its last message.'));
  const searchBox = h('input', { type: 'search', placeholder: 'search: a/+/temp, a/#, or text', id: 'topic-search', 'aria-label': 'search topics' });
  const results = h('div', { class: 'results', id: 'search-results' });

  const canPublish = session.role !== 'viewer';
  const pubTopic = h('input', { id: 'pub-topic', placeholder: 'topic', 'aria-label': 'topic' });
  const pubPayload = h('textarea', { id: 'pub-payload', rows: 3, placeholder: 'payload', 'aria-label': 'payload' });
  const pubQos = h('select', { id: 'pub-qos', 'aria-label': 'QoS' }, h('option', { value: '0' }, 'QoS 0'), h('option', { value: '1' }, 'QoS 1'), h('option', { value: '2' }, 'QoS 2'));
  const pubRetain = h('input', { type: 'checkbox', id: 'pub-retain' });
  const pubNote = h('span', { class: 'muted', id: 'pub-note' });
  const publishForm = canPublish
    ? h(
        'form',
        {
          class: 'card',
          id: 'publish-form',
          onsubmit: async (ev: Event) => {
            ev.preventDefault();
            try {
              await call('POST', '/api/publish', { topic: pubTopic.value, payload: pubPayload.value, qos: Number(pubQos.value), retain: pubRetain.checked });
              pubNote.textContent = `published to ${pubTopic.value}`;
              pubNote.className = 'ok';
            } catch (err) {
              pubNote.textContent = (err as Error).message;
              pubNote.className = 'error';
            }
          },
        },
        h('h3', {}, 'Publish'),
        pubTopic,
        pubPayload,
        h('div', { class: 'row' }, pubQos, h('label', {}, pubRetain, ' retain'), h('button', { type: 'submit' }, 'Publish'), pubNote),
      )
    : null;

  const renderBranch = (prefix: string, depth: number): HTMLElement[] => {
    const level = rows.get(prefix);
    if (!level) return [];
    const out: HTMLElement[] = [];
    for (const r of level.rows) {
      const isOpen = open.has(r.path);
      const caret = r.hasChildren
        ? h('button', { class: 'caret', 'aria-label': `${isOpen ? 'close' : 'open'} ${r.path}`, 'aria-expanded': String(isOpen), onclick: () => toggle(r.path) }, isOpen ? '▾' : '▸')
        : h('span', { class: 'caret' });
      const name = h(
        'span',
        { class: `name${r.isTopic ? ' topic' : ''}${selected === r.path ? ' selected' : ''}`, 'data-topic': r.path, onclick: () => (r.isTopic ? select(r.path) : toggle(r.path)) },
        r.name === '' ? '(empty)' : r.name,
      );
      out.push(
        h(
          'div',
          { class: 'node', style: `padding-left:${depth * 14}px` },
          caret,
          name,
          r.retained ? h('span', { class: 'badge' }, 'retained') : null,
          h('span', { class: 'counts' }, r.hasChildren ? `${fmtCount(r.topics)} topics · ` : '', `${fmtCount(r.messages)} msgs `, h('b', {}, fmtRate(r.rate))),
        ),
      );
      if (isOpen) out.push(...renderBranch(r.path, depth + 1));
    }
    if (level.more > 0) out.push(h('div', { class: 'muted', style: `padding-left:${depth * 14}px` }, `… ${level.more} more: use search`));
    return out;
  };

  const render = (): void => {
    clear(treeEl, ...renderBranch('', 0));
    summary.textContent = `${total} topics`;
  };

  const load = async (prefix: string): Promise<void> => {
    const r = await get<{ rows: Row[]; more: number; totalTopics: number }>(`/api/topics?prefix=${encodeURIComponent(prefix)}`);
    rows.set(prefix, { rows: r.rows, more: r.more });
    total = r.totalTopics;
  };

  const refreshTree = async (): Promise<void> => {
    await Promise.all([...open].map((p) => load(p).catch(() => open.delete(p))));
    render();
  };

  const toggle = (path: string): void => {
    if (open.has(path)) open.delete(path);
    else open.add(path);
    void refreshTree();
  };

  let stopDetail: (() => void) | undefined;
  const select = (topic: string): void => {
    selected = topic;
    if (canPublish && pubTopic.value === '') pubTopic.value = topic;
    stopDetail?.();
    stopDetail = every(1000, async () => {
      try {
        const m = await get<{ topic: string; messages: number; rate: number; at: number; qos: number; retain: boolean; bytes: number; payload: string; truncated: boolean }>(
          `/api/topics/message?topic=${encodeURIComponent(topic)}`,
        );
        const shown = showPayload(fromBase64(m.payload), forceHex);
        clear(
          detail,
          h('h3', { class: 'mono', id: 'detail-topic' }, m.topic),
          h(
            'div',
            { class: 'facts' },
            h('span', {}, `QoS ${m.qos}`),
            m.retain ? h('span', { class: 'badge' }, 'retained') : h('span', { class: 'muted' }, 'not retained'),
            h('span', {}, `${m.bytes} bytes${m.truncated ? ' (first 64 KiB shown)' : ''}`),
            h('span', {}, `${fmtCount(m.messages)} msgs ${fmtRate(m.rate)}`),
            h('span', { class: 'muted' }, new Date(m.at).toLocaleTimeString()),
          ),
          h('div', { class: 'row' }, h('span', { class: 'muted' }, `shown as ${shown.kind === 'json' ? 'JSON' : shown.kind}`), h('label', {}, h('input', { type: 'checkbox', id: 'hex-toggle', checked: forceHex, onchange: (e: Event) => ((forceHex = (e.target as HTMLInputElement).checked), select(topic)) }), ' always hex')),
          h('pre', { class: `payload ${shown.kind}`, id: 'detail-payload' }, shown.text),
        );
      } catch (err) {
        clear(detail, h('p', { class: 'error' }, (err as Error).message));
      }
    });
    render();
  };

  let searchTimer: number | undefined;
  searchBox.addEventListener('input', () => {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(async () => {
      const q = searchBox.value.trim();
      if (q === '') return clear(results);
      try {
        const r = await get<{ topics: { topic: string; messages: number; rate: number }[]; more: boolean }>(`/api/topics/search?q=${encodeURIComponent(q)}`);
        clear(
          results,
          r.topics.length === 0 ? h('div', { class: 'muted' }, 'no topic matches') : null,
          r.topics.map((t) => h('div', { class: 'node' }, h('span', { class: 'name topic', 'data-topic': t.topic, onclick: () => select(t.topic) }, t.topic), h('span', { class: 'counts' }, `${fmtCount(t.messages)} msgs `, h('b', {}, fmtRate(t.rate))))),
          r.more ? h('div', { class: 'muted' }, 'more: narrow the search') : null,
        );
      } catch (err) {
        clear(results, h('div', { class: 'error' }, (err as Error).message));
      }
    }, 250);
  });

  clear(
    root,
    h(
      'div',
      { class: 'split' },
      h('section', { class: 'card' }, h('div', { class: 'row' }, h('h2', {}, 'Topics'), summary), searchBox, results, treeEl),
      h('section', {}, h('div', { class: 'card' }, detail), publishForm),
    ),
  );
  const stopTree = every(2000, refreshTree);
  return () => {
    stopTree();
    stopDetail?.();
  };
}
