"""The quickstart's held-out evaluation through ``msmm-eval``.

    python examples/quickstart/evaluate.py dataset WORK_DIR   # WORK_DIR/heldout.tsv + WORK_DIR/evaluate.json
    msmm-eval WORK_DIR/evaluate.json                          # predictions + scores in WORK_DIR/eval
    python examples/quickstart/evaluate.py score WORK_DIR     # question / expected / answer, accuracy

``dataset`` writes ``heldout.jsonl`` as an msmm-eval dataset: a multiple-choice TSV in
VLMEvalKit's format (index, base64 image, question, options A-D, the answer's letter, category
``colour`` / ``left shape``), and the evaluate json (the fine-tuned HF checkpoint in
``WORK_DIR/hf_finetuned``, InternVL's ``internvl2_5`` template with the training system prompt,
the question alone as the prompt as in training, greedy, one new token plus the end token).
msmm-eval extracts the chosen option from each answer ("red" -> the option "red") and scores
it; ``score`` prints msmm-eval's predictions and its per-category accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from PIL import Image

from msmm.eval.datasets import encode_image, write_tsv
from msmm.eval.results import read_predictions

CHANCE = {"colour": 1 / 4, "left shape": 1 / 3}  # 4 colours; 3 shapes
OPTIONS = {"colour": ["red", "green", "blue", "yellow"], "left shape": ["circle", "square", "triangle"]}
MODEL_NAME = "quickstart_internvl"


def heldout(work: str) -> list[dict]:
    """(image path, question, expected answer, kind) of every held-out record."""
    rows = []
    with open(os.path.join(work, "heldout.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            turns = {t["from"]: t["value"] for t in record["conversations"]}
            question = turns["human"].replace("<image>\n", "")
            rows.append({"id": str(record["id"]), "image": os.path.join(work, record["image"]), "question": question,
                         "expected": turns["gpt"], "system": turns.get("system"),
                         "kind": "left shape" if "left" in question else "colour"})
    return rows


def write_dataset(work: str) -> str:
    """``heldout.tsv`` (multiple choice, VLMEvalKit's columns) and ``evaluate.json``; returns the json's path."""
    rows = heldout(work)
    table = []
    for r in rows:
        options = OPTIONS[r["kind"]]
        with Image.open(r["image"]) as image:
            encoded = encode_image(image.convert("RGB"))
        table.append({"index": r["id"], "image": encoded, "question": r["question"],
                      **{letter: text for letter, text in zip("ABCD", options)},
                      "answer": "ABCD"[options.index(r["expected"])], "category": r["kind"]})
    tsv = write_tsv(os.path.join(work, "heldout.tsv"), table,
                    ["index", "image", "question", "A", "B", "C", "D", "answer", "category"])
    config = {
        "evaluation_dataset": "custom_mcq", "dataset_path": tsv, "evaluation_model": MODEL_NAME,
        "result_output_path": os.path.join(work, "eval"),
        "model": {"family": "internvl", "from_pretrained": os.path.join(work, "hf_finetuned")},
        "tokenizer": {"from_pretrained": os.path.join(work, "hf_finetuned")},
        "template": "internvl2_5", "system": rows[0]["system"], "prompt_style": "question",
        "generation_config": {"max_new_tokens": 2, "do_sample": False},
    }
    path = os.path.join(work, "evaluate.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return path


def score(work: str) -> float:
    """Prints msmm-eval's answers against the held-out ones and its accuracy per question kind."""
    rows = {r["id"]: r for r in heldout(work)}
    prefix = os.path.join(work, "eval", f"{MODEL_NAME}_custom_mcq")
    predictions = read_predictions(prefix + "_predictions.tsv")
    with open(prefix + "_score.json") as f:
        record = json.load(f)
    if len(predictions) != len(rows):
        sys.exit(f"{prefix}_predictions.tsv: {len(predictions)} answers for {len(rows)} held-out questions "
                 f"(skipped: {record['skipped']})")
    print(f"{'image':<22} {'question':<30} {'expected':<9} answer")
    for p in predictions:
        row = rows[p["index"]]
        print(f"{os.path.basename(row['image']):<22} {row['question']:<30} {row['expected']:<9} {p['prediction']}"
              f"{'' if float(p['score']) == 1 else '   x'}")
    for kind, s in sorted(record["category"].items()):
        right = round(s["score"] * s["n"])
        print(f"{kind} questions: {right}/{s['n']} = {s['score']:.0%} (guessing: {CHANCE[kind]:.0%})")
    overall = record["overall"]
    print(f"held-out accuracy: {round(overall['score'] * overall['n'])}/{overall['n']} = {overall['score']:.0%}")
    return overall["score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("dataset", "score"))
    parser.add_argument("work_dir")
    args = parser.parse_args()
    work = os.path.abspath(args.work_dir)
    if args.command == "dataset":
        print(f"wrote {write_dataset(work)} and {os.path.join(work, 'heldout.tsv')}")
    else:
        score(work)


if __name__ == "__main__":
    main()
