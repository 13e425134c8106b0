/**
 * Rules editor: the active document, errors shown at the reported position, a dry run
 * (POST /rules/test, where the broker has it), a diff against the active document,
 * activation with If-Match, and the engine's live counts.
 */
import { ApiError, call, get, type Session } from './api.js';
import { clear, every, h } from './dom.js';

/** Offsets of the JSON value at `path` ("rules/0/statements/1/condition") in `text`, if it parses that far. */
export function locate(text: string, path: string): { start: number; end: number } | undefined {
  const want = path === '' ? [] : path.split('/');
  let i = 0;
  const ws = (): void => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  const str = (): string => {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  // returns the span of the value at want[depth...] inside the value starting at i
  const value = (depth: number): { start: number; end: number } | undefined => {
    ws();
    const start = i;
    const c = text[i];
    if (c === '{' || c === '[') {
      i++;
      let index = 0;
      let found: { start: number; end: number } | undefined;
      for (;;) {
        ws();
        if (text[i] === '}' || text[i] === ']') {
          i++;
          break;
        }
        let key = String(index++);
        if (c === '{') {
          key = str();
          ws();
          i++; // :
        }
        const hit = depth < want.length && key === want[depth];
        const r = value(hit ? depth + 1 : Number.POSITIVE_INFINITY);
        if (hit) found = r;
        ws();
        if (text[i] === ',') i++;
        if (i >= text.length) return found;
      }
      return depth === want.length ? { start, end: i } : found;
    }
    if (c === '"') str();
    else while (i < text.length && !/[\s,\]}]/.test(text[i]!)) i++;
    return depth === want.length ? { start, end: i } : undefined;
  };
  try {
    return value(0);
  } catch {
    return undefined;
  }
}

function lineCol(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset).split('\n');
  return { line: before.length, col: before[before.length - 1]!.length + 1 };
}

/** Line diff (LCS), for documents up to a few thousand lines. */
export function diffLines(a: string[], b: string[]): { op: ' ' | '-' | '+'; line: string }[] {
  const n = a.length;
  const m = b.length;
  if (n * m > 4_000_000) return [{ op: ' ', line: '(too large to diff here)' }];
  const dp: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) dp[i]![j] = a[i] === b[j] ? dp[i + 1]![j + 1]! + 1 : Math.max(dp[i + 1]![j]!, dp[i]![j + 1]!);
  const out: { op: ' ' | '-' | '+'; line: string }[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({ op: ' ', line: a[i]! });
      i++;
      j++;
    } else if (dp[i + 1]![j]! >= dp[i]![j + 1]!) out.push({ op: '-', line: a[i++]! });
    else out.push({ op: '+', line: b[j++]! });
  }
  while (i < n) out.push({ op: '-', line: a[i++]! });
  while (j < m) out.push({ op: '+', line: b[j++]! });
  return out;
}

