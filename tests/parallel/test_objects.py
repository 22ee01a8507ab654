"""Object collectives carry JSON values unchanged, and refuse values JSON would change."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain.parallel as dist


@pytest.fixture
def single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    dist.init_process_group("tcp")
    yield
    dist.destroy_process_group()


REFUSED = {  # value: what the error must name (the path and the offending value)
    "int key": ({1: "a", 2: (3, 4)}, "object_list[0] has the int key 1"),
    "nested tuple": ({"a": [1, (3, 4)]}, "object_list[0]['a'][1] is a tuple"),
    "set": ({"s": {1, 2}}, "object_list[0]['s'] is a set"),
    "numpy scalar": ([np.float32(1.5)], "object_list[0][0] is a float32"),
    "bool key": ({True: 1}, "bool key True"),
    "bytes": (b"raw", "object_list[0] is a bytes"),
}


@pytest.mark.parametrize("value, named", REFUSED.values(), ids=REFUSED.keys())
def test_values_json_would_change_are_refused_naming_the_path(single_process, value, named):
    for call in (
        lambda: dist.broadcast_object_list([value], src=0),
        lambda: dist.all_gather_object([None], [value]),
    ):
        with pytest.raises(TypeError) as raised:
            call()
        message = str(raised.value).replace("obj[0]", "object_list[0]")
        assert named in message and "convert" in message, message
    # The refusal is local to the argument check: the group still works.
    objects: list = [None]
    dist.all_gather_object(objects, {"ok": True})
    assert objects == [{"ok": True}]


def test_json_values_come_back_unchanged(single_process):
    sent = [{"a": [1, 2.5, None, True, "ü"], "b": {"c": [[], {}]}}, -(2**70), 1e308, "x"]
    objects = list(sent)
    dist.broadcast_object_list(objects, src=0)
    assert objects == sent and type(objects[1]) is int
    gathered: list = [None]
    dist.all_gather_object(gathered, [float("nan"), float("inf")])
    assert math.isnan(gathered[0][0]) and gathered[0][1] == math.inf
