"""Where a call's survey answers are read from: CSAT (1-5) and NPS (0-10) in its context.

A survey (a flow's questions, or the post-agent survey) leaves its answers in the call's context under
``csat`` (``satisfaction`` is the older name) and ``nps``, at the top level or in ``survey``, ``slots`` or
``variables``. The context is stored encrypted, so the store also keeps the two numbers in plain columns
(``calls.csat``, ``calls.nps``) for the reports' SQL aggregates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

CSAT_KEYS = ("csat", "satisfaction")
NPS_KEYS = ("nps",)
CSAT_RANGE = (1.0, 5.0)
NPS_RANGE = (0.0, 10.0)
_SCOPES = (None, "survey", "slots", "variables")


def _score(context: Mapping[str, Any], keys: tuple[str, ...], low: float, high: float) -> float | None:
    for scope_name in _SCOPES:
        scope = context if scope_name is None else context.get(scope_name)
        if not isinstance(scope, Mapping):
            continue
        for key in keys:
            if key not in scope:
                continue
            try:
                value = float(scope[key])
            except (TypeError, ValueError):
                return None
            return value if math.isfinite(value) and low <= value <= high else None
    return None


def survey_scores(context: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The (CSAT, NPS) a call's context holds; None for an answer that is missing or out of range."""
    return _score(context, CSAT_KEYS, *CSAT_RANGE), _score(context, NPS_KEYS, *NPS_RANGE)
