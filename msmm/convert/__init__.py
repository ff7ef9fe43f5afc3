"""``mm-convert``: HF <-> MM checkpoints with tensor/pipeline-parallel splitting, LoRA merging,
streamed; the command line over ``msmm.checkpoint`` and the family registry."""
from .converters import (CONVERTERS, Converter, HfConfig, HfToMmConfig, LlavaConverter, MergeLoraConfig,
                         MmToHfConfig, ResplitConfig, converter)

__all__ = ["CONVERTERS", "Converter", "HfConfig", "HfToMmConfig", "LlavaConverter", "MergeLoraConfig", "MmToHfConfig",
           "ResplitConfig", "converter"]
