"""``rename``'s ML Program part: a value renamed everywhere in a program.

A value name is written where it is defined (a function input, an op output,
the input of a nested block) and wherever it is read (an op's name-bound
arguments, a block's outputs), nested blocks (``cond``, ``while_loop``)
included.  An op whose ``name`` attribute equals the value it produces keeps
the two equal.  Value names are local to a function; a rename applies in
every function that has the name.
"""

from __future__ import annotations

from ...mil import program as P

__all__ = ["collect_names", "rename_block", "rename_in_model"]


def _block_names(block, out: dict, where: str) -> None:
    for nvt in block.inputs:
        out.setdefault(nvt.name, f"{where}block input")
    for op in block.operations:
        for o in op.outputs:
            out.setdefault(o.name, f"{where}{op.type} op {P.op_name(op)!r}")
        for sub in op.blocks:
            _block_names(sub, out, where)


def collect_names(model, out: dict, where: str) -> None:
    """Add every value name of ``model``'s program (every function) to ``out``."""
    if model.WhichOneof("Type") != "mlProgram":
        return
    for fname, fn in P.iter_functions(model):
        here = f"{where}function {fname!r}: "
        for nvt in fn.inputs:
            out.setdefault(nvt.name, f"{here}input")
        for opset in sorted(fn.block_specializations):
            _block_names(fn.block_specializations[opset], out, here)


def _set_op_name(op, old: str, new: str) -> None:
    if "name" not in op.attributes:
        return
    strings = op.attributes["name"].immediateValue.tensor.strings.values
    if len(strings) == 1 and strings[0] == old:
        strings[0] = new


def rename_block(block, old: str, new: str) -> None:
    for nvt in block.inputs:
        if nvt.name == old:
            nvt.name = new
    for op in block.operations:
        for argument in op.inputs.values():
            for binding in argument.arguments:
                if binding.WhichOneof("binding") == "name" and binding.name == old:
                    binding.name = new
        for o in op.outputs:
            if o.name == old:
                o.name = new
                _set_op_name(op, old, new)
        for sub in op.blocks:
            rename_block(sub, old, new)
    for i, name in enumerate(block.outputs):
        if name == old:
            block.outputs[i] = new


def rename_in_model(model, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` in every function of ``model``'s program
    (the description is renamed by the caller)."""
    if model.WhichOneof("Type") != "mlProgram":
        return
    for _, fn in P.iter_functions(model):
        for nvt in fn.inputs:
            if nvt.name == old:
                nvt.name = new
        for block in fn.block_specializations.values():
            rename_block(block, old, new)
