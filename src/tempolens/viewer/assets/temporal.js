/* tempolens temporal views — the kernel pages, the kernel index, the event-boundary check and the
 * live page of `tempolens serve`, drawn by the same viewer as the dashboard site (same style.css,
 * same Content-Security-Policy: no inline script, no inline style).
 *
 * A page is a thin HTML shell: <body data-page="kernel|kernel-index|events|live">, this file, then
 * (except the live page) one data file that calls tempolensKernelPage / tempolensKernelIndex /
 * tempolensEvents with a JSON literal, so a page opens from disk (file://) with no server.
 *
 * Security rule: every string from data (tokens, titles, notes ...) reaches the page through
 * textContent / createTextNode / DOM properties, never through HTML parsing; links from data are
 * used only when they are plain relative links inside the site.
 */
(function () {
  'use strict';

  // Colour lookup tables (256 colours as hex): matplotlib's magma (attention) and RdBu_r (kernels,
  // diverging around 0), the maps of the PNG figures; tests check them against matplotlib.
  var MAGMA_HEX =
    '00000401000501010601010802010902020b02020d03030f03031204041405041606051806051a07061c08071e090720' +
    '0a08220b09240c09260d0a290e0b2b100b2d110c2f120d31130d34140e36150e38160f3b180f3d19103f1a10421c1044' +
    '1d11471e114920114b21114e22115024125325125527125829115a2a115c2c115f2d11612f1163311165331067341069' +
    '36106b38106c390f6e3b0f703d0f713f0f72400f74420f75440f764510774710784910784a10794c117a4e117b4f127b' +
    '51127c52137c54137d56147d57157e59157e5a167e5c167f5d177f5f187f601880621980641a80651a80671b80681c81' +
    '6a1c816b1d816d1d816e1e81701f81721f817320817521817621817822817922827b23827c23827e2482802582812581' +
    '8326818426818627818827818928818b29818c29818e2a81902a81912b81932b80942c80962c80982d80992d809b2e7f' +
    '9c2e7f9e2f7fa02f7fa1307ea3307ea5317ea6317da8327daa337dab337cad347cae347bb0357bb2357bb3367ab5367a' +
    'b73779b83779ba3878bc3978bd3977bf3a77c03a76c23b75c43c75c53c74c73d73c83e73ca3e72cc3f71cd4071cf4070' +
    'd0416fd2426fd3436ed5446dd6456cd8456cd9466bdb476adc4869de4968df4a68e04c67e24d66e34e65e44f64e55064' +
    'e75263e85362e95462ea5661eb5760ec5860ed5a5fee5b5eef5d5ef05f5ef1605df2625df2645cf3655cf4675cf4695c' +
    'f56b5cf66c5cf66e5cf7705cf7725cf8745cf8765cf9785df9795df97b5dfa7d5efa7f5efa815ffb835ffb8560fb8761' +
    'fc8961fc8a62fc8c63fc8e64fc9065fd9266fd9467fd9668fd9869fd9a6afd9b6bfe9d6cfe9f6dfea16efea36ffea571' +
    'fea772fea973feaa74feac76feae77feb078feb27afeb47bfeb67cfeb77efeb97ffebb81febd82febf84fec185fec287' +
    'fec488fec68afec88cfeca8dfecc8ffecd90fecf92fed194fed395fed597fed799fed89afdda9cfddc9efddea0fde0a1' +
    'fde2a3fde3a5fde5a7fde7a9fde9aafdebacfcecaefceeb0fcf0b2fcf2b4fcf4b6fcf6b8fcf7b9fcf9bbfcfbbdfcfdbf';
  var DIVERGING_HEX =
    '05306106326407346708366a09386d0a3b700c3d730d3f760e41790f437b10457e114781124984134c87144e8a15508d' +
    '1752901854931956961a58991b5a9c1c5c9f1d5fa21e61a51f63a82065ab2267ac2369ad246aae266caf276eb02870b1' +
    '2a71b22b73b32c75b42e77b52f79b5307ab6327cb7337eb83480b93681ba3783bb3885bc3a87bd3b88be3c8abe3e8cbf' +
    '3f8ec0408fc14291c24393c34695c44997c54c99c64f9bc7529dc8569fc959a1ca5ca3cb5fa5cd62a7ce65a9cf68abd0' +
    '6bacd16eaed271b0d375b2d478b4d57bb6d67eb8d781bad884bcd987beda8ac0db8dc2dc90c4dd93c6de96c7df98c8e0' +
    '9bc9e09dcbe1a0cce2a2cde3a5cee3a7d0e4a9d1e5acd2e5aed3e6b1d5e7b3d6e8b6d7e8b8d8e9bbdaeabddbeac0dceb' +
    'c2ddecc5dfecc7e0edcae1eecce2efcfe4efd1e5f0d2e6f0d4e6f1d5e7f1d7e8f1d8e9f1dae9f2dbeaf2ddebf2deebf2' +
    'e0ecf3e1edf3e3edf3e4eef4e6eff4e7f0f4e9f0f4eaf1f5ecf2f5edf2f5eff3f5f0f4f6f2f5f6f3f5f6f5f6f7f6f7f7' +
    'f7f6f6f7f5f4f8f4f2f8f3f0f8f2eff8f1edf9f0ebf9efe9f9eee7f9ede5f9ebe3faeae1fae9dffae8defae7dcfbe6da' +
    'fbe5d8fbe4d6fbe3d4fce2d2fce0d0fcdfcffcdecdfdddcbfddcc9fddbc7fdd9c4fcd7c2fcd5bffcd3bcfbd0b9fbceb7' +
    'fbccb4facab1fac8aff9c6acf9c4a9f9c2a7f8bfa4f8bda1f8bb9ef7b99cf7b799f7b596f6b394f6b191f6af8ef5ac8b' +
    'f5aa89f5a886f4a683f3a481f2a17ff19e7df09c7bef9979ee9677ec9374eb9172ea8e70e98b6ee8896ce6866ae58368' +
    'e48066e37e64e27b62e17860df765ede735cdd7059dc6e57db6b55da6853d86551d7634fd6604dd55d4cd35a4ad25849' +
    'd05548cf5246ce4f45cc4c44cb4942c94741c84440c6413ec53e3dc43b3cc2383ac13639bf3338be3036bd2d35bb2a34' +
    'ba2832b82531b72230b61f2eb41c2db3192cb1182bae172aab162aa81529a51429a213289f12289c1127991027960f27' +
    '930e26900d268d0c258a0b25870a248409248108237f08237c07227906227605217304217003206d02206a011f67001f';

  function lut(hex) {
    var out = [];
    for (var i = 0; i < 256; i++) {
      out.push([parseInt(hex.substr(i * 6, 2), 16), parseInt(hex.substr(i * 6 + 2, 2), 16),
        parseInt(hex.substr(i * 6 + 4, 2), 16)]);
    }
    return out;
  }
  var MAGMA = lut(MAGMA_HEX);
  var DIVERGING = lut(DIVERGING_HEX);

  // ------------------------------------------------------------------------------------------
  // Data registry: the page's data file calls one of these globals.
  // ------------------------------------------------------------------------------------------
  var pending = {};
  window.tempolensKernelPage = function (d) { pending.kernel = d; };
  window.tempolensKernelIndex = function (d) { pending['kernel-index'] = d; };
  window.tempolensEvents = function (d) { pending.events = d; };

  // ------------------------------------------------------------------------------------------
  // DOM helpers (text only — never HTML).
  // ------------------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  /** A relative link inside the site (no scheme, no absolute path, no parent escapes), or null. */
  function safeHref(href) {
    if (typeof href !== 'string' || href === '') return null;
    if (!/^[A-Za-z0-9_][A-Za-z0-9_\-./]*(#[A-Za-z0-9_\-./]*)?$/.test(href)) return null;
    if (href.split('/').indexOf('..') >= 0) return null;
    return href;
  }
  function link(href, text) {
    var a = el('a', null, text);
    a.href = href;
    return a;
  }
  function fixed(v, nd) { return typeof v === 'number' && isFinite(v) ? v.toFixed(nd) : 'n/a'; }

  // ------------------------------------------------------------------------------------------
  // The matrix viewer: TempolensKernels.render(root, data) (data = analysis_payload in Python).
  // ------------------------------------------------------------------------------------------
  function decode(m, n) {
    var bin = atob(m.data);
    var buf = new DataView(new ArrayBuffer(bin.length));
    for (var i = 0; i < bin.length; i++) buf.setUint8(i, bin.charCodeAt(i));
    var out = new Float32Array(n * n);
    var scale = (m.hi - m.lo) / 65535;
    for (var k = 0; k < n * n; k++) out[k] = m.lo + buf.getUint16(2 * k, true) * scale;
    return out;
  }
  function colour(v, kind, vmax) {
    if (kind !== 'attention') {
      var t = Math.max(0, Math.min(1, (v + 1) / 2));
      return DIVERGING[Math.round(t * 255)];
    }
    return MAGMA[Math.round(Math.sqrt(Math.max(0, Math.min(1, v / (vmax || 1)))) * 255)];
  }
  function colourBar(kind, vmax) {
    var box = el('div', 'tk-cbar');
    var bar = el('div', 'tk-cbar-ramp');
    var table = kind === 'attention' ? MAGMA : DIVERGING;
    var stops = [];
    for (var i = 0; i <= 16; i++) {
      var col = table[Math.min(255, i * 16)];
      stops.push('rgb(' + col[0] + ',' + col[1] + ',' + col[2] + ') ' + (i * 100 / 16).toFixed(2) + '%');
    }
    bar.style.background = 'linear-gradient(90deg,' + stops.join(',') + ')';
    box.appendChild(bar);
    var ticks = el('div', 'tk-cbar-ticks');
    var labels = kind === 'attention'
      ? ['0', Number(vmax || 1).toPrecision(3) + ' (\u221a scale)'] : ['\u22121', '0', '+1'];
    labels.forEach(function (t) { ticks.appendChild(el('span', null, t)); });
    box.appendChild(ticks);
    box.appendChild(el('div', 'tk-cbar-label',
      kind === 'attention' ? 'attention weight' : 'cosine similarity of mean-centred codes'));
    return box;
  }
  /** The visible form of a token: newline and tab as symbols, a blank token quoted. */
  function show(tok) {
    if (tok === undefined || tok === null) return '';
    var s = String(tok).replace(/\n/g, '\u23ce').replace(/\t/g, '\u21e5');
    return s.trim() === '' ? JSON.stringify(s) : s;
  }
  function scoreText(sc) {
    if (!sc) return '';
    var au2 = sc.boundary_auroc_sentences;
    return 'block contrast ' + (sc.block_contrast === null ? 'n/a' : sc.block_contrast.toFixed(3)) +
      ' \u00b7 boundary AUROC ' + (sc.boundary_auroc === null ? 'n/a' : sc.boundary_auroc.toFixed(3)) +
      (au2 === null || au2 === undefined ? '' : ' (vs other sentence starts ' + au2.toFixed(3) + ')');
  }

  function render(root, data) {
    clear(root);
    var n = data.n, tokens = data.tokens, cache = {};
    var bset = new Set(data.boundaries || []);
    var controls = el('div', 'tk-controls');
    controls.appendChild(el('label', null, 'View: '));
    var sel = el('select');
    sel.setAttribute('aria-label', 'matrix');
    data.matrices.forEach(function (m, i) {
      var o = el('option', null, m.label);
      o.value = String(i);
      sel.appendChild(o);
    });
    controls.appendChild(sel);
    var scoreBox = el('span', 'note');
    controls.appendChild(scoreBox);
    root.appendChild(controls);
    var layout = el('div', 'tk-layout');
    root.appendChild(layout);
    var labels = n <= 80;
    var margin = labels ? 92 : 4;
    var size = n > 80 ? 640 : Math.max(240, n * Math.max(1, Math.floor(640 / Math.max(n, 1))));
    var canvas = el('canvas', 'tk-canvas');
    canvas.width = size + margin;
    canvas.height = size + margin;
    canvas.style.width = (size + margin) + 'px';
    canvas.style.height = (size + margin) + 'px';
    layout.appendChild(canvas);
    var side = el('div', 'tk-side');
    layout.appendChild(side);
    var info = el('div', 'tk-info',
      'Hover over the matrix: the two tokens and the value. Click a cell or a token to colour the text by that row.');
    info.setAttribute('data-testid', 'info');
    side.appendChild(info);
    var cbarBox = el('div');
    side.appendChild(cbarBox);
    var legend = el('div', 'tk-legend');
    side.appendChild(legend);
    var lat = el('div', 'tk-latents');
    side.appendChild(lat);
    var strip = el('div', 'tk-tokens');
    strip.setAttribute('data-testid', 'tokens');
    root.appendChild(strip);
    var spans = tokens.map(function (t, i) {
      var s = el('span', 'tk-tok' + (bset.has(i) ? ' tk-bnd' : ''), show(t));
      s.dataset.i = String(i);
      s.addEventListener('mouseenter', function () { describeToken(i); });
      s.addEventListener('click', function () { selectRow(i); });
      strip.appendChild(s);
      strip.appendChild(document.createTextNode(''));
      return s;
    });
    var current = 0, selected = -1;
    function matrix(i) { if (!cache[i]) cache[i] = decode(data.matrices[i], n); return cache[i]; }
    function draw() {
      var m = data.matrices[current], M = matrix(current);
      var off = document.createElement('canvas');
      off.width = n;
      off.height = n;
      var octx = off.getContext('2d');
      var img = octx.createImageData(n, n);
      for (var i = 0; i < n * n; i++) {
        var c = colour(M[i], m.kind, m.vmax);
        img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255;
      }
      octx.putImageData(img, 0, 0);
      var ctx = canvas.getContext('2d');
      ctx.fillStyle = '#fafafa';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off, margin, 0, size, size);
      var cell = size / n;
      ctx.strokeStyle = 'rgba(34,211,238,0.9)';
      ctx.setLineDash([5, 3]);
      ctx.lineWidth = 1.5;
      (data.boundaries || []).forEach(function (b) {
        var p = b * cell;
        ctx.beginPath();
        ctx.moveTo(margin, p); ctx.lineTo(margin + size, p);
        ctx.moveTo(margin + p, 0); ctx.lineTo(margin + p, size);
        ctx.stroke();
      });
      ctx.setLineDash([]);
      if (labels) {
        ctx.fillStyle = '#1f2328';
        ctx.font = Math.min(11, Math.max(7, cell * 0.8)) + 'px ui-monospace,monospace';
        ctx.textAlign = 'right';
        ctx.textBaseline = 'middle';
        for (var r = 0; r < n; r++) {
          var t = show(tokens[r]).slice(0, 12);
          ctx.fillText(t, margin - 3, (r + 0.5) * cell);
          ctx.save();
          ctx.translate(margin + (r + 0.5) * cell, size + 3);
          ctx.rotate(-Math.PI / 2);
          ctx.fillText(t, 0, 0);
          ctx.restore();
        }
      }
      clear(cbarBox);
      cbarBox.appendChild(colourBar(m.kind, m.vmax));
      legend.textContent = m.kind === 'attention'
        ? 'Attention: row = query token, column = context token it reads; square-root colour scale 0\u2192' +
          Number(m.vmax || 1).toPrecision(3) + ' (99.5th percentile of all heads). ' +
          'Weight on the start slot and BOS is listed per token on hover.'
        : 'Mean-centred cosine similarity of the codes, BOS dropped after computing; diverging colours centred at 0 ' +
          '(blue negative, white 0, red positive), limits \u22121\u2026+1.';
      scoreBox.textContent = scoreText((data.scores || {})[m.id]);
      if (selected >= 0) colourRow(selected); else colourShare();
    }
    function colourShare() {
      var ps = data.pred_share || [];
      spans.forEach(function (s, i) {
        s.style.background = 'rgba(217,72,15,' + (0.08 + 0.7 * (ps[i] || 0)).toFixed(3) + ')';
        s.style.color = '#1f2328';
      });
    }
    function colourRow(r) {
      var m = data.matrices[current], M = matrix(current);
      spans.forEach(function (s, j) {
        var c = colour(M[r * n + j], m.kind, m.vmax);
        s.style.background = 'rgb(' + c[0] + ',' + c[1] + ',' + c[2] + ')';
        s.style.color = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 110 ? '#fff' : '#000';
        s.classList.toggle('tk-sel', j === r);
      });
    }
    function selectRow(r) {
      if (selected === r) {
        selected = -1;
        spans.forEach(function (s) { s.classList.remove('tk-sel'); });
        colourShare();
        return;
      }
      selected = r;
      colourRow(r);
      describeToken(r);
    }
    function latentList(title, tops) {
      var box = el('div');
      box.appendChild(el('div', null, title));
      if (!tops || !tops.length) { box.appendChild(el('div', 'note', '(none active)')); return box; }
      var ul = el('ul');
      tops.forEach(function (p) {
        var li = el('li');
        li.appendChild(link('../index.html#/latent/' + encodeURIComponent(String(p[0])), '#' + p[0]));
        li.appendChild(document.createTextNode(' ' + Number(p[1]).toPrecision(3)));
        ul.appendChild(li);
      });
      box.appendChild(ul);
      return box;
    }
    function describeToken(i) {
      clear(lat);
      lat.appendChild(el('div', null, 'Token ' + i + ': \u201c' + show(tokens[i]) + '\u201d \u00b7 predicted share ' +
        ((data.pred_share || [])[i] || 0).toFixed(3)));
      if (data.top_novel) lat.appendChild(latentList('Top novel latents (Temporal SAE):', data.top_novel[i]));
      if (data.top_sae) lat.appendChild(latentList('Top latents (standard SAE):', data.top_sae[i]));
    }
    canvas.addEventListener('mousemove', function (ev) {
      var r = canvas.getBoundingClientRect();
      var x = ev.clientX - r.left - margin, y = ev.clientY - r.top;
      if (x < 0 || y < 0 || x >= size || y >= size) return;
      var j = Math.floor(x / size * n), i = Math.floor(y / size * n);
      var m = data.matrices[current], v = matrix(current)[i * n + j];
      var t = 'row ' + i + ': \u201c' + show(tokens[i]) + '\u201d\n' +
        'column ' + j + ': \u201c' + show(tokens[j]) + '\u201d\n' + m.label + ': ' + v.toFixed(3);
      if (m.sink) t += '\nweight on start slot + BOS: ' + Number(m.sink[i]).toFixed(3);
      if (data.labels) t += '\nevents: ' + (data.labels[i] + 1) + ' / ' + (data.labels[j] + 1);
      info.textContent = t;
    });
    canvas.addEventListener('click', function (ev) {
      var y = ev.clientY - canvas.getBoundingClientRect().top;
      if (y < 0 || y >= size) return;
      selectRow(Math.floor(y / size * n));
    });
    sel.addEventListener('change', function () { current = Number(sel.value); draw(); });
    draw();
    return { select: function (i) { sel.value = String(i); current = i; draw(); } };
  }

  // ------------------------------------------------------------------------------------------
  // Page views.
  // ------------------------------------------------------------------------------------------
  /** The page header: a title, a line of facts and links ([text, href] pairs; unsafe links are dropped). */
  function header(title, facts, links) {
    var head = el('header', 'top tk-head');
    head.appendChild(el('h1', null, title));
    var meta = el('div', 'meta');
    if (facts) meta.appendChild(document.createTextNode(facts));
    (links || []).forEach(function (l) {
      var href = safeHref(l[1]);
      if (!href) return;
      if (meta.firstChild) meta.appendChild(document.createTextNode(' \u00b7 '));
      meta.appendChild(link(href, l[0]));
    });
    head.appendChild(meta);
    document.title = String(title);
    return head;
  }

  /** A table of text cells; a cell may be {text, href} for a link inside the site. */
  function table(columns, rows, cls) {
    var t = el('table', cls || 'tk-table');
    var tr = el('tr');
    columns.forEach(function (c) { var th = el('th', null, c); th.scope = 'col'; tr.appendChild(th); });
    t.appendChild(el('thead')).appendChild(tr);
    var tb = el('tbody');
    rows.forEach(function (r) {
      var row = el('tr');
      r.forEach(function (c) {
        var td = el('td');
        var href = c && typeof c === 'object' ? safeHref(c.href) : null;
        if (href) td.appendChild(link(href, c.text));
        else td.textContent = c && typeof c === 'object' ? String(c.text) : String(c);
        row.appendChild(td);
      });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    return t;
  }

  function kernelPage(root, d) {
    root.appendChild(header(d.title, d.meta_line, [['all texts', 'index.html']]));
    var main = el('main', 'tk-main');
    main.appendChild(el('p', 'note', 'Similarity kernels of the Temporal SAE\'s predicted and novel codes, ' +
      'a standard SAE\'s codes and the raw activations (paper \u00a76: on texts with event boundaries the ' +
      'predicted-code kernel should be block-structured by event). Dashed lines mark the event boundaries; the text ' +
      'below is coloured by the predicted share of each token.'));
    if (d.predictor_note) {
      var p = el('p', 'note');
      p.id = 'predictor-note';
      p.appendChild(el('b', null, d.predictor_note));
      main.appendChild(p);
    }
    var app = el('div');
    app.id = 'app';
    main.appendChild(app);
    Object.keys(d.figures || {}).forEach(function (label) {
      var src = safeHref(d.figures[label]);
      if (!src) return;
      main.appendChild(el('h2', null, label));
      var img = el('img', 'tk-fig');
      img.alt = label;
      img.src = src;
      main.appendChild(img);
    });
    root.appendChild(main);
    render(app, d);
  }

  function kernelIndex(root, d) {
    root.appendChild(header('Temporal views: similarity kernels', null, [['dashboards', '../index.html']]));
    var main = el('main', 'tk-main');
    if (d.events) {
      main.appendChild(el('p')).appendChild(link('events.html', 'Event-boundary check over the demo stories'));
    }
    var kinds = d.kinds || [];
    var cols = ['text', 'tokens'].concat(kinds.map(function (k) { return k.label + ' contrast / AUROC'; }));
    var rows = (d.entries || []).map(function (e) {
      return [{ text: e.title, href: e.href }, String(e.n_tokens)].concat(kinds.map(function (k) {
        var sc = (e.scores || {})[k.id];
        return sc ? fixed(sc.block_contrast, 3) + ' / ' + fixed(sc.boundary_auroc, 3) : '\u2013';
      }));
    });
    main.appendChild(table(cols, rows));
    main.appendChild(el('p', 'note', 'Block contrast = mean within-event minus mean across-event similarity; AUROC = ' +
      'Foote novelty at true boundaries vs other tokens (0.5 = chance). Only texts with marked events have scores.'));
    root.appendChild(main);
  }

  function eventsPage(root, d) {
    var links = [['kernel pages', 'index.html'], ['dashboards', '../index.html']];
    root.appendChild(header('Event-boundary check', null, links));
    var main = el('main', 'tk-main');
    main.appendChild(el('p', null, d.header));
    main.appendChild(table(d.summary.columns, d.summary.rows));
    main.appendChild(el('p', 'note', 'Block contrast: mean within-event minus mean across-event similarity of the ' +
      'mean-centred cosine kernel (diagonal and BOS excluded). Boundary AUROC: Foote\'s checkerboard novelty at the ' +
      'first token of each event against every other scored token (0.5 = chance); the sentence-matched AUROC ' +
      'compares boundaries with the other sentence starts only, since every boundary here is also a sentence start. ' +
      'Paper \u00a76 expects the predicted-code kernel to be block-structured by event and the novel and ' +
      'standard-SAE kernels not to be; the raw-activation kernel is a baseline that needs no SAE.'));
    main.appendChild(el('h2', null, 'Per text (block contrast / AUROC / sentence-matched AUROC)'));
    main.appendChild(table(d.texts.columns, d.texts.rows));
    root.appendChild(main);
  }

  /** The /live page of `tempolens serve`: posts the text to /api/analyze and draws the answer. */
  function livePage(root) {
    var body = document.body;
    var links = body.getAttribute('data-has-site') === 'true'
      ? [['dashboards', '/index.html'], ['kernel pages', '/kernels/index.html']] : [];
    var head = header('Live kernels', 'type a text; \'||\' marks an event boundary', []);
    var meta = head.querySelector('.meta');
    links.forEach(function (l) {
      meta.appendChild(document.createTextNode(' \u00b7 '));
      meta.appendChild(link(l[1], l[0]));
    });
    document.title = 'tempolens live kernels';
    root.appendChild(head);
    var main = el('main', 'tk-main');
    var form = el('form');
    form.id = 'live-form';
    var box = el('textarea');
    box.id = 'live-text';
    box.rows = 6;
    var max = Number(body.getAttribute('data-max-chars'));
    if (max > 0) box.maxLength = max;
    box.placeholder = 'The ship left the harbour at dawn. || That night the village held a concert.';
    form.appendChild(box);
    form.appendChild(el('br'));
    var btn = el('button', null, 'Analyse');
    btn.id = 'live-go';
    btn.type = 'submit';
    form.appendChild(btn);
    form.appendChild(document.createTextNode(' '));
    var status = el('span', 'note');
    status.id = 'live-status';
    status.setAttribute('data-testid', 'status');
    form.appendChild(status);
    main.appendChild(form);
    main.appendChild(el('p', 'note', 'Similarity kernels of the predicted and novel codes (and a standard SAE\'s ' +
      'codes), attention per head, the predicted share per token and the top novel latents; computed on this machine ' +
      'by the loaded model and SAEs.'));
    var app = el('div');
    app.id = 'app';
    main.appendChild(app);
    root.appendChild(main);
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      status.className = 'note';
      status.textContent = 'computing\u2026';
      btn.disabled = true;
      var resp = null;
      fetch('/api/analyze', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ text: box.value }) })
        .then(function (r) { resp = r; return r.json().catch(function () { return null; }); })
        .then(function (data) {
          if (!resp.ok || !data || data.error) {
            status.className = 'tk-err';
            status.textContent = 'Error: ' + (data && data.error ? String(data.error) : 'HTTP ' + resp.status);
            return;
          }
          status.textContent = data.n + ' tokens (BOS dropped from the views).';
          render(app, data);
        })
        .catch(function (e) {
          status.className = 'tk-err';
          status.textContent = 'Error: the server did not answer (' + String(e) + ')';
        })
        .then(function () { btn.disabled = false; });
    });
  }

  var VIEWS = { kernel: kernelPage, 'kernel-index': kernelIndex, events: eventsPage };

  function start() {
    var kind = document.body.getAttribute('data-page');
    var root = document.getElementById('page');
    var loading = document.getElementById('loading');
    try {
      if (kind === 'live') livePage(root);
      else if (VIEWS[kind] && pending[kind]) VIEWS[kind](root, pending[kind]);
      else throw new Error('the data file of this page did not load; rewrite it with `tempolens kernel` or `events`');
      if (loading) loading.hidden = true;
      document.body.setAttribute('data-ready', 'true');
    } catch (err) {
      if (loading) { loading.className = 'error'; loading.textContent = 'Could not show this page: ' + err.message; }
      document.body.setAttribute('data-ready', 'error');
    }
  }

  window.TempolensKernels = { render: render };
  // Deferred scripts run in order before DOMContentLoaded: start once the page's data file has run too.
  if (document.readyState === 'complete') start();
  else document.addEventListener('DOMContentLoaded', start);
})();
