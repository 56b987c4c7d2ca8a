"""Finished sensitivity scans, shared by every session: the same scan twice is a lookup."""

from __future__ import annotations

import threading
from collections import OrderedDict

import streamlit as st

from explorer.decide.sensitivity import Sensitivity

SCANS_KEPT = 64


class Scans:
    """Finished scans for every session, bounded; jobs write from their threads, so a lock.

    Keys start with the session's results key (:attr:`explorer.ui.state.Session.results_key`:
    a digest of the model's and the data's content, and how plans are judged), so a scan is
    served only for the same content judged the same way, whoever asks. An entry holds the
    scan only, never the model or data it was computed on (they stay collectable, and an
    upload's memory goes back when its session ends).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, tuple] = OrderedDict()

    def get(self, key: tuple) -> tuple[Sensitivity, float] | None:
        with self._lock:
            entry = self._items.get(key)
        return entry

    def put(self, key: tuple, result: Sensitivity, seconds: float) -> None:
        if result.cancelled:  # a partial scan is never served as a finished one
            return
        with self._lock:
            self._items[key] = (result, seconds)
            self._items.move_to_end(key)
            while len(self._items) > SCANS_KEPT:
                self._items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def shared_scans() -> Scans:
    return Scans()
