"""Reading VLMEvalKit TSVs: formats, image references, multi-image lists, bad rows."""
from __future__ import annotations

import numpy as np
import pytest

from msmm.eval.datasets import EvalDataError, decode_images, read_tsv, write_tsv
from tiny_bench import ai2d_rows, chartqa_rows, docvqa_rows, mmmu_rows, write_dataset


def test_ai2d_rows_references_and_bad_rows(tmp_path):
    path = write_dataset(str(tmp_path), "ai2d_test")
    data = read_tsv(path, "ai2d_test")
    indices = [q.index for q in data.questions]
    assert indices == ["0", "1", "2", "3", "4", "5", "6", "7"]  # row 7 (undecodable) is found when decoded
    q = data.questions[0]
    assert q.options == {"A": "red", "B": "green", "C": "blue", "D": "yellow"} and q.answers == ["A"]
    assert q.category == "shape" and q.split is None
    shared = data.questions[6]
    assert shared.images == q.images and shared.answers == ["C"]  # image "0": row 0's image
    assert [(b.row, b.index) for b in data.bad_rows] == [(9, "8"), (10, "9")]
    assert "no answer" in data.bad_rows[0].reason and "gap" in data.bad_rows[1].reason
    with pytest.raises(ValueError, match="undecodable image"):
        decode_images(data.questions[7])
    assert decode_images(q)[0].size == (56, 56)


def test_strict_stops_at_the_first_bad_row_naming_it(tmp_path):
    path = write_dataset(str(tmp_path), "ai2d_test")
    with pytest.raises(EvalDataError, match=r"AI2D_TEST.tsv: row 9 \(index 8\): no answer"):
        read_tsv(path, "ai2d_test", strict=True)


def test_mmmu_image_lists_and_open_question(tmp_path):
    data = read_tsv(write_dataset(str(tmp_path), "mmmu_dev_val"), "mmmu_dev_val")
    assert not data.bad_rows
    q = data.questions[0]
    assert len(q.images) == 2 and [im.size for im in decode_images(q)] == [(56, 56), (84, 56)]
    assert "<image 1>" in q.question and q.options["A"] == "<image 1>" and q.split == "dev"
    open_q = data.questions[-1]
    assert open_q.open_question and open_q.options == {} and open_q.answers == ["4"] and len(open_q.images) == 1


def test_vqa_answers_single_and_lists(tmp_path):
    chart = read_tsv(write_dataset(str(tmp_path), "chartqa_test"), "chartqa_test")
    assert [q.answers for q in chart.questions] == [["10"], ["20"], ["30"], ["40"]]
    assert chart.questions[1].split == "human"
    doc = read_tsv(write_dataset(str(tmp_path), "docvqa_val"), "docvqa_val")
    assert doc.questions[2].answers == ["title 2", "the title 2"]


def test_more_bad_rows(tmp_path, rng):
    rows = ai2d_rows(rng, 2)[:2]
    rows += [{**rows[0], "index": 20, "image": "77"},  # a reference to no row
             {**rows[0], "index": 21, "answer": "E"},  # not an option
             {**rows[0], "index": 22, "B": None, "C": None, "D": None},  # one option
             {**rows[0], "index": 1}]  # repeated index
    path = write_tsv(str(tmp_path / "x.tsv"), rows)
    data = read_tsv(path, "ai2d_test")
    assert [q.index for q in data.questions] == ["0", "1"]
    reasons = {b.index: b.reason for b in data.bad_rows}
    assert set(reasons) == {"20", "21", "22", "1"}
    assert "refers to index '77'" in reasons["20"] and "'E' is not one of" in reasons["21"]
    assert "1 option(s)" in reasons["22"] and "repeats" in reasons["1"]


def test_missing_column_and_file_are_errors(tmp_path, rng):
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in chartqa_rows(rng)]
    path = write_tsv(str(tmp_path / "c.tsv"), rows)
    with pytest.raises(EvalDataError, match="c.tsv: header has no 'answer' column"):
        read_tsv(path, "chartqa_test")
    with pytest.raises(EvalDataError, match="no such dataset file"):
        read_tsv(str(tmp_path / "none.tsv"), "docvqa_val")


def test_ragged_row_is_bad(tmp_path, rng):
    path = write_dataset(str(tmp_path), "docvqa_val", rows=docvqa_rows(rng, 2))
    with open(path, "a") as f:
        f.write("7\tonly-two-fields\n")
    data = read_tsv(path, "docvqa_val")
    assert [(b.row, b.index) for b in data.bad_rows] == [(3, "7")] and "2 fields" in data.bad_rows[0].reason
