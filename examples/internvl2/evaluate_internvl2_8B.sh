#!/bin/bash
# msmm-eval for InternVL2-8B on MindSpore: the questions of dataset_path (a VLMEvalKit TSV) shared
# by NPUS_PER_NODE msrun workers (data parallel); rank 0 writes the predictions and scores to
# result_output_path. Run from the repository root. Set the paths in MM_MODEL (the json) first;
# LOAD_PATH: an MM checkpoint (mm-convert hf_to_mm or msmm-train output) loaded over the HF
# weights; ADAPTER: an HF PEFT LoRA adapter dir merged in. An interrupted run resumes.
set -e
export GLOG_v=${GLOG_v:-3}
export TOKENIZERS_PARALLELISM=false

NPUS_PER_NODE=${NPUS_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-6000}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
WORLD_SIZE=$(($NPUS_PER_NODE * $NNODES))

MM_MODEL=${MM_MODEL:-examples/internvl2/evaluate_internvl2_8B.json}
LOAD_PATH=${LOAD_PATH:-}
ADAPTER=${ADAPTER:-}
LOG_DIR=${LOG_DIR:-evaluation_outputs/msrun_log}
EXTRA_ARGS=${EXTRA_ARGS:-}  # e.g. --batch-size 4 --strict

DISTRIBUTED_ARGS="
    --worker_num $WORLD_SIZE \
    --local_worker_num $NPUS_PER_NODE \
    --master_addr $MASTER_ADDR \
    --master_port $MASTER_PORT \
    --node_rank $NODE_RANK \
    --log_dir $LOG_DIR \
    --join True
"
EVAL_ARGS="--mm-model $MM_MODEL ${LOAD_PATH:+--load $LOAD_PATH} ${ADAPTER:+--adapter $ADAPTER} $EXTRA_ARGS"

export PYTHONPATH=$PWD:$PYTHONPATH
msrun $DISTRIBUTED_ARGS msmm/eval/cli.py $EVAL_ARGS
