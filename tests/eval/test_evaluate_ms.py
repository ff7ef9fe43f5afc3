"""msmm-eval end to end on MindSpore (the tiny InternVL through the auto_convert hook, msmm's
compiled generation): the four TSV formats, known scores on planted answers, bad rows
counted, an interrupted run resumed gives the same predictions and scores."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402

from msmm.eval.config import load_eval_config  # noqa: E402
from msmm.eval.datasets import read_tsv  # noqa: E402
from msmm.eval.extract import extract_choice  # noqa: E402
from msmm.eval.metrics import anls, relaxed_accuracy  # noqa: E402
from msmm.eval.results import ResumeMismatch, read_predictions  # noqa: E402
from msmm.eval.run import Answerer, evaluate, load_model  # noqa: E402
from tiny_bench import FORMATS, eval_json, tiny_internvl, write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny InternVL on MindSpore, loaded once (its compiled graphs are kept for the module)."""
    hf = tiny_internvl(str(tmp_path_factory.mktemp("hf")))
    tokenizer = AutoTokenizer.from_pretrained(hf)
    work = str(tmp_path_factory.mktemp("bench"))
    with ms_backend.converted_in_sys_modules():
        cfg = load_eval_config(eval_json(os.path.join(work, "probe.json"), hf, "unused.tsv", "ai2d_test", work))
        model = load_model(cfg)
        assert sys.modules[type(model).__module__].torch.__name__.startswith("adapters")
        yield hf, tokenizer, model, work


def run(tiny, dataset: str, tsv: str, out: str, **extra):
    hf, tokenizer, model, work = tiny
    after = extra.pop("_after", None)
    path = eval_json(os.path.join(out + ".json"), hf, tsv, dataset, out, **extra)
    cfg = load_eval_config(path)
    with ms_backend.converted_in_sys_modules():
        record = evaluate(cfg, model=model, tokenizer=tokenizer, progress=False,
                          after_batch=after, log=lambda _: None)
    rows = read_predictions(os.path.join(out, f"internvl2_tiny_{dataset}_predictions.tsv"))
    return cfg, record, rows


def test_multiple_choice_formats_end_to_end(tiny):
    hf, tokenizer, model, work = tiny
    for dataset in ("ai2d_test", "mmmu_dev_val"):
        tsv = write_dataset(os.path.join(work, dataset), dataset)
        cfg, record, rows = run(tiny, dataset, tsv, os.path.join(work, dataset, "out"))
        data = read_tsv(tsv, dataset)
        skipped = {s["index"]: s["reason"] for s in record["skipped"]}
        if dataset == "ai2d_test":  # the planted bad rows, with their indices
            assert set(skipped) == {"7", "8", "9"} and "undecodable image" in skipped["7"]
            assert record["questions"] == 10
        else:
            assert not skipped and record["questions"] == 5
        scored = [q for q in data.questions if q.index not in skipped]
        assert [r["index"] for r in rows] == [q.index for q in scored]
        assert any(r["prediction"] for r in rows)  # the tiny model says something
        hits = []
        for q, r in zip(scored, rows):  # the score record equals the predictions scored independently
            options, gold = (q.options, q.answers[0]) if q.options else ({"A": q.answers[0], "B": "Other Answers"}, "A")
            choice, rule = extract_choice(r["prediction"], options)
            assert (r["choice"], r["rule"]) == (choice or "", rule)
            hits.append(float(choice == gold))
            assert float(r["score"]) == hits[-1]
        assert record["overall"] == {"score": float(np.mean(hits)), "n": len(hits)}
        key = "category" if dataset == "ai2d_test" else "split"
        for name, s in record[key].items():
            mine = [h for q, h in zip(scored, hits) if getattr(q, key) == name]
            assert s == {"score": float(np.mean(mine)), "n": len(mine)}
        # the answer of a question equals msmm generate on its prompt, called here directly
        from msmm.infer.generate import GenerationConfig, generate

        q = scored[0]
        answerer = Answerer(cfg, model, tokenizer)
        ids, vision = answerer.prepare(q)
        with ms_backend.converted_in_sys_modules():
            tokens = generate(model, ids[None], None, GenerationConfig(max_new_tokens=4), **vision)[0].tolist()
        stop = [i for i, t in enumerate(tokens) if t in answerer.stop]
        assert rows[0]["prediction"] == tokenizer.decode(tokens[:stop[0] if stop else None],
                                                         skip_special_tokens=True).strip()
        assert answerer.stop == sorted({2, tokenizer.convert_tokens_to_ids("<|im_end|>")})


