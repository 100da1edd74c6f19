"""tempolens.dashboards: feature dashboards from a code store.

- :mod:`tempolens.dashboards.pipeline` — :class:`DashboardConfig` and :func:`build_dashboards`
  (`tempolens dashboards`): statistics → logit effects → exports + site;
- :mod:`tempolens.dashboards.records` — the Neuronpedia feature records (docs/site-data.md) built from statistics
  and the example windows;
- :mod:`tempolens.dashboards.neuronpedia` — SAEDashboard batch files and Neuronpedia's bulk-import layout;
- :mod:`tempolens.dashboards.site` — the static site's data files (``docs/site-data.md``), ``js_literal``.
"""
