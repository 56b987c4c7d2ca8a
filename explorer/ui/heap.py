"""Keep Streamlit's garbage collection after each script run cheap.

Streamlit runs ``gc.collect(2)`` after every script run (``runner.postScriptGC``), and a
page that polls a job reruns a fragment twice a second. A full collection walks every
tracked object: with torch, plotly, captum and the engine imported that is about 450,000
objects and 0.5 s holding the GIL, so a background job got a fraction of the interpreter
(an epoch of digits-cnn took 20-30 s in the app against 0.6 s alone), and every slider
move paid the 0.5 s too.

Modules and what they define live as long as the process, so on the first run the engine
is imported whole and everything then alive is moved to the permanent generation
(``gc.freeze``); the collection after each run walks only what the app made since:
sessions, models, results. It is done once: a later freeze would also pin whatever the
sessions hold then (an uploaded ``GraphModule`` is a reference cycle), and such objects
would never be collected. Optional extras imported later (transformers, ray) stay
collectable and cost their share (65,000 objects, about 70 ms, for transformers).
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
import threading

import explorer

_lock = threading.Lock()
_frozen = False


def freeze_imports() -> bool:
    """Import the engine and captum, collect, and freeze the heap, on the first call in
    this process; nothing after that. Returns whether this call froze."""
    global _frozen
    if _frozen:
        return False
    with _lock:
        if _frozen:
            return False
        for module in pkgutil.walk_packages(explorer.__path__, "explorer.",
                                            onerror=lambda _name: None):
            try:
                importlib.import_module(module.name)
            except ImportError:  # needs an extra that is not installed: imported if used
                continue
        importlib.import_module("captum.attr")
        gc.collect(2)
        gc.freeze()
        _frozen = True
        return True
