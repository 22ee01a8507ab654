"""``dtrain.train``: Ray Train's API on ``dtrain launch``.

The first tests need no Ray: the argument checks (nothing starts), and one worker's session
driven in this process (report, checkpoints, pruning, get_checkpoint, Result). The jobs then
share one embedded 2-node cluster (module fixture) and join it with ``address=``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import trainer_functions

import dtrain as dt
import dtrain.train as train
from dtrain.launch import trainer_session
from dtrain.launch import trainer_storage as storage
from dtrain.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from dtrain.train.torch import TorchConfig, TorchTrainer

GUARD_S = 240  # hard limit of one fit(): dumps every stack and exits pytest
REPO = Path(__file__).resolve().parents[2]


# --- the checks made before anything starts --------------------------------------------------


def test_a_lambda_is_refused_naming_the_fix():
    with pytest.raises(TypeError, match=r"<lambda> is a lambda.*define it with `def`"):
        TorchTrainer(lambda config: None)


def test_a_closure_is_refused_naming_the_fix():
    def inner(config):
        return config

    with pytest.raises(TypeError, match=r"nested function \(closure\).*top level of a module"):
        TorchTrainer(inner)


def test_a_callable_object_is_refused():
    with pytest.raises(TypeError, match=r"not a function: workers import the function by name"):
        TorchTrainer(len)


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"lr": np.float32(0.1)}, r"train_loop_config\['lr'\] is float32"),
        ({"layers": (1, 2)}, r"train_loop_config\['layers'\] is tuple.*list\(\.\.\.\)"),
        ({"opt": {"betas": [0.9, {1, 2}]}}, r"train_loop_config\['opt'\]\['betas'\]\[1\] is set"),
        ({3: "x"}, r"has the key 3 \(int\): keys must be str"),
    ],
)
def test_a_config_that_is_not_json_is_refused_naming_the_key(config, where):
    with pytest.raises(TypeError, match=where):
        TorchTrainer(trainer_functions.linear_fit, train_loop_config=config)


def test_a_function_workers_cannot_import_is_refused():
    def made_up(config):
        return config

    made_up.__qualname__ = "made_up"
    made_up.__module__ = "no_such_module_xyz"
    with pytest.raises(ValueError, match=r"no_such_module_xyz.made_up is not importable"):
        TorchTrainer(made_up)
    made_up.__module__ = trainer_functions.__name__  # a module without that name in it
    with pytest.raises(ValueError, match=r"trainer_functions.made_up is not importable"):
        TorchTrainer(made_up)


def test_a_script_without_the_main_guard_is_refused(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            from dtrain.train.torch import TorchTrainer

            def train_func(config):
                pass

            TorchTrainer(train_func).fit()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 1
    assert 'has no `if __name__ == "__main__":` guard' in done.stderr
    assert "every worker imports this script" in done.stderr
    assert "starting an embedded Ray cluster" not in done.stderr  # refused before Ray


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScalingConfig(num_workers=0), "num_workers=0"),
        (lambda: ScalingConfig(num_workers=3, workers_per_node=2), "multiple of workers_per"),
        (lambda: ScalingConfig(resources_per_worker={"GPU": 2}), "exactly one GPU"),
        (lambda: ScalingConfig(resources_per_worker={"TPU": 1}), "['TPU'] not supported"),
        (lambda: FailureConfig(max_failures=-1), "retrying forever"),
        (lambda: CheckpointConfig(num_to_keep=0), "num_to_keep=0"),
        (lambda: RunConfig(storage_path="s3://bucket/x"), "no cloud storage"),
        (lambda: RunConfig(name=".."), "name='..'.*single path component"),
        (lambda: RunConfig(name="."), "name='.'.*single path component"),
        (lambda: RunConfig(name="a/b"), "name='a/b'.*single path component"),
        (lambda: RunConfig(name=Path("exp")), "give a str"),
        (lambda: TorchConfig(backend="mpi"), "backend='mpi'"),
    ],
)
def test_bad_configs_name_the_value(make, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[")):
        make()


def test_a_run_name_stays_inside_the_storage_path(tmp_path):
    store = tmp_path / "store"
    assert RunConfig(name="..exp", storage_path=str(store)).run_dir() == str(store / "..exp")
    for name in ("..", "."):
        with pytest.raises(ValueError, match="single path component"):
            RunConfig(name=name, storage_path=str(store))
    with pytest.raises(TypeError, match=r"RunConfig\(name=PosixPath|RunConfig\(name=Windows"):
        RunConfig(name=Path("exp"), storage_path=str(store))


def test_the_main_guard_check_accepts_any_guard_and_refuses_none(tmp_path):
    from dtrain.launch.trainer_refs import check_main_guard

    guarded = [
        'if __name__ == "__main__":\n    fit()\n',
        "if __name__ == '__main__':\n    fit()\n",
        'if __name__ in ("__main__",):\n    fit()\n',
        'if "__main__" == __name__:\n    fit()\n',
        'match __name__:\n    case "__main__":\n        fit()\n',
        'def main():\n    fit()\n\nif __name__ == "__main__" and True:\n    main()\n',
        'def is_main():\n    return __name__ == "__main__"\n\nif is_main():\n    fit()\n',
    ]
    for i, text in enumerate(guarded):
        script = tmp_path / f"guarded_{i}.py"
        script.write_text(text)
        check_main_guard(str(script))  # no error
    unguarded = ['DOC = """if __name__ == "__main__":"""\nfit()\n', "print(__name__)\nfit()\n"]
    for i, text in enumerate(unguarded):
        script = tmp_path / f"unguarded_{i}.py"
        script.write_text(text)
        with pytest.raises(ValueError, match=r'has no `if __name__ == "__main__":` guard'):
            check_main_guard(str(script))


def test_fit_leaves_the_environment_as_it_found_it(tmp_path, monkeypatch):
    """ray.init sets driver variables (PYTHONBREAKPOINT) that ray.shutdown leaves behind."""
    import dtrain.launch.launcher as launcher

    monkeypatch.setenv("DTRAIN_TEST_KEPT", "1")
    monkeypatch.setenv("DTRAIN_TEST_CHANGED", "before")

    def fake_main(argv):
        os.environ["PYTHONBREAKPOINT"] = "ray.util.rpdb._driver_set_trace"
        os.environ["DTRAIN_TEST_CHANGED"] = "after"
        del os.environ["DTRAIN_TEST_KEPT"]
        return 0

    monkeypatch.setattr(launcher, "main", fake_main)
    before = dict(os.environ)
    trainer = TorchTrainer(
        trainer_functions.no_arguments,
        run_config=RunConfig(name="env", storage_path=str(tmp_path)),
    )
    result = trainer.fit()
    assert dict(os.environ) == before
    assert result.metrics is None and result.checkpoint is None
    assert not (tmp_path / "env" / storage.STAGING).exists()  # staging cleared at the end


def test_the_launchers_own_error_is_not_called_a_training_failure(tmp_path, monkeypatch):
    import dtrain.launch.launcher as launcher

    def fake_main(argv):
        print("dtrain launch: error: cannot connect to the Ray cluster at x:1", file=sys.stderr)
        return 1

    monkeypatch.setattr(launcher, "main", fake_main)
    trainer = TorchTrainer(
        trainer_functions.no_arguments,
        run_config=RunConfig(name="noconn", storage_path=str(tmp_path)),
    )
    with pytest.raises(train.TrainingFailedError, match="could not run the job") as caught:
        trainer.fit()
    assert caught.value.rank is None and "cannot connect" in str(caught.value)


def test_a_training_failed_error_survives_pickling():
    import pickle

    error = train.TrainingFailedError("training failed: rank 1", 1, 1, "summary")
    back = pickle.loads(pickle.dumps(error))
    assert (str(back), back.rank, back.exit_code, back.summary) == (
        "training failed: rank 1", 1, 1, "summary",
    )  # fmt: skip


def test_the_stderr_tee_keeps_each_threads_lines_apart():
    import io
    import threading

    from dtrain.launch.trainer import _Tee

    tee = _Tee(io.StringIO())
    other_wrote = threading.Event()

    def rank_line():
        tee.write("[rank 0] hello\n")
        other_wrote.set()

    tee.write("dtrain launch: rank 1 failed first")  # print() writes the newline separately
    thread = threading.Thread(target=rank_line)
    thread.start()
    other_wrote.wait()
    thread.join()
    tee.write("\n")
    assert tee.lines == ["dtrain launch: rank 1 failed first"]


def test_the_scaling_config_maps_onto_launcher_flags():
    from dtrain.launch.trainer_config import launcher_flags

    flags = launcher_flags(
        ScalingConfig(num_workers=4, workers_per_node=2, resources_per_worker={"CPU": 2}),
        RunConfig(failure_config=FailureConfig(max_failures=3)),
        TorchConfig(backend="gloo"),
        "local",
    )
    assert " ".join(flags) == (
        "--nodes 2 --procs-per-node 2 --cpus-per-proc 2 --max-restarts 3 --backend tcp "
        "--address local"
    )
    gpu = launcher_flags(
        ScalingConfig(num_workers=2, use_gpu=True), RunConfig(), TorchConfig(), None
    )
    assert gpu[:4] == ["--nodes", "2", "--gpus-per-node", "1"] and "auto" in gpu
    packed = ScalingConfig(num_workers=3, placement_strategy="STRICT_PACK")
    assert launcher_flags(packed, RunConfig(), TorchConfig(), None)[:4] == [
        "--nodes", "1", "--procs-per-node", "3",
    ]  # fmt: skip


def test_the_api_works_only_inside_a_training_function():
    with pytest.raises(RuntimeError, match=r"report\(\) works only inside the training function"):
        train.report({"loss": 1.0})
    with pytest.raises(RuntimeError, match=r"get_checkpoint\(\) works only inside"):
        train.get_checkpoint()


# --- one worker's session, in this process ----------------------------------------------------


@pytest.fixture
def session(tmp_path):
    """A single worker's session on a fresh run directory (no process group: world size 1)."""

    def start(**keep):
        spec = {
            "name": "exp",
            "run_dir": str(tmp_path / "exp"),
            "run_id": "fit1",
            "checkpoint_config": {"checkpoint_score_order": "max", **keep},
        }
        os.makedirs(spec["run_dir"], exist_ok=True)
        return trainer_session.begin(spec, env={"RANK": "0", "WORLD_SIZE": "1"})

    yield start
    trainer_session.end()


