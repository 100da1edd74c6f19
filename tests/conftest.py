from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from fixtures import build_tiny_lm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A tiny real Gemma-3 causal LM + tokenizer in an HF folder (4 blocks, hidden 32)."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))
