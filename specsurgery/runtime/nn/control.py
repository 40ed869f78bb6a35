"""Control-flow kernels: ``copy``, ``branch``, ``loop``, ``loopBreak``, ``loopContinue``.
They receive the blob dictionary and run sub-networks through ``ctx.sub``."""

from __future__ import annotations

import numpy as np

from ... import budget
from ._base import _LoopBreak, _LoopContinue, op


# --------------------------------------------------------------------------- control flow

@op("copy")
def _copy(ctx, p, ins, blobs, outs):
    return [np.array(ins[0], copy=True)]


@op("branch")
def _branch(ctx, p, ins, blobs, outs):
    cond = bool(np.asarray(ins[0]).reshape(-1)[0] != 0) if ins[0].size else False
    if cond:
        ctx.sub(p.ifBranch).run(blobs, ctx.shape_only, ctx.trace)
    elif p.HasField("elseBranch"):
        ctx.sub(p.elseBranch).run(blobs, ctx.shape_only, ctx.trace)
    return None


@op("loop")
def _loop(ctx, p, ins, blobs, outs):
    limit = int(np.asarray(ins[0]).reshape(-1)[0]) if ins else int(p.maxLoopIterations)
    if not ins and not p.maxLoopIterations and not p.HasField("conditionNetwork"):
        ctx.fail("loop has neither an iteration count nor a condition")
    if p.HasField("conditionNetwork") and not ins and not p.maxLoopIterations:
        limit = 1 << 31
    cond_net = ctx.sub(p.conditionNetwork) if p.HasField("conditionNetwork") else None
    body = ctx.sub(p.bodyNetwork)
    cap = budget.max_iterations()
    it = 0
    while it < limit:
        if cond_net is not None:
            cond_net.run(blobs, ctx.shape_only, ctx.trace)
            v = blobs.get(p.conditionVar)
            if v is None:
                ctx.fail(f"condition network did not produce conditionVar {p.conditionVar!r}")
            if not bool(np.asarray(v).reshape(-1)[0] != 0):
                break
        elif p.conditionVar:
            v = blobs.get(p.conditionVar)
            if v is not None and not bool(np.asarray(v).reshape(-1)[0] != 0):
                break
        if it >= cap:
            ctx.steps(it + 1, "loop")   # refuses: this iteration would pass the cap
        try:
            body.run(blobs, ctx.shape_only, ctx.trace)
        except _LoopBreak:
            break
        except _LoopContinue:
            pass
        it += 1
    return None


@op("loopBreak")
def _loop_break(ctx, p, ins):
    raise _LoopBreak()


@op("loopContinue")
def _loop_continue(ctx, p, ins):
    raise _LoopContinue()
