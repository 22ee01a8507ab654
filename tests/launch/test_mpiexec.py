"""dtrain.launch.mpiexec: Open MPI's mpiexec gets its options, Hydra's none (fake launchers)."""

import os
import stat

import pytest

from dtrain.launch import mpiexec

OPEN_MPI_4 = "mpiexec (OpenRTE) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/"
OPEN_MPI_5 = "mpirun (Open MPI) 5.0.3\n\nReport bugs to https://www.open-mpi.org/community/help/"
HYDRA = "HYDRA build details:\n    Version:                                 5.0.2"


def _fake(tmp_path, version: str):
    path = tmp_path / "mpiexec"
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{version}\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("version", [OPEN_MPI_4, OPEN_MPI_5])
@pytest.mark.parametrize("euid", [0, 1000])
def test_open_mpi_oversubscribes_unbinds_and_allows_root_only_as_root(
    tmp_path, monkeypatch, version, euid
):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    command, env = mpiexec.local_command(_fake(tmp_path, version), 4)
    assert command == [str(tmp_path / "mpiexec"), "--oversubscribe", "--bind-to", "none", "-n", "4"]
    if euid == 0:
        assert env == {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    else:
        assert env == {}


def test_hydra_gets_nothing_added(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert mpiexec.local_command(_fake(tmp_path, HYDRA), 3) == (
        [str(tmp_path / "mpiexec"), "-n", "3"],
        {},
    )


def test_an_mpiexec_that_cannot_run_is_named(tmp_path):
    with pytest.raises(RuntimeError, match="missing-mpiexec --version"):
        mpiexec.local_command(tmp_path / "missing-mpiexec", 2)
