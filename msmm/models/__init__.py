"""Torch-style model definitions (run on real torch, or on MindSpore through auto_convert).

``from_pretrained(path)`` builds and loads any family from an HF directory or an MM
checkpoint; ``build_model(load_model_config("model.json"))`` builds one from model.json.
"""
from .model_config import ModelConfig, ModelConfigError, load_model_config, parse_model_config
from .pretrained import (apply_lora_config, build_model, from_pretrained, load_hf_weights, load_mm_weights,
                         load_pretrained, pretrained_family)

__all__ = ["ModelConfig", "ModelConfigError", "apply_lora_config", "build_model", "from_pretrained",
           "load_hf_weights", "load_mm_weights", "load_model_config", "load_pretrained", "parse_model_config",
           "pretrained_family"]
