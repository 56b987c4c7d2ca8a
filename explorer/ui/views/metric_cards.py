"""The cost metrics every page shows the same way: FLOPs, size and compression."""

from __future__ import annotations

from explorer.metrics import Metrics
from explorer.ui.format import compressed_bytes, count, nbytes


def cost_cards(flops_col, size_col, compression_col, metrics: Metrics) -> None:
    """Draw FLOPs per sample (with the speed-up), size (with the dense size) and compression
    (with the nonzero count) into three Streamlit columns."""
    flops_col.metric("FLOPs per sample", count(metrics.flops["effective"]),
                     f"{metrics.speedup:.2f}x speed-up", delta_color="off",
                     help="2 FLOPs per multiply-add (MACs = FLOPs / 2)")
    size_col.metric("Size", nbytes(compressed_bytes(metrics)),
                    f"dense {nbytes(metrics.size_bytes['dense'])}", delta_color="off",
                    help=", ".join(f"{k}: {v:,} B" for k, v in metrics.size_bytes.items()))
    compression_col.metric("Compression", f"{metrics.compression_ratio:.2f}x",
                           f"{count(metrics.nonzero_params)} of {count(metrics.params)} params",
                           delta_color="off")