def _checkpoint(tmp_path: Path, epoch: int) -> train.Checkpoint:
    folder = tmp_path / f"local_{epoch}"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.txt").write_text(f"epoch {epoch}")
    return train.Checkpoint.from_directory(folder)


def test_reports_persist_checkpoints_in_order_and_keep_the_last_n(session, tmp_path):
    session(num_to_keep=2)
    assert train.get_checkpoint() is None  # a fresh run
    for epoch in range(4):
        train.report({"epoch": epoch, "loss": 1.0 / (epoch + 1)}, _checkpoint(tmp_path, epoch))
        if epoch == 1:
            train.report({"epoch": epoch, "note": "no checkpoint"})
    run = tmp_path / "exp"
    assert sorted(p.name for p in run.glob("checkpoint_*")) == [
        "checkpoint_000002", "checkpoint_000003",
    ]  # fmt: skip
    latest = train.get_checkpoint()
    assert latest.path == str(run / "checkpoint_000003")
    with latest.as_directory() as folder:
        assert (Path(folder) / "sub" / "weights.txt").read_text() == "epoch 3"
    copied = latest.to_directory(str(tmp_path / "copy"))
    assert (Path(copied) / "sub" / "weights.txt").read_text() == "epoch 3"
    assert not (run / storage.STAGING).exists() or not list((run / storage.STAGING).iterdir())
    result = train.Result.from_path(run, "fit1")
    assert result.metrics == {"epoch": 3, "loss": 0.25}
    assert result.checkpoint == latest and result.path == str(run)
    assert [m["epoch"] for _, m in result.best_checkpoints] == [2, 3]
    assert [line["metrics"]["epoch"] for line in result.reports] == [0, 1, 1, 2, 3]
    assert [line["checkpoint"] for line in result.reports][2] is None


