"""The benchmarks' metrics, framework-free.

- multiple choice (AI2D, MMMU): accuracy of the extracted option (:mod:`msmm.eval.extract`);
- ChartQA: relaxed accuracy (Methani et al. 2020): a numeric answer is right within 5% of the
  gold number (relative to the gold one; ``12%`` reads as 0.12), any other answer must equal
  the gold one (case-insensitive); the best over the accepted answers;
- DocVQA: ANLS (Biten et al. 2019): lower-cased, whitespace-collapsed strings, normalised
  Levenshtein distance ``NL = lev / max(len)``, score ``1 - NL`` if ``NL < 0.5`` else 0, the best
  over the accepted answers;
- exact match (custom VQA sets): case-insensitive equality after stripping.

:func:`aggregate` averages per-question scores overall and per ``split``, ``category``,
``l2-category``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

ANLS_THRESHOLD = 0.5
RELAXED_TOLERANCE = 0.05


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _anls_norm(text: str) -> str:
    return " ".join(str(text).strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    best = 0.0
    pred = _anls_norm(prediction)
    for answer in answers:
        gold = _anls_norm(answer)
        length = max(len(gold), len(pred))
        nl = 0.0 if length == 0 else levenshtein(gold, pred) / length
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def _to_float(text: str) -> Optional[float]:
    text = text.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correct(prediction: str, answer: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    pred, gold = _to_float(str(prediction)), _to_float(str(answer))
    if pred is not None and gold is not None and gold != 0:
        return abs(pred - gold) / abs(gold) <= tolerance
    if pred is not None and gold is not None:  # gold 0: only 0 is within any relative tolerance
        return pred == 0
    return str(prediction).strip().lower() == str(answer).strip().lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str]) -> float:
    return float(any(relaxed_correct(prediction, a) for a in answers))


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return float(any(str(prediction).strip().lower() == str(a).strip().lower() for a in answers))


VQA_METRICS = {"relaxed_accuracy": relaxed_accuracy, "anls": anls, "exact_match": exact_match}


def aggregate(scores: Iterable[float], groups: Iterable[Dict[str, Optional[str]]]) -> Dict[str, object]:
    """``{"overall": {"score", "n"}, "split": {name: {...}}, "category": {...}, "l2-category": {...}}``:
    mean per-question score (0..1) and question count, overall and per group value; groups with
    no value on any question are left out."""
    totals: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    overall: List[float] = []
    for score, group in zip(scores, groups):
        overall.append(score)
        for key, value in group.items():
            if value is not None:
                totals[key][value].append(score)

    def summary(values: List[float]) -> Dict[str, float]:
        return {"score": sum(values) / len(values) if values else 0.0, "n": len(values)}

    out: Dict[str, object] = {"overall": summary(overall)}
    for key in ("split", "category", "l2-category"):
        if totals.get(key):
            out[key] = {name: summary(values) for name, values in sorted(totals[key].items())}
    return out
