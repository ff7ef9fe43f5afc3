import pytest

from tests.adapters.harness import MODES, check, check_module, randn


@pytest.mark.parametrize("mode", MODES)
def test_matmul_transpose(mode):
    check("example", "matmul_t", [randn(3, 2), randn(3, 4, seed=1)], mode=mode, api="torch.matmul")