def test_a_score_attribute_keeps_the_best_and_always_the_latest(session, tmp_path):
    session(num_to_keep=2, checkpoint_score_attribute="acc", checkpoint_score_order="max")
    for epoch, acc in enumerate([0.5, 0.9, 0.7, 0.8, 0.1]):
        train.report({"acc": acc}, _checkpoint(tmp_path, epoch))
    kept = sorted(p.name for p in (tmp_path / "exp").glob("checkpoint_*"))
    assert kept == ["checkpoint_000001", "checkpoint_000003", "checkpoint_000004"]
    state = json.loads((tmp_path / "exp" / storage.STATE).read_text())
    assert state["latest"] == "checkpoint_000004" and state["next_index"] == 5


def test_a_nan_score_ranks_below_every_number_as_in_ray(session, tmp_path):
    """Ray ranks NaN below -inf; a NaN used to scramble the sort and delete the best."""
    session(num_to_keep=2, checkpoint_score_attribute="acc", checkpoint_score_order="max")
    kept_after = []
    for epoch, acc in enumerate([0.9, float("nan"), 0.5, 0.7, 0.6]):
        train.report({"acc": acc}, _checkpoint(tmp_path, epoch))
        state = storage.read_state(str(tmp_path / "exp"))
        kept_after.append([entry["dir"][-1] for entry in state["checkpoints"]])
    assert kept_after == [["0"], ["0", "1"], ["0", "2"], ["0", "3"], ["0", "3", "4"]]
    assert sorted(p.name[-1] for p in (tmp_path / "exp").glob("checkpoint_*")) == ["0", "3", "4"]
    keep = {"num_to_keep": 2, "checkpoint_score_attribute": "loss", "checkpoint_score_order": "min"}
    entries = [
        {"dir": str(i), "metrics": {"loss": loss}}
        for i, loss in enumerate([0.1, float("nan"), 0.5, None, 0.3])
    ]
    assert [e["dir"] for e in storage._kept(entries, keep)] == ["0", "4"]


