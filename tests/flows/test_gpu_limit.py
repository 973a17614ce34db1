"""GPU-aware flow runs: the training stages' tasks carry the GPU tag, and its tag concurrency limit
(flows.serve.ensure_gpu_limit, from params) serialises them; other stages are not limited."""
from __future__ import annotations

import threading
import time

import pytest
from prefect import flow, get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dag import flows_config, stage_order
from flows.pipeline import stage_task_options
from flows.serve import ensure_gpu_limit
from refexp.config import ConfigError, FlowsConfig

ENGINE = "src/refexp/training/engine.py"
# How long a GPU task holds its slot; long enough that two unserialised runs surely overlap.
HOLD_SECONDS = 1.0
# How long tasks that must run side by side wait for each other before their barrier breaks (and fails them).
BARRIER_TIMEOUT_SECONDS = 60


def test_exactly_the_training_stages_carry_the_gpu_tag(repo_root):
    """The repo's params tag every stage that trains (depends on the training engine) and nothing else."""
    from dvc.repo import Repo

    cfg = flows_config(repo_root)
    with Repo(str(repo_root)) as dvc_repo:
        trains = {stage.name: any(dep.def_path == ENGINE for dep in stage.deps) for stage in dvc_repo.index.stages}
    assert set(stage_order(repo_root)) == set(trains)
    assert any(trains.values()) and not all(trains.values())
    for stage, uses_engine in trains.items():
        assert stage_task_options(cfg, stage)["tags"] == (["gpu"] if uses_engine else []), stage
    assert stage_task_options(cfg, "train_scrc@scrc_full")["retries"] == cfg.retry_for("train_scrc@scrc_full").retries


def test_gpu_settings_are_validated():
    cfg = FlowsConfig.model_validate({"gpu_stages": ["extract_*"], "gpu_tag": "cuda0", "gpu_concurrency": 2})
    assert cfg.tags_for("extract_features@referit") == ["cuda0"]
    assert cfg.tags_for("sub/dvc.yaml:extract_features") == ["cuda0"]
    assert cfg.tags_for("train_scrc@scrc_full") == []
    for bad in ({"gpu_concurrency": 0}, {"gpu_tag": "a/b"}, {"gpu_stage": ["train_*"]}):
        with pytest.raises(ValueError):
            FlowsConfig.model_validate(bad)


def test_flows_config_names_a_bad_gpu_key(tmp_path):
    (tmp_path / "params.yaml").write_text("flows: {gpu_concurrency: 0}\n")
    with pytest.raises(ConfigError, match="gpu_concurrency"):
        flows_config(tmp_path)


def _run_concurrently(cfg: FlowsConfig, stages: list[str], meet: list[str]) -> dict[str, tuple[float, float]]:
    """Submit one task per stage at once (threads), each with the pipeline's options for that stage, and
    return each task's (start, end) as recorded inside it. The tasks in `meet` wait at a barrier that
    only all of them together pass (else it breaks and fails them); the others hold on for HOLD_SECONDS."""
    spans: dict[str, tuple[float, float]] = {}
    barrier = threading.Barrier(len(meet), timeout=BARRIER_TIMEOUT_SECONDS)

    @task(cache_policy=NO_CACHE, persist_result=False)
    def timed(stage: str) -> str:
        start = time.monotonic()
        if stage in meet:
            barrier.wait()
        else:
            time.sleep(HOLD_SECONDS)
        spans[stage] = (start, time.monotonic())
        return stage

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=len(stages)))
    def side_by_side() -> list[str]:
        futures = [timed.with_options(**stage_task_options(cfg, stage)).submit(stage) for stage in stages]
        return [future.result() for future in futures]

    assert side_by_side() == stages
    return spans


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.slow  # a Prefect test server; the waiting tasks poll for their slot
def test_limit_serialises_gpu_tasks_and_leaves_cpu_tasks_alone(harness):
    cfg = FlowsConfig(gpu_concurrency=1)
    assert ensure_gpu_limit(cfg) == 1
    gpu = ["train_scrc@scrc_full", "train_attention_regression@attention_full", "pretrain_backbone"]
    cpu = ["prepare_referit@referit", "evaluate_scrc@scrc_full"]
    assert all(stage_task_options(cfg, s)["tags"] == ["gpu"] for s in gpu)
    assert all(stage_task_options(cfg, s)["tags"] == [] for s in cpu)

    spans = _run_concurrently(cfg, gpu + cpu, meet=cpu)

    assert set(spans) == set(gpu + cpu)
    for i, a in enumerate(gpu):
        for b in gpu[i + 1:]:
            assert not _overlap(spans[a], spans[b]), (a, spans[a], b, spans[b])
    # The CPU tasks passed their barrier, so they ran at the same time; each GPU task had to wait its turn.
    assert _overlap(spans[cpu[0]], spans[cpu[1]])
    first_start = min(spans[s][0] for s in gpu)
    last_end = max(spans[s][1] for s in gpu)
    assert last_end - first_start >= len(gpu) * HOLD_SECONDS


@pytest.mark.slow
def test_limit_comes_from_params_and_is_updated_in_place(harness):
    """A second ensure_gpu_limit (make ui with other params) updates the limit; under gpu_concurrency 2
    two training tasks hold a slot each at the same time (they meet at a barrier only both together pass)."""
    assert ensure_gpu_limit(FlowsConfig(gpu_concurrency=1)) == 1
    cfg = FlowsConfig(gpu_concurrency=2)
    try:
        assert ensure_gpu_limit(cfg) == 2
        with get_client(sync_client=True) as client:
            assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 2
        both = ["train_scrc@scrc_full", "train_scrc@scrc_no_context"]

        spans = _run_concurrently(cfg, both, meet=both)

        assert _overlap(spans[both[0]], spans[both[1]])
    finally:
        ensure_gpu_limit(FlowsConfig())  # leave the package's test server with the default limit
