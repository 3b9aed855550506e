"""Console hygiene: frameworks' own logging kept at levels that say something a user acts on."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

#: Loggers whose lines below these levels say nothing a user acts on: Ray's start-up lines
#: (its warnings, such as a resource request no node can meet, stay), Tune's result-file notes,
#: Ray Train's controller polling, Optuna's "new study" line, faiss's search for its fastest build.
NOISY_LOGGERS = {"ray": logging.WARNING, "ray.tune": logging.ERROR, "ray.train": logging.ERROR,
                 "ray.data": logging.ERROR, "optuna": logging.ERROR, "faiss": logging.WARNING}


def _ignore_exits(unraisable: Any) -> None:
    """``sys.unraisablehook`` that drops a ``SystemExit``: Ray's SIGTERM handler exits by
    raising one, and where the signal lands inside a callback Python cannot raise from (a
    weak reference's, during garbage collection) it prints "Exception ignored" and a
    traceback for what is an intended exit. Anything else goes to the default hook."""
    if isinstance(unraisable.exc_value, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def quiet_frameworks() -> None:
    """Keep the console for people: frameworks' own logging at the levels of NOISY_LOGGERS,
    Tune's classic reporter, which (unlike its newer one) prints nothing at verbose=0, and no
    traceback for a process that Ray stops (:func:`_ignore_exits`)."""
    sys.unraisablehook = _ignore_exits
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass



def quiet_ray_data() -> None:
    """Ray Data without its console chatter: no progress bars (a stage draws its own) and only
    errors on the console from its loggers, whose full logs stay in the Ray session's files.
    Ray Data sets its own logging up when imported, so this runs after that."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)
