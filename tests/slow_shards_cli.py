"""The tempolens CLI with every shard write delayed, for tests that kill a run between two shards.

Usage: ``python tests/slow_shards_cli.py SECONDS <tempolens arguments>`` (also as a ``torchrun`` script).
The delay widens the window in which a kill lands between shards; production code has no such hook.
"""

from __future__ import annotations

import sys
import time

from tempolens.store import codestore

DELAY_S = float(sys.argv.pop(1))
_write_shard = codestore.StoreWriter.write_shard


def _slow_write_shard(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    time.sleep(DELAY_S)
    return _write_shard(self, *args, **kwargs)


codestore.StoreWriter.write_shard = _slow_write_shard  # type: ignore[method-assign]

if __name__ == "__main__":
    from tempolens.cli import main

    sys.exit(main())
