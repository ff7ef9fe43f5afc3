#!/bin/bash
# InternVL2-2B LoRA fine-tuning on MindSpore (msrun), the recipe of the XTuner tutorial
# (internvl_v2_internlm2_2b_qlora_finetune.py): LLM and InternViT frozen, LoRA on every linear
# layer of the InternLM2 decoder but the output head (r=128, alpha=256, dropout 0.05), the
# projector trained in full, AdamW lr 2e-5 betas (0.9, 0.999) weight decay 0.05, 3% warmup then
# cosine, grad clip 1, 4 micro-batches of 4 per device per step, a checkpoint every 1000 steps,
# the newest one kept. Every checkpoint carries the PEFT adapter files (adapter_config.json,
# adapter_model.safetensors) named as the --load checkpoint (remote-code layout for the
# OpenGVLab InternVL2-2B repo); `mm-convert ... merge_lora` folds them into the base.
# LoRA on the InternViT too: add a "lora" block to image_encoder.vision_encoder of model_2B.json
# (see docs/lora.md). XTuner's length-grouped sampler: "group_by_length": true in data_2B.json.
# LORA_QUANTIZE=int8|nf4 stores the frozen LLM weights quantized (QLoRA-style; on Ascend untested,
# see docs/lora.md).
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
SAVE_PATH="save_dir/internvl2_2B_lora"

MBS=4
GBS=$(($WORLD_SIZE * $MBS * 4))  # XTuner: batch_size 4 per device, accumulative_counts 4

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
    --seq-length 6656 \
    --train-iters 5000 \
    --lr 2e-5 \
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
    --no-load-rng
"

LORA_ARGS="
    --lora-r 128 \
    --lora-alpha 256 \
    --lora-dropout 0.05 \
    ${LORA_QUANTIZE:+--lora-quantize $LORA_QUANTIZE}
"

MM_ARGS="
    --mm-data $MM_DATA \
    --mm-model $MM_MODEL
"

OUTPUT_ARGS="
    --log-interval 1 \
    --save-interval 1000 \
    --save-total-limit 1 \
    --log-tps
"

logfile=$(date +%Y%m%d)_$(date +%H%M%S)
mkdir -p logs
export PYTHONPATH=$PWD:$PYTHONPATH  # run from the repository root
msrun $DISTRIBUTED_ARGS msmm/train/cli.py \
    $GPT_ARGS \
    $LORA_ARGS \
    $MM_ARGS \
    $OUTPUT_ARGS \
    --save $SAVE_PATH \
    2>&1 | tee logs/train_${logfile}.log