def test_a_nested_score_attribute_and_a_non_numeric_score(session, tmp_path):
    session(num_to_keep=1, checkpoint_score_attribute="val/acc", checkpoint_score_order="max")
    for epoch, acc in enumerate([0.8, 0.2]):
        train.report({"val": {"acc": acc}}, _checkpoint(tmp_path, epoch))
    kept = sorted(p.name for p in (tmp_path / "exp").glob("checkpoint_*"))
    assert kept == ["checkpoint_000000", "checkpoint_000001"]  # the best, and the latest
    with pytest.raises(ValueError, match=r"'val/acc'.*'high' \(str\) is not a number"):
        train.report({"val": {"acc": "high"}}, _checkpoint(tmp_path, 2))
    assert storage.read_state(str(tmp_path / "exp"))["next_index"] == 2  # nothing renamed


def test_non_finite_metrics_are_stored_as_strict_json(session, tmp_path):
    session()
    train.report({"loss": float("nan"), "best": float("inf"), "x": [float("-inf"), 1.5]},
                 _checkpoint(tmp_path, 0))  # fmt: skip
    run = tmp_path / "exp"
    strict = {"loss": None, "best": None, "x": [None, 1.5]}

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    for text in [
        (run / storage.STATE).read_text(),
        *(run / storage.PROGRESS).read_text().splitlines(),
    ]:
        json.loads(text, parse_constant=refuse)
    assert storage.read_state(str(run))["checkpoints"][0]["metrics"] == strict
    assert train.Result.from_path(run).metrics == strict


def test_get_best_checkpoint_by_metric_and_mode(session, tmp_path):
    session()
    for epoch, (acc, loss) in enumerate([(0.5, 0.3), (0.9, float("nan")), (0.7, 0.1)]):
        train.report({"val": {"acc": acc}, "loss": loss}, _checkpoint(tmp_path, epoch))
    result = train.Result.from_path(tmp_path / "exp")
    assert result.get_best_checkpoint("val/acc", "max").path.endswith("checkpoint_000001")
    assert result.get_best_checkpoint("val/acc", "min").path.endswith("checkpoint_000000")
    assert result.get_best_checkpoint("loss", "max").path.endswith("checkpoint_000000")
    with pytest.raises(ValueError, match="mode='best'"):
        result.get_best_checkpoint("loss", "best")
    with pytest.raises(RuntimeError, match=r"metric='acc'.*no kept checkpoint has a number"):
        result.get_best_checkpoint("acc", "max")


def test_merged_checkpoints_take_the_lowest_ranks_file_whatever_the_order(tmp_path, monkeypatch):
    """Two ranks (threads, a threading barrier) report same-named files; rank 1 copies last.
    Copying into one folder used to let the last writer win, or mix both when concurrent."""
    import threading

    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    spec = {"name": "exp", "run_dir": str(run_dir), "run_id": "fit1", "checkpoint_config": {}}
    barrier = threading.Barrier(2)
    rank0_copied = threading.Event()

    def fake_barrier():
        if threading.current_thread().name == "rank0":
            rank0_copied.set()
        barrier.wait()

    monkeypatch.setattr(trainer_session, "_barrier", fake_barrier)
    folders = []
    for rank, size in ((0, 3000), (1, 5000)):
        folder = tmp_path / f"rank{rank}"
        (folder / "sub").mkdir(parents=True)
        (folder / "shard.bin").write_bytes(bytes([65 + rank]) * size)
        (folder / "sub" / f"only_{rank}.txt").write_text(str(rank))
        train.Checkpoint(folder).set_metadata({"rank": rank})
        folders.append(folder)
    sessions = [
        trainer_session.Session(spec, {"RANK": str(r), "WORLD_SIZE": "2"}) for r in range(2)
    ]
    errors = []

    def run(rank):
        try:
            if rank == 1:
                rank0_copied.wait()
            sessions[rank].report({"rank": rank}, train.Checkpoint(folders[rank]))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(r,), name=f"rank{r}") for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    merged = run_dir / "checkpoint_000000"
    assert (merged / "shard.bin").read_bytes() == b"A" * 3000
    assert train.Checkpoint(merged).get_metadata() == {"rank": 0}
    assert sorted(p.name for p in (merged / "sub").iterdir()) == ["only_0.txt", "only_1.txt"]
    assert not list((run_dir / storage.STAGING).iterdir())


