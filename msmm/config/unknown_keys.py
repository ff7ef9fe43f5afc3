"""An unknown key of a config file: an error naming it (with the closest known key), or, with
``msmm-train --allow-unknown-keys``, a warning and the key ignored."""
from __future__ import annotations

import difflib
import logging
from typing import Iterable, Type

logger = logging.getLogger("msmm.config")


def did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(message: str, allow: bool, error: Type[Exception]) -> None:
    """``message`` ("file: dotted.key: unknown key (did you mean ...)") raised as ``error``, or
    with ``allow`` logged as a warning (the caller then ignores the key)."""
    if not allow:
        raise error(message)
    logger.warning("%s; ignored (--allow-unknown-keys)", message)
