"""Interactive kernel pages for the static site (``<site>/kernels/``) and the live server.

Every page is one self-contained HTML file: no CDN, no fetch from ``file://``; the data is
inlined as a JSON literal escaped so it can never end the script (``<``, ``>``, ``&``, U+2028,
U+2029 → ``\\uXXXX``), and the page script renders every string from data with ``textContent``
or DOM properties, never ``innerHTML``. Matrices travel as base64 of little-endian uint16
(``value = lo + q·(hi − lo)/65535``, error ≤ 1.5e-5 on the kernel's [−1, 1] range), so a
400-token text with a dozen matrices stays a few MB.

The same viewer script (:data:`VIEWER_JS`, global ``TempolensKernels.render(root, data)``)
draws the static pages and the live page of :mod:`tempolens.serve`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import Tensor

from tempolens.fsutil import atomic_write_bytes
from tempolens.temporal.analysis import KERNEL_LABELS, TextAnalysis
from tempolens.temporal.kernels import attention_vmax


def js_literal(obj: Any) -> str:
    """JSON text that is also safe inside an HTML ``<script>`` element."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def encode_matrix(m: Tensor, lo: float, hi: float) -> str:
    """Base64 of the matrix quantised to little-endian uint16 over ``[lo, hi]`` (values clipped)."""
    a = m.detach().float().cpu().numpy().astype(np.float64)
    q = np.rint((np.clip(a, lo, hi) - lo) / (hi - lo) * 65535.0).astype("<u2")
    return base64.b64encode(q.tobytes()).decode("ascii")


