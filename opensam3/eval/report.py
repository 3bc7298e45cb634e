"""Printing evaluation results as a compact table."""

from __future__ import annotations

import math
from typing import Mapping

# Headline numbers first, in the order papers report them.
_HEADLINE_SUFFIXES = ("_cgF1", "_IL_MCC", "_positive_micro_F1", "_cgF1@0.5", "_cgF1@0.75", "_AP", "_AP50", "_AP75",
                      "_cgf1_micro_50_95", "_ilmcc_50_95", "_positive_micro_f1_50_95", "_phrase_HOTA",
                      "_phrase_DetA", "_phrase_AssA", "_phrase_ap_50_95", "_mAP_50_95")


def format_table(results: Mapping[str, float], title: str = "results") -> str:
    """Two-column table; headline metrics on top, then the rest alphabetically."""
    headline = [k for s in _HEADLINE_SUFFIXES for k in results if k.endswith(s)]
    rest = sorted(k for k in results if k not in headline)
    keys = list(dict.fromkeys(headline + rest))
    width = max((len(k) for k in keys), default=10)
    lines = [title, "-" * (width + 12)]
    for key in keys:
        value = results[key]
        text = "nan" if isinstance(value, float) and math.isnan(value) else f"{value:10.4f}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)
