"""The ``dtrain`` command: --version and info."""

import re
import subprocess
import sys

import dtrain
from dtrain.launch.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"dtrain {dtrain.__version__}"


def test_info_lists_versions_backends_and_devices(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for label in ("dtrain", "python", "numpy", "cupy", "mpi4py", "ray", "nccl", "cuda devices"):
        assert any(line.startswith(label) for line in out.splitlines()), label
    import numpy

    assert numpy.__version__ in out


def test_info_says_which_device_this_process_would_use(capsys, monkeypatch):
    monkeypatch.setenv("DTRAIN_DEVICE", "cpu")
    assert main(["info"]) == 0
    assert re.search(r"this process's device +cpu$", capsys.readouterr().out, re.M)
    monkeypatch.setenv("DTRAIN_DEVICE", "gpu")
    assert main(["info"]) == 0
    assert "error: DTRAIN_DEVICE='gpu'" in capsys.readouterr().out


def test_missing_backend_names_the_extra(capsys, monkeypatch):
    from dtrain.launch import info

    monkeypatch.setattr(info, "_version", lambda module: None)
    main(["info"])
    assert "pip install 'dtrain[mpi]'" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "info" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "dtrain.launch.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert dtrain.__version__ in result.stdout
