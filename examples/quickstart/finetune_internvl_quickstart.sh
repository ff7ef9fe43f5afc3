#!/bin/bash
# The quickstart's fine-tuning: the tiny InternVL (converted by mm-convert hf_to_mm into MM_DIR)
# on the coloured-shapes VQA set, through msrun on CPU, in the shape of
# examples/internvl/finetune_internvl_tiny_cpu.sh. Run from the repository root.
set -e
export GLOG_v=${GLOG_v:-3}
export TOKENIZERS_PARALLELISM=false

NPUS_PER_NODE=${NPUS_PER_NODE:-1}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29511}
NNODES=1
NODE_RANK=0
WORLD_SIZE=$(($NPUS_PER_NODE * $NNODES))

WORK_DIR=${WORK_DIR:-out/quickstart}
MM_DIR=${MM_DIR:-$WORK_DIR/mm}          # the converted starting checkpoint
SAVE_PATH=${SAVE_PATH:-$WORK_DIR/save}
TRAIN_ITERS=${TRAIN_ITERS:-800}
LR=${LR:-3.0e-3}
GLOBAL_BATCH=${GLOBAL_BATCH:-16}
EXTRA_ARGS=${EXTRA_ARGS:-}  # e.g. --tensor-model-parallel-size 2 (with NPUS_PER_NODE=2 and an MM_DIR split for it)
MM_DATA="$WORK_DIR/data.json"
MM_MODEL="$WORK_DIR/model.json"

DISTRIBUTED_ARGS="
    --worker_num $WORLD_SIZE \
    --local_worker_num $NPUS_PER_NODE \
    --master_addr $MASTER_ADDR \
    --master_port $MASTER_PORT \
    --node_rank $NODE_RANK \
    --log_dir $SAVE_PATH/msrun_log \
    --join True
"
GPT_ARGS="
    --micro-batch-size 16 \
    --global-batch-size $GLOBAL_BATCH \
    --seq-length 64 \
    --train-iters $TRAIN_ITERS \
    --lr $LR \
    --lr-decay-style cosine \
    --min-lr 1.0e-4 \
    --lr-warmup-fraction 0.05 \
    --weight-decay 0.01 \
    --adam-beta1 0.9 \
    --adam-beta2 0.999 \
    --clip-grad 1.0 \
    --seed 42 \
    --load $MM_DIR \
    --finetune \
    --no-load-optim \
    --no-load-rng
"
MM_ARGS="
    --mm-data $MM_DATA \
    --mm-model $MM_MODEL
"
OUTPUT_ARGS="
    --log-interval 10 \
    --save-interval $TRAIN_ITERS
"
export PYTHONPATH=$PWD:$PYTHONPATH
status=0  # msrun's; the workers' warnings and errors are printed from their logs below
msrun $DISTRIBUTED_ARGS msmm/train/cli.py \
    $GPT_ARGS \
    $MM_ARGS \
    $OUTPUT_ARGS \
    --save $SAVE_PATH \
    $EXTRA_ARGS || status=$?
python -m msmm.train.msrun_report "$SAVE_PATH/msrun_log" --status $status
exit $status
