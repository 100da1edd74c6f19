"""Errors that tempolens shows to users: one line that says what went wrong and what to do."""

from __future__ import annotations


class TempolensError(Exception):
    """Base of every error tempolens raises on purpose. The CLI prints its message without a traceback."""


class ConfigError(TempolensError, ValueError):
    """An option or a config file has a wrong value or type."""


class SourceError(TempolensError):
    """A model, SAE or corpus cannot be loaded or does not fit the run."""


class UnsafeCheckpointError(SourceError):
    """A checkpoint would need to execute code to load."""


class DeviceError(ConfigError, SourceError):
    """A requested device does not exist here (an option error and a source that cannot be loaded)."""


class WriteError(TempolensError, OSError):
    """An output file or folder cannot be written: disk full, read-only filesystem, a file in the way."""
