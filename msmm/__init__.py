"""msmm: vision-language model training on MindSpore (the MindSpeed-MM counterpart).

Importing msmm starts nothing. ``msmm.runtime.start()`` starts MindSpore for msmm (device,
inline host pipeline, the auto_convert hook that binds the torch-style files of
``msmm.models`` to ``adapters.torch``); every entry point calls it first. Without it the
model files import unchanged and run on real PyTorch.
"""
