"""torchrun's flags on ``dtrain launch``: what each maps to, and the ones refused, before
anything starts (no Ray needed). The runs with these flags are in test_launcher.py."""

from __future__ import annotations

import os
import stat

import pytest

from dtrain.launch import launcher, torchrun
from dtrain.launch import plan as launch_plan
from dtrain.launch.launcher import get_parser, main, validate
from dtrain.launch.worker import _absolute_program


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A working directory with a script and an executable shell script in it."""
    (tmp_path / "train.py").write_text("print('hi')\n")
    program = tmp_path / "run.sh"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "plain.sh").write_text("echo hi\n")  # not executable
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torchrun, "cpu_count", lambda: 5)
    monkeypatch.setattr(launch_plan, "_local_gpu_ids", lambda: [])
    return tmp_path


def plan(*argv: str) -> launcher.Plan:
    return validate(get_parser().parse_args(list(argv)))


def test_dtrain_flags_are_unchanged(here):
    p = plan("--nodes", "4", "train.py", "--epochs", "5")
    assert (p.nodes, p.procs, p.gpus_per_proc, p.python, p.address) == (4, 1, 0, True, None)
    assert p.command == ["train.py", "--epochs", "5"]  # as typed: the rank's sys.argv[0]


def test_a_torchrun_command_line_parses(here):
    p = plan(
        "--standalone", "--nnodes", "2:2", "--nproc_per_node", "3", "--master_addr", "localhost",
        "--master_port", "29511", "--node_rank", "0", "--max_restarts", "2", "--log_dir", "logs",
        "train.py", "--lr", "0.1",
    )  # fmt: skip
    assert (p.nodes, p.procs, p.address) == (2, 3, "local")
    assert (p.master_addr, p.master_port) == ("localhost", 29511)
    assert p.command == ["train.py", "--lr", "0.1"]
    args = get_parser().parse_args(["--max_restarts", "2", "--log_dir", "logs", "train.py"])
    assert (args.max_restarts, args.log_dir) == (2, "logs")


@pytest.mark.parametrize(
    ("value", "gpus", "procs", "gpus_per_proc"),
    [
        ("cpu", ["0", "1"], 5, 0),  # this machine's CPUs, even with GPUs
        ("gpu", ["0", "1", "2"], 3, 1),  # one rank per GPU, as --gpus-per-node 3
        ("auto", ["0", "1"], 2, 1),
        ("auto", [], 5, 0),  # no GPU: one rank per CPU, as torchrun
        ("4", ["0"], 4, 0),
    ],
)
def test_nproc_per_node_words(value, gpus, procs, gpus_per_proc, here, monkeypatch):
    monkeypatch.setattr(launch_plan, "_local_gpu_ids", lambda: gpus)
    p = plan("--nproc-per-node", value, "train.py")
    assert (p.procs, p.gpus_per_proc) == (procs, gpus_per_proc)


def test_nnodes_alone_and_with_an_equal_nodes(here):
    assert plan("--nnodes", "3", "train.py").nodes == 3
    assert plan("--nnodes", "2:2", "--nodes", "2", "train.py").nodes == 2


def test_no_python_runs_the_program_as_typed(here):
    p = plan("--no-python", "./run.sh", "a")
    assert (p.python, p.command) == (False, ["./run.sh", "a"])
    assert plan("--no_python", "sh", "-c", "true").command == ["sh", "-c", "true"]  # on PATH


def test_cpu_count_is_this_process_affinity():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    assert torchrun.cpu_count() == (expected or os.cpu_count())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nnodes", "1:2", "train.py"], "--nnodes 1:2: dtrain is not elastic"),
        (["--nnodes", "two", "train.py"], "--nnodes 'two': give a number of nodes"),
        (["--nnodes", "2", "--nodes", "3", "train.py"], "--nodes 3 and --nnodes 2 disagree"),
        (["--nnodes", "0:0", "train.py"], "--nodes 0: a job needs at least one node"),
        (["--node_rank", "1", "train.py"], "starts every node from one command"),
        (["--master-port", "70000", "train.py"], "--master-port 70000: give a port from 1"),
        (["--standalone", "--address", "10.0.0.1:6379", "train.py"], "give one of them"),
        (["--no-python", "-m", "train"], "--no-python and -m/--module"),
        (["--no-python", "./plain.sh"], "not an executable file"),
        (["--no-python", "no_such_program_xyz"], "no such program on PATH"),
        (["--nproc_per_node", "many", "train.py"], "invalid value 'many'"),
        (["--nproc-per-node", "gpu", "train.py"], "--nproc-per-node gpu: this machine shows no"),
        (["--nproc-per-node", "0", "train.py"], "--procs-per-node 0: use 1 or more"),
        (["--nproc-per-node", "gpu", "--gpus-per-node", "1", "train.py"], "not allowed with"),
    ],
)
def test_refused_torchrun_flags_say_what_to_do(argv, message, here, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_master_addr_names():
    assert torchrun.is_loopback(torchrun.resolve_host("localhost"))
    assert torchrun.is_loopback("127.0.0.1") and torchrun.is_loopback("::1")
    assert not torchrun.is_loopback("10.0.0.1")
    assert torchrun.resolve_host("10.0.0.1") == "10.0.0.1"
    with pytest.raises(ValueError, match="does not resolve"):
        torchrun.resolve_host("no-such-host.invalid")


def test_a_node_without_the_working_directory_runs_the_script_by_its_full_path():
    assert _absolute_program(["train.py", "a"], "/w", True) == ["/w/train.py", "a"]
    assert _absolute_program(["/x/t.py"], "/w", True) == ["/x/t.py"]
    assert _absolute_program(["-m", "pkg.train"], "/w", True) == ["-m", "pkg.train"]
    assert _absolute_program(["./run.sh"], "/w", False) == ["/w/./run.sh"]
    assert _absolute_program(["bash", "x.sh"], "/w", False) == ["bash", "x.sh"]  # on PATH
