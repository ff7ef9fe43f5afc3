#!/bin/bash
# msmm-infer on LLaVA-1.5-7B: MindSpeed-MM's inference JSON (examples/llava1.5/inference_llava.json: model sections, tokenizer,
# prompts, image path, generation_config) on MindSpore, one process. Run from the repository root;
# set the paths in MM_MODEL first. The weights: the sections' ckpt_path (CLIP: OpenAI's ViT-L-14-336px.pt or an HF
# CLIP directory; text: the HF vicuna-7b-v1.5 directory; projector: mm_projector.bin or MindSpeed-MM's mlp.pt).
set -e
export GLOG_v=${GLOG_v:-3}
export TOKENIZERS_PARALLELISM=false

MM_MODEL=${MM_MODEL:-examples/llava1.5/inference_llava.json}

export PYTHONPATH=$PWD:$PYTHONPATH
msmm-infer $MM_MODEL
