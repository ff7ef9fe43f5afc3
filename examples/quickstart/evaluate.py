"""The quickstart's held-out evaluation around ``msmm-infer``.

    python examples/quickstart/evaluate.py prompts WORK_DIR   # writes WORK_DIR/inference.json
    msmm-infer WORK_DIR/inference.json > WORK_DIR/answers.txt
    python examples/quickstart/evaluate.py score WORK_DIR     # question / expected / answer, accuracy

``prompts`` turns ``heldout.jsonl`` into an inference JSON (the fine-tuned HF checkpoint in
``WORK_DIR/hf_finetuned``, the training ``data.json`` for the template and image
preprocessing, greedy, one new token plus the end token); ``score`` reads msmm-infer's output
(``>>> [image] question`` then the answer) against the held-out answers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

CHANCE = {"colour": 1 / 4, "left shape": 1 / 3}  # 4 colours; 3 shapes


def heldout(work: str) -> list[dict]:
    """(image path, question, expected answer) of every held-out record."""
    rows = []
    with open(os.path.join(work, "heldout.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            turns = {t["from"]: t["value"] for t in record["conversations"]}
            rows.append({"image": os.path.join(work, record["image"]),
                         "question": turns["human"].replace("<image>\n", ""), "expected": turns["gpt"],
                         "system": turns.get("system")})
    return rows


def write_prompts(work: str) -> str:
    rows = heldout(work)
    config = {
        "model": {"family": "internvl", "from_pretrained": os.path.join(work, "hf_finetuned")},
        "tokenizer": {"from_pretrained": os.path.join(work, "hf_finetuned")},
        "data": os.path.join(work, "data.json"),
        "system": rows[0]["system"],
        "prompts": [{"prompt": r["question"], "images": [r["image"]]} for r in rows],
        "generation_config": {"max_new_tokens": 2, "do_sample": False},
    }
    path = os.path.join(work, "inference.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return path


def read_answers(path: str) -> list[tuple[str, str]]:
    """(``>>>`` line, answer) pairs of msmm-infer's output."""
    pairs, lines = [], open(path).read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith(">>> "):
            pairs.append((line[4:], lines[i + 1].strip() if i + 1 < len(lines) else ""))
    return pairs


def score(work: str) -> float:
    rows, answers = heldout(work), read_answers(os.path.join(work, "answers.txt"))
    if len(answers) != len(rows):
        sys.exit(f"{work}/answers.txt: {len(answers)} answers for {len(rows)} held-out questions")
    right, total = defaultdict(int), defaultdict(int)
    print(f"{'image':<22} {'question':<30} {'expected':<9} answer")
    for row, (_, answer) in zip(rows, answers):
        kind = "left shape" if "left" in row["question"] else "colour"
        ok = answer == row["expected"]
        right[kind] += ok
        total[kind] += 1
        print(f"{os.path.basename(row['image']):<22} {row['question']:<30} {row['expected']:<9} {answer}"
              f"{'' if ok else '   x'}")
    for kind in sorted(total):
        print(f"{kind} questions: {right[kind]}/{total[kind]} = {right[kind] / total[kind]:.0%} "
              f"(guessing: {CHANCE[kind]:.0%})")
    accuracy = sum(right.values()) / len(rows)
    print(f"held-out accuracy: {sum(right.values())}/{len(rows)} = {accuracy:.0%}")
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("prompts", "score"))
    parser.add_argument("work_dir")
    args = parser.parse_args()
    work = os.path.abspath(args.work_dir)
    if args.command == "prompts":
        print(f"wrote {write_prompts(work)}")
    else:
        score(work)


if __name__ == "__main__":
    main()
