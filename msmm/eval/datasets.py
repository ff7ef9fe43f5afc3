"""Benchmark TSVs in VLMEvalKit's format (``AI2D_TEST.tsv``, ``MMMU_DEV_VAL.tsv``,
``ChartQA_TEST.tsv``, ``DocVQA_VAL.tsv``), read into :class:`Question` rows, framework-free.

A TSV has a header and one question per row: ``index``; ``image``: base64 of one image, a
Python list literal of several (MMMU), or (64 characters or fewer) the ``index`` of another row
whose image it shares (VLMEvalKit stores repeated images once); ``question``; option columns
``A``, ``B``, ... (multiple choice); ``answer`` (a letter for multiple choice; for ChartQA /
DocVQA a string or a Python list literal of accepted strings); optional ``hint``, ``category``,
``l2-category``, ``split``, ``image_path``. An empty cell, ``nan`` or ``NaN`` is missing.

Rows that cannot be evaluated are :class:`BadRow`: the answer missing, a gap in the options
(``A``, ``B``, ``D``), fewer than two options, an answer letter that is no option, an image
reference to no row, an image that does not decode (found when the image is decoded, see
:func:`decode_images`). They are skipped and counted, or stop the run with ``strict``.
"""
from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import re
import string
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from PIL import Image


class EvalDataError(ValueError):
    """A TSV that cannot be read, or a bad row under ``strict``; names the file, row and key."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # evaluation_dataset
    kind: str  # "mcq" | "vqa"
    metric: str  # "accuracy" (MCQ) | "relaxed_accuracy" | "anls" | "exact_match"
    vlmevalkit_name: Optional[str]  # the name VLMEvalKit's prompt rules key on
    max_tiles: int = 6  # InternVL tiles per image (VLMEvalKit's set_max_num)


DATASETS: Dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("ai2d_test", "mcq", "accuracy", "AI2D_TEST", 6),
    DatasetSpec("mmmu_dev_val", "mcq", "accuracy", "MMMU_DEV_VAL", 12),
    DatasetSpec("chartqa_test", "vqa", "relaxed_accuracy", "ChartQA_TEST", 12),
    DatasetSpec("docvqa_val", "vqa", "anls", "DocVQA_VAL", 18),
    # any other TSV in the same formats (e.g. the quickstart's held-out questions)
    DatasetSpec("custom_mcq", "mcq", "accuracy", None, 6),
    DatasetSpec("custom_vqa", "vqa", "exact_match", None, 6),
)}

OPTION_LETTERS = string.ascii_uppercase
MISSING = ("", "nan", "NaN")
IMAGE_REFERENCE_MAX = 64  # VLMEvalKit: an image cell this short is the index of the row holding the image


@dataclass
class Question:
    row: int  # 1-based data row (the header is row 0)
    index: str  # the TSV's index column
    images: List[str]  # base64 strings, in order (<image 1>, <image 2>, ... for MMMU)
    question: str
    options: Dict[str, str]  # letter -> text, contiguous from A
    answers: List[str]  # MCQ: [letter]; VQA: accepted answers
    hint: Optional[str] = None
    category: Optional[str] = None
    l2_category: Optional[str] = None
    split: Optional[str] = None
    open_question: bool = False  # MMMU: an MCQ row without options (scored as VLMEvalKit does)


@dataclass
class BadRow:
    row: int
    index: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (index {self.index}): {self.reason}"


@dataclass
class Dataset:
    path: str
    spec: DatasetSpec
    questions: List[Question]
    bad_rows: List[BadRow] = field(default_factory=list)


def _cell(record: Dict[str, str], key: str) -> Optional[str]:
    value = record.get(key)
    return None if value is None or value in MISSING else value


def _literal_list(text: str) -> Optional[List[str]]:
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None
        if isinstance(value, list):
            return [str(v) for v in value]
    return None


def read_tsv(path: str, dataset: "str | DatasetSpec", strict: bool = False) -> Dataset:
    """The questions of a VLMEvalKit TSV (``dataset``: an evaluation_dataset name or spec). Bad
    rows are collected in ``Dataset.bad_rows`` (with ``strict``: the first one raises
    :class:`EvalDataError`)."""
    if isinstance(dataset, str) and dataset not in DATASETS:
        raise EvalDataError(f"evaluation_dataset {dataset!r}: one of {sorted(DATASETS)}")
    spec = DATASETS[dataset] if isinstance(dataset, str) else dataset
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except FileNotFoundError:
        raise EvalDataError(f"{path}: no such dataset file (dataset_path)") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise EvalDataError(f"{path}: not a readable TSV ({err})") from None
    if not rows:
        raise EvalDataError(f"{path}: empty file, expected a header row")
    header = rows[0]
    for key in ("index", "image", "question", "answer"):
        if key not in header:
            raise EvalDataError(f"{path}: header has no {key!r} column (columns: {header})")
    records: List[Tuple[int, Dict[str, str]]] = []
    bad: List[BadRow] = []

    def reject(row: int, index: str, reason: str) -> None:
        if strict:
            raise EvalDataError(f"{path}: row {row} (index {index}): {reason}")
        bad.append(BadRow(row, index, reason))

    seen = set()
    for row, values in enumerate(rows[1:], 1):
        if not values:
            continue  # a blank line
        record = dict(zip(header, values))
        index = record.get("index", "")
        if len(values) != len(header):
            reject(row, index, f"{len(values)} fields, the header has {len(header)}")
            continue
        if index in MISSING:
            reject(row, index, "no index")
            continue
        if index in seen:
            reject(row, index, "index repeats an earlier row")
            continue
        seen.add(index)
        records.append((row, record))
    images = {r["index"]: r["image"] for _, r in records}
    questions = []
    for row, record in records:
        question, reason = _question(row, record, images, spec)
        if reason:
            reject(row, record["index"], reason)
        else:
            questions.append(question)
    return Dataset(path, spec, questions, bad)


def _question(row: int, record: Dict[str, str], images: Dict[str, str], spec: DatasetSpec
              ) -> Tuple[Optional[Question], Optional[str]]:
    index = record["index"]
    image = _cell(record, "image")
    if image is None:
        return None, "no image"
    if len(image) <= IMAGE_REFERENCE_MAX:
        target = images.get(image)
        if target is None or len(target) <= IMAGE_REFERENCE_MAX:
            return None, f"image column refers to index {image!r}, which holds no image"
        image = target
    listed = _literal_list(image)
    image_list = listed if listed is not None else [image]
    if not image_list:
        return None, "empty image list"
    text = _cell(record, "question")
    if text is None:
        return None, "no question"
    answer = _cell(record, "answer")
    if answer is None:
        return None, "no answer (column 'answer' is empty)"
    options = {k: record[k] for k in OPTION_LETTERS if _cell(record, k) is not None}
    letters = "".join(options)
    if letters != OPTION_LETTERS[:len(letters)]:
        return None, f"options {list(letters)} have a gap: expected {list(OPTION_LETTERS[:len(letters)])}"
    open_question = False
    if spec.kind == "mcq":
        answer = answer.strip()
        if not options and spec.name == "mmmu_dev_val":
            open_question = True  # MMMU open question: its answer is text, scored as option A
            answers = [answer]
        elif len(options) < 2:
            return None, f"{len(options)} option(s) for a multiple-choice question, expected at least 2"
        elif answer not in options:
            return None, f"answer {answer!r} is not one of the options {list(options)}"
        else:
            answers = [answer]
    else:
        listed_answers = _literal_list(answer)
        answers = listed_answers if listed_answers else [answer]
    return Question(row, index, image_list, text, options, answers, _cell(record, "hint"),
                    _cell(record, "category"), _cell(record, "l2-category"), _cell(record, "split"),
                    open_question), None


def decode_image(data: str) -> Image.Image:
    """One base64 image as RGB; ``ValueError`` if it does not decode."""
    try:
        raw = base64.b64decode(data, validate=False)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.convert("RGB")
    except (binascii.Error, OSError, ValueError, Image.DecompressionBombError) as err:
        message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(err))  # no address: stable
        raise ValueError(f"undecodable image ({type(err).__name__}: {message})") from None


def decode_images(question: Question) -> List[Image.Image]:
    """The question's images; ``ValueError`` naming the image number if one does not decode."""
    out = []
    for k, data in enumerate(question.images, 1):
        try:
            out.append(decode_image(data))
        except ValueError as err:
            raise ValueError(f"image {k}: {err}" if len(question.images) > 1 else str(err)) from None
    return out


def encode_image(image: Image.Image, fmt: str = "PNG") -> str:
    """base64 of an image, as VLMEvalKit's TSVs store it (for writing datasets)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_tsv(path: str, rows: List[Dict[str, object]], columns: Optional[List[str]] = None) -> str:
    """Rows as a TSV in VLMEvalKit's format (missing cells empty). Returns ``path``."""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return path
