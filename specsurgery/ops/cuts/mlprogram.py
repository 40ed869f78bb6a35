"""``suggest_cuts`` for ML Programs: the values where a cut splits the program in two.

Ops run in the listed order, so right after each op the values computed so
far that a later op (or the block's outputs) still reads are a cut that
separates the program there.  A single value qualifies when it is the only
such value and the op just computed it; with ``max_blobs`` > 1 the cuts over
up to that many values (a skip connection crossing the cut) follow, in op
order, as for neural networks.
"""

from __future__ import annotations

from ...errors import SpecSurgeryError
from ...mil import blobs as B
from ...mil import program as P
from ..split.mlprogram import as_package, closure, is_const, reads, single_function
from .cut import Cut

__all__ = ["suggest_cuts", "cut_frontier"]


def _shape(value_type):
    shape = P.tensor_shape(value_type)
    return None if shape is None else [d if d is not None else -1 for d in shape]


def suggest_cuts(model, max_blobs: int = 1) -> list[Cut]:
    """Cuts of the (single-function) program of ``model``, in op order: the
    single values first, then (``max_blobs`` > 1) the cuts over 2..max_blobs values."""
    src = as_package(model)
    spec = src.spec
    _, fn = single_function(spec, "suggest-cuts")
    block = P.main_block(fn)
    ops = list(block.operations)
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for n in reads([op]):
            last_use[n] = i
    for n in block.outputs:
        last_use[n] = len(ops)
    sizes = {}
    for _, op, _, value in P.blob_refs(spec):
        try:
            sizes[id(op)] = sizes.get(id(op), 0) + B.read_record(
                src.weight_file(value.blobFileValue.fileName), value.blobFileValue.offset).size
        except B.BlobError:
            pass
    total = sum(sizes.values())
    fn_inputs = {x.name for x in fn.inputs}
    producer_idx = {o.name: k for k, x in enumerate(ops) for o in x.outputs}
    types = {o.name: o.type for op in ops for o in op.outputs}
    outputs = set(block.outputs)
    live: set = {n for n in fn_inputs if n in last_use}
    real = [i for i, op in enumerate(ops) if not is_const(op)]
    singles, groups, seen = [], [], set()
    consts = {o.name for op in ops if is_const(op) for o in op.outputs}

    def weight(values) -> int:
        return sum(sizes.get(id(ops[k]), 0) for k in closure(ops, producer_idx, values, fn_inputs))

    for pos, i in enumerate(real):
        op = ops[i]
        for n in [n for n in live if last_use.get(n, -1) <= i]:
            live.discard(n)
        for o in op.outputs:
            if last_use.get(o.name, -1) > i:
                live.add(o.name)
        if pos == len(real) - 1:
            break
        live_real = {n for n in live if n not in consts}
        if len(live_real) == 1:
            (v,) = live_real
            if v in {o.name for o in op.outputs} and v not in outputs:
                singles.append(Cut(v, _shape(types[v]), pos + 1, len(real) - pos - 1,
                                   weight([o.name for o in op.outputs]), total))
        group = sorted(live_real - fn_inputs, key=producer_idx.get)
        if 2 <= len(group) <= max_blobs and not outputs & set(group) and tuple(group) not in seen:
            seen.add(tuple(group))
            groups.append(Cut(",".join(group), None, pos + 1, len(real) - pos - 1, weight(group), total,
                              group, [_shape(types[v]) for v in group]))
    return singles + (groups if max_blobs > 1 else [])


def cut_frontier(model, fraction: float) -> list[str]:
    """The computed values live right after the op at ``fraction`` (0..1) of the
    program's non-const ops: a cut (possibly over several values) that always
    separates the program there."""
    src = as_package(model)
    _, fn = single_function(src.spec, "cut_frontier")
    block = P.main_block(fn)
    ops = list(block.operations)
    real = [i for i, op in enumerate(ops) if not is_const(op)]
    if len(real) < 2:
        raise SpecSurgeryError("cut_frontier: the program has fewer than two ops to cut between")
    pos = real[min(max(int(round(fraction * (len(real) - 1))), 0), len(real) - 2)]
    later = reads(ops[pos + 1:]) | set(block.outputs)
    return [o.name for op in ops[:pos + 1] if not is_const(op) for o in op.outputs if o.name in later]
