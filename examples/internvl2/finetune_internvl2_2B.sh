#!/bin/bash
# InternVL2-2B fine-tuning: the shape of MindSpeed-MM's examples/internvl2/finetune_internvl2_2B.sh, launched with msrun on MindSpore.
# Edit LOAD_PATH / SAVE_PATH and the paths in data_2B.json (see docs/training.md).
source /usr/local/Ascend/ascend-toolkit/set_env.sh 2>/dev/null || true
export TOKENIZERS_PARALLELISM=false
export HCCL_CONNECT_TIMEOUT=1200

NPUS_PER_NODE=8
MASTER_ADDR=localhost
MASTER_PORT=6000
NNODES=1
NODE_RANK=0
WORLD_SIZE=$(($NPUS_PER_NODE * $NNODES))

MM_DATA="examples/internvl2/data_2B.json"
MM_MODEL="examples/internvl2/model_2B.json"
LOAD_PATH="ckpt/InternVL2-2B"
SAVE_PATH="save_dir"

MBS=1
GBS=$(($WORLD_SIZE * 1))

DISTRIBUTED_ARGS="
    --worker_num $WORLD_SIZE \
    --local_worker_num $NPUS_PER_NODE \
    --master_addr $MASTER_ADDR \
    --master_port $MASTER_PORT \
    --node_rank $NODE_RANK \
    --log_dir logs/msrun \
    --join True
"

GPT_ARGS="
    --use-flash-attn \
    --micro-batch-size ${MBS} \
    --global-batch-size ${GBS} \
    --seq-length 4096 \
    --train-iters 5000 \
    --lr 4e-5 \
    --lr-decay-style cosine \
    --min-lr 0.0 \
    --lr-warmup-fraction 0.03 \
    --weight-decay 0.05 \
    --adam-beta1 0.9 \
    --adam-beta2 0.999 \
    --clip-grad 1.0 \
    --seed 42 \
    --bf16 \
    --load $LOAD_PATH \
    --no-load-optim \
    --no-load-rng \
    --no-save-optim \
    --no-save-rng
"

MM_ARGS="
    --mm-data $MM_DATA \
    --mm-model $MM_MODEL
"

OUTPUT_ARGS="
    --log-interval 1 \
    --save-interval 5000 \
    --log-tps
"

logfile=$(date +%Y%m%d)_$(date +%H%M%S)
mkdir -p logs
export PYTHONPATH=$PWD:$PYTHONPATH  # run from the repository root
msrun $DISTRIBUTED_ARGS msmm/train/cli.py \
    $GPT_ARGS \
    $MM_ARGS \
    $OUTPUT_ARGS \
    --save $SAVE_PATH \
    2>&1 | tee logs/train_${logfile}.log