def test_pruning_also_removes_what_a_crash_left(session, tmp_path):
    session(num_to_keep=1)
    train.report({"step": 0}, _checkpoint(tmp_path, 0))
    run = tmp_path / "exp"
    orphan = run / "checkpoint_000000"  # as if a crash hit while it was being pruned
    train.report({"step": 1}, _checkpoint(tmp_path, 1))
    orphan.mkdir()
    (orphan / "half.bin").write_text("x")
    stale = run / storage.STAGING / "oldfit-attempt0-report3" / "rank_0"
    stale.mkdir(parents=True)
    with open(run / storage.PROGRESS, "a") as handle:
        handle.write('{"run_id": "fit1", "cut sh')  # a line cut short by a crash
    session(num_to_keep=1)  # the next attempt (or fit) on this run
    train.report({"step": 2}, _checkpoint(tmp_path, 2))
    assert sorted(p.name for p in run.glob("checkpoint_*")) == ["checkpoint_000002"]
    assert not stale.parent.exists()
    steps = [line["metrics"]["step"] for line in storage.read_progress(str(run))]
    assert steps == [0, 1, 2]


def test_enable_reproducibility_seeds_and_asks_for_determinism(monkeypatch):
    from dtrain.train.torch import enable_reproducibility

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        enable_reproducibility(7)
        first = (dt.rand(3).numpy(), np.random.rand(), __import__("random").random())
        assert dt.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        enable_reproducibility(7)
        second = (dt.rand(3).numpy(), np.random.rand(), __import__("random").random())
    finally:
        dt.use_deterministic_algorithms(False)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1:] == second[1:]


def test_a_new_session_on_the_same_run_resumes_and_numbers_on(session, tmp_path):
    session()
    train.report({"step": 0}, _checkpoint(tmp_path, 0))
    session()  # a restart, or fit() again with the same name: Ray Train 2 resumes
    assert train.get_checkpoint().path.endswith("checkpoint_000000")
    train.report({"step": 1}, _checkpoint(tmp_path, 1))
    assert train.get_checkpoint().path.endswith("checkpoint_000001")


def test_metrics_and_checkpoints_must_be_json_and_checkpoints(session, tmp_path):
    session()
    with pytest.raises(TypeError, match=r"report\(metrics\)\['loss'\] is float32.*\.item\(\)"):
        train.report({"loss": np.float32(1.0)})
    with pytest.raises(TypeError, match=r"pass a dtrain.train.Checkpoint"):
        train.report({"loss": 1.0}, checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match=r"not a directory"):
        train.Checkpoint.from_directory(tmp_path / "missing")


def test_prepare_helpers_with_one_worker_move_to_the_device_and_keep_the_loader(session):
    from dtrain.train.torch import get_device, prepare_data_loader, prepare_model
    from dtrain.utils.data import DataLoader, TensorDataset

    session()
    model = dt.nn.Linear(2, 1)
    assert prepare_model(model) is model  # one worker: no DDP wrapper
    data = TensorDataset(dt.arange(6.0).reshape(3, 2), dt.arange(3))
    loader = prepare_data_loader(DataLoader(data, batch_size=2))
    assert len(loader) == 2 and loader.batch_size == 2
    batches = list(loader)
    assert [len(y) for _, y in batches] == [2, 1]
    np.testing.assert_array_equal(batches[1][0].numpy(), [[4.0, 5.0]])
    assert batches[0][0].device == get_device()


