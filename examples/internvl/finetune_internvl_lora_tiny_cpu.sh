#!/bin/bash
# Tiny InternVL LoRA fine-tuning on CPU, the shape of examples/internvl2/finetune_internvl2_lora_2B.sh:
# LoRA on the Qwen2 text decoder from the --lora-* arguments (all linear layers but lm_head), LoRA
# on the InternViT from the "lora" block of model.json, the projector trained in full. Every
# checkpoint holds the PEFT adapter files (adapter_config.json, adapter_model.safetensors);
# --save-total-limit keeps the newest two. LORA_QUANTIZE=int8|nf4 stores the frozen text weights
# quantized (QLoRA-style); LORA_DROPOUT (default 0.05) is the dropout of both adapters.
set -e
export GLOG_v=${GLOG_v:-3}
export TOKENIZERS_PARALLELISM=false

NPUS_PER_NODE=${NPUS_PER_NODE:-1}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29503}
NNODES=1
NODE_RANK=0
WORLD_SIZE=$(($NPUS_PER_NODE * $NNODES))

TINY_DIR=${TINY_DIR:-tiny_assets/internvl_lora}
SAVE_PATH=${SAVE_PATH:-save_dir/internvl_lora_tiny}
TRAIN_ITERS=${TRAIN_ITERS:-9}
GLOBAL_BATCH=${GLOBAL_BATCH:-4}
LOAD_ARGS=${LOAD_ARGS:-}  # e.g. "--load path/to/hf_checkpoint" (then the adapter names follow its layout)
ASSET_ARGS=${ASSET_ARGS:-}  # e.g. --missing-images 2 --strict (make_tiny_assets.py)
EXTRA_ARGS=${EXTRA_ARGS:-}
python examples/tiny/make_tiny_assets.py --family internvl --vision-lora --vision-lora-dropout ${LORA_DROPOUT:-0.05} \
    --out "$TINY_DIR" $ASSET_ARGS
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
    --seq-length 128 \
    --train-iters $TRAIN_ITERS \
    --lr 2.0e-3 \
    --lr-decay-style cosine \
    --min-lr 1.0e-4 \
    --lr-warmup-fraction 0.1 \
    --weight-decay 0.0 \
    --adam-beta1 0.9 \
    --adam-beta2 0.999 \
    --clip-grad 1.0 \
    --seed 42
"
LORA_ARGS="
    --lora-r 8 \
    --lora-alpha 16 \
    --lora-dropout ${LORA_DROPOUT:-0.05} \
    ${LORA_QUANTIZE:+--lora-quantize $LORA_QUANTIZE}
"
MM_ARGS="
    --mm-data $MM_DATA \
    --mm-model $MM_MODEL
"
OUTPUT_ARGS="
    --log-interval 1 \
    --save-interval 3 \
    --save-total-limit 2
"
export PYTHONPATH=$PWD:$PYTHONPATH  # run from the repository root
status=0  # msrun's; the workers' warnings and errors are printed from their logs below
msrun $DISTRIBUTED_ARGS msmm/train/cli.py \
    $GPT_ARGS \
    $LORA_ARGS \
    $MM_ARGS \
    $OUTPUT_ARGS \
    --save $SAVE_PATH \
    $LOAD_ARGS \
    $EXTRA_ARGS || status=$?
python -m msmm.train.msrun_report "$SAVE_PATH/msrun_log" --status $status --show "LoRA|iteration|saved|removed|average"
exit $status
