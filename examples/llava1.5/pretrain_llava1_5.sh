#!/bin/bash
# LLaVA-1.5-7B pretraining (projector only): the shape of MindSpeed-MM's examples/llava1.5/pretrain_llava1_5.sh, launched with msrun on MindSpore.
# Stage 1 as the LLaVA-1.5 guide runs it: model_stage1.json's sections load OpenAI's CLIP ViT-L-14-336px.pt and
# vicuna-7b-v1.5 (ckpt_path), the projector starts fresh. Or set MM_MODEL=examples/llava1.5/model.json and
# LOAD_PATH to an HF LLaVA checkpoint. Edit SAVE_PATH and the paths in the jsons (see docs/training.md).
source /usr/local/Ascend/ascend-toolkit/set_env.sh 2>/dev/null || true
export TOKENIZERS_PARALLELISM=false
export HCCL_CONNECT_TIMEOUT=1200

NPUS_PER_NODE=8
MASTER_ADDR=localhost
MASTER_PORT=6000
NNODES=1
NODE_RANK=0
WORLD_SIZE=$(($NPUS_PER_NODE * $NNODES))

MM_DATA="examples/llava1.5/data.json"
MM_MODEL=${MM_MODEL:-examples/llava1.5/model_stage1.json}
LOAD_PATH=${LOAD_PATH:-}
SAVE_PATH="save_dir"

MBS=32
GBS=$(($WORLD_SIZE * 32))

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
    --seq-length 2048 \
    --train-iters 2180 \
    --lr 1e-3 \
    --lr-decay-style cosine \
    --min-lr 0.0 \
    --lr-warmup-fraction 0.03 \
    --weight-decay 0.0 \
    --adam-beta1 0.9 \
    --adam-beta2 0.999 \
    --clip-grad 1.0 \
    --seed 42 \
    --bf16 \
    ${LOAD_PATH:+--load $LOAD_PATH} \
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
    --save-interval 2180 \
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