def decode_matrix(data: str, n: int, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`encode_matrix` (for tests)."""
    q = np.frombuffer(base64.b64decode(data), dtype="<u2").astype(np.float64)
    return (lo + q * (hi - lo) / 65535.0).reshape(n, n)


def _cmap_hex(name: str = "magma") -> str:
    """256 colours of a matplotlib colour map as one hex string (the page's lookup table)."""
    from matplotlib import colormaps

    rgb = (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(int)
    return "".join(f"{r:02x}{g:02x}{b:02x}" for r, g, b in rgb)


def _magma_hex() -> str:
    return _cmap_hex("magma")


def _round(xs: Tensor | Sequence[float], nd: int = 4) -> list[float]:
    return [round(float(x), nd) for x in (xs.tolist() if isinstance(xs, Tensor) else xs)]


def _tops(top: tuple[Tensor, Tensor] | None) -> list[list[list[float]]] | None:
    if top is None:
        return None
    idx, val = top
    return [[[int(i), float(f"{float(v):.4g}")] for i, v in zip(ri, rv) if int(i) >= 0] for ri, rv in zip(idx.tolist(), val.tolist())]


def analysis_payload(a: TextAnalysis, scores: dict[str, dict] | None = None, figures: dict[str, str] | None = None, title: str = "") -> dict:
    """The JSON object the viewer script draws: tokens, matrices, shares, top latents, scores."""
    mats: list[dict] = []
    n = len(a.shown_tokens)
    for kind in [k for k in KERNEL_LABELS if k in a.kernels] + [k for k in a.kernels if k not in KERNEL_LABELS]:
        mats.append({"id": kind, "label": KERNEL_LABELS.get(kind, kind), "kind": "kernel", "lo": -1.0, "hi": 1.0,
                     "data": encode_matrix(a.kernels[kind], -1.0, 1.0)})
    vmax = attention_vmax(a.attention) if a.attention else 1.0
    for li, maps in enumerate(a.attention):
        for h in range(maps.shape[0]):
            mats.append({"id": f"attn-{li}-{h}", "label": f"Attention layer {li} head {h}", "kind": "attention", "lo": 0.0, "hi": 1.0,
                         "vmax": round(vmax, 5), "data": encode_matrix(maps[h], 0.0, 1.0), "sink": _round(a.attention_sink[li][h], 3)})
    return {
        "name": a.name,
        "title": title or a.name,
        "n": n,
        "bos": a.tokens[0] if a.tokens else "",
        "tokens": a.shown_tokens,
        "boundaries": a.boundaries,
        "labels": a.labels.tolist() if a.labels is not None else None,
        "pred_share": _round(a.pred_share),
        "top_novel": _tops(a.top_novel),
        "top_sae": _tops(a.top_sae),
        "matrices": mats,
        "meta": a.meta,
        "scores": scores or {},
        "figures": figures or {},
    }


VIEWER_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#fafafa}
header{padding:14px 22px;background:#1f2328;color:#f6f8fa}header a{color:#9ecbff}
main{padding:16px 22px;max-width:1280px}
h1{font-size:19px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 8px}
.meta{color:#aab;font-size:12px}.note{color:#57606a;font-size:12.5px;max-width:900px}
.tk-controls{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin:8px 0}
.tk-controls select,.tk-controls button{font:inherit;padding:3px 6px}
.tk-layout{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}
.tk-canvas{border:1px solid #ccc;background:#000;cursor:crosshair;image-rendering:pixelated}
.tk-side{min-width:260px;max-width:420px}
.tk-info{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:8px;min-height:4.5em}
.tk-tokens{line-height:1.9;background:#fff;border:1px solid #ddd;padding:8px;margin-top:10px;max-height:340px;overflow:auto}
.tk-tok{white-space:pre-wrap;margin-right:1px;border-radius:2px;padding:1px 0;cursor:pointer;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.tk-tok.tk-sel{outline:2px solid #1c7ed6}.tk-bnd{border-left:2px solid #000;margin-left:3px;padding-left:2px}
.tk-legend{font-size:12px;color:#57606a;margin-top:6px}
.tk-cbar{margin-top:8px;width:256px;font-size:11px;color:#57606a}.tk-cbar-ramp{width:256px;height:12px;border:1px solid #ccc}
.tk-cbar-ticks{display:flex;justify-content:space-between}.tk-cbar-label{text-align:center}
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
.tk-latents a{color:#0969da}.tk-err{color:#b42318;font-weight:600}
img.tk-fig{max-width:100%;border:1px solid #ddd;background:#fff;margin:6px 0}
textarea{width:100%;max-width:900px;font:13px/1.4 ui-monospace,Menlo,Consolas,monospace}
"""

VIEWER_JS = r"""
(function(){
"use strict";
function lut(hex){const out=[];for(let i=0;i<256;i++){out.push([parseInt(hex.substr(i*6,2),16),parseInt(hex.substr(i*6+2,2),16),parseInt(hex.substr(i*6+4,2),16)]);}return out;}
const MAGMA = lut("__MAGMA__");
const DIVERGING = lut("__DIVERGING__");
function el(tag, cls, text){const e=document.createElement(tag);if(cls)e.className=cls;if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
function decode(m, n){
  const bin=atob(m.data);const buf=new DataView(new ArrayBuffer(bin.length));
  for(let i=0;i<bin.length;i++)buf.setUint8(i,bin.charCodeAt(i));
  const out=new Float32Array(n*n);const scale=(m.hi-m.lo)/65535;
  for(let i=0;i<n*n;i++)out[i]=m.lo+buf.getUint16(2*i,true)*scale;
  return out;
}
function colour(v, kind, vmax){
  if(kind!=="attention"){const t=Math.max(0,Math.min(1,(v+1)/2));return DIVERGING[Math.round(t*255)];}
  const t=Math.sqrt(Math.max(0,Math.min(1,v/(vmax||1))));
  return MAGMA[Math.round(t*255)];
}
function colourBar(kind, vmax){
  const box=el("div","tk-cbar");const bar=el("div","tk-cbar-ramp");const lutc=kind==="attention"?MAGMA:DIVERGING;const stops=[];
  for(let i=0;i<=16;i++){const col=lutc[Math.min(255,i*16)];stops.push("rgb("+col[0]+","+col[1]+","+col[2]+") "+(i*100/16).toFixed(2)+"%");}
  bar.style.background="linear-gradient(90deg,"+stops.join(",")+")";
  box.appendChild(bar);
  const ticks=el("div","tk-cbar-ticks");
  (kind==="attention"?["0",Number(vmax||1).toPrecision(3)+" (\u221a scale)"]:["\u22121","0","+1"]).forEach(function(t){ticks.appendChild(el("span",null,t));});
  box.appendChild(ticks);
  box.appendChild(el("div","tk-cbar-label",kind==="attention"?"attention weight":"cosine similarity of mean-centred codes"));
  return box;
}
function show(tok){
  if(tok===undefined||tok===null)return "";
  const s=String(tok).replace(/\n/g,"\u23ce").replace(/\t/g,"\u21e5");
  return s.trim()===""?JSON.stringify(s):s;
}
function render(root, data){
  while(root.firstChild)root.removeChild(root.firstChild);
  const n=data.n, tokens=data.tokens, cache={};
  const bset=new Set(data.boundaries||[]);
  const controls=el("div","tk-controls");
  controls.appendChild(el("label",null,"View: "));
  const sel=el("select");sel.setAttribute("aria-label","matrix");
  data.matrices.forEach(function(m,i){const o=el("option",null,m.label);o.value=String(i);sel.appendChild(o);});
  controls.appendChild(sel);
  const scoreBox=el("span","note");controls.appendChild(scoreBox);
  root.appendChild(controls);
  const layout=el("div","tk-layout");root.appendChild(layout);
  const labels=n<=80;
  const margin=labels?92:4;
  const size=n>80?640:Math.max(240,n*Math.max(1,Math.floor(640/Math.max(n,1))));
  const canvas=el("canvas","tk-canvas");canvas.width=size+margin;canvas.height=size+margin;
  canvas.style.width=(size+margin)+"px";canvas.style.height=(size+margin)+"px";
  layout.appendChild(canvas);
  const side=el("div","tk-side");layout.appendChild(side);
  const info=el("div","tk-info","Hover over the matrix: the two tokens and the value. Click a cell or a token to colour the text by that row.");
  info.setAttribute("data-testid","info");side.appendChild(info);
  const cbarBox=el("div");side.appendChild(cbarBox);
  const legend=el("div","tk-legend");side.appendChild(legend);
  const lat=el("div","tk-latents");side.appendChild(lat);
  const strip=el("div","tk-tokens");strip.setAttribute("data-testid","tokens");root.appendChild(strip);
  const spans=tokens.map(function(t,i){
    const s=el("span","tk-tok"+(bset.has(i)?" tk-bnd":""),show(t));s.dataset.i=String(i);
    s.addEventListener("mouseenter",function(){describeToken(i);});
    s.addEventListener("click",function(){selectRow(i);});
    strip.appendChild(s);strip.appendChild(document.createTextNode(""));return s;
  });
  let current=0, selected=-1, off=null;
  function matrix(i){if(!cache[i])cache[i]=decode(data.matrices[i],n);return cache[i];}
  function draw(){
    const m=data.matrices[current], M=matrix(current);
    off=document.createElement("canvas");off.width=n;off.height=n;
    const octx=off.getContext("2d");const img=octx.createImageData(n,n);
    for(let i=0;i<n*n;i++){const c=colour(M[i],m.kind,m.vmax);img.data[4*i]=c[0];img.data[4*i+1]=c[1];img.data[4*i+2]=c[2];img.data[4*i+3]=255;}
    octx.putImageData(img,0,0);
    const ctx=canvas.getContext("2d");
    ctx.fillStyle="#fafafa";ctx.fillRect(0,0,canvas.width,canvas.height);
    ctx.imageSmoothingEnabled=false;ctx.drawImage(off,margin,0,size,size);
    const cell=size/n;
    ctx.strokeStyle="rgba(34,211,238,0.9)";ctx.setLineDash([5,3]);ctx.lineWidth=1.5;
    (data.boundaries||[]).forEach(function(b){const p=b*cell;ctx.beginPath();ctx.moveTo(margin,p);ctx.lineTo(margin+size,p);ctx.moveTo(margin+p,0);ctx.lineTo(margin+p,size);ctx.stroke();});
    ctx.setLineDash([]);
    if(labels){
      ctx.fillStyle="#1f2328";ctx.font=Math.min(11,Math.max(7,cell*0.8))+"px ui-monospace,monospace";
      ctx.textAlign="right";ctx.textBaseline="middle";
      for(let i=0;i<n;i++){const t=show(tokens[i]).slice(0,12);ctx.fillText(t,margin-3,(i+0.5)*cell);
        ctx.save();ctx.translate(margin+(i+0.5)*cell,size+3);ctx.rotate(-Math.PI/2);ctx.fillText(t,0,0);ctx.restore();}
    }
    while(cbarBox.firstChild)cbarBox.removeChild(cbarBox.firstChild);cbarBox.appendChild(colourBar(m.kind,m.vmax));
    legend.textContent=m.kind==="attention"
      ? "Attention: row = query token, column = context token it reads; square-root colour scale 0\u2192"+Number(m.vmax||1).toPrecision(3)+" (99.5th percentile of all heads). Weight on the start slot and BOS is listed per token on hover."
      : "Mean-centred cosine similarity of the codes, BOS dropped after computing; diverging colours centred at 0 (blue negative, white 0, red positive), limits \u22121\u2026+1.";
    const sc=(data.scores||{})[m.id];
    scoreBox.textContent=sc?("block contrast "+(sc.block_contrast===null?"n/a":sc.block_contrast.toFixed(3))+" \u00b7 boundary AUROC "+(sc.boundary_auroc===null?"n/a":sc.boundary_auroc.toFixed(3))+(sc.boundary_auroc_sentences===null||sc.boundary_auroc_sentences===undefined?"":" (vs other sentence starts "+sc.boundary_auroc_sentences.toFixed(3)+")")):"";
    if(selected>=0)colourRow(selected);else colourShare();
  }
  function colourShare(){
    const ps=data.pred_share||[];
    spans.forEach(function(s,i){const v=ps[i]||0;s.style.background="rgba(217,72,15,"+(0.08+0.7*v).toFixed(3)+")";s.style.color="#1f2328";});
  }
  function colourRow(r){
    const m=data.matrices[current], M=matrix(current);
    spans.forEach(function(s,j){const c=colour(M[r*n+j],m.kind,m.vmax);s.style.background="rgb("+c[0]+","+c[1]+","+c[2]+")";
      const lum=0.299*c[0]+0.587*c[1]+0.114*c[2];s.style.color=lum<110?"#fff":"#000";s.classList.toggle("tk-sel",j===r);});
  }
  function selectRow(r){
    if(selected===r){selected=-1;spans.forEach(function(s){s.classList.remove("tk-sel");});colourShare();return;}
    selected=r;colourRow(r);describeToken(r);
  }
  function latentList(title, tops){
    const box=el("div");box.appendChild(el("div",null,title));
    if(!tops||!tops.length){box.appendChild(el("div","note","(none active)"));return box;}
    const ul=el("ul");
    tops.forEach(function(p){const li=el("li");const a=el("a",null,"#"+p[0]);a.href="../index.html#/latent/"+encodeURIComponent(String(p[0]));
      li.appendChild(a);li.appendChild(document.createTextNode(" "+Number(p[1]).toPrecision(3)));ul.appendChild(li);});
    box.appendChild(ul);return box;
  }
  function describeToken(i){
    while(lat.firstChild)lat.removeChild(lat.firstChild);
    lat.appendChild(el("div",null,"Token "+i+": \u201c"+show(tokens[i])+"\u201d \u00b7 predicted share "+((data.pred_share||[])[i]||0).toFixed(3)));
    if(data.top_novel)lat.appendChild(latentList("Top novel latents (Temporal SAE):",data.top_novel[i]));
    if(data.top_sae)lat.appendChild(latentList("Top latents (standard SAE):",data.top_sae[i]));
  }
  canvas.addEventListener("mousemove",function(ev){
    const r=canvas.getBoundingClientRect();const x=ev.clientX-r.left-margin, y=ev.clientY-r.top;
    if(x<0||y<0||x>=size||y>=size)return;
    const j=Math.floor(x/size*n), i=Math.floor(y/size*n);
    const m=data.matrices[current], v=matrix(current)[i*n+j];
    let t="row "+i+": \u201c"+show(tokens[i])+"\u201d\ncolumn "+j+": \u201c"+show(tokens[j])+"\u201d\n"+m.label+": "+v.toFixed(3);
    if(m.sink)t+="\nweight on start slot + BOS: "+Number(m.sink[i]).toFixed(3);
    if(data.labels)t+="\nevents: "+(data.labels[i]+1)+" / "+(data.labels[j]+1);
    info.textContent=t;
  });
  canvas.addEventListener("click",function(ev){
    const r=canvas.getBoundingClientRect();const y=ev.clientY-r.top;if(y<0||y>=size)return;selectRow(Math.floor(y/size*n));
  });
  sel.addEventListener("change",function(){current=Number(sel.value);draw();});
  draw();
  return {select:function(i){sel.value=String(i);current=i;draw();}};
}
window.TempolensKernels={render:render};
})();
"""

def script_hash(script: str) -> str:
    """The CSP source expression (``'sha256-…'``) that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def page_csp(scripts: list[str]) -> str:
    """The Content-Security-Policy of a self-contained page: only the given inline scripts run
    (by hash; no ``'unsafe-inline'`` for scripts), nothing is loaded from elsewhere."""
    return (
        f"default-src 'none'; script-src {' '.join(script_hash(s) for s in scripts)}; style-src 'unsafe-inline'; "
        "img-src 'self' data: file:; connect-src 'self'; base-uri 'none'; form-action 'none'"
    )


def html_page(title: str, body: str, script: str = "") -> str:
    """A complete HTML document with the viewer CSS/JS inlined; ``body`` is trusted markup.

    Its CSP allows the two inline scripts by their SHA-256 (see :func:`page_csp`)."""
    scripts = [VIEWER_JS.replace("__MAGMA__", _magma_hex()).replace("__DIVERGING__", _cmap_hex("RdBu_r")), script]
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{page_csp(scripts)}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{VIEWER_CSS}</style></head><body>\n{body}\n"
        + "".join(f"<script>{s}</script>\n" for s in scripts)
        + "</body></html>\n"
    )


def slugify(name: str) -> str:
    """A file-name-safe slug (letters, digits, ``-``, ``_``)."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:80]
    return s or "text"


def _meta_line(meta: dict) -> str:
    sae = meta.get("sae") or {}
    con = meta.get("contrast_sae") or {}
    parts = [f"model {meta.get('model_id', '?')}", str(meta.get("hook_name", "")),
             f"Temporal SAE width {sae.get('width', '?')} k {sae.get('k', '?')}"]
    if con:
        parts.append(f"contrast {con.get('architecture', '?')} width {con.get('width', '?')} k {con.get('k', '?')}")
    parts.append(f"{meta.get('n_tokens', '?')} tokens incl. BOS")
    return " · ".join(p for p in parts if p)


COLLAPSE_SHARE = 0.9
"""At or above this top-1 variance share of the predicted codes, a kernel page says the predictor collapsed."""


def predictor_note(meta: dict) -> str:
    """One sentence on the predicted codes' top-1 variance share (empty when it is unknown): what the
    reader sees in the predicted-code kernel, said plainly when the predictor collapsed to one direction."""
    share = meta.get("pred_top_direction_share")
    if not isinstance(share, (int, float)) or share != share:
        return ""
    text = (f"The predicted codes of this text put {share:.1%} of their variance on one direction "
            f"(z_pred top-1 share {share:.3f}). ")
    if share >= COLLAPSE_SHARE:
        text += ("This predictor has collapsed to one direction: after removing their mean, every token's predicted "
                 "code is that vector times a scalar, "
                 "so the predicted-code kernel is mostly ±1 (a checkerboard of signs), not event blocks, and it says "
                 "nothing about events in this text.")
    else:
        text += "Below 0.9 the predicted codes use several directions, so their kernel can show event blocks."
    return text


def write_kernel_page(site: Path, payload: dict) -> Path:
    """Write ``<site>/kernels/<slug>.html`` for one analysed text; return its path."""
    out = Path(site) / "kernels"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{slugify(payload['name'])}.html"
    figs = "".join(
        f'<h2>{html.escape(label)}</h2><img class="tk-fig" alt="{html.escape(label)}" src="{html.escape(src)}">'
        for label, src in (payload.get("figures") or {}).items()
    )
    body = (
        f"<header><h1>{html.escape(payload['title'])}</h1><div class=\"meta\">{html.escape(_meta_line(payload.get('meta', {})))}"
        " · <a href=\"index.html\">all texts</a></div></header><main>"
        "<p class=\"note\">Similarity kernels of the Temporal SAE's predicted and novel codes, a standard SAE's codes and the raw "
        "activations (paper §6: on texts with event boundaries the predicted-code kernel should be block-structured by event). "
        "Dashed lines mark the event boundaries; the text below is coloured by the predicted share of each token.</p>"
        + (f"<p class=\"note\" id=\"predictor-note\"><b>{html.escape(note)}</b></p>"
           if (note := predictor_note(payload.get("meta", {}))) else "")
        + "<div id=\"app\"></div>" + figs + "</main>"
    )
    script = f"const DATA={js_literal(payload)};TempolensKernels.render(document.getElementById('app'),DATA);"
    atomic_write_bytes(path, html_page(payload["title"], body, script).encode("utf-8"))
    return path


def write_kernel_index(site: Path, entries: list[dict], events_summary: dict | None = None) -> Path:
    """Write ``<site>/kernels/index.html`` listing the texts (``entries``: name, title, n_tokens, scores)."""
    out = Path(site) / "kernels"
    out.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in KERNEL_LABELS if any(k in (e.get("scores") or {}) for e in entries)]
    head = "".join(f"<th>{html.escape(KERNEL_LABELS[k])}<br>contrast / AUROC</th>" for k in kinds)
    rows = []
    for e in entries:
        cells = []
        for k in kinds:
            sc = (e.get("scores") or {}).get(k)
            if sc is None:
                cells.append("<td>–</td>")
            else:
                bc, au = sc.get("block_contrast"), sc.get("boundary_auroc")
                cells.append(f"<td>{'n/a' if bc is None else f'{bc:.3f}'} / {'n/a' if au is None else f'{au:.3f}'}</td>")
        rows.append(
            f"<tr><td><a href=\"{html.escape(slugify(e['name']))}.html\">{html.escape(e.get('title') or e['name'])}</a></td>"
            f"<td>{int(e.get('n_tokens', 0))}</td>{''.join(cells)}</tr>"
        )
    events_link = '<p><a href="events.html">Event-boundary check over the demo stories</a></p>' if events_summary or (out / "events.html").exists() else ""
    body = (
        "<header><h1>Temporal views: similarity kernels</h1><div class=\"meta\"><a href=\"../index.html\">dashboards</a></div></header><main>"
        f"{events_link}<table><thead><tr><th>text</th><th>tokens</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p class=\"note\">Block contrast = mean within-event minus mean across-event similarity; AUROC = Foote novelty at "
        "true boundaries vs other tokens (0.5 = chance). Only texts with marked events have scores.</p></main>"
    )
    path = out / "index.html"
    atomic_write_bytes(path, html_page("tempolens kernels", body).encode("utf-8"))
    return path
