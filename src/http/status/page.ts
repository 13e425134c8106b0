/**
 * The status page (/status) and the MQTT-over-WebSocket console (/status/try), as plain
 * HTML/CSS/JS served from memory. No framework, no CDN: edge sites are often offline, so
 * the only script besides these is MQTT.js's browser bundle, served by the broker itself.
 * Everything a client sends (ids, topics) is put into the page with textContent, never as HTML.
 */

const STYLE = `
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#fff;--card:#f8f9fb;--in:#2563eb;--out:#16a34a;--bad:#dc2626}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8ee;--muted:#98a2b3;--line:#2c3340;--bg:#12161d;--card:#1a1f28}}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:baseline;padding:.8rem 1rem;border-bottom:1px solid var(--line)}
header h1{font-size:1.15rem;margin:0}header .muted{font-size:.9rem}
main{max-width:1100px;margin:0 auto;padding:1rem}
h2{font-size:1rem;margin:1.4rem 0 .5rem}h3{font-size:.9rem;margin:.8rem 0 .3rem;color:var(--muted)}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:.6rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.6rem .8rem}
.card b{display:block;font-size:1.35rem;font-variant-numeric:tabular-nums}
.card span{font-size:.8rem;color:var(--muted)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
#sections td{overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-weight:600;color:var(--muted)}table.kv td{white-space:normal;overflow-wrap:anywhere}table.kv th{width:1%}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:var(--out)}.down{color:var(--bad)}
svg{width:100%;height:160px;display:block;background:var(--card);border:1px solid var(--line);border-radius:8px}
.legend{font-size:.8rem;display:flex;flex-wrap:wrap;gap:.2rem 1rem;margin-bottom:.3rem;align-items:center}.legend svg{display:inline-block;width:1.6rem;height:.6rem;border:0;background:none;vertical-align:middle;margin-right:.3rem;border-radius:0}
.chartwrap{position:relative;padding-left:3.2rem}#yaxis{position:absolute;left:0;top:0;bottom:0;width:3rem;font-size:.7rem;color:var(--muted);font-variant-numeric:tabular-nums}#yaxis span{position:absolute;right:.3rem;transform:translateY(-50%)}
#error{color:var(--bad)}
a{color:var(--in)}
form{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:.4rem 0}
input{font:inherit;padding:.35rem .5rem;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg);min-width:0;flex:1 1 12rem}
button{font:inherit;padding:.35rem .8rem;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--fg);cursor:pointer}
#log{list-style:none;padding:0;font-family:ui-monospace,monospace;font-size:.85rem}#log li{border-bottom:1px solid var(--line);padding:.2rem 0;word-break:break-all}
`;

const STATUS_SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
// numbers with thousands separators (12,345; 1.5 below 10), whatever the browser's locale
const num = (n) => Number(n).toLocaleString('en-US', { maximumFractionDigits: Math.abs(n) < 10 ? 1 : 0 });
const bytes = (n) => n >= 1048576 ? num(n / 1048576) + ' MiB' : n >= 1024 ? num(n / 1024) + ' KiB' : num(Math.round(n)) + ' B';
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? d + 'd ' + h + 'h' : h ? h + 'h ' + m + 'm' : m ? m + 'm ' + (s % 60) + 's' : s + 's';
}
// the fields of the rules and state-store sections (/api/status keeps its short names), in words with units
const FIELD_LABELS = { filters: ['filters', ''], statements: ['statements', ''], logic: ['logic entries', ''], fires: ['rules fired', ''], evaluations: ['messages evaluated', ''],
  compileMillis: ['last compile time', 'ms'], wasmBytes: ['compiled module size', 'bytes'], summary: ['usage', ''], nats: ['NATS', ''], nodes: ['nodes', ''], jetstream: ['JetStream', ''], crossNode: ['cross-node messages', ''] };
