"""Answers on disk: per-rank part files (resume), the merged predictions and the score file.

``{result_output_path}/{evaluation_model}_{evaluation_dataset}_parts/`` holds ``run.json`` (what
the answers were made with: a resumed run must match it) and one ``rank{r}.jsonl`` per worker
of each run, a line per question, written and flushed batch by batch:
``{"index": ..., "prediction": ...}`` or ``{"index": ..., "skipped": reason}``. A line cut by an
interruption is ignored. The answered indices are the union over all part files, whatever
number of workers wrote them: a run resumed with another worker count skips them too.

When every question has a line, rank 0 writes ``..._predictions.tsv`` (one row per question:
index, question, answer, prediction, choice (MCQ), rule, score, split / category columns)
and ``..._score.json``; both are published by rename.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import tempfile
from typing import Any, Dict, Iterable, List, Optional

from .datasets import BadRow, Dataset, Question
from .extract import extract_choice
from .metrics import VQA_METRICS, aggregate


class ResumeMismatch(ValueError):
    pass


def output_prefix(output_dir: str, model_name: str, dataset: str) -> str:
    return os.path.join(output_dir, f"{model_name}_{dataset}")


def parts_dir(prefix: str) -> str:
    return prefix + "_parts"


def check_run_record(directory: str, record: Dict[str, Any]) -> None:
    """Writes ``run.json`` (first worker to get there) or checks the one there equals ``record``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "run.json")
    text = json.dumps(record, indent=1, sort_keys=True)
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".run.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)  # atomic: fails if another worker was first
        except FileExistsError:
            pass
        finally:
            os.remove(tmp)
    with open(path) as f:
        old = json.load(f)
    if old != json.loads(text):
        changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        raise ResumeMismatch(f"{path}: the answers there were made with other settings ({', '.join(changed)}); "
                             f"delete {directory} or choose another result_output_path")


def read_parts(directory: str) -> Dict[str, Dict[str, Any]]:
    """index -> its line, over every part file; incomplete lines are ignored."""
    done: Dict[str, Dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(directory, "rank*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # cut by an interruption
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "index" in entry:
                    done[str(entry["index"])] = entry
    return done


class PartWriter:
    """This worker's part file, appended a batch at a time (flushed and fsynced)."""

    def __init__(self, directory: str, rank: int) -> None:
        self.path = os.path.join(directory, f"rank{rank}.jsonl")
        self._repair()
        self.file = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        """Drops a cut last line left by an interrupted run of the same rank."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            with open(self.path, "wb") as f:
                f.write(data[: data.rfind(b"\n") + 1])

    def write(self, entries: Iterable[Dict[str, Any]]) -> None:
        self.file.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def score_question(dataset: Dataset, q: Question, prediction: str) -> Dict[str, Any]:
    """choice / rule / score of one answer."""
    spec = dataset.spec
    if spec.kind == "mcq":
        options, gold = q.options, q.answers[0]
        if q.open_question:  # VLMEvalKit's MMMU: an open question becomes A = its answer, B = other
            options, gold = {"A": q.answers[0], "B": "Other Answers"}, "A"
        choice, rule = extract_choice(prediction, options)
        return {"choice": choice or "", "rule": rule, "score": float(choice == gold)}
    return {"choice": "", "rule": spec.metric, "score": VQA_METRICS[spec.metric](prediction, q.answers)}


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def finalize(dataset: Dataset, done: Dict[str, Dict[str, Any]], prefix: str, settings: Dict[str, Any]
             ) -> Dict[str, Any]:
    """Writes ``{prefix}_predictions.tsv`` and ``{prefix}_score.json``; returns the score record."""
    rows, scores, groups = [], [], []
    skipped: List[BadRow] = list(dataset.bad_rows)
    for q in dataset.questions:
        entry = done[q.index]
        if "skipped" in entry:
            skipped.append(BadRow(q.row, q.index, entry["skipped"]))
            continue
        result = score_question(dataset, q, entry["prediction"])
        scores.append(result["score"])
        group = {"split": q.split, "category": q.category, "l2-category": q.l2_category}
        groups.append(group)
        rows.append({"index": q.index, "question": q.question,
                     "answer": q.answers[0] if len(q.answers) == 1 else json.dumps(q.answers, ensure_ascii=False),
                     "prediction": entry["prediction"], **result, **group})
    skipped.sort(key=lambda b: b.row)
    columns = ["index", "question", "answer", "prediction", "choice", "rule", "score", "split", "category",
               "l2-category"]
    columns = [c for c in columns if c not in ("split", "category", "l2-category") or any(r[c] for r in rows)]

    def write_rows(f):
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r[c] is None else r[c] for c in columns])

    _atomic_write(prefix + "_predictions.tsv", write_rows)
    record = {"dataset": dataset.spec.name, "dataset_path": os.path.abspath(dataset.path),
              "metric": dataset.spec.metric, "questions": len(dataset.questions) + len(dataset.bad_rows),
              "scored": len(rows), **aggregate(scores, groups),
              "skipped": [{"row": b.row, "index": b.index, "reason": b.reason} for b in skipped],
              "settings": settings}
    _atomic_write(prefix + "_score.json", lambda f: json.dump(record, f, indent=1, ensure_ascii=False))
    return record


def read_predictions(path: str) -> List[Dict[str, str]]:
    """The rows of a ``_predictions.tsv``."""
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def summary_lines(record: Dict[str, Any]) -> List[str]:
    """The score record as printed lines (percentages)."""
    lines = [f"{record['dataset']} ({record['metric']}): overall {100 * record['overall']['score']:.2f} "
             f"over {record['overall']['n']} questions"]
    for key in ("split", "category", "l2-category"):
        for name, s in (record.get(key) or {}).items():
            lines.append(f"  {key} {name}: {100 * s['score']:.2f} ({s['n']})")
    if record["skipped"]:
        lines.append(f"skipped {len(record['skipped'])} bad row(s): " + "; ".join(
            f"row {b['row']} (index {b['index']}): {b['reason']}" for b in record["skipped"][:10])
            + (" ..." if len(record["skipped"]) > 10 else ""))
    return lines


def missing(dataset: Dataset, done: Dict[str, Dict[str, Any]]) -> List[str]:
    return [q.index for q in dataset.questions if q.index not in done]


def first_missing(dataset: Dataset, done: Dict[str, Any]) -> Optional[str]:
    left = missing(dataset, done)
    return left[0] if left else None