def test_vqa_formats_score_planted_answers(tiny):
    """ChartQA and DocVQA: a first run gives the answers; the gold answers of a second TSV are
    planted from them (the prompt does not show the answer, so the model answers the same)."""
    hf, tokenizer, model, work = tiny
    for dataset in ("chartqa_test", "docvqa_val"):
        base = os.path.join(work, dataset)
        _, _, first = run(tiny, dataset, write_dataset(base, dataset), os.path.join(base, "out1"))
        preds = [r["prediction"] for r in first]
        rows = FORMATS[dataset][1](np.random.default_rng(0))
        if dataset == "chartqa_test":
            rows[0]["answer"] = preds[0]  # right
            rows[1]["answer"] = str(["nothing like it", preds[1]])  # right: any accepted answer
            rows[2]["answer"] = preds[2] + "zz"  # wrong unless numeric (then within 5%?)
            expected = [1.0, 1.0, relaxed_accuracy(preds[2], [preds[2] + "zz"]), relaxed_accuracy(preds[3], ["40"])]
        else:
            rows[0]["answer"] = str([preds[0]])
            rows[1]["answer"] = str([preds[1] + "q"])  # one edit: ANLS 1 - 1 / (len + 1)
            rows[2]["answer"] = str(["#" * (len(preds[2]) + 1)])  # all wrong: 0
            n = len(" ".join(preds[1].lower().split())) + 1
            expected = [1.0, 1.0 - 1.0 / n if 1.0 / n < 0.5 else 0.0, 0.0, anls(preds[3], ["title 3", "the title 3"])]
        tsv = write_dataset(os.path.join(base, "planted"), dataset, rows=rows)
        _, record, second = run(tiny, dataset, tsv, os.path.join(base, "out2"))
        assert [r["prediction"] for r in second] == preds
        np.testing.assert_allclose([float(r["score"]) for r in second], expected, rtol=1e-12)
        assert record["overall"]["score"] == pytest.approx(np.mean(expected), rel=1e-12)
        if dataset == "chartqa_test":
            assert record["split"]["augmented"] == {"score": pytest.approx((expected[0] + expected[2]) / 2), "n": 2}


def test_interrupted_run_resumed_gives_the_same_scores(tiny):
    hf, tokenizer, model, work = tiny
    base = os.path.join(work, "resume")
    tsv = write_dataset(base, "ai2d_test", seed=3)
    _, whole, whole_rows = run(tiny, "ai2d_test", tsv, os.path.join(base, "whole"), batch_size=3)

    def interrupt(n):
        if n == 0:
            raise KeyboardInterrupt

    out = os.path.join(base, "cut")
    with pytest.raises(KeyboardInterrupt):
        run(tiny, "ai2d_test", tsv, out, batch_size=3, _after=interrupt)
    part = os.path.join(out, "internvl2_tiny_ai2d_test_parts", "rank0.jsonl")
    assert len(open(part).read().splitlines()) == 3  # one batch of 3 written
    with open(part, "a") as f:
        f.write('{"index": "3", "predic')  # killed in the middle of a line
    assert not os.path.exists(os.path.join(out, "internvl2_tiny_ai2d_test_score.json"))
    _, resumed, resumed_rows = run(tiny, "ai2d_test", tsv, out, batch_size=3)
    assert resumed_rows == whole_rows
    assert {k: v for k, v in resumed.items() if k != "settings"} == {k: v for k, v in whole.items() if k != "settings"}
    lines = [json.loads(x) for x in open(part).read().splitlines()]
    assert [x["index"] for x in lines] == ["0", "1", "2", "3", "4", "5", "6", "7"]  # the first batch not redone
    with pytest.raises(ResumeMismatch, match="generation"):
        run(tiny, "ai2d_test", tsv, out, batch_size=3, generation_config={"max_new_tokens": 3})
