"""``mm-convert``: HF <-> MM checkpoints with tensor/pipeline-parallel splitting, streamed."""
from .converters import (CONVERTERS, HfConfig, HfToMmConfig, InternVLConverter, LlavaConverter, MmToHfConfig,
                         Qwen2_5_VLConverter, Qwen2VLConverter, ResplitConfig)
from .parallel import ParallelConfig

__all__ = ["CONVERTERS", "HfConfig", "HfToMmConfig", "InternVLConverter", "LlavaConverter", "MmToHfConfig",
           "ParallelConfig", "Qwen2_5_VLConverter", "Qwen2VLConverter", "ResplitConfig"]
