"""The ``/live`` page of :mod:`tempolens.serve`: type a text, see its kernels computed live.

The page posts ``{"text": ...}`` to ``/api/analyze`` and draws the returned payload with the same
viewer script as the static kernel pages; error messages are shown with ``textContent``.
"""

from __future__ import annotations

from tempolens.temporal.page import html_page

_SCRIPT = r"""
(function(){
"use strict";
const form=document.getElementById("live-form"), box=document.getElementById("live-text"),
      status=document.getElementById("live-status"), app=document.getElementById("app"), btn=document.getElementById("live-go");
form.addEventListener("submit", async function(ev){
  ev.preventDefault();
  status.className="note";status.textContent="computing\u2026";btn.disabled=true;
  try{
    const resp=await fetch("/api/analyze",{method:"POST",headers:{"Content-Type":"application/json"},body:JSON.stringify({text:box.value})});
    let data=null;try{data=await resp.json();}catch(e){data=null;}
    if(!resp.ok||!data||data.error){status.className="tk-err";status.textContent="Error: "+((data&&data.error)?String(data.error):("HTTP "+resp.status));return;}
    status.textContent=data.n+" tokens (BOS dropped from the views).";
    TempolensKernels.render(app,data);
  }catch(e){status.className="tk-err";status.textContent="Error: the server did not answer ("+String(e)+")";}
  finally{btn.disabled=false;}
});
})();
"""


def live_page(max_chars: int, has_site: bool = False) -> str:
    """The HTML of ``/live`` (self-contained; talks only to its own origin)."""
    site_link = ' · <a href="/index.html">dashboards</a> · <a href="/kernels/index.html">kernel pages</a>' if has_site else ""
    body = (
        f"<header><h1>Live kernels</h1><div class=\"meta\">type a text; '||' marks an event boundary{site_link}</div></header><main>"
        "<form id=\"live-form\"><textarea id=\"live-text\" rows=\"6\" maxlength=\"" + str(int(max_chars)) + "\" "
        "placeholder=\"The ship left the harbour at dawn. || That night the village held a concert.\"></textarea><br>"
        "<button id=\"live-go\" type=\"submit\">Analyse</button> <span id=\"live-status\" class=\"note\" data-testid=\"status\"></span></form>"
        "<p class=\"note\">Similarity kernels of the predicted and novel codes (and a standard SAE's codes), attention per head, "
        "the predicted share per token and the top novel latents; computed on this machine by the loaded model and SAEs.</p>"
        "<div id=\"app\"></div></main>"
    )
    return html_page("tempolens live kernels", body, _SCRIPT)