export function rulesPage(root: HTMLElement, session: Session): () => void {
  const canEdit = session.role !== 'viewer';
  let active = '';
  let etag = '';
  const editor = h('textarea', { id: 'rules-editor', class: 'code', spellcheck: 'false', rows: 22, 'aria-label': 'rules document', ...(canEdit ? {} : { readonly: true }) });
  const marker = h('div', { class: 'err-marker', id: 'rules-error-marker', hidden: true });
  const wrap = h('div', { class: 'editor-wrap' }, editor, marker);
  const status = h('div', { id: 'rules-status', class: 'muted' });
  const output = h('div', { id: 'rules-output' });
  const meta = h('div', { class: 'muted', id: 'rules-meta' });
  const counts = h('div', { class: 'facts', id: 'rules-counts' });
  const samples = h('textarea', { id: 'rules-samples', class: 'code', rows: 4, placeholder: '[{"topic": "house/1", "payload": {"inside": {"temperature": 50}}}]', 'aria-label': 'messages for the dry run' });

  const showError = (err: ApiError): void => {
    const e = err.body?.error ?? {};
    const text = editor.value;
    // a dry run reports paths inside its "document"
    const inDocument = typeof e.path === 'string' && !/^(messages|state)(\/|$)/.test(e.path);
    const at = inDocument ? locate(text, (e.path as string).replace(/^document(\/|$)/, '')) : undefined;
    let offset = at?.start;
    if (at && typeof e.position === 'number' && text[at.start] === '"') offset = at.start + 1 + e.position;
    let where = '';
    if (offset !== undefined) {
      const { line, col } = lineCol(text, offset);
      where = `line ${line}, column ${col}: `;
      editor.focus();
      editor.setSelectionRange(offset, Math.max(offset + 1, at && typeof e.position !== 'number' ? at.end : offset + 1));
      const lh = parseFloat(getComputedStyle(editor).lineHeight) || 18;
      editor.scrollTop = Math.max(0, (line - 3) * lh);
      marker.hidden = false;
      marker.style.top = `${(line - 1) * lh - editor.scrollTop + lh + 6}px`;
      marker.style.left = `${Math.min(col, 60)}ch`;
    } else marker.hidden = true;
    marker.textContent = `${where}${e.problem ?? err.message}`;
    clear(status, h('span', { class: 'error', id: 'rules-error' }, `${err.status} ${e.code ?? ''} ${e.path ? `${e.path}: ` : ''}${where}${e.problem ?? err.message}`));
  };
  editor.addEventListener('scroll', () => (marker.hidden = true));
  // edits made while the page's first load is still on its way are kept (not overwritten by it)
  let editedBeforeLoad = false;
  let firstLoad = true;
  editor.addEventListener('input', () => {
    marker.hidden = true;
    if (firstLoad) editedBeforeLoad = true;
  });

  const load = async (): Promise<void> => {
    const a = await call<unknown>('GET', '/rules');
    active = JSON.stringify(a.body, null, 2);
    etag = a.headers.get('etag') ?? '';
    if (!(firstLoad && editedBeforeLoad)) editor.value = active;
    firstLoad = false;
    const by = a.headers.get('x-edb-uploaded-by');
    meta.textContent = `active ${etag}${by ? `, uploaded by ${decodeURIComponent(by)} at ${a.headers.get('x-edb-uploaded-at') ?? '?'}` : ''}`;
  };

  const activate = async (): Promise<void> => {
    await loaded; // the ETag of the document the edits are made on
    marker.hidden = true;
    status.textContent = 'compiling…';
    try {
      const r = await call<{ etag: string; filters: number; rules: number; statements: number; compileMillis: number }>('POST', '/rules', editor.value, { 'if-match': etag });
      clear(status, h('span', { class: 'ok', id: 'rules-ok' }, `active: ${r.body.filters} filters, ${r.body.rules} rules, ${r.body.statements} statements (compiled in ${r.body.compileMillis} ms)`));
      await load();
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) clear(status, h('span', { class: 'error', id: 'rules-error' }, 'someone changed the active document since you loaded it: Reload, then apply your change again'));
      else if (err instanceof ApiError) showError(err);
      else status.textContent = (err as Error).message;
    }
  };

  const dryRun = async (): Promise<void> => {
    marker.hidden = true;
    let messages: unknown;
    try {
      messages = JSON.parse(samples.value || '[]');
    } catch {
      clear(status, h('span', { class: 'error' }, 'the messages are not JSON: a list of {"topic", "payload"}'));
      return;
    }
    status.textContent = 'running…';
    try {
      let doc: unknown;
      try {
        doc = JSON.parse(editor.value);
      } catch {
        doc = editor.value;
      }
      const r = await call<any>('POST', '/rules/test', { document: doc, messages });
      const outs: { after: number; topic?: string; payload?: string; set_state?: { key: string; value: string; px?: number } }[] = r.body.outputs ?? [];
      clear(
        output,
        h('h3', {}, 'Dry run'),
        outs.length === 0 ? h('p', { class: 'muted', id: 'dry-run-none' }, 'no output') : null,
        h(
          'table',
          { id: 'dry-run-outputs' },
          h('tr', {}, h('th', {}, 'message (index)'), h('th', {}, 'publishes / writes'), h('th', {}, 'payload / value')),
          outs.map((o) =>
            o.set_state
              ? h('tr', {}, h('td', {}, String(o.after)), h('td', { class: 'mono' }, `set_state ${o.set_state.key}${o.set_state.px ? ` (expires in ${o.set_state.px} ms)` : ''}`), h('td', { class: 'mono' }, o.set_state.value))
              : h('tr', {}, h('td', {}, String(o.after)), h('td', { class: 'mono' }, o.topic ?? ''), h('td', { class: 'mono' }, o.payload ?? '')),
          ),
        ),
      );
      status.textContent = '';
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) clear(status, h('span', { class: 'muted' }, 'this broker has no dry-run endpoint (POST /rules/test)'));
      else if (err instanceof ApiError) showError(err);
      else status.textContent = (err as Error).message;
    }
  };

  const diff = (): void => {
    let mine = editor.value;
    try {
      mine = JSON.stringify(JSON.parse(mine), null, 2);
    } catch {
      // diff the text as typed
    }
    const d = diffLines(active.split('\n'), mine.split('\n'));
    const changed = d.some((x) => x.op !== ' ');
    clear(output, h('h3', {}, 'Diff against the active document'), changed ? h('pre', { class: 'diff', id: 'rules-diff' }, d.map((x) => h('div', { class: x.op === '+' ? 'add' : x.op === '-' ? 'del' : '' }, `${x.op} ${x.line}`))) : h('p', { class: 'muted', id: 'rules-diff' }, 'no change'));
  };

  clear(
    root,
    h(
      'section',
      { class: 'card' },
      h('div', { class: 'row' }, h('h2', {}, 'Rules'), meta),
      wrap,
      h(
        'div',
        { class: 'row' },
        h('button', { onclick: () => void load(), id: 'rules-reload' }, 'Reload'),
        h('button', { onclick: diff, id: 'rules-diff-button' }, 'Diff'),
        canEdit ? h('button', { onclick: () => void dryRun(), id: 'rules-dry-run' }, 'Dry run') : null,
        canEdit ? h('button', { class: 'primary', onclick: () => void activate(), id: 'rules-activate' }, 'Activate') : null,
      ),
      status,
      canEdit ? h('details', {}, h('summary', {}, 'Messages for the dry run'), samples) : null,
      output,
    ),
    h('section', { class: 'card' }, h('h3', {}, 'Live counts'), counts),
  );
  const loaded = load().catch((err: Error) => {
    firstLoad = false;
    status.textContent = err.message;
  });
  const parts = h('div', { id: 'rules-parts' });
  counts.after(parts);
  const stop = every(2000, async () => {
    const [s, p] = await Promise.all([
      get<{ sections: { rules?: Record<string, number> } }>('/api/status'),
      get<{ part: string; topic: string; evaluations: number; fires: number; conditionErrors: number; seconds?: { counts: number[]; sum: number } }[]>('/api/rules/parts').catch(() => []),
    ]);
    const r = s.sections.rules ?? {};
    clear(counts, Object.entries(r).map(([k, v]) => h('span', { 'data-count': k }, h('b', {}, String(v)), ` ${k}`)));
    clear(
      parts,
      p.length === 0
        ? null
        : h(
            'table',
            {},
            h('tr', {}, ['part', 'topic', 'evaluations', 'fires', 'condition errors', 'time per message', 'time in all'].map((x) => h('th', {}, x))),
            p.map((x) =>
              h(
                'tr',
                { 'data-part': x.part },
                h('td', { class: 'mono' }, x.part),
                h('td', { class: 'mono' }, x.topic),
                h('td', {}, String(x.evaluations)),
                h('td', { class: 'fires' }, String(x.fires)),
                h('td', {}, String(x.conditionErrors)),
                ...timeCells(x.seconds),
              ),
            ),
          ),
    );
  });
  return stop;
}

/** Mean time per message a filter or rule ran on, and the total (estimated from sampled messages: docs/rules.md#metrics). */
function timeCells(seconds: { counts: number[]; sum: number } | undefined): HTMLElement[] {
  const n = seconds ? seconds.counts.reduce((a, b) => a + b, 0) : 0;
  if (!seconds || n === 0) return [h('td', { class: 'time' }, '-'), h('td', {}, '-')];
  const mean = (seconds.sum / n) * 1e6;
  const total = seconds.sum * 1000;
  return [h('td', { class: 'time' }, `${mean < 10 ? mean.toFixed(2) : Math.round(mean)} µs`), h('td', {}, `${total < 10 ? total.toFixed(2) : Math.round(total)} ms`)];
}
