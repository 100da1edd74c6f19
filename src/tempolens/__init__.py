"""tempolens: readable Temporal SAEs — dashboards, autointerp and temporal views."""

__version__ = "0.1.0"
