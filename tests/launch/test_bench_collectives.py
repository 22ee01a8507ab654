"""``dtrain bench collectives``: a tiny run prints nccl-tests-style tables (not timed)."""

import argparse
import importlib.util

import pytest

from dtrain.launch.bench_collectives import COLUMNS, OPS, medians, parse_bytes, render
from dtrain.launch.cli import main

HAVE_MPI = importlib.util.find_spec("mpi4py") is not None


def _tables(out: str) -> dict[str, list[list[str]]]:
    """Rows of each backend's table, by its heading."""
    tables, current = {}, None
    for line in out.splitlines():
        if line.startswith("# ") and not line.startswith("#  ") and "ranks" not in line:
            current = line[2:].strip()
            tables[current] = []
        elif line.startswith("#") and "size" in line:
            assert line[1:].split() == list(COLUMNS)
        elif current is not None and line.strip() and not line.startswith("#"):
            tables[current].append(line.split())
    return {name: rows for name, rows in tables.items() if rows}


@pytest.mark.slow
def test_tiny_run_prints_a_table_per_backend(capsys):
    backends = "tcp,inet,shm,mpi" if HAVE_MPI else "tcp,inet,shm"
    argv = ["bench", "collectives", "-n", "2", "--max-bytes", "64K", "--iters", "2"]
    assert main([*argv, "--backend", backends, "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    assert f"#{'size':>11}" in out  # the header row, nccl-tests style
    tables = _tables(out)
    expected = {"tcp (sockets)", "tcp (TCP only)", "tcp + shared memory"}
    if HAVE_MPI:
        expected |= {"mpi backend", "raw mpi4py"}
    assert expected <= set(tables)
    for name, rows in tables.items():
        ops = {row[3] for row in rows}
        assert ops == set(OPS), name
        for row in rows:
            assert len(row) == len(COLUMNS), row
            size, count = int(row[0]), int(row[1])
            assert row[2] == "float32" and size == 4 * count and size <= 64 << 10
            time_us, algbw, busbw = (float(v) for v in row[4:7])
            assert time_us > 0 and algbw >= 0 and busbw >= 0
            assert row[7] == "0", f"{name}: wrong results in {row}"
    # sizes double from 4 B (all_gather/reduce_scatter: a multiple of 2 ranks x 4 B)
    sizes = [int(r[0]) for r in tables["tcp (sockets)"] if r[3] == "all_reduce"]
    assert sizes == [4 << k for k in range(15)]
    assert "8-byte all_reduce latency" in out
    if HAVE_MPI:
        assert "against raw mpi4py" in out


def test_sizes_parse_with_binary_suffixes():
    assert parse_bytes("4") == 4
    assert parse_bytes("64K") == 64 << 10
    assert parse_bytes("256M") == parse_bytes("256MiB") == 256 << 20
    assert parse_bytes("1g") == 1 << 30
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_bytes("lots")


def test_unknown_backend_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "collectives", "--backend", "gloo"])
    assert "choose from" in capsys.readouterr().err


def test_render_computes_ratios_against_raw_mpi():
    row = {"size": 64 << 20, "count": 16 << 20, "type": "float32", "op": "all_reduce"}
    rows = [
        dict(row, backend="raw", time_us=1.0, algbw=1.0, busbw=1.0, wrong=0),
        dict(row, backend="shm", time_us=1.0, algbw=2.5, busbw=2.5, wrong=0),
    ]
    text = render(rows, {"shm": 20.0, "raw": 3.0}, 2, "float32")
    assert "2.50x" in text and "64 MiB" in text
    assert "tcp + shared memory" in text and "raw mpi4py" in text


def test_repeated_launches_report_the_median_time_and_its_bandwidth():
    row = {"size": 1 << 20, "count": 1 << 18, "type": "float32", "op": "all_reduce"}
    rows = [
        dict(row, backend="tcp", time_us=t, algbw=(1 << 20) / t / 1e3, busbw=(1 << 20) / t / 1e3)
        for t in (300.0, 100.0, 200.0)
    ]
    rows[1]["wrong"], rows[0]["wrong"], rows[2]["wrong"] = 2, 0, 0
    rows.append(dict(row, backend="raw", time_us=50.0, algbw=1.0, busbw=1.0, wrong=0))
    merged = medians(rows)
    assert [r["backend"] for r in merged] == ["tcp", "raw"]
    assert merged[0]["time_us"] == 200.0
    assert merged[0]["busbw"] == pytest.approx((1 << 20) / 200.0 / 1e3)
    assert merged[0]["wrong"] == 2  # any launch that got a wrong element shows
    assert merged[1] == rows[3]


def test_repeat_must_be_positive(capsys):
    assert main(["bench", "collectives", "--repeat", "0"]) == 2
    assert "--repeat >= 1" in capsys.readouterr().out
