"""Parallel layouts through the real launch scripts under msrun equal one worker: the same
per-iteration loss and grad norm (same global batch), checkpoints in the layout's
``mp_rank_*`` shards, and an exact resume in that layout. One msrun per run (a failed
collective would corrupt later ones in the same job). The default run covers TP 2, TP 2 + SP,
PP 2, CP 2 and DP 2 + distributed optimizer, each with a resume; the mm-convert round trip,
PP 2 x VPP 2, TP 2 x PP 2 on 4 workers, a split ViT, unaligned TP and the LLaVA / Qwen2-VL
variants run with --run-slow (each run takes 30-60 s on 2 cores; the whole suite ~22 min with
them out)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from test_msrun import REPO, _free_port, records

SCRIPTS = {
    "internvl": "examples/internvl/finetune_internvl_tiny_cpu.sh",
    "qwen2vl": "examples/qwen2vl/finetune_qwen2vl_tiny_cpu.sh",
    "llava": "examples/llava/pretrain_llava_tiny_cpu.sh",
}
RTOL = 1e-5


def launch(family: str, tmp: str, workers: int, extra: str = "", load: str = "", iters: int = 6,
           assets: str = "") -> str:
    """Run the family's tiny launch script (``assets``: make_tiny_assets.py arguments); returns
    its SAVE_PATH."""
    save = os.path.join(tmp, "save")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
               NPUS_PER_NODE=str(workers), MASTER_PORT=str(_free_port()), TINY_DIR=os.path.join(tmp, "assets"),
               SAVE_PATH=save, TRAIN_ITERS=str(iters), GLOBAL_BATCH="8", EXTRA_ARGS=extra, ASSET_ARGS=assets)
    if load:
        env["LOAD_ARGS"] = f"--load {load}"
    proc = subprocess.run(["bash", os.path.join(REPO, SCRIPTS[family])], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return save


def assert_same_run(got, want, iterations) -> None:
    by_iteration = {r["iteration"]: r for r in got}
    assert sorted(by_iteration) == list(iterations)
    for r in want:
        if r["iteration"] in by_iteration:
            mine = by_iteration[r["iteration"]]
            for key in ("loss", "grad_norm"):
                assert abs(mine[key] - r[key]) <= RTOL * abs(r[key]), (r["iteration"], key, mine[key], r[key])


def stopped_at_iteration_3(save: str, directory: str) -> str:
    """``directory`` as a run killed after its iteration-3 checkpoint would have left it."""
    os.makedirs(directory)
    shutil.copytree(os.path.join(save, "iter_0000003"), os.path.join(directory, "iter_0000003"))
    with open(os.path.join(directory, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("3")
    return directory


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("one_worker"))
    return records(launch("internvl", tmp, 1))


def test_tensor_parallel_2_equals_one_worker_and_resumes_in_its_layout(one_worker, tmp_path):
    save = launch("internvl", str(tmp_path / "tp2"), 2, "--tensor-model-parallel-size 2")
    tp2 = records(save)
    assert_same_run(tp2, one_worker, range(1, 7))

    # one model shard per tensor-parallel rank, each holding its half of a column-parallel weight
    shards = sorted(os.listdir(os.path.join(save, "iter_0000006")))
    assert shards == ["mp_rank_00", "mp_rank_01"]
    pieces = [load_file(os.path.join(save, "iter_0000006", s, "model_optim_rng.safetensors")) for s in shards]
    name = "model.language_model.model.layers.0.mlp.gate_proj.weight"
    assert pieces[0][name].shape[0] == pieces[1][name].shape[0] and not np.array_equal(pieces[0][name], pieces[1][name])
    with open(os.path.join(save, "iter_0000006", "mp_rank_01", "metadata.json")) as f:
        assert json.load(f)["tensor_parallel_size"] == 2

    # a run stopped at its iteration-3 checkpoint, resumed in the same layout, continues exactly
    resumed_from = stopped_at_iteration_3(save, str(tmp_path / "stopped"))
    again = launch("internvl", str(tmp_path / "resumed"), 2, "--tensor-model-parallel-size 2", load=resumed_from)
    assert_same_run(records(again), tp2, range(4, 7))


def test_sequence_parallel_with_tensor_parallel_2_equals_one_worker_and_resumes(one_worker, tmp_path):
    """TP 2 + --sequence-parallel (Megatron's): the text decoder's norms and residuals run on half
    the sequence each, its column-parallel inputs all-gathered and row-parallel outputs
    reduce-scattered, the replicated decoder gradients summed over the two ranks."""
    flags = "--tensor-model-parallel-size 2 --sequence-parallel"
    save = launch("internvl", str(tmp_path / "tp2sp"), 2, flags)
    run = records(save)
    assert_same_run(run, one_worker, range(1, 7))
    with open(os.path.join(save, "msrun_log", "worker_0.log")) as f:
        # 2 norms per text layer, the final norm (the tiny decoder has no row-parallel biases)
        assert "sequence parallel over the 2 tensor-parallel ranks: the gradients of 5 replicated" in f.read()

    resumed_from = stopped_at_iteration_3(save, str(tmp_path / "stopped"))
    again = launch("internvl", str(tmp_path / "resumed"), 2, flags, load=resumed_from)
    assert_same_run(records(again), run, range(4, 7))


def test_pipeline_2_equals_one_worker_and_resumes_in_its_layout(one_worker, tmp_path):
    """1F1B over 2 stages: stage 0 runs the vision tower, the projector, the embeddings and text
    layer 0; stage 1 text layer 1 (local index 0), the norm, the output layer and the loss."""
    save = launch("internvl", str(tmp_path / "pp2"), 2, "--pipeline-model-parallel-size 2")
    pp2 = records(save)
    assert_same_run(pp2, one_worker, range(1, 7))

    shards = sorted(os.listdir(os.path.join(save, "iter_0000006")))
    assert shards == ["mp_rank_00_000", "mp_rank_00_001"]
    stages = [set(load_file(os.path.join(save, "iter_0000006", s, "model_optim_rng.safetensors"))) for s in shards]
    assert "model.vision_tower.embeddings.patch_embeddings.projection.weight" in stages[0]
    assert "model.language_model.model.embed_tokens.weight" in stages[0]
    for stage in stages:  # one text layer each, under its stage-local index
        assert "model.language_model.model.layers.0.mlp.gate_proj.weight" in stage
        assert not any(".layers.1." in k for k in stage if k.startswith("model.language_model."))
    assert {"model.language_model.lm_head.weight", "model.language_model.model.norm.weight"} <= stages[1] - stages[0]
    with open(os.path.join(save, "iter_0000006", "mp_rank_00_001", "metadata.json")) as f:
        assert json.load(f)["pipeline_parallel_size"] == 2

    resumed_from = stopped_at_iteration_3(save, str(tmp_path / "stopped"))
    again = launch("internvl", str(tmp_path / "resumed"), 2, "--pipeline-model-parallel-size 2", load=resumed_from)
    assert_same_run(records(again), pp2, range(4, 7))


@pytest.mark.slow  # the suite's budget on 2 cores: a representative set runs by default
def test_interleaved_pipeline_equals_one_worker_and_merges_back(tmp_path):
    """PP 2 x VPP 2 (the interleaved schedule; 4 text layers, one per virtual stage) and the
    same run on one worker: the same losses and grad norms, mm-convert's reader merges the
    virtual-stage checkpoint (model0.* / model1.* per stage) into the one worker's tensors, and a
    resume from iteration 3 in the layout continues exactly."""
    from msmm.checkpoint.mm import read_mm

    flags = "--pipeline-model-parallel-size 2 --virtual-pipeline-model-parallel-size 2"
    one = launch("internvl", str(tmp_path / "one"), 1, assets="--text-layers 4")
    vpp = launch("internvl", str(tmp_path / "vpp"), 2, flags, assets="--text-layers 4")
    assert_same_run(records(vpp), records(one), range(1, 7))

    stage1 = load_file(os.path.join(vpp, "iter_0000006", "mp_rank_00_001", "model_optim_rng.safetensors"))
    assert {k.split(".")[0] for k in stage1} >= {"model0", "model1"}
    (merged, parallel, _), (want, _, _) = read_mm(vpp), read_mm(one)
    assert parallel.llm_pp_layers == [[1, 1], [1, 1]]
    assert sorted(merged) == sorted(want)
    for key, t in want.items():
        np.testing.assert_allclose(merged[key].load(), t.load(), rtol=1e-4, atol=1e-6, err_msg=key)

    resumed_from = stopped_at_iteration_3(vpp, str(tmp_path / "stopped"))
    again = launch("internvl", str(tmp_path / "resumed"), 2, flags, load=resumed_from, assets="--text-layers 4")
    assert_same_run(records(again), records(vpp), range(4, 7))


@pytest.mark.slow  # the suite's budget on 2 cores: a representative set runs by default
def test_tensor_2_x_pipeline_2_on_4_workers_equals_one_worker(one_worker, tmp_path):
    """TP 2 inside each of 2 pipeline stages: four shards mp_rank_{00,01}_{000,001}."""
    save = launch("internvl", str(tmp_path / "tp2pp2"), 4, "--tensor-model-parallel-size 2 "
                  "--pipeline-model-parallel-size 2")
    assert_same_run(records(save), one_worker, range(1, 7))
    assert sorted(os.listdir(os.path.join(save, "iter_0000006"))) == [
        "mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]


@pytest.mark.slow  # the suite's budget on 2 cores: a representative set runs by default
def test_pipeline_splits_a_trained_vision_encoder_over_stages(tmp_path):
    """MindSpeed-MM's InternVL2-8B VPP recipe splits InternViT over stages: here vision
    pipeline_num_layers [1, 1], text [0, 2]. Stage 0 runs the patch embedding and ViT layer 0
    and sends the ViT's hidden states [tiles, 1 + patches, width]; stage 1 runs ViT layer 1,
    the projector, the embeddings and the text; the ViT trains. Equal to one worker."""
    assets = "--train-vision"
    one = records(launch("internvl", str(tmp_path / "one"), 1, iters=3, assets=assets))
    save = launch("internvl", str(tmp_path / "pp2"), 2, "--pipeline-model-parallel-size 2", iters=3,
                  assets=assets + " --vision-pipeline-layers [1,1] --text-pipeline-layers [0,2]")
    assert_same_run(records(save), one, range(1, 4))
    stages = [set(load_file(os.path.join(save, "iter_0000003", s, "model_optim_rng.safetensors")))
              for s in ("mp_rank_00_000", "mp_rank_00_001")]
    assert "model.vision_tower.embeddings.patch_embeddings.projection.weight" in stages[0]
    assert not any(k.startswith("model.language_model.") for k in stages[0])
    for stage in stages:  # one ViT layer each, under its stage-local index
        assert any(k.startswith("model.vision_tower.encoder.layer.0.") for k in stage)
        assert not any(k.startswith("model.vision_tower.encoder.layer.1.") for k in stage)
    assert "model.multi_modal_projector.linear_1.weight" in stages[1]


def test_context_parallel_2_equals_one_worker_and_resumes(one_worker, tmp_path):
    """megatron_cp_algo over 2 ranks: each keeps 2 of the 4 chunks of every sequence (the
    load-balanced split) and runs ring attention (the other rank's keys and values arrive in a
    second step, online softmax, the causal offset in the mask); the labels are shifted on the
    whole sequence and the loss sums over both ranks. The all-gather attention (the default) is
    in the slow set."""
    flags = "--context-parallel-size 2 --context-parallel-attention ring"
    save = launch("internvl", str(tmp_path / "cp2"), 2, flags)
    cp2 = records(save)
    assert_same_run(cp2, one_worker, range(1, 7))
    assert sorted(os.listdir(os.path.join(save, "iter_0000006"))) == ["mp_rank_00"]  # one copy, written once

    resumed_from = stopped_at_iteration_3(save, str(tmp_path / "stopped"))
    again = launch("internvl", str(tmp_path / "resumed"), 2, flags, load=resumed_from)
    assert_same_run(records(again), cp2, range(4, 7))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "qwen2vl"])
def test_pipeline_and_context_parallel_2_equal_one_worker_for_llava_and_qwen2vl(family, tmp_path):
    """LLaVA stage 1 (only the projector trains: at PP 2 stage 1 holds frozen layers only and
    sends input gradients back) and Qwen2-VL (M-RoPE positions [3, B, L] reach every pipeline
    stage; each context-parallel rank takes its tokens' positions)."""
    one = records(launch(family, str(tmp_path / "one"), 1, iters=3))
    for name, flags in (("pp2", "--pipeline-model-parallel-size 2"),
                        ("cp2_ring", "--context-parallel-size 2 --context-parallel-attention ring"),
                        ("cp2_all_gather", "--context-parallel-size 2")):
        run = records(launch(family, str(tmp_path / name), 2, flags, iters=3))
        assert_same_run(run, one, range(1, 4))


def test_distributed_optimizer_on_2_data_parallel_ranks_equals_one_worker_and_resumes(one_worker, tmp_path):
    save = launch("internvl", str(tmp_path / "dp2"), 2, "--use-distributed-optimizer")
    run = records(save)
    assert_same_run(run, one_worker, range(1, 7))

    # each data-parallel rank saved its own range of the optimizer state (about half of it)
    shard = os.path.join(save, "iter_0000006", "mp_rank_00")
    ranges = [load_file(os.path.join(shard, f"distrib_optim_dp_{r:03d}.safetensors")) for r in range(2)]
    trained = sum(v.size for k, v in load_file(os.path.join(shard, "model_optim_rng.safetensors")).items()
                  if k.startswith(("model.multi_modal_projector.", "model.language_model.")))
    for r, state in enumerate(ranges):
        assert state["optimizer.shard.exp_avg"].size == -(-trained // 2)
        assert list(state["optimizer.shard.layout"][:2]) == [r, 2]
    assert not any(k.startswith("optimizer.") for k in load_file(os.path.join(shard, "model_optim_rng.safetensors")))

    resumed_from = stopped_at_iteration_3(save, str(tmp_path / "stopped"))
    again = launch("internvl", str(tmp_path / "resumed"), 2, "--use-distributed-optimizer", load=resumed_from)
    assert_same_run(records(again), run, range(4, 7))


@pytest.mark.slow  # three trainings and transformers: the suite's budget on 2 cores
def test_checkpoints_mm_convert_split_for_tp2_and_pp2_train_like_the_unsplit_one_and_convert_back(tmp_path):
    """HF -> mm-convert hf_to_mm (unsplit, TP2, and PP2 with llm_pp_layers [[1, 1]]) ->
    msmm-train --load on 1 worker, 2 TP ranks, 2 pipeline stages -> the same losses ->
    mm-convert mm_to_hf of each run -> transformers gives the same logits (the quickstart's
    tiny InternVL and data)."""
    import torch
    from transformers import InternVLForConditionalGeneration

    from msmm.convert.cli import main as mm_convert

    work = tmp_path / "qs"
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", WORK_DIR=str(work),
               TRAIN_ITERS="10", GLOBAL_BATCH="16")  # the script logs every 10 iterations
    subprocess.run([sys.executable, "examples/quickstart/make_quickstart_assets.py", "--out", str(work)], cwd=REPO,
                   env=env, check=True, capture_output=True)
    splits = {"mm": [], "mm_tp2": ["--cfg.parallel_config.tp_size", "2"],
              "mm_pp2": ["--cfg.parallel_config.llm_pp_layers", "[[1,1]]"]}
    for name, split in splits.items():
        assert mm_convert(["InternVLConverter", "hf_to_mm", "--cfg.mm_dir", str(work / name), "--cfg.hf_config.hf_dir",
                           str(work / "hf")] + split) == 0
    runs = {}
    for name, workers, extra in (("mm", 1, ""), ("mm_tp2", 2, "--tensor-model-parallel-size 2"),
                                 ("mm_pp2", 2, "--pipeline-model-parallel-size 2")):
        save = work / f"save_{name}"
        proc = subprocess.run(["bash", "examples/quickstart/finetune_internvl_quickstart.sh"], cwd=REPO,
                              env=dict(env, NPUS_PER_NODE=str(workers), MM_DIR=str(work / name), SAVE_PATH=str(save),
                                       MASTER_PORT=str(_free_port()), EXTRA_ARGS=extra),
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = records(str(save))
        assert mm_convert(["InternVLConverter", "mm_to_hf", "--cfg.mm_dir", str(save), "--cfg.save_hf_dir",
                           str(work / f"hf_{name}"), "--cfg.hf_config.hf_dir", str(work / "hf")]) == 0
    assert_same_run(runs["mm_tp2"], runs["mm"], range(10, 11))
    assert_same_run(runs["mm_pp2"], runs["mm"], range(10, 11))
    assert sorted(os.listdir(work / "mm_pp2" / "release")) == ["mp_rank_00_000", "mp_rank_00_001"]

    torch.manual_seed(0)
    ids = torch.randint(3, 100, (1, 24))
    logits = [InternVLForConditionalGeneration.from_pretrained(str(work / f"hf_{name}")).eval()(input_ids=ids).logits
              for name in ("mm", "mm_tp2", "mm_pp2")]
    for split in logits[1:]:
        np.testing.assert_allclose(split.detach().numpy(), logits[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(logits[0].detach().numpy(), InternVLForConditionalGeneration.from_pretrained(
        str(work / "hf")).eval()(input_ids=ids).logits.detach().numpy())  # training changed the weights


@pytest.mark.slow  # the suite's budget on 2 cores: a representative set runs by default
def test_unaligned_tensor_parallel_splits_3_vision_heads_over_2_ranks_like_one_worker(tmp_path):
    """--unaligned-linear (MindSpeed-MM's): the tiny InternViT with 3 heads, trained, on 2 TP ranks:
    rank 0 runs heads 0-1, rank 1 head 2 (q/k/v rows and the output projection's columns split
    by whole heads). The same losses and grad norms as one worker, and mm-convert's reader merges
    the uneven shards into the one worker's tensors."""
    from msmm.checkpoint.mm import read_mm

    assets = "--vision-heads 3 --train-vision"
    one = launch("internvl", str(tmp_path / "one"), 1, iters=3, assets=assets)
    tp2 = launch("internvl", str(tmp_path / "tp2"), 2, "--tensor-model-parallel-size 2 --unaligned-linear", iters=3,
                 assets=assets)
    assert_same_run(records(tp2), records(one), range(1, 4))

    attention = "model.vision_tower.encoder.layer.0.attention."
    shards = [load_file(os.path.join(tp2, "iter_0000003", f"mp_rank_0{r}", "model_optim_rng.safetensors"))
              for r in range(2)]
    assert [s[attention + "q_proj.weight"].shape for s in shards] == [(16, 24), (8, 24)]
    assert [s[attention + "projection_layer.weight"].shape for s in shards] == [(24, 16), (24, 8)]
    (merged, parallel, _), (want, _, _) = read_mm(tp2), read_mm(one)
    assert parallel.tp_size == 2 and sorted(merged) == sorted(want)
    for key, t in want.items():
        np.testing.assert_allclose(merged[key].load(), t.load(), rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "qwen2vl"])
def test_sequence_parallel_equals_one_worker_for_llava_and_qwen2vl(family, tmp_path):
    """TP 2 + --sequence-parallel for LLaVA stage 1 (the decoder frozen: the projector's gradients
    pass its sequence-parallel regions) and Qwen2-VL (its decoder class also holds the vision
    merger, whose replicated gradients are whole: only the decoder layers' and final norm's are
    summed over the ranks)."""
    one = records(launch(family, str(tmp_path / "one"), 1, iters=3))
    sp = records(launch(family, str(tmp_path / "sp"), 2, "--tensor-model-parallel-size 2 --sequence-parallel",
                        iters=3))
    assert_same_run(sp, one, range(1, 4))
