"""``mm-convert``: HF <-> MM checkpoints with tensor/pipeline-parallel splitting, LoRA merging, streamed."""
from .converters import (CONVERTERS, HfConfig, HfToMmConfig, InternVLConverter, LlavaConverter, MergeLoraConfig,
                         MmToHfConfig, Qwen2_5_VLConverter, Qwen2VLConverter, ResplitConfig)
from .parallel import ParallelConfig

__all__ = ["CONVERTERS", "HfConfig", "HfToMmConfig", "InternVLConverter", "LlavaConverter", "MergeLoraConfig",
           "MmToHfConfig", "ParallelConfig", "Qwen2_5_VLConverter", "Qwen2VLConverter", "ResplitConfig"]
