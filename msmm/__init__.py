"""msmm: vision-language model training on MindSpore (the MindSpeed-MM counterpart).

With ``MSMM_AUTO_CONVERT=1`` (what ``source auto_convert.sh mm`` exports) the torch-style
model files of ``msmm.models`` are imported through ``auto_convert``'s hook and bind to
``adapters.torch``; without it they import unchanged and run on real PyTorch.
"""
from auto_convert.hook import install_from_env as _install_auto_convert

_install_auto_convert()
