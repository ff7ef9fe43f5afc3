#!/bin/bash
# Tiny LLaVA-1.5 pre-training on CPU (CLIP and the LLM frozen, only the projector learns), in the
# shape of examples/llava1.5/pretrain_llava1_5.sh at a size that runs in under a minute. Generates
# its tokenizer, images, LLaVA-Pretrain json, model.json and data.json into TINY_DIR.
set -e
export GLOG_v=${GLOG_v:-3}
export TOKENIZERS_PARALLELISM=false

NPUS_PER_NODE=${NPUS_PER_NODE:-1}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29501}
NNODES=1
NODE_RANK=0
WORLD_SIZE=$(($NPUS_PER_NODE * $NNODES))

TINY_DIR=${TINY_DIR:-tiny_assets/llava}
SAVE_PATH=${SAVE_PATH:-save_dir/llava_tiny}
TRAIN_ITERS=${TRAIN_ITERS:-6}
GLOBAL_BATCH=${GLOBAL_BATCH:-4}
ASSET_ARGS=${ASSET_ARGS:-}  # e.g. --missing-images 2 --strict (make_tiny_assets.py)
LOAD_ARGS=${LOAD_ARGS:-"--no-load-optim --no-load-rng"}  # resume exactly: LOAD_ARGS="--load $SAVE_PATH"
EXTRA_ARGS=${EXTRA_ARGS:-}  # e.g. --calculate-per-token-loss
python examples/tiny/make_tiny_assets.py --family llava --out "$TINY_DIR" $ASSET_ARGS
MM_DATA="$TINY_DIR/data.json"
MM_MODEL="$TINY_DIR/model.json"

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
    --micro-batch-size 2 \
    --global-batch-size $GLOBAL_BATCH \
    --seq-length 64 \
    --train-iters $TRAIN_ITERS \
    --lr 1.0e-3 \
    --lr-decay-style cosine \
    --min-lr 1.0e-4 \
    --lr-warmup-fraction 0.2 \
    --weight-decay 0.01 \
    --adam-beta1 0.9 \
    --adam-beta2 0.999 \
    --clip-grad 1.0 \
    --seed 42
"
MM_ARGS="
    --mm-data $MM_DATA \
    --mm-model $MM_MODEL
"
OUTPUT_ARGS="
    --log-interval 1 \
    --save-interval 3 \
    --log-tps
"
export PYTHONPATH=$PWD:$PYTHONPATH  # run from the repository root
status=0  # msrun's; the workers' warnings and errors are printed from their logs below
msrun $DISTRIBUTED_ARGS msmm/train/cli.py \
    $GPT_ARGS \
    $MM_ARGS \
    $OUTPUT_ARGS \
    --save $SAVE_PATH \
    $LOAD_ARGS \
    $EXTRA_ARGS || status=$?
python -m msmm.train.msrun_report "$SAVE_PATH/msrun_log" --status $status --show "iteration|saved|average"
exit $status
