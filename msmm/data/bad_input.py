"""Bad-input policy: skip, count and log (default) or stop at the first problem (strict).

Every problem is described by a :class:`BadInput` that names where it comes from
(``file:line``) and what kind of problem it is. Readers and datasets never log
themselves: they hand ``BadInput`` values to one :class:`BadInputLog`, which lives in the
main process, so counts are right whatever the number of loader workers.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

logger = logging.getLogger("msmm.data")

# The kinds of bad input, in the order they are reported in an epoch summary.
KINDS = (
    "malformed_json",
    "bad_record",
    "placeholder_mismatch",
    "bad_path",
    "missing_image",
    "corrupt_image",
    "missing_video",
    "corrupt_video",
    "too_long",
)


class BadInputError(ValueError):
    """Raised in strict mode (and for unrecoverable input such as an unreadable json file)."""


@dataclass(frozen=True)
class BadInput:
    where: str  # "path/to/file.jsonl:12"
    kind: str  # one of KINDS
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown bad-input kind {self.kind!r}; expected one of {KINDS}")

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.reason}"


class BadInputLog:
    """Counts and logs skipped inputs; in strict mode raises :class:`BadInputError` instead."""

    def __init__(self, strict: bool = False, log: logging.Logger = logger) -> None:
        self.strict = strict
        self.log = log
        self.counts: Counter[str] = Counter()
        self.total: Counter[str] = Counter()

    def report(self, bad: BadInput) -> None:
        if self.strict:
            raise BadInputError(str(bad))
        self.counts[bad.kind] += 1
        self.total[bad.kind] += 1
        self.log.warning("skipped %s", bad)

    def epoch_summary(self, epoch: int) -> dict[str, int]:
        """Log the counts of this epoch, reset them, and return them."""
        counts = {kind: self.counts[kind] for kind in KINDS if self.counts[kind]}
        n = sum(counts.values())
        if n:
            detail = ", ".join(f"{k}={v}" for k, v in counts.items())
            self.log.warning("epoch %d: skipped %d sample(s): %s", epoch, n, detail)
        else:
            self.log.info("epoch %d: no sample skipped", epoch)
        self.counts.clear()
        return counts
