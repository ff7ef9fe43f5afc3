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
    """Counts and logs skipped inputs; in strict mode raises :class:`BadInputError` instead.

    Records rejected while the annotation file is read (``end_reading()`` marks the end of
    that) are out of every epoch; those rejected while loading are found anew each epoch. The
    summary of an epoch counts both: every record that did not train in that epoch because it
    is bad (on this rank: all the rejected-at-reading ones, this rank's share of the others).
    """

    def __init__(self, strict: bool = False, log: logging.Logger = logger) -> None:
        self.strict = strict
        self.log = log
        self.counts: Counter[str] = Counter()  # this epoch's, found while loading (or reading, until end_reading)
        self.at_reading: Counter[str] = Counter()  # rejected when the annotation file was read: out of every epoch
        self.total: Counter[str] = Counter()  # every problem reported, once each time it is found
        self.skipped_so_far = 0  # the sum of the epoch summaries

    def report(self, bad: BadInput) -> None:
        if self.strict:
            raise BadInputError(str(bad))
        self.counts[bad.kind] += 1
        self.total[bad.kind] += 1
        self.log.warning("skipped %s", bad)

    def end_reading(self) -> None:
        """What was reported so far was found reading the annotation file: it counts in every epoch."""
        self.at_reading.update(self.counts)
        self.counts.clear()

    def epoch_summary(self, epoch: int) -> dict[str, int]:
        """Log the counts of this epoch, reset them, and return them."""
        both = self.at_reading + self.counts
        counts = {kind: both[kind] for kind in KINDS if both[kind]}
        n = sum(counts.values())
        self.skipped_so_far += n
        if n:
            detail = ", ".join(f"{k}={v}" for k, v in counts.items())
            read = sum(self.at_reading.values())
            note = f"; {read} of them rejected when the annotation file was read" if read else ""
            self.log.warning("epoch %d: skipped %d sample(s): %s%s; %d skipped in all epochs so far",
                             epoch, n, detail, note, self.skipped_so_far)
        else:
            self.log.info("epoch %d: no sample skipped", epoch)
        self.counts.clear()
        return counts
