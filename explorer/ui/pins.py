"""Plans a user named and pinned, per model, to find them again and compare them."""

from __future__ import annotations

import streamlit as st

from explorer.plan import Plan

PINS_KEY = "pins"
NAME_LIMIT = 40


def pinned(model_id: str) -> dict[str, Plan]:
    """This session's pinned plans of ``model_id``, by name, oldest first."""
    return st.session_state.setdefault(PINS_KEY, {}).setdefault(model_id, {})


def pin(model_id: str, name: str, plan: Plan) -> str:
    """Pin ``plan`` under ``name`` (stripped, shortened; a blank name gets a number);
    a name used before now points at this plan. Returns the name used."""
    plans = pinned(model_id)
    name = " ".join(name.split())[:NAME_LIMIT] or f"plan {len(plans) + 1}"
    plans.pop(name, None)
    plans[name] = plan
    return name


def unpin(model_id: str, name: str) -> None:
    pinned(model_id).pop(name, None)


def name_of(model_id: str, plan: Plan) -> str | None:
    """The name ``plan`` is pinned under, if any."""
    return next((n for n, p in pinned(model_id).items() if p == plan), None)
