"""torch.utils.checkpoint against real torch (values and gradients), PyNative and graph mode."""
import pytest

from tests.adapters.harness import MODES, check, check_module, randn


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_function(mode):
    check("checkpoint", "checkpoint_function", [randn(2, 3), randn(3, 3, seed=1)], mode=mode,
          api="torch.utils.checkpoint.checkpoint")


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_module(mode):
    check_module("checkpoint", "checkpointed", [randn(4, 3)], mode=mode, api="torch.utils.checkpoint.checkpoint")
