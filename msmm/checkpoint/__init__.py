"""The only code that reads and writes weights (numpy only; no MindSpore, no torch).

* ``safetensors``: the one safetensors reader (header validated) and a streaming writer;
* ``hf``: HF checkpoint directories (index, shards, config.json, side files);
* ``names``: one rename table per family, HF <-> MM names in both directions;
* ``parallel``: tensor-parallel split/merge and pipeline placement of every MM name;
* ``layout``: the MM directory layout (tracker, ``iter_*``/``release``, ``mp_rank_*``);
* ``mm``: MM checkpoints split for TP/PP (``mm-convert``'s output, ``--load``-able);
* ``train_state``: the trainer's atomic save and resume;
* ``peft`` / ``lora_merge``: LoRA adapters in HF PEFT's layout, and merging them.
"""