# --- jobs on a shared embedded cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    from dtrain.launch.ray_cluster import EmbeddedCluster

    faulthandler.dump_traceback_later(GUARD_S, exit=True)
    try:
        embedded = EmbeddedCluster(2, cpus_per_node=2)
        embedded.start()
    finally:
        faulthandler.cancel_dump_traceback_later()
    yield embedded.address
    embedded.stop()


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RAY_ADDRESS", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def fit(trainer: TorchTrainer) -> train.Result:
    faulthandler.dump_traceback_later(GUARD_S, exit=True)
    try:
        return trainer.fit()
    finally:
        faulthandler.cancel_dump_traceback_later()


def _linear(cluster, tmp_path, name, **config):
    return TorchTrainer(
        trainer_functions.linear_fit,
        train_loop_config={"epochs": 4, "lr": 0.05, **config},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(
            name=name,
            storage_path=str(tmp_path),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=1),
        ),
        address=cluster,
    )


def _weights(result: train.Result) -> dict:
    with result.checkpoint.as_directory() as folder:
        state = dt.load(os.path.join(folder, "model.safetensors"))
    return {name: value.numpy() for name, value in state.items()}


def test_two_workers_report_and_a_failed_attempt_resumes_where_it_left_off(
    cluster, clean_env, tmp_path, capfd
):
    whole = fit(_linear(cluster, tmp_path, "whole"))
    run = tmp_path / "whole"
    assert whole.path == str(run) and whole.error is None
    assert whole.metrics["epoch"] == 3 and whole.metrics["rank"] == 0  # rank 0's metrics
    assert whole.metrics["world_size"] == 2 and whole.metrics["local_world_size"] == 1
    assert whole.metrics["node_rank"] == 0 and whole.metrics["name"] == "whole"
    assert whole.metrics["distributed_sampler"] and whole.metrics["batches"] == 4  # 32 of 64
    assert whole.metrics["resumed_from"] is None and whole.metrics["restart"] == 0
    assert sorted(p.name for p in run.glob("checkpoint_*")) == [
        "checkpoint_000002", "checkpoint_000003",
    ]  # fmt: skip
    with whole.checkpoint.as_directory() as folder:  # every rank's files, merged
        assert sorted(os.listdir(folder)) == [
            ".metadata.json", "model.safetensors", "rank_0.json", "rank_1.json",
        ]  # fmt: skip
    assert whole.checkpoint.get_metadata() == {"epoch": 3}
    assert (run / "logs" / "rank_1.log").exists()
    capfd.readouterr()

    resumed = fit(_linear(cluster, tmp_path, "resumed", fail_at=2))
    err = capfd.readouterr().err
    assert "rank 1 failed first" in err and "injected failure at epoch 2" in err
    assert "restart 1 of 1" in err
    assert resumed.metrics["restart"] == 1
    assert resumed.metrics["resumed_from"] == "checkpoint_000001"
    assert resumed.metrics["loss"] == whole.metrics["loss"]
    assert os.path.basename(resumed.checkpoint.path) == "checkpoint_000003"
    for name, value in _weights(whole).items():
        np.testing.assert_array_equal(_weights(resumed)[name], value)


def test_a_failed_run_raises_naming_the_rank(cluster, clean_env, tmp_path):
    trainer = TorchTrainer(
        trainer_functions.fail_on_rank,
        train_loop_config={"rank": 1},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="fails", storage_path=str(tmp_path)),
        address=cluster,
    )
    with pytest.raises(train.TrainingFailedError) as caught:
        fit(trainer)
    error = caught.value
    assert error.rank == 1 and error.exit_code == 1
    assert "rank 1 failed first" in str(error) and "ValueError: boom from rank 1" in str(error)
    assert "stopped by the launcher: rank(s) 0" in error.summary
    assert error.result.error is error and error.result.checkpoint is None


def test_a_function_without_config_and_workers_on_one_node(cluster, clean_env, tmp_path):
    result = fit(
        TorchTrainer(
            trainer_functions.no_arguments,
            scaling_config=ScalingConfig(num_workers=2, workers_per_node=2),
            run_config=RunConfig(name="packed", storage_path=str(tmp_path)),
            address=cluster,
        )
    )
    assert result.metrics == {"ok": True} and result.checkpoint is None


def test_what_the_cluster_cannot_hold_is_a_value_error(cluster, clean_env, tmp_path):
    trainer = TorchTrainer(
        trainer_functions.no_arguments,
        scaling_config=ScalingConfig(num_workers=1, use_gpu=True),
        run_config=RunConfig(name="gpu", storage_path=str(tmp_path)),
        address=cluster,
    )
    with pytest.raises(
        ValueError, match=r"(?s)no node of the cluster can hold one.*: 2 CPU, 0 GPU"
    ):
        fit(trainer)
