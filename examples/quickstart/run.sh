#!/bin/bash
# The quickstart (`make quickstart`), on CPU, nothing downloaded. Run from the repository root:
#   1. generate a coloured-shapes VQA set (train + held-out), a tokenizer and a tiny InternVL in HF format
#   2. mm-convert InternVLConverter hf_to_mm
#   3. fine-tune through msrun (examples/quickstart/finetune_internvl_quickstart.sh); the trainer
#      writes the loss curve to WORK_DIR/save/loss_curve.png
#   4. mm-convert InternVLConverter mm_to_hf
#   5. answer the held-out questions with msmm-eval (on MindSpore; written as a multiple-choice TSV in
#      VLMEvalKit's format); print question / expected / answer and the accuracy
# WORK_DIR (default out/quickstart) holds everything; TRAIN_ITERS sets the training length.
set -e
WORK_DIR=${WORK_DIR:-out/quickstart}
export WORK_DIR TRAIN_ITERS LR GLOBAL_BATCH
export TOKENIZERS_PARALLELISM=false GLOG_v=${GLOG_v:-3}
step() { echo; echo "== $* [$(( SECONDS / 60 ))m$(( SECONDS % 60 ))s]"; }

step "1/5 data, tokenizer and a tiny InternVL (HF format) in $WORK_DIR"
rm -rf "$WORK_DIR"
python examples/quickstart/make_quickstart_assets.py --out "$WORK_DIR"

step "2/5 mm-convert InternVLConverter hf_to_mm"
mm-convert InternVLConverter hf_to_mm --cfg.mm_dir "$WORK_DIR/mm" --cfg.hf_config.hf_dir "$WORK_DIR/hf"

step "3/5 fine-tune through msrun (1 worker, CPU)"
bash examples/quickstart/finetune_internvl_quickstart.sh
test -f "$WORK_DIR/save/loss_curve.png" || { echo "run.sh: the trainer wrote no $WORK_DIR/save/loss_curve.png" >&2; exit 1; }
echo "loss curve: $(cd "$WORK_DIR" && pwd)/save/loss_curve.png (records: save/train_log.jsonl, TensorBoard: save/tensorboard)"

step "4/5 mm-convert InternVLConverter mm_to_hf"
mm-convert InternVLConverter mm_to_hf --cfg.mm_dir "$WORK_DIR/save" --cfg.save_hf_dir "$WORK_DIR/hf_finetuned" \
    --cfg.hf_config.hf_dir "$WORK_DIR/hf"

step "5/5 msmm-eval on the held-out questions"
python examples/quickstart/evaluate.py dataset "$WORK_DIR"
msmm-eval "$WORK_DIR/evaluate.json" > "$WORK_DIR/eval.log"
python examples/quickstart/evaluate.py score "$WORK_DIR"
echo "done in $(( SECONDS / 60 ))m$(( SECONDS % 60 ))s; everything is in $WORK_DIR"
