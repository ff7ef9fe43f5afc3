#!/bin/bash
# msmm-infer on InternVL2-8B: MindSpeed-MM's inference JSON (examples/internvl2/inference_8B.json: model sections, tokenizer,
# prompts, image path, generation_config) on MindSpore, one process. Run from the repository root;
# set the paths in MM_MODEL first. The weights: the JSON's from_pretrained (an HF directory or an MM checkpoint); or set
# LOAD_PATH (msmm-infer --load) instead.
set -e
export GLOG_v=${GLOG_v:-3}
export TOKENIZERS_PARALLELISM=false

MM_MODEL=${MM_MODEL:-examples/internvl2/inference_8B.json}
LOAD_PATH=${LOAD_PATH:-}

export PYTHONPATH=$PWD:$PYTHONPATH
msmm-infer $MM_MODEL${LOAD_PATH:+ --load $LOAD_PATH}