const SECTION_NAMES = { rules: 'rules', state: 'state store', cluster: 'cluster', bridges: 'bridges' };
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e; }
function fillTable(tbody, rows, cells) {
  const frag = document.createDocumentFragment();
  for (const row of rows) { const tr = el('tr'); for (const [value, cls] of cells(row)) tr.appendChild(el('td', value, cls)); frag.appendChild(tr); }
  tbody.replaceChildren(frag);
}
function card(label, value) { const d = el('div', undefined, 'card'); d.appendChild(el('b', value)); d.appendChild(el('span', label)); return d; }
function chart(history, intervalMs) {
  const svg = $('chart'), W = 600, H = 160, P = 4, ns = 'http://www.w3.org/2000/svg';
  const peak = Math.max(0, ...history.map((p) => Math.max(p.in, p.out)));
  const max = Math.max(1, peak * 1.15);
  const n = Math.max(history.length - 1, 1);
  const x = (i) => (P + (W - 2 * P) * i / n).toFixed(1);
  const y = (v) => (H - P - (H - 2 * P) * v / max).toFixed(1);
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.setAttribute('preserveAspectRatio', 'none');
  const parts = [];
  for (const f of [0.25, 0.5, 0.75]) {
    const g = document.createElementNS(ns, 'line');
    g.setAttribute('x1', '0'); g.setAttribute('x2', String(W)); g.setAttribute('y1', y(max * f)); g.setAttribute('y2', y(max * f));
    g.setAttribute('stroke', 'var(--line)'); g.setAttribute('vector-effect', 'non-scaling-stroke');
    parts.push(g);
  }
  for (const [key, color, dash] of [['out', 'var(--out)', ''], ['in', 'var(--in)', '6 4']]) {
    const pl = document.createElementNS(ns, 'polyline');
    pl.setAttribute('points', history.length > 1 ? history.map((p, i) => x(i) + ',' + y(p[key])).join(' ') : '');
    pl.setAttribute('fill', 'none'); pl.setAttribute('stroke', color); pl.setAttribute('stroke-width', '2'); pl.setAttribute('vector-effect', 'non-scaling-stroke');
    if (dash) pl.setAttribute('stroke-dasharray', dash);
    pl.setAttribute('data-series', key);
    parts.push(pl);
  }
  svg.replaceChildren(...parts);
  // the y-axis scale, in HTML beside the chart (SVG text would stretch with the chart)
  const axis = $('yaxis');
  axis.replaceChildren(...[1, 0.75, 0.5, 0.25, 0].map((f) => { const t = el('span', num(max * f)); t.style.top = ((1 - f) * 100) + '%'; return t; }));
  const span = history.length * intervalMs / 1000;
  $('chartmax').textContent = 'messages / s, peak ' + num(peak);
  $('chartspan').textContent = 'last ' + (span < 120 ? Math.round(span) + ' s' : Math.round(span / 60) + ' min') + ', a point every ' + intervalMs / 1000 + ' s';
}
function render(s) {
  $('version').textContent = 'v' + s.version;
  $('uptime').textContent = 'up ' + duration(s.uptimeSeconds);
  const r = s.rates.current;
  $('cards').replaceChildren(
    card('clients connected', num(s.clients.count)),
    card('messages in / s', num(r.in)),
    card('messages out / s', num(r.out)),
    card('bytes in / s', bytes(r.bytesIn)),
    card('bytes out / s', bytes(r.bytesOut)),
    card('subscriptions', num(s.subscriptions)),
    card('retained messages', num(s.retained)),
    card('queued messages', num(s.queued)),
    card('connections since start', num(s.totals.connections)),
    card('messages dropped', num(Object.values(s.dropped).reduce((a, b) => a + b, 0))));
  chart(s.rates.history, s.rates.intervalMs);
  fillTable($('listeners'), s.listeners, (l) => [[l.name], [l.transport], [l.port, 'num'], [l.engine], [l.up ? 'up' : 'down', l.up ? 'up' : 'down']]);
  $('clientcount').textContent = s.clients.count > s.clients.rows.length ? '(newest ' + s.clients.rows.length + ' of ' + s.clients.count + ')' : '(' + s.clients.count + ')';
  fillTable($('clients'), s.clients.rows, (c) => [
    [c.clientId], [c.protocolVersion === 5 ? '5.0' : c.protocolVersion === 4 ? '3.1.1' : '3.1'], [c.transport], [c.remoteAddress],
    [new Date(c.connectedAt).toLocaleString()], [c.subscriptions, 'num'], [c.queued, 'num']]);
  const drops = Object.entries(s.dropped);
  $('dropped').textContent = drops.length ? drops.map(([k, v]) => k + ': ' + v).join(', ') : 'none';
  const sections = $('sections');
  sections.replaceChildren();
  const names = Object.keys(s.sections);
  if (!names.length) sections.appendChild(el('p', 'No rules or state store yet.', 'muted'));
  for (const name of names) {
    sections.appendChild(el('h3', SECTION_NAMES[name] || name));
    const body = s.sections[name] || {};
    const t = el('table', undefined, 'kv'), tb = el('tbody');
    // bridges: one row per bridge, as edb bridge show prints them
    if (Array.isArray(body.rows)) {
      const head = el('tr');
      for (const h of ['name', 'endpoint', 'state', 'buffered', 'dropped', 'oldest', 'sent/s', 'received/s']) head.appendChild(el('th', h));
      tb.appendChild(head);
      for (const r of body.rows) {
        const tr = el('tr');
        for (const [v, cls] of [[r.name], [r.endpoint], [r.state, r.state === 'connected' ? '' : 'warn'], [num(r.buffered), 'num'], [num(r.dropped), 'num'], [r.oldestMs ? duration(Math.round(r.oldestMs / 1000)) : '-', 'num'], [num(r.sentPerSecond), 'num'], [num(r.receivedPerSecond), 'num']]) tr.appendChild(el('td', v, cls));
        tb.appendChild(tr);
      }
      sections.appendChild(el('p', body.summary, 'muted'));
      t.appendChild(tb);
      const wrapRows = el('div', undefined, 'scroll'); wrapRows.appendChild(t); sections.appendChild(wrapRows);
      continue;
    }
    for (const [k, v] of Object.entries(body)) {
      const [label, unit] = FIELD_LABELS[k] || [k, ''];
      const tr = el('tr'); tr.appendChild(el('th', label));
      tr.appendChild(el('td', typeof v === 'object' ? JSON.stringify(v) : typeof v === 'number' ? num(v) + (unit ? ' ' + unit : '') : v)); tb.appendChild(tr);
    }
    t.appendChild(tb);
    const wrap = el('div', undefined, 'scroll'); wrap.appendChild(t); sections.appendChild(wrap);
  }
  $('updated').textContent = 'updated ' + new Date(s.now).toLocaleTimeString();
}
async function refresh() {
  try {
    const res = await fetch('/api/status', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    render(await res.json());
    $('error').textContent = '';
  } catch (e) { $('error').textContent = 'cannot reach the broker: ' + e.message; }
}
refresh();
setInterval(() => { if (!document.hidden) refresh(); }, 2000);
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
`;

export const STATUS_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="data:,"><title>Edge Data Broker · status</title><style>${STYLE}</style></head>
<body><header><h1>Edge Data Broker</h1><span class="muted" id="version"></span><span class="muted" id="uptime"></span>
<span class="muted" id="updated"></span><span id="error"></span><span style="margin-left:auto"><a href="/status/try">MQTT console</a> · <a href="/metrics">metrics</a></span></header>
<main>
<div class="cards" id="cards"></div>
<h2>Message rates</h2>
<div class="legend"><span id="legend-in"><svg viewBox="0 0 24 8" aria-hidden="true"><line x1="0" y1="4" x2="24" y2="4" stroke="var(--in)" stroke-width="2" stroke-dasharray="6 4"/></svg>in (from clients)</span><span id="legend-out"><svg viewBox="0 0 24 8" aria-hidden="true"><line x1="0" y1="4" x2="24" y2="4" stroke="var(--out)" stroke-width="2"/></svg>out (to subscribers)</span><span class="muted" id="chartmax"></span><span class="muted" id="chartspan"></span></div>
<div class="chartwrap"><div id="yaxis" aria-label="messages per second"></div><svg id="chart" role="img" aria-label="messages per second over the last minutes"></svg></div>
<h2>Listeners</h2>
<div class="scroll"><table><thead><tr><th>name</th><th>transport</th><th class="num">port</th><th>engine</th><th>state</th></tr></thead><tbody id="listeners"></tbody></table></div>
<h2>Clients <span class="muted" id="clientcount"></span></h2>
<div class="scroll"><table><thead><tr><th>client id</th><th>MQTT</th><th>transport</th><th>address</th><th>connected since</th><th class="num">subscriptions</th><th class="num">queued</th></tr></thead><tbody id="clients"></tbody></table></div>
<h2>Dropped messages</h2><p id="dropped" class="muted"></p>
<h2>Rules and state store</h2><div id="sections"></div>
</main>
<script src="/status/app.js"></script></body></html>
`;

const TRY_SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
let client;
function log(text) {
  const li = document.createElement('li'); li.textContent = text;
  const list = $('log'); list.prepend(li);
  while (list.children.length > 200) list.lastElementChild.remove();
}
function state(text) { $('state').textContent = text; }
async function defaultUrl() {
  const secure = location.protocol === 'https:';
  try {
    const s = await (await fetch('/api/status', { cache: 'no-store' })).json();
    const l = s.listeners.find((x) => x.transport === (secure ? 'wss' : 'ws') && x.up) || s.listeners.find((x) => (x.transport === 'ws' || x.transport === 'wss') && x.up);
    if (l) return (l.transport === 'wss' ? 'wss://' : 'ws://') + location.hostname + ':' + l.port + '/mqtt';
  } catch (e) { /* fall through */ }
  return (secure ? 'wss://' : 'ws://') + location.hostname + ':9001/mqtt';
}
$('connect').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (client) client.end(true);
  state('connecting');
  client = mqtt.connect($('url').value, { clientId: $('clientid').value || undefined, reconnectPeriod: 0, connectTimeout: 5000 });
  client.on('connect', () => state('connected'));
  client.on('close', () => state('disconnected'));
  client.on('error', (e) => { state('error'); log('error: ' + e.message); });
  client.on('message', (topic, payload) => log(topic + ' ' + new TextDecoder().decode(payload)));
});
$('subscribe').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (!client) return;
  const filter = $('filter').value;
  client.subscribe(filter, { qos: 1 }, (err, granted) => { if (err) log('subscribe failed: ' + err.message); else { $('subscribed').textContent = 'subscribed to ' + filter + ' (QoS ' + granted[0].qos + ')'; } });
});
$('publish').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (!client) return;
  client.publish($('topic').value, $('payload').value, { qos: 1 }, (err) => { if (err) log('publish failed: ' + err.message); else $('published').textContent = 'published ' + (++published); });
});
let published = 0;
defaultUrl().then((u) => { if (!$('url').value) $('url').value = u; });
`;

export const TRY_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="data:,"><title>Edge Data Broker · MQTT console</title><style>${STYLE}</style></head>
<body><header><h1>MQTT console</h1><span class="muted">MQTT over WebSocket from this browser</span><span style="margin-left:auto"><a href="/status">status</a></span></header>
<main>
<form id="connect"><input id="url" aria-label="broker URL" placeholder="ws://host:9001/mqtt"><input id="clientid" aria-label="client id" placeholder="client id (optional)"><button>Connect</button><span id="state" class="muted">disconnected</span></form>
<form id="subscribe"><input id="filter" aria-label="topic filter" value="#"><button>Subscribe</button><span id="subscribed" class="muted"></span></form>
<form id="publish"><input id="topic" aria-label="topic" value="hello/browser"><input id="payload" aria-label="payload" value="hello"><button>Publish</button><span id="published" class="muted"></span></form>
<h2>Messages</h2><ul id="log"></ul>
</main>
<script src="/status/mqtt.min.js"></script><script src="/status/try.js"></script></body></html>
`;

export const STATUS_JS = STATUS_SCRIPT;
export const TRY_JS = TRY_SCRIPT;
