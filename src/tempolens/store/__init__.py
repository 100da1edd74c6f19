"""Sparse code store: one pass over the LM, read by everything downstream."""

from tempolens.store.codestore import CodeStore, Shard, StoreError, StoreWriter, pack_codes

__all__ = ["CodeStore", "Shard", "StoreError", "StoreWriter", "pack_codes"]
