"""The plan's wire format: plan_format.py's tables agree with the compiled library's, ops are written
by field name, and the plan builder has a method for every op."""

import pytest
import torch

from pixelfast.sampling import plan_format
from pixelfast.sampling.plan import PlanBuilder
from pixelfast.sampling.plan_format import OP_CODES, OP_FIELDS, SEGMENT_FIELDS, encode_op


def test_the_library_decodes_the_format_plan_py_writes():
    assert torch.ops.pixelfast.sampler_plan_format() == plan_format.describe()
    plan_format.check_library()


def test_a_library_of_another_format_is_refused(monkeypatch):
    fields = list(OP_FIELDS.items())
    fields[10], fields[11] = fields[11], fields[10]  # src_dy and row_offset swapped
    monkeypatch.setattr(plan_format, "OP_FIELDS", dict(fields))
    monkeypatch.setattr(plan_format, "_library_agrees", False)
    with pytest.raises(RuntimeError, match=r"another plan format(.|\n)*python: +op fields: .* row_offset src_dy"):
        plan_format.check_library()


def test_every_op_has_a_public_builder_method():
    for name in OP_CODES:
        assert callable(getattr(PlanBuilder, name, None)), name


def test_ops_are_written_by_field_name():
    record = encode_op("add", phase=1, dst=2, src=3, groups=1, src_dy=-1, accumulate=True)
    assert record[0] == len(record) == 1 + len(OP_FIELDS)
    header = dict(zip(OP_FIELDS, record[1:]))
    assert header == {
        **OP_FIELDS,
        "code": OP_CODES["add"],
        "phase": 1,
        "dst": 2,
        "src": 3,
        "groups": 1,
        "src_dy": -1,
        "accumulate": 1,
        "num_segments": 0,
    }
    record = encode_op("conv", [(-1, -2, 3, 7), (0, -2, 2, 8)], phase=1, dst=2, src=0, groups=3)
    assert record[0] == len(record) == 1 + len(OP_FIELDS) + 2 * len(SEGMENT_FIELDS)
    assert record[1 + len(OP_FIELDS) :] == [-1, -2, 3, 7, 0, -2, 2, 8]


def test_encode_op_refuses_unknown_and_missing_fields():
    with pytest.raises(TypeError, match="no fields"):
        encode_op("relu", phase=1, dst=1, src=0, groups=1, prev=(0, 1))
    with pytest.raises(TypeError, match=r"needs the fields \['groups'\]"):
        encode_op("relu", phase=1, dst=1, src=0)
