// Small helpers: escaped HTML templates, formatting, and a line diff.

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const escapeHtml = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);

class Raw { constructor(text) { this.text = text; } }
// Marks already-safe HTML (the output of html``) so it is not escaped again.
export const raw = (text) => new Raw(text);

// A tagged template: every interpolation is escaped unless it is raw() (or an array of those).
export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => {
    if (Array.isArray(value)) out += value.map((v) => (v instanceof Raw ? v.text : escapeHtml(v))).join('');
    else out += value instanceof Raw ? value.text : escapeHtml(value);
    out += strings[i + 1];
  });
  return raw(out);
}

export const num = (value) => Number(value ?? 0);
export const version = (value) => (num(value) ? `v${num(value)}` : '—');

export function formatTime(unixMs) {
  const ms = num(unixMs);
  if (!ms) return '—';
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

export function formatAge(unixMs) {
  const ms = num(unixMs);
  if (!ms) return '—';
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(num(seconds)));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60 ? `${s % 60}s` : ''}`.trim();
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

// A badge whose text says the state (colour is never the only signal).
export function badge(text, kind = text) {
  return html`<span class="badge badge-${String(kind).replace(/[^a-z_-]/gi, '')}">${text}</span>`;
}

// Line diff (LCS), as [{op: ' '|'-'|'+', line}]. Configs are a few hundred lines at most.
export function diffLines(oldText, newText) {
  const a = (oldText ?? '').split('\n');
  const b = (newText ?? '').split('\n');
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { out.push({ op: ' ', line: a[i] }); i++; j++; }
    // Removals before additions, as diff(1) and `fleetctl config diff` print them.
    else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) { out.push({ op: '-', line: a[i] }); i++; }
    else { out.push({ op: '+', line: b[j] }); j++; }
  }
  return out;
}

// The diff as an accessible block: removed/added lines are marked with -/+ and <del>/<ins>.
export function renderDiff(oldText, newText, { context = 3 } = {}) {
  const lines = diffLines(oldText, newText);
  const changed = lines.map((l) => l.op !== ' ');
  const keep = lines.map((_, i) => {
    for (let k = Math.max(0, i - context); k <= Math.min(lines.length - 1, i + context); k++) {
      if (changed[k]) return true;
    }
    return false;
  });
  if (!changed.some(Boolean)) return html`<p class="muted">The two versions are identical.</p>`;
  const rows = [];
  let skipped = false;
  lines.forEach((l, i) => {
    if (!keep[i]) { skipped = true; return; }
    if (skipped) { rows.push(html`<span class="diff-gap">…</span>`); skipped = false; }
    if (l.op === '+') rows.push(html`<ins class="diff-add">+ ${l.line}</ins>`);
    else if (l.op === '-') rows.push(html`<del class="diff-del">- ${l.line}</del>`);
    else rows.push(html`<span class="diff-ctx">  ${l.line}</span>`);
  });
  const added = lines.filter((l) => l.op === '+').length;
  const removed = lines.filter((l) => l.op === '-').length;
  return html`<p class="diff-summary">${added} line(s) added, ${removed} removed</p>
    <pre class="diff" tabindex="0" aria-label="Config diff">${rows}</pre>`;
}

// Replaces an element's content and keeps the focused control focused when it is re-rendered.
export function setHtml(element, content) {
  if (!element) return;
  const next = content instanceof Raw ? content.text : String(content);
  if (element.__lastHtml === next) return;  // Nothing changed: leave the DOM (and focus) alone.
  element.__lastHtml = next;
  element.innerHTML = next;
}
