/* tempolens viewer — a static, dependency-free dashboard for SAE latents.
 *
 * Opens from disk (file://) with no server and no network. Data files (docs/site-data.md) are
 * JavaScript files that call the global functions below with JSON literals; they are loaded with
 * dynamically inserted <script> tags, feature chunks only when a latent is shown. index.html is the
 * dashboard site; report.html (<body data-page="report">) shows only the autointerp report view.
 *
 * Security rule: every string that comes from data (tokens, explanations, titles ...) reaches the
 * page through textContent / createTextNode / setAttribute, never through HTML parsing.
 */
(function () {
  'use strict';

  var PAGE = 100;                 // index rows rendered per "show more"
  var WINDOW_BEFORE = 40;         // example tokens shown before the qualifying token (collapsed view)
  var WINDOW_AFTER = 12;          // ... and after it
  var WINDOW_MIN = 64;            // examples shorter than this are always shown whole
  var SVGNS = 'http://www.w3.org/2000/svg';

  // ------------------------------------------------------------------------------------------
  // Data registry: data/*.js files call these globals.
  // ------------------------------------------------------------------------------------------
  var data = { meta: null, index: null, autointerp: null, kernels: null, views: null, chunks: new Map(),
    tokens: null, prompts: new Map(), decoded: new Map() };
  window.tempolensMeta = function (m) { data.meta = m || {}; };
  window.tempolensIndex = function (d) { data.index = d || { columns: [], rows: [] }; };
  window.tempolensFeatures = function (c, recs) { data.chunks.set(Number(c), recs || {}); };
  window.tempolensTokens = function (t) { data.tokens = Array.isArray(t) ? t : []; };
  window.tempolensPrompts = function (c, p) { data.prompts.set(Number(c), p && typeof p === 'object' ? p : {}); };
  window.tempolensAutointerp = function (d) { data.autointerp = d; };
  window.tempolensKernels = function (d) { data.kernels = d; };
  window.tempolensViews = function (d) { data.views = d && typeof d === 'object' ? d : null; };

  var scriptPromises = new Map();
  function loadScript(src) {
    if (scriptPromises.has(src)) return scriptPromises.get(src);
    var p = new Promise(function (resolve, reject) {
      var s = document.createElement('script');
      s.src = src;
      s.async = true;
      s.onload = function () { resolve(); };
      s.onerror = function () {
        scriptPromises.delete(src);
        s.remove();
        reject(new Error('could not load ' + src));
      };
      document.head.appendChild(s);
    });
    scriptPromises.set(src, p);
    return p;
  }

  // ------------------------------------------------------------------------------------------
  // Small pure helpers (exposed on window.tempolensViewer for tests).
  // ------------------------------------------------------------------------------------------
  function isNum(v) { return typeof v === 'number' && isFinite(v); }

  /** A number with `p` significant digits; exponent form for very small/large magnitudes. */
  function fmt(v, p) {
    if (p === undefined) p = 3;
    if (!isNum(v)) return '–';
    if (v === 0) return '0';
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(p - 1);
    return String(Number(v.toPrecision(p)));
  }

  function fmtInt(v) { return isNum(v) ? Math.round(v).toLocaleString('en-US') : '–'; }

  function fmtPct(v, digits) {
    if (!isNum(v)) return '–';
    return (v * 100).toFixed(digits === undefined ? 1 : digits) + '%';
  }

  /** "1 in N tokens" for a firing density. */
  function oneIn(frac) {
    if (!isNum(frac) || frac <= 0) return 'never active';
    var n = 1 / frac;
    var s = n >= 100 ? Math.round(n).toLocaleString('en-US') : String(Number(n.toPrecision(3)));
    return '1 in ' + s + ' tokens';
  }

  /** Full-precision text of a number (what was stored, no rounding). */
  function exact(v) { return isNum(v) ? String(v) : '–'; }

  /** The visible form of a token: newlines, tabs, control characters and blank tokens become symbols.
   *  Returns {text, ws}; ws is true when the visible text differs from the raw token. */
  function showToken(raw) {
    var s = raw == null ? '' : String(raw);
    if (s === '') return { text: '∅', ws: true };
    var out = '';
    for (var i = 0; i < s.length; i++) {
      var ch = s.charAt(i), code = s.charCodeAt(i);
      if (ch === '\n') out += '⏎';
      else if (ch === '\r') out += '␍';
      else if (ch === '\t') out += '⇥';
      else if (code < 0x20) out += String.fromCharCode(0x2400 + code);
      else if (code === 0x7f) out += '␡';
      else out += ch;
    }
    if (/^ +$/.test(out)) out = out.replace(/ /g, '␣');
    return { text: out, ws: out !== s };
  }

  /** Background colour of an activation `v` relative to `max` (alpha ∝ v/max). */
  function actColor(v, max) {
    if (!isNum(v) || v <= 0 || !isNum(max) || max <= 0) return '';
    var a = Math.min(1, v / max);
    return 'rgba(234, 88, 12, ' + (0.1 + 0.75 * a).toFixed(3) + ')';
  }

  /** Background of a negative predicted code (pred view): blue, alpha ∝ |v|/max. */
  function negColor(v, max) {
    if (!isNum(v) || v >= 0 || !isNum(max) || max <= 0) return '';
    var a = Math.min(1, -v / max);
    return 'rgba(37, 99, 235, ' + (0.1 + 0.6 * a).toFixed(3) + ')';
  }

  /** Underline colour of a predicted value (blue positive, red negative), alpha ∝ |v|/max. */
  function predColor(v, max) {
    if (!isNum(v) || v === 0 || !isNum(max) || max <= 0) return 'transparent';
    var a = Math.min(1, Math.abs(v) / max);
    var rgb = v > 0 ? '37, 99, 235' : '220, 38, 38';
    return 'rgba(' + rgb + ', ' + (0.15 + 0.85 * a).toFixed(3) + ')';
  }

  /** About `count` round tick values covering [lo, hi]. */
  function niceTicks(lo, hi, count) {
    if (!isNum(lo) || !isNum(hi)) return [];
    if (hi === lo) return [lo];
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = (span / count) / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
    return ticks;
  }

  /** Parse a number typed by a user ("1e-5", "0.001", " 3 "); '' → null; garbage → NaN. */
  function parseUserNumber(s) {
    s = String(s == null ? '' : s).trim();
    if (s === '') return null;
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?%?$/.test(s)) return NaN;
    var pct = s.charAt(s.length - 1) === '%';
    var v = Number(pct ? s.slice(0, -1) : s);
    return pct ? v / 100 : v;
  }

  /** A relative link inside the site (no scheme, no absolute path, no parent escapes), or null. */
  function safeRelativeHref(href) {
    if (typeof href !== 'string' || href === '') return null;
    if (!/^[A-Za-z0-9_][A-Za-z0-9_\-./]*(#[A-Za-z0-9_\-./]*)?$/.test(href)) return null;
    if (href.split('/').indexOf('..') >= 0) return null;
    return href;
  }

  // ------------------------------------------------------------------------------------------
  // DOM helpers (text only — never HTML).
  // ------------------------------------------------------------------------------------------
  function h(tag, attrs) {
    var el = document.createElement(tag);
    setAttrs(el, attrs);
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function s(tag, attrs) {
    var el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function setAttrs(el, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = String(v);
      else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    });
  }
  function append(el, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { append(el, x); }); return; }
    el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }

  // ------------------------------------------------------------------------------------------
  // Site-wide state derived from meta and index.
  // ------------------------------------------------------------------------------------------
  var site = {
    nLatents: 0,        // latents in this site (rows of the index; may be a subset of the SAE's width)
    width: 0,           // latents of the SAE
    latents: [],        // latent ids of the index, ascending
    posOf: null,        // latent → position in `latents`
    col: {},            // column name → position in an index row
    rowOf: null,        // latent → index row (array)
    hasPred: false, hasScore: false, hasExpl: false,
    searchText: null,   // lazily built lowercase "top tokens \n explanation" per row
  };

  function latentHref(i) { return '#/latent/' + i; }
  function metaTemporal() { return !!(data.meta && data.meta.is_temporal); }
  /** Which codes this site shows: 'novel' (the SAE's codes; a Temporal SAE's novel codes) or 'pred'. */
  function metaCodes() { return data.meta && data.meta.codes === 'pred' ? 'pred' : 'novel'; }
  /** True when activations are contribution norms (code × decoder row norm), false for raw codes. */
  function metaNorm() { return !!(data.meta && data.meta.act_units === 'norm'); }
  function actWord() { return metaCodes() === 'pred' ? 'predicted code' : (metaTemporal() ? 'novel code' : 'activation'); }
  function unitsText() {
    return metaNorm() ? 'contribution norm: code × ‖decoder row‖, model units' : 'raw SAE code';
  }
  /** The other view of the same latent (novel ↔ predicted), or null when this site has none. */
  function otherViewHref(i) {
    if (metaCodes() === 'pred') return '../index.html' + latentHref(i);
    return data.views && data.views.pred ? 'pred/index.html' + latentHref(i) : null;
  }

  function initSite() {
    var meta = data.meta || {};
    var idx = data.index || { columns: [], rows: [] };
    (idx.columns || []).forEach(function (c, i) { site.col[c] = i; });
    var rows = idx.rows || [];
    site.rowOf = new Map();
    var ci = site.col.index;
    rows.forEach(function (r, k) { site.rowOf.set(ci === undefined ? k : r[ci], r); });
    site.latents = Array.from(site.rowOf.keys()).filter(function (x) { return Number.isInteger(x); }).sort(function (a, b) { return a - b; });
    site.posOf = new Map();
    site.latents.forEach(function (x, k) { site.posOf.set(x, k); });
    site.nLatents = site.latents.length;
    site.width = meta.sae && isNum(meta.sae.width) ? meta.sae.width : site.nLatents;
    function any(name) {
      var c = site.col[name];
      if (c === undefined) return false;
      for (var k = 0; k < rows.length; k++) if (rows[k][c] !== null && rows[k][c] !== undefined) return true;
      return false;
    }
    site.hasPred = any('pred_share');
    site.hasScore = any('score');
    site.hasExpl = any('explanation');
  }

  function cell(row, name) {
    var c = site.col[name];
    return c === undefined ? null : row[c];
  }

  // ------------------------------------------------------------------------------------------
  // Header: title, navigation, run line (says which prompt length was used).
  // ------------------------------------------------------------------------------------------
  function runFacts(meta) {
    var sae = meta.sae || {};
    var facts = [];
    if (meta.model_id) facts.push(['Model', String(meta.model_id)]);
    if (meta.hook_name || isNum(meta.layer)) facts.push(['Hook', String(meta.hook_name || ('layer ' + meta.layer))]);
    var saeBits = [];
    if (sae.architecture) saeBits.push(String(sae.architecture));
    if (isNum(sae.width)) saeBits.push('width ' + fmtInt(sae.width));
    if (isNum(sae.d_in)) saeBits.push('d_in ' + fmtInt(sae.d_in));
    if (isNum(sae.k)) saeBits.push('k ' + fmtInt(sae.k));
    if (saeBits.length) facts.push(['SAE', saeBits.join(' · ')]);
    if (meta.dataset) facts.push(['Dataset', String(meta.dataset)]);
    if (isNum(meta.n_prompts) || isNum(meta.prompt_len)) {
      facts.push(['Prompts', fmtInt(meta.n_prompts) + ' × ' + fmtInt(meta.prompt_len) + ' tokens' +
        (isNum(meta.n_tokens) ? ' (' + fmtInt(meta.n_tokens) + ' counted, without BOS/EOS/pad)' : '')]);
    }
    if (isNum(meta.prompt_len)) facts.push(['Prompt length', fmtInt(meta.prompt_len) + ' tokens']);
    if (meta.act_units) facts.push(['Activations', (meta.codes === 'pred' ? 'predicted codes ' + predName() + ', ' : '') + unitsText()]);
    return facts;
  }

  function renderChrome() {
    var meta = data.meta || {};
    var title = meta.title ? String(meta.title) : 'tempolens dashboards';
    document.title = title;
    var brand = document.getElementById('brand');
    brand.textContent = title;
    var nav = document.getElementById('nav');
    nav.replaceChildren(h('a', { href: '#/', 'data-route': 'index', text: 'Latents' }));
    if (data.autointerp) nav.appendChild(h('a', { href: '#/report', 'data-route': 'report', text: 'Autointerp report' }));
    if (kernelPages().length) nav.appendChild(h('a', { href: '#/kernels', 'data-route': 'kernels', text: 'Kernels' }));
    var line = document.getElementById('runline');
    line.replaceChildren();
    runFacts(meta).forEach(function (f, k) {
      if (k) line.appendChild(document.createTextNode(' · '));
      line.appendChild(h('span', { class: 'fact' }, h('span', { class: 'fact-k', text: f[0] + ' ' }), h('span', { class: 'fact-v', text: f[1] })));
    });
    var v = document.getElementById('foot-version');
    v.textContent = 'tempolens ' + (meta.tempolens_version ? String(meta.tempolens_version) : '') +
      (meta.created ? ' · built ' + String(meta.created) : '');
  }

  function markNav(route) {
    var links = document.querySelectorAll('#nav a');
    for (var k = 0; k < links.length; k++) {
      if (links[k].getAttribute('data-route') === route) links[k].setAttribute('aria-current', 'page');
      else links[k].removeAttribute('aria-current');
    }
  }

  function kernelPages() {
    var k = data.kernels;
    var pages = k && Array.isArray(k.pages) ? k.pages : Array.isArray(k) ? k : [];
    return pages.filter(function (p) { return p && safeRelativeHref(p.href); });
  }

  // ------------------------------------------------------------------------------------------
  // Tooltip for tokens (custom, plus the native title attribute).
  // ------------------------------------------------------------------------------------------
  var tokInfo = new WeakMap();   // token span → {raw, v, pred, share, pos, q}
  var tooltip = null;

  function showTooltip(el) {
    var info = tokInfo.get(el);
    if (!info) return;
    var lines = [h('div', { class: 'tt-tok' }, h('code', { text: JSON.stringify(info.raw) }))];
    lines.push(h('div', null, actWord() + ': ', h('b', { text: isNum(info.v) ? fmt(info.v) : '0' }),
      h('span', { class: 'tt-exact', text: ' (' + (isNum(info.v) ? exact(info.v) : '0') + ')' })));
    if (info.norm && isNum(info.v)) {
      lines.push(h('div', null, 'raw code: ', h('b', { text: fmt(info.v / info.norm) }),
        h('span', { class: 'tt-exact', text: ' (' + exact(info.v / info.norm) + ' = value / ‖decoder row‖ ' + exact(info.norm) + ')' })));
    }
    if (info.pred !== undefined) {
      lines.push(h('div', null, 'predicted by context: ', h('b', { text: fmt(info.pred) }), h('span', { class: 'tt-exact', text: ' (' + exact(info.pred) + ')' })));
    }
    if (info.share !== undefined) lines.push(h('div', null, 'predicted share of the token: ', h('b', { text: fmtPct(info.share) })));
    lines.push(h('div', { class: 'tt-pos', text: 'position ' + info.pos + (info.q ? ' · qualifying token' : '') }));
    tooltip.replaceChildren.apply(tooltip, lines);
    tooltip.hidden = false;
    var r = el.getBoundingClientRect();
    var tw = tooltip.offsetWidth, th = tooltip.offsetHeight;
    var x = Math.min(Math.max(4, r.left), window.innerWidth - tw - 4);
    var y = r.bottom + 6;
    if (y + th > window.innerHeight - 4) y = r.top - th - 6;
    tooltip.style.left = x + 'px';
    tooltip.style.top = Math.max(4, y) + 'px';
  }
  function hideTooltip() { if (tooltip) tooltip.hidden = true; }

  // ------------------------------------------------------------------------------------------
  // Index view: every latent, sortable, filterable, searchable; rendered PAGE rows at a time.
  // ------------------------------------------------------------------------------------------
  var ix = {
    built: false, sortKey: 'index', sortDir: 1, q: '', status: 'all',
    dmin: null, dmax: null, amin: null, shown: PAGE, order: [], tbody: null, count: null, more: null,
  };
  var SORTABLE = ['index', 'frac_nonzero', 'max_act', 'mean_act', 'pred_share', 'score'];
  var LABELS = {
    index: 'Latent', frac_nonzero: 'Density', max_act: 'Max act', mean_act: 'Mean act',
    pred_share: 'Pred. share', score: 'Score', top_tokens: 'Top tokens', explanation: 'Explanation',
  };
  var HELP = {
    index: 'latent index',
    frac_nonzero: 'fraction of counted tokens (BOS/EOS/pad excluded) on which the latent is nonzero',
    max_act: 'largest activation seen',
    mean_act: 'mean activation over the tokens where the latent is active',
    pred_share: 'mean predicted share of the token (predicted / (predicted + novel) reconstruction energy) at the top activations',
    score: 'autointerp score of the explanation',
    top_tokens: 'most frequent tokens among the top activations',
    explanation: 'autointerp explanation',
  };

  function visibleColumns() {
    var cols = ['index', 'frac_nonzero', 'max_act', 'mean_act'];
    if (site.hasPred) cols.push('pred_share');
    if (site.hasScore) cols.push('score');
    cols.push('top_tokens');
    if (site.hasExpl) cols.push('explanation');
    return cols.filter(function (c) { return c === 'index' || site.col[c] !== undefined; });
  }

  function readIndexState(params) {
    if (!params) return;
    var k = params.get('sort');
    if (k && SORTABLE.indexOf(k) >= 0) ix.sortKey = k;
    var d = params.get('dir');
    if (d === 'asc' || d === 'desc') ix.sortDir = d === 'asc' ? 1 : -1;
    if (params.has('q')) ix.q = params.get('q');
    var st = params.get('status');
    if (st === 'all' || st === 'alive' || st === 'dead') ix.status = st;
    ['dmin', 'dmax', 'amin'].forEach(function (name) {
      if (params.has(name)) { var v = parseUserNumber(params.get(name)); ix[name] = isNum(v) ? v : null; }
    });
  }

  function writeIndexState() {
    var p = new URLSearchParams();
    if (ix.sortKey !== 'index' || ix.sortDir !== 1) { p.set('sort', ix.sortKey); p.set('dir', ix.sortDir === 1 ? 'asc' : 'desc'); }
    if (ix.q) p.set('q', ix.q);
    if (ix.status !== 'all') p.set('status', ix.status);
    ['dmin', 'dmax', 'amin'].forEach(function (name) { if (ix[name] !== null) p.set(name, String(ix[name])); });
    var qs = p.toString();
    var hash = '#/' + (qs ? '?' + qs : '');
    if (location.hash !== hash && (location.hash || hash !== '#/')) history.replaceState(null, '', hash);
  }

  function buildSearchText() {
    var rows = data.index.rows;
    site.searchText = rows.map(function (r) {
      var t = cell(r, 'top_tokens'), e = cell(r, 'explanation');
      return ((t == null ? '' : String(t)) + '\n' + (e == null ? '' : String(e))).toLowerCase();
    });
  }

  function computeOrder() {
    var rows = data.index.rows;
    var cf = site.col.frac_nonzero, cm = site.col.max_act, ci = site.col.index;
    var terms = ix.q.trim().toLowerCase().split(/\s+/).filter(Boolean);
    var qIndex = /^#?\d+$/.test(ix.q.trim()) ? Number(ix.q.trim().replace('#', '')) : null;
    if (terms.length && !site.searchText) buildSearchText();
    var order = [];
    for (var k = 0; k < rows.length; k++) {
      var r = rows[k];
      var f = cf === undefined ? null : r[cf];
      var dead = !(isNum(f) && f > 0);
      if (ix.status === 'alive' && dead) continue;
      if (ix.status === 'dead' && !dead) continue;
      if (ix.dmin !== null && !(isNum(f) && f >= ix.dmin)) continue;
      if (ix.dmax !== null && !(isNum(f) && f <= ix.dmax)) continue;
      if (ix.amin !== null) { var m = cm === undefined ? null : r[cm]; if (!(isNum(m) && m >= ix.amin)) continue; }
      if (terms.length) {
        var text = site.searchText[k], ok = true;
        for (var t = 0; t < terms.length; t++) if (text.indexOf(terms[t]) < 0) { ok = false; break; }
        if (!ok && !(qIndex !== null && (ci === undefined ? k : r[ci]) === qIndex)) continue;
      }
      order.push(k);
    }
    var key = site.col[ix.sortKey], dir = ix.sortDir;
    if (key === undefined) key = ci;
    order.sort(function (a, b) {
      var va = key === undefined ? a : rows[a][key], vb = key === undefined ? b : rows[b][key];
      var na = isNum(va), nb = isNum(vb);
      if (na && nb && va !== vb) return dir * (va - vb);
      if (na !== nb) return na ? -1 : 1;        // missing values always last
      return a - b;
    });
    ix.order = order;
  }

  function indexRow(r) {
    var i = cell(r, 'index');
    var tr = h('tr', { 'data-latent': i });
    visibleColumns().forEach(function (c) {
      var v = cell(r, c), td;
      if (c === 'index') td = h('td', { class: 'num' }, h('a', { href: latentHref(i), text: '#' + i }));
      else if (c === 'frac_nonzero') {
        td = h('td', { class: 'num', title: exact(v) + ' (' + oneIn(v) + ')' }, isNum(v) && v === 0 ? h('span', { class: 'dead', text: 'dead' }) : fmt(v));
        if (isNum(v) && v > 0) {
          var bar = h('span', { class: 'dbar', 'aria-hidden': 'true' });
          bar.style.width = Math.max(2, Math.min(40, (Math.log10(v) + 7) / 7 * 40)).toFixed(1) + 'px';
          td.insertBefore(bar, td.firstChild);
        }
      } else if (c === 'pred_share') td = h('td', { class: 'num', title: exact(v) }, isNum(v) ? fmtPct(v) : '–');
      else if (SORTABLE.indexOf(c) >= 0) td = h('td', { class: 'num', title: exact(v) }, fmt(v));
      else td = h('td', { class: c === 'top_tokens' ? 'toks' : 'expl' }, v == null ? '' : String(v));
      tr.appendChild(td);
    });
    return tr;
  }

  function renderRows(from) {
    var rows = data.index.rows, end = Math.min(ix.order.length, ix.shown);
    var frag = document.createDocumentFragment();
    for (var k = from; k < end; k++) frag.appendChild(indexRow(rows[ix.order[k]]));
    if (from === 0) ix.tbody.replaceChildren(frag); else ix.tbody.appendChild(frag);
    var total = rows.length;
    ix.count.textContent = ix.order.length === total
      ? 'Showing ' + fmtInt(end) + ' of ' + fmtInt(total) + ' latents'
      : 'Showing ' + fmtInt(end) + ' of ' + fmtInt(ix.order.length) + ' matching latents (' + fmtInt(total) + ' in all)';
    var left = ix.order.length - end;
    ix.more.hidden = left <= 0;
    ix.more.textContent = 'Show ' + fmtInt(Math.min(PAGE, left)) + ' more';
  }

  function refreshIndex() {
    computeOrder();
    ix.shown = PAGE;
    renderRows(0);
    updateSortHeaders();
    writeIndexState();
  }

  function updateSortHeaders() {
    var ths = ix.thead.querySelectorAll('th[data-col]');
    for (var k = 0; k < ths.length; k++) {
      var c = ths[k].getAttribute('data-col');
      if (c === ix.sortKey) ths[k].setAttribute('aria-sort', ix.sortDir === 1 ? 'ascending' : 'descending');
      else ths[k].removeAttribute('aria-sort');
    }
  }

  function runInfoCard() {
    var meta = data.meta || {};
    var dl = h('dl', { class: 'facts' });
    runFacts(meta).forEach(function (f) { dl.appendChild(h('dt', { text: f[0] })); dl.appendChild(h('dd', { text: f[1] })); });
    var note = null;
    if (isNum(meta.prompt_len)) {
      note = h('p', { class: 'hint' },
        'Statistics and examples come from prompts of ' + fmtInt(meta.prompt_len) + ' tokens. ' +
        'Neuronpedia uses 128; the published Temporal SAE was trained with context 500, so its attention sees more context in longer prompts.');
    }
    var settings = null;
    if (meta.settings && typeof meta.settings === 'object' && Object.keys(meta.settings).length) {
      var sdl = h('dl', { class: 'facts small' });
      Object.keys(meta.settings).sort().forEach(function (k) {
        var v = meta.settings[k];
        sdl.appendChild(h('dt', { text: k }));
        sdl.appendChild(h('dd', { text: typeof v === 'object' ? JSON.stringify(v) : String(v) }));
      });
      settings = h('details', null, h('summary', { text: 'All settings' }), sdl);
    }
    return h('section', { class: 'card run', 'aria-labelledby': 'run-h' },
      h('div', { class: 'run-grid' },
        h('div', null, h('h1', { id: 'run-h', tabindex: '-1', text: meta.title ? String(meta.title) : 'Latents' }), dl, note, settings),
        densityOverview()));
  }

  /** Histogram of log10 firing density over the site's latents, with the number of dead latents. */
  function densityOverview() {
    var rows = data.index.rows, cf = site.col.frac_nonzero;
    if (cf === undefined || !rows.length) return null;
    var logs = [], dead = 0;
    for (var k = 0; k < rows.length; k++) {
      var f = rows[k][cf];
      if (isNum(f) && f > 0) logs.push(Math.log10(f)); else dead++;
    }
    var fig = h('figure', { class: 'overview' },
      h('figcaption', null, h('b', { text: 'Firing density of all latents' }),
        h('span', { class: 'muted', text: ' · ' + fmtInt(logs.length) + ' alive, ' + fmtInt(dead) + ' dead (never fired)' })));
    if (!logs.length) return fig;
    var lo = Math.min.apply(null, logs), hi = Math.max.apply(null, logs);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    var n = 40, width = (hi - lo) / n, heights = new Array(n).fill(0), centres = [];
    for (var b = 0; b < n; b++) centres.push(lo + (b + 0.5) * width);
    logs.forEach(function (x) { heights[Math.min(n - 1, Math.floor((x - lo) / width))]++; });
    fig.appendChild(histogram(centres, heights, { xLabel: 'log10 density (fraction of tokens where active)', yLabel: 'latents', colour: 'act',
      label: 'histogram of log10 firing density over the alive latents' }));
    return fig;
  }

  function buildIndexView() {
    var view = document.getElementById('view-index');
    var search = h('input', { id: 'f-q', type: 'search', placeholder: 'tokens, words of an explanation, or #index', autocomplete: 'off', value: ix.q });
    var status = h('select', { id: 'f-status' },
      h('option', { value: 'all', text: 'all' }), h('option', { value: 'alive', text: 'alive' }), h('option', { value: 'dead', text: 'dead' }));
    status.value = ix.status;
    function numInput(id, name, ph) {
      return h('input', { id: id, type: 'text', inputmode: 'decimal', placeholder: ph, size: 8, autocomplete: 'off',
        value: ix[name] === null ? '' : String(ix[name]) });
    }
    var dmin = numInput('f-dmin', 'dmin', 'e.g. 1e-5'), dmax = numInput('f-dmax', 'dmax', 'e.g. 0.1'), amin = numInput('f-amin', 'amin', 'e.g. 2');
    var timer = null;
    function onChange() {
      clearTimeout(timer);
      timer = setTimeout(function () {
        ix.q = search.value;
        ix.status = status.value;
        [[dmin, 'dmin'], [dmax, 'dmax'], [amin, 'amin']].forEach(function (p) {
          var v = parseUserNumber(p[0].value);
          if (v !== null && !isNum(v)) { p[0].setAttribute('aria-invalid', 'true'); return; }
          p[0].removeAttribute('aria-invalid');
          ix[p[1]] = v;
        });
        refreshIndex();
      }, 120);
    }
    [search, dmin, dmax, amin].forEach(function (el) { el.addEventListener('input', onChange); });
    status.addEventListener('change', onChange);
    var reset = h('button', { type: 'button', class: 'linkish', text: 'Reset', onclick: function () {
      search.value = ''; dmin.value = ''; dmax.value = ''; amin.value = ''; status.value = 'all';
      ix.sortKey = 'index'; ix.sortDir = 1; onChange();
    } });
    var filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter latents', onsubmit: function (e) { e.preventDefault(); } },
      h('label', { class: 'grow' }, h('span', { text: 'Search' }), search),
      h('label', null, h('span', { text: 'Status' }), status),
      h('label', null, h('span', { text: 'Density ≥' }), dmin),
      h('label', null, h('span', { text: 'Density ≤' }), dmax),
      h('label', null, h('span', { text: 'Max act ≥' }), amin),
      reset);

    var thead = h('thead');
    var hr = h('tr');
    visibleColumns().forEach(function (c) {
      var th = h('th', { scope: 'col', 'data-col': c, class: SORTABLE.indexOf(c) >= 0 ? 'num' : '', title: HELP[c] });
      if (SORTABLE.indexOf(c) >= 0) {
        th.appendChild(h('button', { type: 'button', class: 'sort', text: LABELS[c], onclick: function () {
          if (ix.sortKey === c) ix.sortDir = -ix.sortDir;
          else { ix.sortKey = c; ix.sortDir = c === 'index' ? 1 : -1; }
          refreshIndex();
        } }));
      } else th.textContent = LABELS[c];
      hr.appendChild(th);
    });
    thead.appendChild(hr);
    ix.thead = thead;
    ix.tbody = h('tbody');
    ix.tbody.addEventListener('click', function (e) {
      if (e.target.closest('a')) return;
      var tr = e.target.closest('tr[data-latent]');
      if (tr && !window.getSelection().toString()) location.hash = latentHref(tr.getAttribute('data-latent'));
    });
    ix.count = h('p', { class: 'count', 'aria-live': 'polite' });
    ix.more = h('button', { type: 'button', class: 'more', onclick: function () {
      var from = Math.min(ix.shown, ix.order.length);
      ix.shown += PAGE;
      renderRows(from);
    } });
    view.replaceChildren(
      runInfoCard(),
      h('section', { class: 'card', 'aria-label': 'Latents' },
        filters, ix.count,
        h('div', { class: 'table-wrap' }, h('table', { class: 'latents' }, thead, ix.tbody)),
        ix.more));
    ix.built = true;
  }

  function stateKey() {
    return JSON.stringify([ix.sortKey, ix.sortDir, ix.q, ix.status, ix.dmin, ix.dmax, ix.amin]);
  }

  function showIndex(params) {
    var before = stateKey();
    readIndexState(params);
    var changed = stateKey() !== before;
    if (!ix.built) buildIndexView();
    else if (changed) {
      document.getElementById('f-q').value = ix.q;
      document.getElementById('f-status').value = ix.status;
      [['f-dmin', 'dmin'], ['f-dmax', 'dmax'], ['f-amin', 'amin']].forEach(function (p) {
        document.getElementById(p[0]).value = ix[p[1]] === null ? '' : String(ix[p[1]]);
      });
    }
    var fresh = !ix.computed || changed;
    if (fresh) { refreshIndex(); ix.computed = true; }
    switchView('index');
    window.scrollTo(0, fresh ? 0 : ix.scrollY || 0);
    markNav('index');
    document.title = (data.meta && data.meta.title ? String(data.meta.title) : 'tempolens') + ' — latents';
  }

  // ------------------------------------------------------------------------------------------
  // Latent page.
  // ------------------------------------------------------------------------------------------
  var page = { latent: null, mode: 'pred', token: 0 };

  function chunkOf(i) {
    var cs = data.meta && isNum(data.meta.chunk_size) && data.meta.chunk_size > 0 ? data.meta.chunk_size : 256;
    return Math.floor(i / cs);
  }

  function loadRecord(i) {
    if (data.decoded.has(i)) return Promise.resolve(data.decoded.get(i));
    var c = chunkOf(i);
    var chunk = data.chunks.has(c) ? Promise.resolve() : loadScript('data/features/chunk-' + c + '.js');
    return chunk.then(function () {
      var recs = data.chunks.get(c);
      if (!recs) throw new Error('data/features/chunk-' + c + '.js did not call tempolensFeatures');
      return decodeRecord(recs[String(i)] || null);
    }).then(function (rec) {
      data.decoded.set(i, rec);
      return rec;
    });
  }

  // Site activations reference their window (prompt_index, start; meta.window_len tokens) in the shared
  // prompt tables (data/prompts/prompts-<p>.js: token ids into data/tokens.js, per-token pred_share) and keep
  // only their own values as sparse [position, value] pairs. decodeRecord rebuilds the full form the page
  // shows: tokens (strings), values (0 where not listed), pred_values (its fill where not listed), pred_share.
  function promptChunkOf(p) {
    var m = data.meta;
    var cs = m && isNum(m.prompt_chunk_size) && m.prompt_chunk_size > 0 ? m.prompt_chunk_size : 64;
    return Math.floor(p / cs);
  }

  function isWindowRef(a) {
    return a && typeof a === 'object' && !Array.isArray(a.tokens) && isNum(a.start) && isNum(a.prompt_index);
  }

  function decodeRecord(rec) {
    if (!rec || !Array.isArray(rec.activations) || !rec.activations.some(isWindowRef)) return Promise.resolve(rec);
    var chunks = new Set();
    rec.activations.forEach(function (a) { if (isWindowRef(a)) chunks.add(promptChunkOf(a.prompt_index)); });
    var loads = [data.tokens ? Promise.resolve() : loadScript('data/tokens.js')];
    chunks.forEach(function (c) {
      if (!data.prompts.has(c)) loads.push(loadScript('data/prompts/prompts-' + c + '.js'));
    });
    return Promise.all(loads).then(function () {
      if (!data.tokens) throw new Error('data/tokens.js did not call tempolensTokens');
      var out = Object.assign({}, rec);
      out.activations = rec.activations.map(function (a) { return isWindowRef(a) ? decodeActivation(a) : a; });
      return out;
    });
  }

  /** Set the listed [position, value] pairs of `pairs` into `arr` (positions outside the window are ignored). */
  function setPairs(arr, pairs) {
    if (!Array.isArray(pairs)) return;
    pairs.forEach(function (pv) {
      var ok = Array.isArray(pv) && Number.isInteger(pv[0]) && pv[0] >= 0 && pv[0] < arr.length;
      if (ok) arr[pv[0]] = isNum(pv[1]) ? pv[1] : null;
    });
  }

  function decodeActivation(a) {
    var c = promptChunkOf(a.prompt_index);
    var prompt = (data.prompts.get(c) || {})[String(a.prompt_index)];
    if (!prompt || !Array.isArray(prompt.tokens)) {
      if (!data.prompts.has(c)) throw new Error('data/prompts/prompts-' + c + '.js did not call tempolensPrompts');
      throw new Error('prompt ' + a.prompt_index + ' is missing from data/prompts/prompts-' + c + '.js');
    }
    var len = isNum(a.length) ? a.length
      : data.meta && isNum(data.meta.window_len) ? data.meta.window_len : prompt.tokens.length;
    var lo = a.start, hi = Math.min(a.start + len, prompt.tokens.length);
    var out = {};
    var own = ['values', 'pred_values', 'start', 'length'];   // decoded below, or only needed to find the window
    Object.keys(a).forEach(function (k) { if (own.indexOf(k) < 0) out[k] = a[k]; });
    out.tokens = prompt.tokens.slice(lo, hi).map(function (id) {
      return Number.isInteger(id) && id >= 0 && id < data.tokens.length ? String(data.tokens[id]) : '';
    });
    out.values = out.tokens.map(function () { return 0; });
    setPairs(out.values, a.values);
    if (a.pred_values && typeof a.pred_values === 'object') {
      var fill = isNum(a.pred_values.fill) ? a.pred_values.fill : null;
      out.pred_values = out.tokens.map(function () { return fill; });
      setPairs(out.pred_values, a.pred_values.at);
    }
    if (Array.isArray(prompt.pred_share)) out.pred_share = prompt.pred_share.slice(lo, hi);
    return out;
  }

  function showLatent(i) {
    var view = document.getElementById('view-page');
    var token = ++page.token;
    page.latent = i;
    switchView('page');
    markNav(null);
    document.title = 'Latent ' + i + ' — ' + (data.meta && data.meta.title ? String(data.meta.title) : 'tempolens');
    if (!site.posOf.has(i)) {
      var why = i >= 0 && i < site.width
        ? 'Latent ' + i + ' is not in this site: it was built for ' + fmtInt(site.nLatents) + ' of the SAE\'s ' + fmtInt(site.width) + ' latents (rebuild with `tempolens dashboards --latents ...` to add it).'
        : 'This SAE has latents 0 to ' + fmtInt(site.width - 1) + '.';
      view.replaceChildren(h('section', { class: 'card' }, h('h1', { tabindex: '-1', text: 'No latent ' + i }),
        h('p', { text: why }), h('p', null, h('a', { href: '#/', text: 'Back to the index' }))));
      focusHeading(view);
      return;
    }
    view.replaceChildren(latentNav(i), h('p', { class: 'notice', text: 'Loading latent ' + i + '…' }));
    loadRecord(i).then(function (rec) {
      if (token !== page.token) return;
      try {
        view.replaceChildren(latentNav(i), renderLatent(i, rec));
      } catch (err) {
        view.replaceChildren(latentNav(i), h('p', { class: 'error', text: 'Could not show latent ' + i + ': ' + err.message }));
      }
      window.scrollTo(0, 0);
      focusHeading(view);
    }, function (err) {
      if (token !== page.token) return;
      view.replaceChildren(latentNav(i), h('p', { class: 'error', text: err.message +
        ' — the site folder is incomplete; rebuild it with `tempolens dashboards`.' }));
    });
  }

  function focusHeading(view) {
    var hd = view.querySelector('h1');
    if (hd) hd.focus({ preventScroll: true });
  }

  /** The latent before (step -1) or after (step +1) `i` in this site, or null. */
  function neighbour(i, step) {
    var k = site.posOf.get(i);
    if (k === undefined) return null;
    var j = site.latents[k + step];
    return j === undefined ? null : j;
  }

  function latentNav(i) {
    var pi = neighbour(i, -1), ni = neighbour(i, 1);
    var prev = pi !== null ? h('a', { href: latentHref(pi), rel: 'prev', class: 'btn', title: 'previous latent (k)', text: '‹ #' + pi }) : h('span', { class: 'btn disabled', text: '‹' });
    var next = ni !== null ? h('a', { href: latentHref(ni), rel: 'next', class: 'btn', title: 'next latent (j)', text: '#' + ni + ' ›' }) : h('span', { class: 'btn disabled', text: '›' });
    var k = site.posOf.get(i);
    var posText = site.nLatents === site.width ? 'latent ' + i + ' of ' + fmtInt(site.width)
      : 'latent ' + i + ' · ' + fmtInt(k + 1) + ' of ' + fmtInt(site.nLatents) + ' in this site (SAE width ' + fmtInt(site.width) + ')';
    return h('nav', { class: 'latent-nav', 'aria-label': 'Latents' },
      h('a', { href: indexHash(), class: 'btn', text: '← All latents' }), prev,
      h('span', { class: 'pos', text: k === undefined ? '' : posText }), next,
      h('span', { class: 'hint', text: 'j / k' }));
  }

  function indexHash() {
    var hsh = '#/';
    var p = new URLSearchParams();
    if (ix.sortKey !== 'index' || ix.sortDir !== 1) { p.set('sort', ix.sortKey); p.set('dir', ix.sortDir === 1 ? 'asc' : 'desc'); }
    if (ix.q) p.set('q', ix.q);
    if (ix.status !== 'all') p.set('status', ix.status);
    ['dmin', 'dmax', 'amin'].forEach(function (name) { if (ix[name] !== null) p.set(name, String(ix[name])); });
    var qs = p.toString();
    return hsh + (qs ? '?' + qs : '');
  }

  function stat(label, value, sub, title) {
    return h('div', { class: 'stat', title: title || null },
      h('div', { class: 'stat-k', text: label }), h('div', { class: 'stat-v', text: value }), sub ? h('div', { class: 'stat-sub', text: sub }) : null);
  }

  function renderLatent(i, rec) {
    var row = site.rowOf.get(i) || [];
    var tl = (rec && rec.tempolens) || {};
    var frac = rec && isNum(rec.frac_nonzero) ? rec.frac_nonzero : cell(row, 'frac_nonzero');
    var maxAct = isNum(tl.max_act) ? tl.max_act : cell(row, 'max_act');
    var meanAct = isNum(tl.mean_act) ? tl.mean_act : cell(row, 'mean_act');
    var temporal = metaTemporal();
    var pred = metaCodes() === 'pred';
    var norm = metaNorm() && isNum(tl.decoder_norm) && tl.decoder_norm > 0 ? tl.decoder_norm : 0;
    var unitsShort = metaNorm() ? 'code × ‖decoder row‖' + (norm ? ' (' + fmt(norm) + ')' : '') : 'raw code';
    var root = h('article', { class: 'latent' });

    var stats = h('div', { class: 'stats' },
      stat('Density', fmt(frac), oneIn(frac), 'fraction of counted tokens on which the latent is ' + (pred ? 'predicted > 0' : 'nonzero') + ': ' + exact(frac)),
      stat('Max ' + actWord(), fmt(maxAct), unitsShort, exact(maxAct) + (norm ? ' (raw code ' + exact(maxAct / norm) + ')' : '')),
      stat('Mean ' + actWord(), fmt(meanAct), 'over active tokens', exact(meanAct) + (norm ? ' (raw code ' + exact(meanAct / norm) + ')' : '')),
      isNum(tl.n_active) ? stat('Active tokens', fmtInt(tl.n_active)) : null,
      temporal ? stat('Predicted share at top activations', isNum(tl.pred_share_top) ? fmtPct(tl.pred_share_top) : '–',
        'mean over the top examples', 'mean predicted share of the token at the qualifying tokens of the top examples: ' + exact(tl.pred_share_top)) : null);
    var expl = tl.explanation != null ? tl.explanation : cell(row, 'explanation');
    var scores = tl.scores && typeof tl.scores === 'object' ? tl.scores : null;
    var scoreKeys = scores ? Object.keys(scores) : [];
    if (!scoreKeys.length && isNum(cell(row, 'score'))) { scores = { score: cell(row, 'score') }; scoreKeys = ['score']; }
    var explBlock = h('div', { class: 'explanation' },
      h('span', { class: 'label', text: 'Explanation' }),
      expl != null && String(expl) !== '' ? h('q', { text: String(expl) }) : h('span', { class: 'muted', text: 'none yet (run `tempolens autointerp`)' }),
      scoreKeys.length ? h('span', { class: 'scores' }, scoreKeys.map(function (k) {
        return h('span', { class: 'score-chip', title: k + ': ' + exact(scores[k]) }, h('span', { text: k + ' ' }), h('b', { text: fmt(scores[k]) }));
      })) : null);
    var other = otherViewHref(i);
    var viewSwitch = other ? h('nav', { class: 'view-switch', 'aria-label': 'Codes shown' },
      h('span', { class: 'muted', text: 'View: ' }),
      pred ? h('a', { href: other, class: 'btn', text: 'novel codes' }) : h('span', { class: 'btn current', 'aria-current': 'page', text: 'novel codes' }),
      pred ? h('span', { class: 'btn current', 'aria-current': 'page', text: 'predicted codes' }) : h('a', { href: other, class: 'btn', text: 'predicted codes' })) : null;
    root.appendChild(h('header', { class: 'card latent-head' },
      h('h1', { tabindex: '-1', text: 'Latent ' + i + (pred ? ' · predicted codes' : '') }), viewSwitch, stats, explBlock));

    var deadNote = h('section', { class: 'card dead-note' }, h('p', { text: (isNum(frac) && frac === 0)
      ? 'This latent never fired on the ' + fmtInt(data.meta && data.meta.n_tokens) + ' counted tokens (a dead latent): there are no examples to show.'
      : 'No examples recorded for this latent.' }));
    if (!rec) {
      root.appendChild(deadNote);
      return root;
    }

    var acts = Array.isArray(rec.activations) ? rec.activations : [];
    var top = acts.filter(function (a) { return a && a.bin_min === -1; });
    var groups = [], byKey = new Map();
    acts.forEach(function (a) {
      if (!a || a.bin_min === -1) return;
      var key = a.bin_min + '|' + a.bin_max;
      if (!byKey.has(key)) { var g = { min: a.bin_min, max: a.bin_max, contains: a.bin_contains, items: [] }; byKey.set(key, g); groups.push(g); }
      byKey.get(key).items.push(a);
    });
    groups.sort(function (a, b) { return b.min - a.min; });   // highest interval first, right after the top examples

    var colourMax = isNum(maxAct) && maxAct > 0 ? maxAct : 0;
    var predMax = 0;
    acts.forEach(function (a) {
      if (!colourMax) (a.values || []).forEach(function (v) { if (isNum(v) && v > colourMax) colourMax = v; });
      (a.pred_values || []).forEach(function (v) { if (isNum(v) && Math.abs(v) > predMax) predMax = Math.abs(v); });
    });
    var ctx = { colourMax: colourMax, predMax: predMax, temporal: temporal, nActive: tl.n_active, norm: norm, pred: pred };

    var side = h('aside', { class: 'side' });
    var mainCol = h('div', { class: 'main-col' });
    var layout = h('div', { class: 'layout' }, side, mainCol);
    root.appendChild(layout);

    // Examples.
    if (pred && acts.length) mainCol.appendChild(predLegend());
    else if (temporal && acts.length) mainCol.appendChild(temporalLegend(ctx));
    if (!acts.length) mainCol.appendChild(deadNote);
    else mainCol.appendChild(h('section', { class: 'card', 'aria-labelledby': 'top-h' },
      h('h2', { id: 'top-h', text: 'Top activations' }, h('span', { class: 'muted', text: ' (' + top.length + ')' })),
      top.length ? h('ol', { class: 'examples' }, top.map(function (a, k) { return exampleRow(a, k + 1, ctx); }))
        : h('p', { class: 'muted', text: 'No examples.' })));
    if (groups.length) {
      var sec = h('section', { class: 'card', 'aria-labelledby': 'int-h' },
        h('h2', { id: 'int-h', text: 'Activation intervals' }),
        h('p', { class: 'hint', text: 'Equal-width intervals over (0, max]; random examples from each. Shares are of the tokens where this latent is active.' }));
      groups.forEach(function (g, k) {
        var share = g.contains;
        if (isNum(share) && share > 1 && isNum(tl.n_active) && tl.n_active > 0) share = share / tl.n_active;
        sec.appendChild(h('h3', { class: 'interval-h', title: '(' + exact(g.min) + ', ' + exact(g.max) + ']' }, 'Interval ' + (groups.length - k) + ' · (' + fmt(g.min) + ', ' + fmt(g.max) + ']',
          h('span', { class: 'muted', text: ' · ' + (isNum(share) ? fmtPct(share, share < 0.01 ? 2 : 1) + ' of active tokens' : 'share unknown') + ' · ' + g.items.length + ' shown' })));
        sec.appendChild(h('ol', { class: 'examples' }, g.items.map(function (a, j) { return exampleRow(a, j + 1, ctx); })));
      });
      mainCol.appendChild(sec);
    }

    // Sidebar: histograms, logits, correlations.
    side.appendChild(h('section', { class: 'card', 'aria-labelledby': 'hist-h' },
      h('h2', { id: 'hist-h', text: 'Activation density' }),
      histogram(rec.freq_hist_data_bar_values, rec.freq_hist_data_bar_heights, {
        xLabel: actWord() + (pred ? ' (> 0 only)' : ' (active tokens only)') + (metaNorm() ? ' × ‖row‖' : ''), yLabel: 'tokens', colour: 'act',
        label: 'histogram of ' + (pred ? 'positive predicted codes' : 'nonzero activations') })));
    side.appendChild(h('section', { class: 'card', 'aria-labelledby': 'logit-h' },
      h('h2', { id: 'logit-h', text: 'Logit effects' }),
      h('p', { class: 'hint', text: 'Of the unit-norm decoder direction through the final norm and the unembedding.' }),
      histogram(rec.logits_hist_data_bar_values, rec.logits_hist_data_bar_heights, {
        xLabel: 'logit effect of the unit decoder direction', yLabel: 'vocab tokens', colour: 'sign', label: 'histogram of logit effects over the vocabulary' }),
      h('div', { class: 'logit-tables' },
        logitTable('Negative', rec.neg_str, rec.neg_values, 'neg'),
        logitTable('Positive', rec.pos_str, rec.pos_values, 'pos'))));
    side.appendChild(correlated(rec));
    var na = neuronAlignment(rec);
    if (na) side.appendChild(na);
    if (isNum(rec.n_prompts_total) || rec.dataset) {
      side.appendChild(h('p', { class: 'hint', text: 'From ' + fmtInt(rec.n_prompts_total) + ' prompts × ' + fmtInt(rec.n_tokens_in_prompt) +
        ' tokens' + (rec.dataset ? ' of ' + String(rec.dataset) : '') + '.' }));
    }
    return root;
  }

  // the predicted codes' orientation: −1 when the SAE's predictor writes −D (its scalar p is mostly negative)
  function predFlipped() { return !!(data.meta && data.meta.pred_sign === -1); }
  function predName() { return predFlipped() ? '−z_pred' : 'z_pred'; }

  function predLegend() {
    var card = h('section', { class: 'card legend', 'aria-label': 'Legend' },
      h('div', { class: 'legend-row' },
        h('span', { class: 'sw sw-act', 'aria-hidden': 'true' }),
        h('span', null, h('b', { text: 'predicted code ' + predName() + ' > 0' }), ' — what the context predicts for this latent at the token (background, ∝ value / max)')),
      h('div', { class: 'legend-row' },
        h('span', { class: 'sw sw-neg', 'aria-hidden': 'true' }),
        h('span', null, h('b', { text: predName() + ' < 0' }), ' — the context predicts against this latent (shown in context and hover; never ranked)')),
      h('p', { class: 'hint', text: 'Examples are ranked by the positive predicted code. The store keeps a few predicted codes per token ' +
        '(those most unusual for their latent), so other tokens show 0. ' +
        'Hover a token for exact values.' }));
    if (predFlipped()) {
      card.appendChild(h('p', { class: 'hint pred-sign', text: 'This SAE predicts with a negative scale p on most tokens, so its ' +
        'predicted contribution points along −D: codes are shown as −z_pred, and logit effects are those of −D.' }));
    }
    return card;
  }

  function temporalLegend(ctx) {
    var sel = h('select', { id: 'underline-mode', 'aria-label': 'Underline shows' },
      h('option', { value: 'pred', text: 'predicted code of this latent' }),
      h('option', { value: 'share', text: "predicted share of the token's reconstruction" }));
    sel.value = page.mode;
    sel.addEventListener('change', function () { page.mode = sel.value; recolourUnderlines(ctx); });
    return h('section', { class: 'card legend', 'aria-label': 'Legend' },
      h('div', { class: 'legend-row' },
        h('span', { class: 'sw sw-act', 'aria-hidden': 'true' }),
        h('span', null, h('b', { text: 'novel code value' }), ' — this latent\'s activation on the part of the token that the context did not predict (background, ∝ value / max)')),
      h('div', { class: 'legend-row' },
        h('span', { class: 'sw sw-pred', 'aria-hidden': 'true' }),
        h('span', null, h('b', { text: 'predicted by context' }), ' — underline: ', sel, ' (blue positive, red negative)')),
      h('div', { class: 'legend-row' },
        h('span', { class: 'sw sw-q', 'aria-hidden': 'true' }),
        h('span', { text: 'qualifying token (the example\'s selected activation)' })),
      h('p', { class: 'hint', text: 'Predicted share of a token = ‖r_pred‖² / (‖r_pred‖² + ‖r_novel‖²): how much of its SAE reconstruction the context predicted. ' +
        'Beside each example: this latent\'s predicted code and the token\'s predicted share at the qualifying token. Hover a token for exact values.' }));
  }

  function recolourUnderlines(ctx) {
    var toks = document.querySelectorAll('#view-page .tok');
    for (var k = 0; k < toks.length; k++) {
      var info = tokInfo.get(toks[k]);
      if (info) toks[k].style.borderBottomColor = underline(info, ctx);
    }
  }

  function underline(info, ctx) {
    if (page.mode === 'share') return isNum(info.share) ? predColor(info.share, 1) : 'transparent';
    return predColor(info.pred, ctx.predMax);
  }

  function exampleRow(a, rank, ctx) {
    var tokens = Array.isArray(a.tokens) ? a.tokens : [];
    var values = Array.isArray(a.values) ? a.values : [];
    var q = isNum(a.qualifying_token_index) ? a.qualifying_token_index : argmax(values);
    var qv = values[q];
    var li = h('li', { class: 'example' });
    var metaBits = [h('span', { class: 'ex-rank', title: isNum(a.prompt_index) ? 'prompt ' + a.prompt_index + ', token ' + q : null, text: rank + '.' }),
      h('span', { class: 'ex-val', title: 'activation at the qualifying token: ' + exact(qv) }, fmt(qv, 3))];
    if (ctx.temporal && !ctx.pred) {
      var pv = Array.isArray(a.pred_values) ? a.pred_values[q] : undefined;
      var ps = Array.isArray(a.pred_share) ? a.pred_share[q] : undefined;
      metaBits.push(h('span', { class: 'ex-pred', title: 'at the qualifying token: predicted code of this latent ' + exact(pv) + '; predicted share of the token ' + exact(ps) },
        'pred ' + fmt(pv), h('br'), 'share ' + (isNum(ps) ? fmtPct(ps, 0) : '–')));
    }
    var body = h('div', { class: 'ex-tokens' });
    var long = tokens.length > WINDOW_MIN;
    function draw(full) {
      var start = 0, end = tokens.length;
      if (!full && long) { start = Math.max(0, q - WINDOW_BEFORE); end = Math.min(tokens.length, q + WINDOW_AFTER + 1); }
      var frag = document.createDocumentFragment();
      if (start > 0) frag.appendChild(h('span', { class: 'cut', title: start + ' earlier tokens hidden', text: '…' }));
      for (var t = start; t < end; t++) frag.appendChild(tokenSpan(a, t, q, ctx));
      if (end < tokens.length) frag.appendChild(h('span', { class: 'cut', title: (tokens.length - end) + ' later tokens hidden', text: '…' }));
      body.replaceChildren(frag);
    }
    draw(false);
    var tools = null;
    if (long) {
      var full = false;
      var btn = h('button', { type: 'button', class: 'expand', 'aria-expanded': 'false', text: 'full context (' + tokens.length + ')' });
      btn.addEventListener('click', function () {
        full = !full;
        draw(full);
        btn.setAttribute('aria-expanded', String(full));
        btn.textContent = full ? 'window' : 'full context (' + tokens.length + ')';
      });
      tools = h('div', { class: 'ex-tools' }, btn);
    }
    li.appendChild(h('div', { class: 'ex-meta' }, metaBits));
    li.appendChild(body);
    if (tools) li.appendChild(tools);
    return li;
  }

  function argmax(values) {
    var best = 0;
    for (var k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
    return best;
  }

  function tokenSpan(a, t, q, ctx) {
    var raw = a.tokens[t] == null ? '' : String(a.tokens[t]);
    var v = Array.isArray(a.values) ? a.values[t] : 0;
    // predicted-code view: `values` is z_pred clipped at 0 (what is ranked), `pred_values` the signed z_pred
    if (ctx.pred && Array.isArray(a.pred_values) && isNum(a.pred_values[t])) v = a.pred_values[t];
    var shown = showToken(raw);
    var span = h('span', { class: 'tok' + (shown.ws ? ' ws' : '') + (t === q ? ' q' : '') + (isNum(v) && v > 0 ? ' on' : '') + (isNum(v) && v < 0 ? ' neg' : '') });
    span.textContent = shown.text;
    var info = { raw: raw, v: v, pos: t, q: t === q, norm: ctx.norm };
    var title = JSON.stringify(raw) + ' · ' + actWord() + ' ' + (isNum(v) ? exact(v) : '0') + (ctx.norm && isNum(v) && v !== 0 ? ' · raw code ' + exact(v / ctx.norm) : '');
    if (ctx.temporal && !ctx.pred) {
      if (Array.isArray(a.pred_values)) { info.pred = a.pred_values[t]; title += ' · predicted ' + exact(info.pred); }
      if (Array.isArray(a.pred_share)) { info.share = a.pred_share[t]; title += ' · predicted share ' + fmtPct(info.share); }
    }
    span.setAttribute('title', title);
    if (t === q) span.setAttribute('tabindex', '0');   // keyboard users reach the qualifying token and its tooltip
    var bg = isNum(v) && v < 0 ? negColor(v, ctx.colourMax) : actColor(v, ctx.colourMax);
    if (bg) span.style.backgroundColor = bg;
    if (ctx.temporal && !ctx.pred) span.style.borderBottomColor = underline(info, ctx);
    tokInfo.set(span, info);
    return span;
  }

  function histogram(centres, heights, opt) {
    if (!Array.isArray(centres) || !Array.isArray(heights) || !centres.length || centres.length !== heights.length) {
      return h('p', { class: 'muted', text: 'No histogram data.' });
    }
    var W = 340, H = 170, L = 46, R = 22, T = 10, B = 40;
    var pw = W - L - R, ph = H - T - B;
    var n = centres.length;
    var w = n > 1 ? (centres[n - 1] - centres[0]) / (n - 1) : (Math.abs(centres[0]) || 1);
    if (!(w > 0)) w = 1;
    var x0 = centres[0] - w / 2, x1 = centres[n - 1] + w / 2;
    var yMax = 0;
    heights.forEach(function (v) { if (isNum(v) && v > yMax) yMax = v; });
    if (!(yMax > 0)) return h('p', { class: 'muted', text: 'No nonzero values to draw.' });
    function sx(x) { return L + (x - x0) / (x1 - x0) * pw; }
    function sy(y) { return T + ph - y / yMax * ph; }
    var svg = s('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'hist', role: 'img', 'aria-label': opt.label });
    svg.appendChild(s('title', { text: opt.label }));
    var yt = niceTicks(0, yMax, 3);
    yt.forEach(function (t) {
      svg.appendChild(s('line', { x1: L, x2: L + pw, y1: sy(t), y2: sy(t), class: 'grid' }));
      svg.appendChild(s('text', { x: L - 4, y: sy(t) + 3, class: 'tick', 'text-anchor': 'end', text: fmt(t, 3) }));
    });
    var bw = Math.max(0.6, pw / n - (pw / n > 3 ? 0.8 : 0));
    for (var k = 0; k < n; k++) {
      var c = centres[k], hv = heights[k];
      if (!isNum(c) || !isNum(hv)) continue;
      var cls = opt.colour === 'sign' ? (c < 0 ? 'bar neg' : 'bar pos') : 'bar act';
      var y = sy(hv);
      svg.appendChild(s('rect', { x: sx(c - w / 2).toFixed(2), y: y.toFixed(2), width: bw.toFixed(2), height: Math.max(0, T + ph - y).toFixed(2), class: cls },
        s('title', { text: fmt(c - w / 2, 3) + ' to ' + fmt(c + w / 2, 3) + ': ' + fmtInt(hv) })));
    }
    svg.appendChild(s('line', { x1: L, x2: L + pw, y1: T + ph, y2: T + ph, class: 'axis' }));
    svg.appendChild(s('line', { x1: L, x2: L, y1: T, y2: T + ph, class: 'axis' }));
    niceTicks(x0, x1, 4).forEach(function (t) {
      svg.appendChild(s('line', { x1: sx(t), x2: sx(t), y1: T + ph, y2: T + ph + 4, class: 'axis' }));
      svg.appendChild(s('text', { x: sx(t), y: T + ph + 15, class: 'tick', 'text-anchor': 'middle', text: fmt(t, 3) }));
    });
    svg.appendChild(s('text', { x: L + pw / 2, y: H - 4, class: 'axis-label', 'text-anchor': 'middle', text: opt.xLabel }));
    svg.appendChild(s('text', { x: 11, y: T + ph / 2, class: 'axis-label', 'text-anchor': 'middle', transform: 'rotate(-90 11 ' + (T + ph / 2) + ')', text: opt.yLabel }));
    return svg;
  }

  function tokenCell(raw) {
    var shown = showToken(raw);
    return h('td', { class: 'tokcell' }, h('span', { class: 'tok plain' + (shown.ws ? ' ws' : ''), title: JSON.stringify(raw == null ? '' : String(raw)), text: shown.text }));
  }

  function logitTable(title, strs, vals, cls) {
    strs = Array.isArray(strs) ? strs : [];
    vals = Array.isArray(vals) ? vals : [];
    var tb = h('tbody');
    strs.forEach(function (t, k) { tb.appendChild(h('tr', null, tokenCell(t), h('td', { class: 'num ' + cls, title: exact(vals[k]), text: fmt(vals[k], 3) }))); });
    return h('table', { class: 'small-table logits ' + cls },
      h('caption', { text: title + ' logits' }),
      h('thead', null, h('tr', null, h('th', { scope: 'col', text: 'token' }), h('th', { scope: 'col', class: 'num', text: 'effect' }))),
      strs.length ? tb : h('tbody', null, h('tr', null, h('td', { colspan: '2', class: 'muted', text: 'none' }))));
  }

  function correlated(rec) {
    var idx = Array.isArray(rec.correlated_features_indices) ? rec.correlated_features_indices : [];
    var pr = rec.correlated_features_pearson || [], l1 = rec.correlated_features_l1 || [];
    var sec = h('section', { class: 'card', 'aria-labelledby': 'corr-h' }, h('h2', { id: 'corr-h', text: 'Correlated latents' }));
    if (!idx.length) { sec.appendChild(h('p', { class: 'muted', text: 'None recorded.' })); return sec; }
    var tb = h('tbody');
    idx.forEach(function (j, k) {
      var r = site.rowOf.get(j);
      var label = r ? (cell(r, 'explanation') || cell(r, 'top_tokens') || '') : '';
      tb.appendChild(h('tr', null,
        h('td', { class: 'num' }, Number.isInteger(j) ? h('a', { href: latentHref(j), class: 'corr-link', text: '#' + j }) : String(j)),
        h('td', { class: 'num', title: exact(pr[k]), text: fmt(pr[k], 3) }),
        h('td', { class: 'num', title: exact(l1[k]), text: fmt(l1[k], 3) }),
        h('td', { class: 'toks', text: String(label) })));
    });
    sec.appendChild(h('table', { class: 'small-table' },
      h('thead', null, h('tr', null, h('th', { scope: 'col', text: 'latent' }),
        h('th', { scope: 'col', class: 'num', title: 'Pearson correlation of activations over all counted tokens', text: 'pearson' }),
        h('th', { scope: 'col', class: 'num', title: 'Neuronpedia field correlated_features_l1', text: 'l1' }),
        h('th', { scope: 'col', text: 'about' }))), tb));
    return sec;
  }

  function neuronAlignment(rec) {
    var idx = Array.isArray(rec.neuron_alignment_indices) ? rec.neuron_alignment_indices : [];
    if (!idx.length) return null;
    var vals = rec.neuron_alignment_values || [], l1 = rec.neuron_alignment_l1 || [];
    var tb = h('tbody');
    idx.forEach(function (j, k) {
      tb.appendChild(h('tr', null, h('td', { class: 'num', text: String(j) }),
        h('td', { class: 'num', title: exact(vals[k]), text: fmt(vals[k], 3) }),
        h('td', { class: 'num', title: exact(l1[k]), text: isNum(l1[k]) ? fmtPct(l1[k]) : '–' })));
    });
    return h('section', { class: 'card', 'aria-labelledby': 'na-h' }, h('h2', { id: 'na-h', text: 'Neuron alignment' }),
      h('p', { class: 'hint', text: 'Largest decoder-direction components (residual dimensions).' }),
      h('table', { class: 'small-table' },
        h('thead', null, h('tr', null, h('th', { scope: 'col', class: 'num', text: 'dim' }),
          h('th', { scope: 'col', class: 'num', text: 'weight' }), h('th', { scope: 'col', class: 'num', text: '% of L1' }))), tb));
  }

  // ------------------------------------------------------------------------------------------
  // Autointerp report and kernel pages.
  // ------------------------------------------------------------------------------------------
  function valueText(v) {
    if (v === null || v === undefined) return '–';
    if (isNum(v)) return fmt(v);
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  function reportTable(t) {
    var cols = Array.isArray(t.columns) ? t.columns : [];
    var rows = Array.isArray(t.rows) ? t.rows : [];
    return h('figure', { class: 'report-table' },
      t.title ? h('figcaption', { text: String(t.title) }) : null,
      h('div', { class: 'table-wrap' }, h('table', { class: 'small-table wide' },
        h('thead', null, h('tr', null, cols.map(function (c) { return h('th', { scope: 'col', text: String(c) }); }))),
        h('tbody', null, rows.map(function (r) {
          return h('tr', null, (Array.isArray(r) ? r : [r]).map(function (v) { return h('td', { class: isNum(v) ? 'num' : '', title: isNum(v) ? exact(v) : null, text: valueText(v) }); }));
        })))),
      t.caption ? h('p', { class: 'hint', text: String(t.caption) }) : null);
  }

  var SCORER_ORDER = ['saebench', 'delphi-detection', 'delphi-fuzzing', 'embedding', 'cluster'];

  function scoreCell(d) {
    if (!d || !isNum(d.mean)) return h('td', { class: 'num muted', text: '–' });
    return h('td', { class: 'num', title: 'mean ' + exact(d.mean) + ', 95% CI [' + exact(d.ci_low) + ', ' + exact(d.ci_high) + '], n = ' + d.n +
        (d.n_unscored ? ', ' + d.n_unscored + ' unscored' : '') },
      h('b', { text: d.mean.toFixed(3) }), ' ', h('span', { class: 'muted', text: '[' + (isNum(d.ci_low) ? d.ci_low.toFixed(3) : '–') + ', ' +
        (isNum(d.ci_high) ? d.ci_high.toFixed(3) : '–') + '] n=' + (isNum(d.n) ? d.n : '–') }));
  }

  /** Dot-and-whisker plot: one row per (scorer, SAE), mean with its 95% CI, the scorer's chance level dashed. */
  function ciPlot(saes, scorers) {
    var rows = [];
    scorers.forEach(function (sc) {
      saes.forEach(function (sae) {
        var d = sae.scores && sae.scores[sc];
        if (d && isNum(d.mean)) rows.push({ sc: sc, label: String(sae.label), d: d });
      });
    });
    if (!rows.length) return null;
    var lo = 1, hi = 0;
    rows.forEach(function (r) {
      [r.d.mean, r.d.ci_low, r.d.ci_high, r.d.chance].forEach(function (v) { if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    });
    lo = Math.max(0, Math.floor((lo - 0.05) * 10) / 10); hi = Math.min(1, Math.ceil((hi + 0.05) * 10) / 10);
    if (hi <= lo) hi = lo + 0.1;
    var W = 680, L = 250, R = 20, RH = 20, T = 8, B = 34, H = T + rows.length * RH + B;
    function sx(v) { return L + (v - lo) / (hi - lo) * (W - L - R); }
    var svg = s('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'ciplot', role: 'img', 'aria-label': 'mean score per scorer and SAE with 95% confidence intervals' });
    niceTicks(lo, hi, 5).forEach(function (t) {
      svg.appendChild(s('line', { x1: sx(t), x2: sx(t), y1: T, y2: H - B, class: 'grid' }));
      svg.appendChild(s('text', { x: sx(t), y: H - B + 14, 'text-anchor': 'middle', class: 'tick', text: t.toFixed(2) }));
    });
    svg.appendChild(s('text', { x: L + (W - L - R) / 2, y: H - 4, 'text-anchor': 'middle', class: 'axis-label', text: 'score (mean over latents, 95% CI); dashed: chance' }));
    rows.forEach(function (r, k) {
      var y = T + k * RH + RH / 2;
      if (k > 0 && rows[k - 1].sc !== r.sc) svg.appendChild(s('line', { x1: 0, x2: W, y1: y - RH / 2, y2: y - RH / 2, class: 'sep' }));
      svg.appendChild(s('text', { x: L - 8, y: y + 4, 'text-anchor': 'end', class: 'row-label', text: r.sc + ' · ' + r.label }));
      if (isNum(r.d.chance)) svg.appendChild(s('line', { x1: sx(r.d.chance), x2: sx(r.d.chance), y1: y - RH / 2 + 2, y2: y + RH / 2 - 2, class: 'chance' }));
      if (isNum(r.d.ci_low) && isNum(r.d.ci_high)) svg.appendChild(s('line', { x1: sx(r.d.ci_low), x2: sx(r.d.ci_high), y1: y, y2: y, class: 'ci' }));
      svg.appendChild(s('circle', { cx: sx(r.d.mean), cy: y, r: 4.5, class: 'dot' },
        s('title', { text: r.sc + ' · ' + r.label + ': ' + r.d.mean.toFixed(3) + ' [' + fmt(r.d.ci_low, 3) + ', ' + fmt(r.d.ci_high, 3) + ']' })));
    });
    return svg;
  }

  function ballparkReport(r) {
    var saes = r.saes.filter(function (x) { return x && typeof x === 'object'; });
    var present = {};
    saes.forEach(function (x) { Object.keys(x.scores || {}).forEach(function (k) { present[k] = 1; }); });
    var scorers = SCORER_ORDER.filter(function (k) { return present[k]; }).concat(Object.keys(present).filter(function (k) { return SCORER_ORDER.indexOf(k) < 0; }).sort());
    var tokens = r.tokens || {};
    var sec = h('section', { class: 'card report' }, h('h1', { tabindex: '-1', text: r.title ? String(r.title) : 'Autointerp ballpark' }));
    var facts = [['Judge / explainer', r.judge ? String(r.judge) + (r.backend ? ' (' + String(r.backend) + ')' : '') : 'none (LLM-free scores only)']];
    if (r.embedding_model) facts.push(['Embedding model', String(r.embedding_model)]);
    if (r.window_len != null) facts.push(['Windows', String(r.window_len) + ' tokens']);
    if (Array.isArray(r.scorers)) facts.push(['Scorers', r.scorers.join(', ')]);
    facts.push(['Tokens spent', fmtInt(tokens.prompt) + ' prompt + ' + fmtInt(tokens.completion) + ' completion' + (isNum(r.budget_tokens) ? ' (budget ' + fmtInt(r.budget_tokens) + ')' : '')]);
    if (r.seed != null) facts.push(['Seed', String(r.seed)]);
    if (isNum(r.wall_s)) facts.push(['Wall time', fmt(r.wall_s, 3) + ' s']);
    if (r.created) facts.push(['Created', String(r.created)]);
    var dl = h('dl', { class: 'facts' });
    facts.forEach(function (f) { dl.appendChild(h('dt', { text: f[0] })); dl.appendChild(h('dd', { text: f[1] })); });
    sec.appendChild(dl);
    sec.appendChild(h('p', { class: 'hint', text: 'Mean per latent with a 95% percentile-bootstrap confidence interval over latents; n = latents scored. Compare SAEs only through the same explainer, judge, windows and budget.' }));
    var plot = ciPlot(saes, scorers);
    if (plot) sec.appendChild(h('figure', { class: 'ci-figure' }, plot));
    var head = ['SAE', 'architecture', 'width', 'latents (alive)'].concat(scorers, ['parse failures', 'errors', 'tokens']);
    var tb = h('tbody');
    saes.forEach(function (x) {
      var pf = 0;
      Object.keys(x.parse_failures || {}).forEach(function (k) { if (isNum(x.parse_failures[k])) pf += x.parse_failures[k]; });
      var tk = x.tokens || {};
      tb.appendChild(h('tr', null,
        h('td', { text: String(x.label) }), h('td', { text: x.architecture ? String(x.architecture) : '?' }),
        h('td', { class: 'num', text: fmtInt(x.width) }), h('td', { class: 'num', text: fmtInt(x.n_latents) + ' (' + fmtInt(x.n_alive) + ')' }),
        scorers.map(function (sc) { return scoreCell(x.scores && x.scores[sc]); }),
        h('td', { class: 'num', title: JSON.stringify(x.parse_failures || {}), text: String(pf) }),
        h('td', { class: 'num', text: String(x.transport_errors == null ? 0 : x.transport_errors) }),
        h('td', { class: 'num', text: fmtInt((tk.prompt || 0) + (tk.completion || 0)) })));
    });
    sec.appendChild(h('div', { class: 'table-wrap' }, h('table', { class: 'small-table wide report-scores' },
      h('thead', null, h('tr', null, head.map(function (c) { return h('th', { scope: 'col', text: c }); }))), tb)));
    var chance = [];
    scorers.forEach(function (sc) {
      for (var k = 0; k < saes.length; k++) { var d = saes[k].scores && saes[k].scores[sc]; if (d && isNum(d.chance)) { chance.push(sc + ' ' + d.chance.toFixed(3)); break; } }
    });
    if (chance.length) sec.appendChild(h('p', { class: 'hint', text: 'Chance levels: ' + chance.join(', ') + '.' }));
    var pooled = [];
    saes.forEach(function (x) {
      Object.keys(x.pooled || {}).forEach(function (k) {
        var p = x.pooled[k];
        if (p && isNum(p.balanced_accuracy)) pooled.push(String(x.label) + ' ' + k + ' ' + p.balanced_accuracy.toFixed(3) + ' (' + fmtInt(p.n_answers) + ' answers)');
      });
    });
    if (pooled.length) sec.appendChild(h('p', { class: 'hint', text: 'Pooled balanced accuracy over all answers: ' + pooled.join('; ') + '.' }));
    var pc = r.published_context;
    if (pc && typeof pc === 'object') {
      var ptb = h('tbody');
      Object.keys(pc.scores || {}).forEach(function (k) {
        ptb.appendChild(h('tr', null, h('td', { text: k }), h('td', { class: 'num', text: isNum(pc.scores[k]) ? pc.scores[k].toFixed(3) : String(pc.scores[k]) })));
      });
      sec.appendChild(h('h2', { text: 'Context (not comparable)' }));
      sec.appendChild(h('p', null, pc.source ? String(pc.source) + '. ' : '', pc.caveat ? h('strong', { text: String(pc.caveat) }) : null));
      sec.appendChild(h('table', { class: 'small-table wide' },
        h('thead', null, h('tr', null, h('th', { scope: 'col', text: 'SAE' }), h('th', { scope: 'col', class: 'num', text: (pc.scorer ? String(pc.scorer) : 'score') }))), ptb));
    }
    sec.appendChild(h('details', null, h('summary', { text: 'Raw report data' }), h('pre', { class: 'json', text: JSON.stringify(r, null, 2) })));
    return sec;
  }

  function showReport() {
    var view = document.getElementById('view-page');
    page.token++;
    switchView('page');
    markNav('report');
    var r = data.autointerp;
    if (!r) {
      view.replaceChildren(h('section', { class: 'card' }, h('h1', { tabindex: '-1', text: 'No autointerp report' }),
        h('p', { text: 'This site has no data/autointerp.js; run `tempolens autointerp` and rebuild the site.' })));
      focusHeading(view);
      return;
    }
    document.title = 'Autointerp report — ' + (data.meta && data.meta.title ? String(data.meta.title) : 'tempolens');
    if (Array.isArray(r.saes)) {
      view.replaceChildren(ballparkReport(r));
      focusHeading(view);
      return;
    }
    var sec = h('section', { class: 'card report' }, h('h1', { tabindex: '-1', text: r.title ? String(r.title) : 'Autointerp report' }));
    var summary = Array.isArray(r.summary) ? r.summary : r.summary != null ? [r.summary] : [];
    summary.forEach(function (p) { sec.appendChild(h('p', { text: String(p) })); });
    var known = { title: 1, summary: 1, tables: 1, notes: 1 };
    (Array.isArray(r.tables) ? r.tables : []).forEach(function (t) { if (t) sec.appendChild(reportTable(t)); });
    var extra = Object.keys(r).filter(function (k) { return !known[k]; });
    if (extra.length) {
      var dl = h('dl', { class: 'facts' });
      extra.forEach(function (k) {
        var v = r[k];
        dl.appendChild(h('dt', { text: k }));
        dl.appendChild(h('dd', null, v !== null && typeof v === 'object' ? h('pre', { class: 'json', text: JSON.stringify(v, null, 2) }) : valueText(v)));
      });
      sec.appendChild(dl);
    }
    var notes = Array.isArray(r.notes) ? r.notes : r.notes != null ? [r.notes] : [];
    if (notes.length) sec.appendChild(h('ul', { class: 'notes' }, notes.map(function (n) { return h('li', { text: String(n) }); })));
    view.replaceChildren(sec);
    focusHeading(view);
  }

  function showKernels() {
    var view = document.getElementById('view-page');
    page.token++;
    switchView('page');
    markNav('kernels');
    var pages = kernelPages();
    var sec = h('section', { class: 'card' }, h('h1', { tabindex: '-1', text: 'Similarity kernels' }),
      h('p', { class: 'hint', text: 'Cosine similarity of mean-centred codes between positions of one text: predicted codes, novel codes and a standard SAE\'s codes; attention maps per head.' }));
    if (!pages.length) sec.appendChild(h('p', { class: 'muted', text: 'No kernel pages in this site; run `tempolens kernel` with this site as output.' }));
    else sec.appendChild(h('ul', { class: 'kernel-list' }, pages.map(function (p) {
      return h('li', null, h('a', { href: safeRelativeHref(p.href), text: p.title ? String(p.title) : String(p.href) }),
        p.description ? h('span', { class: 'muted', text: ' — ' + String(p.description) }) : null);
    })));
    view.replaceChildren(sec);
    focusHeading(view);
  }

  // ------------------------------------------------------------------------------------------
  // Routing.
  // ------------------------------------------------------------------------------------------
  function switchView(name) {
    hideTooltip();
    if (document.body.getAttribute('data-view') === 'index' && name !== 'index') ix.scrollY = window.scrollY;
    document.getElementById('view-index').hidden = name !== 'index';
    document.getElementById('view-page').hidden = name !== 'page';
    document.body.setAttribute('data-view', name);
  }

  function route() {
    var hash = location.hash || '#/';
    var m;
    if ((m = /^#\/latent\/(-?\d+)\/?$/.exec(hash))) { showLatent(Number(m[1])); return; }
    if (/^#\/report\/?$/.test(hash)) { showReport(); return; }
    if (/^#\/kernels\/?$/.test(hash)) { showKernels(); return; }
    if ((m = /^#\/?(\?.*)?$/.exec(hash))) { showIndex(m[1] ? new URLSearchParams(m[1].slice(1)) : null); return; }
    page.token++;
    var view = document.getElementById('view-page');
    switchView('page');
    view.replaceChildren(h('section', { class: 'card' }, h('h1', { tabindex: '-1', text: 'Page not found' }),
      h('p', null, 'No page for this address. ', h('a', { href: '#/', text: 'Go to the index' }))));
  }

  function onKey(e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) {
      if (e.key === 'Escape') t.blur();
      return;
    }
    var onLatent = document.body.getAttribute('data-view') === 'page' && page.latent !== null && /^#\/latent\//.test(location.hash);
    var nb = null;
    if ((e.key === 'j' || e.key === 'ArrowRight') && onLatent && (nb = neighbour(page.latent, 1)) !== null) { location.hash = latentHref(nb); e.preventDefault(); }
    else if ((e.key === 'k' || e.key === 'ArrowLeft') && onLatent && (nb = neighbour(page.latent, -1)) !== null) { location.hash = latentHref(nb); e.preventDefault(); }
    else if (e.key === 'i') { location.hash = indexHash(); e.preventDefault(); }
    else if (e.key === '/') {
      e.preventDefault();
      if (document.body.getAttribute('data-view') !== 'index') location.hash = indexHash();
      setTimeout(function () { var q = document.getElementById('f-q'); if (q) q.focus(); }, 0);
    }
  }

  function fatal(msg) {
    var l = document.getElementById('loading');
    l.className = 'error';
    l.textContent = msg;
    l.hidden = false;
  }

  /** report.html (the folder of `tempolens autointerp`): the report view alone, from data/autointerp.js. */
  function startReport() {
    loadScript('data/autointerp.js').catch(function () { return null; }).then(function () {
      document.getElementById('loading').hidden = true;
      showReport();
      document.body.setAttribute('data-ready', 'true');
    });
  }

  function start() {
    if (document.body.getAttribute('data-page') === 'report') { startReport(); return; }
    tooltip = document.getElementById('tooltip');
    document.addEventListener('mouseover', function (e) {
      var el = e.target && e.target.closest ? e.target.closest('.tok') : null;
      if (el && tokInfo.has(el)) showTooltip(el); else hideTooltip();
    });
    document.addEventListener('focusin', function (e) {
      var el = e.target && e.target.closest ? e.target.closest('.tok') : null;
      if (el && tokInfo.has(el)) showTooltip(el);
    });
    document.addEventListener('focusout', hideTooltip);
    window.addEventListener('scroll', hideTooltip, { passive: true });
    document.addEventListener('keydown', onKey);
    document.getElementById('goto').addEventListener('submit', function (e) {
      e.preventDefault();
      var inp = document.getElementById('goto-input');
      var v = inp.value.trim().replace(/^#/, '');
      if (/^\d+$/.test(v)) { location.hash = latentHref(Number(v)); inp.value = ''; inp.blur(); }
      else inp.setAttribute('aria-invalid', 'true');
    });
    var required = Promise.all([loadScript('data/meta.js'), loadScript('data/index.js')]);
    var optional = Promise.all([
      loadScript('data/autointerp.js').catch(function () { return null; }),
      loadScript('data/kernels.js').catch(function () { return null; }),
      loadScript('data/views.js').catch(function () { return null; }),
    ]);
    required.then(function () { return optional; }).then(function () {
      if (!data.meta || !data.index) throw new Error('data/meta.js or data/index.js did not load its data');
      initSite();
      renderChrome();
      document.getElementById('loading').hidden = true;
      window.addEventListener('hashchange', route);
      route();
      document.body.setAttribute('data-ready', 'true');
    }).catch(function (err) {
      fatal('Could not open this dashboard: ' + err.message + '. Open index.html inside a site folder written by `tempolens dashboards` (it needs data/meta.js and data/index.js beside it).');
      document.body.setAttribute('data-ready', 'error');
    });
  }

  window.tempolensViewer = {
    fmt: fmt, oneIn: oneIn, showToken: showToken, actColor: actColor, predColor: predColor,
    niceTicks: niceTicks, parseUserNumber: parseUserNumber, safeRelativeHref: safeRelativeHref,
    loadRecord: loadRecord,
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
