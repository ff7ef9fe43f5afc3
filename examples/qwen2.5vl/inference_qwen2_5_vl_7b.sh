#!/bin/bash
# msmm-infer on Qwen2.5-VL-7B-Instruct: MindSpeed-MM's inference JSON (examples/qwen2.5vl/inference_qwen2_5_vl_7b.json: model sections, tokenizer,
# prompts, image path, generation_config) on MindSpore, one process. Run from the repository root;
# set the paths in MM_MODEL first. LOAD_PATH: the weights, an MM checkpoint (mm-convert hf_to_mm or msmm-train output)
# or an HF directory, checked against the JSON's sections (MindSpeed-MM's --load $LOAD_PATH).
set -e
export GLOG_v=${GLOG_v:-3}
export TOKENIZERS_PARALLELISM=false

MM_MODEL=${MM_MODEL:-examples/qwen2.5vl/inference_qwen2_5_vl_7b.json}
LOAD_PATH=${LOAD_PATH:-ckpt/mm_path/Qwen2.5-VL-7B-Instruct}

export PYTHONPATH=$PWD:$PYTHONPATH
msmm-infer $MM_MODEL --load $LOAD_PATH
