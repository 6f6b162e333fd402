"""The plan's wire format: how an op is written into the program the sampling engine decodes.

``csrc/sampler/plan.h`` defines it (its ``PIXELFAST_*`` lists); these tables are the same lists, kept
here so that plans can be built without the compiled library. The library reports its lists
(``sampler_plan_format``) and :func:`check_library` compares them before the first engine call.
"""

from __future__ import annotations

import torch

# Op codes by the name of the PlanBuilder method that writes the op (plan.h: PIXELFAST_OP_CODES).
OP_CODES = {
    "conv": 1,
    "relu": 2,
    "gate": 3,
    "add": 4,
    "class_bias": 5,
    "sample": 6,
    "lstm_cell": 7,
    "condition": 8,
    "elu": 9,
    "mul": 10,
    "concat_elu": 11,
    "cat": 12,
    "sigmoid_gate": 13,
    "mixture": 14,
    "position_bias": 15,
    "class_position_bias": 16,
}
PHASES = {"row": 0, "pixel": 1}  # PIXELFAST_PHASES
CENTRES = {"none": 0, "a": 1, "b": 2}  # PIXELFAST_CENTRES: the centre tap's colour mask
MAX_SEGMENTS = 8  # kMaxSegments

# An op record: its length, these header fields in this order (PIXELFAST_OP_FIELDS), then its
# segments. Each field's value when the op leaves it out; None: every op sets it.
OP_FIELDS = {
    "code": None,
    "phase": None,
    "dst": None,
    "src": None,
    "groups": None,
    "centre": CENTRES["none"],
    "centre_weight": -1,
    "bias": -1,
    "table": -1,
    "accumulate": 0,
    "src_dy": 0,
    "row_offset": 0,
    "reverse": 0,
    "cell": -1,
    "prev_dy": 0,
    "prev_dx": 0,
    "period": 1,
    "row_residue": 0,
    "col_residue": 0,
    "num_segments": None,
}
SEGMENT_FIELDS = ("dy", "dx", "cols", "weight")  # PIXELFAST_SEGMENT_FIELDS


def encode_op(name: str, segments: tuple = (), **fields) -> list[int]:
    """The record of op ``name`` (a key of :data:`OP_CODES`) with header ``fields`` given by name;
    ``segments``: tuples in :data:`SEGMENT_FIELDS` order."""
    given = {"code": OP_CODES[name], "num_segments": len(segments), **fields}
    unknown = sorted(given.keys() - OP_FIELDS.keys())
    if unknown:
        raise TypeError(f"encode_op: {name} has no fields {unknown}")
    header = {**OP_FIELDS, **given}
    missing = [field for field, value in header.items() if value is None]
    if missing:
        raise TypeError(f"encode_op: {name} needs the fields {missing}")
    record = [int(value) for value in header.values()]
    for segment in segments:
        if len(segment) != len(SEGMENT_FIELDS):
            raise TypeError(f"encode_op: a segment is {SEGMENT_FIELDS}, got {segment}")
        record.extend(int(value) for value in segment)
    return [len(record) + 1] + record


def describe() -> str:
    """These tables as the text the library's ``sampler_plan_format`` writes for its own."""

    def values(table: dict) -> str:
        return "".join(f" {name}={value}" for name, value in table.items())

    return (
        f"op fields: {' '.join(OP_FIELDS)}\n"
        f"segment fields: {' '.join(SEGMENT_FIELDS)}\n"
        f"op codes:{values(OP_CODES)}\n"
        f"phases:{values(PHASES)}\n"
        f"centres:{values(CENTRES)}\n"
        f"max segments: {MAX_SEGMENTS}"
    )


_library_agrees = False


def check_library() -> None:
    """Raise RuntimeError when the compiled library decodes another format than these tables write
    (a library built from other sources, or the two lists edited apart); checked once."""
    global _library_agrees
    if _library_agrees:
        return
    library = torch.ops.pixelfast.sampler_plan_format()
    ours = describe()
    if library != ours:
        differ = [f"  library: {a}\n  python:  {b}" for a, b in zip(library.splitlines(), ours.splitlines()) if a != b]
        raise RuntimeError(
            "pixelfast's compiled library decodes another plan format than pixelfast/sampling/plan_format.py "
            "writes (csrc/sampler/plan.h's lists and the tables there must agree; rebuild the library "
            "if it is older than the sources):\n"
            + "\n".join(differ or [f"  library: {library!r}\n  python:  {ours!r}"])
        )
    _library_agrees = True
