"""The app's "Run sweeps on" setting: this process, or a Ray cluster, held once per server.

A sweep on a Ray cluster sends the model, its validation data and the computed scores to
that cluster (:mod:`explorer.decide.cluster`): pointing a server at one is for the person
who runs the server, not for whoever opens a browser tab. The setting is therefore shown
and honoured only when the server was started with ``PE_ALLOW_RAY=1`` in its environment
or ``allow_ray = true`` in its Streamlit secrets (:func:`allowed`).

Ray has one connection per process (``ray.shutdown`` ends it for every thread), so the
server holds one, under a lock (:data:`CONNECTION`): the first sweep on an address
connects, later sweeps on it share the connection, and it moves to another address only
while no sweep uses it. A sweep's :class:`~explorer.decide.cluster.RayCluster` keeps the
connection when it ends (``keep=True``). Results are identical to an in-process sweep run
on one torch thread, so the pages' cache keys do not name where a sweep ran.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from streamlit.errors import StreamlitAPIException

from explorer.decide.cluster import ClusterError, RayCluster
from explorer.errors import short
from explorer.ui import state

ALLOW_ENV = "PE_ALLOW_RAY"  # "1" in the server's environment allows the setting
ALLOW_SECRET = "allow_ray"  # or true in .streamlit/secrets.toml
HELP = ("Where the Sensitivity scan, the Compare criteria curves and the Trade-offs "
        "baselines run: empty for this process, `local` for a Ray cluster started on this "
        "machine, or `HOST:PORT` / `ray://HOST:PORT` for a running one. The model, its "
        "validation data and the computed scores are SENT to that cluster; the setting "
        f"exists only because this server was started with {ALLOW_ENV}=1 (or "
        f"{ALLOW_SECRET} = true in its secrets). Results are the same as in this process.")


def allowed() -> bool:
    """Whether whoever started the server allowed sweeps on a Ray cluster."""
    if os.environ.get(ALLOW_ENV) == "1":
        return True
    try:
        return st.secrets.get(ALLOW_SECRET) is True
    except (FileNotFoundError, StreamlitAPIException):
        return False  # no secrets file, or one that does not parse


class Connection:
    """This server's one Ray connection: its address and how many sweeps use it now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cluster: RayCluster | None = None
        self.users = 0

    def connect(self, address: str) -> RayCluster:
        """The connection to ``address``, made now if it is not the one held; a
        :class:`~explorer.decide.cluster.ClusterError` for a bad or dead address, or
        while a sweep still runs on another address."""
        with self._lock:
            return self._connect(address)

    def _connect(self, address: str) -> RayCluster:
        held = self.cluster
        if held is not None and held.address == address:
            return held
        if held is not None and self.users:
            raise ClusterError(f"A sweep is running on the Ray cluster at "
                               f"{short(held.address)}: wait for it (or cancel it) before "
                               "moving to another address.")
        cluster = RayCluster(address, keep=True)
        if held is not None:
            held.ray.shutdown()
            self.cluster = None
        self.cluster = cluster.__enter__()
        return self.cluster

    @contextmanager
    def using(self, address: str) -> Iterator[RayCluster]:
        """The connection to ``address`` for one sweep (it stays after the sweep)."""
        with self._lock:
            cluster = self._connect(address)
            self.users += 1
        try:
            yield cluster
        finally:
            with self._lock:
                self.users -= 1


    def close(self) -> None:
        """Disconnect (a local cluster stops); the next sweep on an address connects again."""
        with self._lock:
            if self.cluster is not None:
                self.cluster.ray.shutdown()
                self.cluster = None


CONNECTION = Connection()  # per process, as Ray's own connection is


def chosen() -> str | None:
    """This session's address, read in the script thread (None: this process; always
    None where the setting is not allowed)."""
    return st.session_state.get(state.RAY_KEY) if allowed() else None


@contextmanager
def sweeps(address: str | None) -> Iterator[RayCluster | None]:
    """Where one sweep runs: None (this process) or the held connection to ``address``;
    usable from a job's thread (``address`` is read beforehand with :func:`chosen`)."""
    if address is None:
        yield None
        return
    with CONNECTION.using(address) as cluster:
        yield cluster


def choose(address: str) -> None:
    """The setting's new value (stripped; empty: this process): connected now, so a bad or
    dead address is refused here with one message (``state.RAY_ERROR_KEY``), not
    mid-sweep."""
    st.session_state.pop(state.RAY_ERROR_KEY, None)
    address = address.strip()
    if not address or not allowed():
        st.session_state[state.RAY_KEY] = None
        return
    try:
        CONNECTION.connect(address)
    except ClusterError as exc:
        st.session_state[state.RAY_KEY] = None
        st.session_state[state.RAY_ERROR_KEY] = str(exc)
        return
    st.session_state[state.RAY_KEY] = address
