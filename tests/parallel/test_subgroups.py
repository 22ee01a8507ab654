"""``new_subgroups`` and ``new_subgroups_by_enumeration`` (real processes, tcp)."""

from __future__ import annotations

from launcher import run_tcp


def test_subgroups_on_four_ranks():
    values = run_tcp(4, "subgroup_workers:subgroups").values()
    for rank, value in enumerate(values):
        first_half = rank < 2
        assert value["halves"]["sum"] == (3.0 if first_half else 7.0)  # ranks + 1 summed
        assert value["halves"]["members"] == ([[0, 1], None] if first_half else [None, [2, 3]])
        assert value["interleaved"]["sum"] == (4.0 if rank % 2 == 0 else 6.0)
        partial = value["partial"]
        assert partial["sum"] == {0: 3.0, 1: 3.0, 2: 3.0, 3: None}[rank]
        assert partial["none"] is (rank == 3)
        assert partial["members"][0] == ([0, 1] if rank < 2 else None)
        assert value["whole"] == {"sum": 10.0, "members": [[0, 1, 2, 3]]}
        errors = value["errors"]
        assert "rank 1 has appeared in both subgroup [0, 1] and [1, 2]" in errors["overlap"]
        assert "cannot be empty" in errors["empty"]
        assert "not divisible" in errors["indivisible"]
        assert "exceeds" in errors["too_big"]
        assert "positive" in errors["zero"]
        assert "rank 5 of subgroup [2, 5] is not a rank of the world" in errors["outside_world"]
        assert "empty subgroup" in errors["empty_subgroup"]
        assert value["groups_made_by_errors"] == 0  # refused before any group was made
        if "no_cuda_default" in errors:
            assert "pass group_size" in errors["no_cuda_default"]
        assert value["probe"] == 4.0


def test_subgroups_of_a_group_called_by_every_rank():
    """Rank 0 is outside ``g``: it takes part in making the subgroups (none is its own), and
    the group counters stay in step, so the next ``new_group`` works on every rank."""
    values = run_tcp(4, "subgroup_workers:of_a_subgroup").values()
    for rank, value in enumerate(values):
        assert value["members"] == [[r] if r == rank else None for r in (1, 2, 3)]
        assert value["none"] is (rank == 0)
        assert value["sum"] == (None if rank == 0 else rank + 1.0)
        assert value["after"] == 10.0
