"""torchrun -> msrun: the launch scripts users have (MindSpeed-MM's DISTRIBUTED_ARGS
style), inline options, arrays, unconverted options; the result parses with msrun's own
argument parser."""
import os
import subprocess
import sys
import textwrap

import pytest

from auto_convert import convert_shell

SEED_SCRIPT = textwrap.dedent('''\
    #!/bin/bash
    source /usr/local/Ascend/ascend-toolkit/set_env.sh
    NPUS_PER_NODE=8
    MASTER_ADDR=localhost
    MASTER_PORT=6000
    NNODES=2
    NODE_RANK=1
    WORLD_SIZE=$(($NPUS_PER_NODE * $NNODES))

    DISTRIBUTED_ARGS="
        --nproc_per_node $NPUS_PER_NODE \\
        --nnodes $NNODES \\
        --node_rank $NODE_RANK \\
        --master_addr $MASTER_ADDR \\
        --master_port $MASTER_PORT
    "

    torchrun $DISTRIBUTED_ARGS pretrain_vlm.py \\
        --mm-model mm_model.json \\
        --nnodes 3
''')


def test_seed_style_script():
    out, report = convert_shell(SEED_SCRIPT, "finetune.sh")
    lines = out.splitlines()
    assert out.count("\n") == SEED_SCRIPT.count("\n")
    assert lines[10] == "    --local_worker_num $NPUS_PER_NODE --log_dir msrun_log --join True \\"
    assert lines[11] == "    --worker_num $((NNODES*NPUS_PER_NODE)) \\"
    assert lines[12:15] == SEED_SCRIPT.splitlines()[12:15]  # same spelling in msrun
    assert lines[17] == "msrun $DISTRIBUTED_ARGS pretrain_vlm.py \\"
    assert lines[19] == "    --nnodes 3"  # the training script's own argument
    assert {c.line for c in report.changes} == {11, 12, 18}
    assert not report.unconverted
    assert convert_shell(out)[0] == out  # idempotent


@pytest.mark.parametrize("before,after", [
    ("torchrun --nproc_per_node=4 train.py --lr 1",
     "msrun --local_worker_num=4 --worker_num=4 --log_dir=msrun_log --join=True train.py --lr 1"),
    ("torchrun --nnodes=2 --nproc-per-node=8 --master-port=29500 t.py",
     "msrun --worker_num=16 --local_worker_num=8 --log_dir=msrun_log --join=True "
     "--master_port=29500 t.py"),
    ("python -m torch.distributed.launch --use_env --nproc_per_node 2 t.py",
     "msrun --local_worker_num 2 --worker_num 2 --log_dir msrun_log --join True t.py"),
    ("python3 -m torch.distributed.run --standalone --nproc_per_node=$GPUS --log_dir=logs t.py",
     "msrun --local_worker_num=$GPUS --worker_num=$GPUS --join=True --log_dir=logs t.py"),
    ("torchrun t.py", "msrun --local_worker_num=1 --worker_num=1 --log_dir=msrun_log --join=True t.py"),
])
def test_inline_launchers(before, after):
    out, report = convert_shell(before + "\n")
    assert out == after + "\n"
    assert not report.unconverted


def test_array_arguments():
    script = 'ARGS=(--nproc_per_node 2 --nnodes $NNODES)\ntorchrun "${ARGS[@]}" t.py\n'
    out, _ = convert_shell(script)
    assert out.splitlines()[0] == ("ARGS=(--local_worker_num 2 --log_dir msrun_log --join True "
                                   "--worker_num $((NNODES*2)))")


def test_unconvertible_options_and_launchers_are_reported():
    script = "torchrun --nproc_per_node=2 --rdzv_backend=c10d t.py\ndeepspeed train.py\n"
    out, report = convert_shell(script, "x.sh")
    assert [(u.line, u.construct) for u in report.unconverted] == [
        (1, "--rdzv_backend=c10d"), (2, "deepspeed")]
    assert out.splitlines()[1] == "deepspeed train.py"


def test_converted_script_parses_with_msrun(tmp_path, monkeypatch):
    """Run the converted script with a stand-in msrun that prints its argv, then hand that
    argv to msrun's own parser."""
    out, _ = convert_shell(SEED_SCRIPT.replace("source /usr/local", "# source /usr/local"))
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "msrun"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    script = tmp_path / "finetune.sh"
    script.write_text(out)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    argv = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    from mindspore.parallel.cluster.run import get_args
    monkeypatch.setattr(sys, "argv", ["msrun", *argv])
    args = get_args()
    assert (args.worker_num, args.local_worker_num, args.node_rank) == (16, 8, 1)
    assert (args.master_addr, args.master_port) == ("localhost", 6000)
    assert (args.log_dir, args.join, args.task_script) == ("msrun_log", True, "pretrain_vlm.py")
    assert args.task_script_args == ["--mm-model", "mm_model.json", "--nnodes", "3"]
