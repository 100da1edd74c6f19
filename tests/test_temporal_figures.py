"""Signed kernels drawn signed: every kernel PNG uses a diverging colour map centred at 0 with
symmetric limits and a labelled colour bar (a mean-centred cosine similarity is negative as often
as positive), and the kernel page colours with the same map."""

from __future__ import annotations

import re

import torch

from tempolens.temporal import figures
from tempolens.temporal.analysis import TextAnalysis
from tempolens.temporal.page import _cmap_hex


def _analysis() -> TextAnalysis:
    k = torch.tensor([[1.0, -0.5, 0.0], [-0.5, 1.0, -1.0], [0.0, -1.0, 1.0]])
    return TextAnalysis(
        name="t",
        text="a b c",
        tokens=["<bos>", "a", " b", " c"],
        token_ids=[2, 5, 6, 7],
        kernels={"predicted": k, "novel": -k},
        attention=[],
        attention_sink=[],
        pred_share=torch.zeros(3),
        top_novel=(torch.full((3, 1), -1), torch.zeros(3, 1)),
        top_sae=None,
    )


def test_kernel_png_is_diverging_centred_at_zero_with_a_labelled_colour_bar(tmp_path, monkeypatch):
    seen = []
    real_save = figures.save_png
    monkeypatch.setattr(figures, "save_png", lambda fig, path, **kw: (seen.append(fig), real_save(fig, path, **kw))[1])
    path = figures.kernel_figure(_analysis(), tmp_path / "k.png")
    assert path.stat().st_size > 0
    fig = seen[0]
    images = [im for ax in fig.axes for im in ax.images]
    kernels = [im for im in images if im.get_array().shape == (3, 3)]
    assert len(kernels) == 2
    for im in kernels:
        lo, hi = im.norm.vmin, im.norm.vmax
        assert lo == -hi and hi == 1.0  # symmetric limits: 0 is the centre of the map
        white = im.cmap(im.norm(0.0))[:3]
        blue = im.cmap(im.norm(-1.0))[:3]
        red = im.cmap(im.norm(1.0))[:3]
        assert min(white) > 0.9  # 0 is (near) white
        assert blue[2] > blue[0] + 0.2 and red[0] > red[2] + 0.2  # negative blue, positive red
        assert im.cmap(im.norm(-0.5))[:3] != im.cmap(im.norm(0.0))[:3]  # negatives are not clipped to the 0 colour
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert labels and "cosine similarity" in labels[0]


def test_kernel_page_lookup_table_is_the_same_diverging_map():
    hexes = _cmap_hex("RdBu_r")
    cols = [tuple(int(hexes[i * 6 + j : i * 6 + j + 2], 16) for j in (0, 2, 4)) for i in range(256)]
    assert cols[0][2] > cols[0][0] and cols[255][0] > cols[255][2]  # blue end at −1, red end at +1
    mid = cols[128]
    assert min(mid) > 230  # white around 0
    from tempolens.viewer import ASSETS_DIR

    js = re.sub(r"'\s*\+\s*'", "", (ASSETS_DIR / "temporal.js").read_text())  # the tables are split over lines
    assert f"DIVERGING_HEX =\n    '{hexes}';" in js and f"MAGMA_HEX =\n    '{_cmap_hex('magma')}';" in js
