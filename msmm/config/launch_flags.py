"""Megatron / MindSpeed-MM launch-script flags that ``msmm-train`` accepts without effect (each
with the reason it logs) or refuses (each with why), beside the ones it honours
(``msmm.config.train_args``).

The architecture flags Megatron requires (``--num-layers``, ``--hidden-size``, ``--vocab-size``...)
are MindSpeed-MM's copy of numbers its model.json sets, and it builds the model from model.json;
so does msmm. They are logged, and when one differs from model.json's number that is logged too
(``architecture_differences``), naming both values.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

KERNEL = "a kernel or fusion choice: msmm picks its kernels per device"
MEMORY = "a memory optimisation of MindSpeed's; msmm keeps what its plan (--dry-run) shows"
ARCHITECTURE = "model.json sets the architecture (MindSpeed-MM builds the model from it as well)"
TOKENIZER = "the tokenizer comes from data.json's tokenizer_config"

# flag -> (takes a value, why it has no effect here)
NO_EFFECT: Dict[str, Tuple[bool, str]] = {
    **{f: (False, KERNEL) for f in (
        "--use-mcore-models", "--use-flash-attn", "--use-fused-rmsnorm", "--use-fused-swiglu",
        "--use-fused-rotary-pos-emb", "--no-masked-softmax-fusion", "--no-gradient-accumulation-fusion",
        "--no-bias-swiglu-fusion", "--no-rope-fusion", "--allow-tf32", "--overlap-grad-reduce",
        "--overlap-param-gather")},
    "--optimizer-selection": (True, "the AdamW implementation: msmm's fused AdamW"),
    **{f: (False, MEMORY) for f in ("--reuse-fp32-param", "--swap-attention", "--use-cpu-initialization",
                                   "--init-model-with-meta-device", "--no-initialization")},
    "--enable-dummy-optimizer": (False, "msmm steps only the trainable parameters; a stage without any needs "
                                        "nothing"),
    "--distributed-backend": (True, "msrun's collectives: HCCL on Ascend, mccl on CPU"),
    "--distributed-timeout-minutes": (True, "the collectives' timeout is HCCL_CONNECT_TIMEOUT (the scripts set it)"),
    "--ai-framework": (True, "msmm runs on MindSpore"),
    "--mm-tool": (True, "MindSpeed-MM's tool config (its profiling and memory tools); msmm has none"),
    "--ckpt-format": (True, "msmm checkpoints are safetensors (docs/training.md)"),
    **{f: (True, TOKENIZER) for f in ("--tokenizer-type", "--tokenizer-model")},
    **{f: (False, ARCHITECTURE) for f in (
        "--swiglu", "--untie-embeddings-and-output-weights", "--disable-bias-linear", "--add-qkv-bias",
        "--use-rotary-position-embeddings", "--group-query-attention", "--qk-layernorm",
        "--attention-softmax-in-fp32")},
    **{f: (True, ARCHITECTURE) for f in (
        "--normalization", "--position-embedding-type", "--num-layers", "--hidden-size", "--ffn-hidden-size",
        "--num-attention-heads", "--num-query-groups", "--max-position-embeddings", "--make-vocab-size-divisible-by",
        "--padded-vocab-size", "--vocab-size", "--init-method-std", "--attention-dropout", "--hidden-dropout",
        "--rotary-base", "--norm-epsilon", "--img-h", "--img-w", "--patch-dim")},
    "--initial-loss-scale": (True, "bf16 / fp32 training uses no loss scale"),
}

# flag -> (takes a value, why it is refused)
REFUSED: Dict[str, Tuple[bool, str]] = {
    "--use-torch-fsdp2": (False, "FSDP2 is not implemented; --use-distributed-optimizer shards the optimizer state"),
    "--fsdp2-config-path": (True, "FSDP2 is not implemented; --use-distributed-optimizer shards the optimizer "
                                  "state"),
    "--layerzero": (False, "LayerZeRO is not implemented; --use-distributed-optimizer shards the optimizer state"),
    "--layerzero-config": (True, "LayerZeRO is not implemented; --use-distributed-optimizer shards the optimizer "
                                 "state"),
    **{f: (True, "DPO training is not implemented")
       for f in ("--dpo-beta", "--dpo-loss-type", "--dpo-label-smoothing", "--ref-model", "--pref-ftx")},
}

# architecture flag -> (model.json section, field) it copies (image size: the vision encoder's)
MODEL_JSON_FIELDS: Dict[str, Tuple[str, str]] = {
    "--num-layers": ("text_decoder", "num_layers"), "--hidden-size": ("text_decoder", "hidden_size"),
    "--ffn-hidden-size": ("text_decoder", "ffn_hidden_size"),
    "--num-attention-heads": ("text_decoder", "num_attention_heads"),
    "--num-query-groups": ("text_decoder", "num_query_groups"), "--vocab-size": ("text_decoder", "vocab_size"),
    "--max-position-embeddings": ("text_decoder", "max_position_embeddings"),
    "--rotary-base": ("text_decoder", "rotary_base"), "--norm-epsilon": ("text_decoder", "layernorm_epsilon"),
    "--img-h": ("image_encoder.vision_encoder", "image_size"),
    "--img-w": ("image_encoder.vision_encoder", "image_size"),
    "--patch-dim": ("image_encoder.vision_encoder", "patch_size"),
}


def architecture_differences(given: Mapping[str, str], sections: Mapping[str, Mapping[str, Any]],
                             source: str) -> List[str]:
    """Lines naming each architecture flag in ``given`` ({flag: value}) whose number differs from
    model.json's (``sections``: section path -> its parsed fields); model.json's is used."""
    lines = []
    for flag, value in given.items():
        if flag not in MODEL_JSON_FIELDS:
            continue
        section, name = MODEL_JSON_FIELDS[flag]
        ours = sections.get(section, {}).get(name)
        if ours is not None and abs(float(value) - float(ours)) > 1e-9 * max(abs(float(ours)), 1.0):
            lines.append(f"{flag} {value} differs from {source} {section}.{name} {ours}: model.json's is used")
    return lines
