"""Recurrent kernels: ``uniDirectionalLSTM``, ``biDirectionalLSTM``, ``gru``,
``simpleRecurrent``."""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from ._base import F32, _f, _zeros, op
from .activation import _sigmoid, _softplus


# --------------------------------------------------------------------------- recurrent

_ACT = {
    "linear": lambda a: (lambda x: a.alpha * x + a.beta),
    "sigmoid": lambda a: _sigmoid,
    "tanh": lambda a: np.tanh,
    "ReLU": lambda a: (lambda x: np.maximum(x, 0)),
    "sigmoidHard": lambda a: (lambda x: np.clip(a.alpha * x + a.beta, 0, 1)),
    "scaledTanh": lambda a: (lambda x: a.alpha * np.tanh(a.beta * x)),
    "leakyReLU": lambda a: (lambda x: np.where(x >= 0, x, a.alpha * x)),
    "softsign": lambda a: (lambda x: x / (1 + np.abs(x))),
    "softplus": lambda a: _softplus,
    "ELU": lambda a: (lambda x: np.where(x >= 0, x, a.alpha * (np.exp(np.minimum(x, 0)) - 1))),
}


def _act_fn(ctx, a):
    kind = a.WhichOneof("NonlinearityType")
    if kind not in _ACT:
        raise UnsupportedError(f"layer {ctx.name!r} ({ctx.kind}): recurrent activation {kind!r} "
                               "is not supported")
    return _ACT[kind](getattr(a, kind))


def _seq_input(ctx, x, size):
    """[Seq, Batch, size, 1, 1] (or any shape ending in size) -> [Seq, Batch, size]."""
    if x.ndim == 5:
        s, b = x.shape[:2]
    elif x.ndim >= 2:
        s, b = x.shape[0], int(np.prod(x.shape[1:])) // size
    else:
        s, b = 1, 1
    if s * b * size != x.size:
        ctx.fail(f"input shape {tuple(x.shape)} does not hold sequences of {size} features")
    return _f(x).reshape(s, b, size)


def _state(ins, i, b, h):
    if len(ins) > i and ins[i] is not None:
        return _f(ins[i]).reshape(b, h)
    return np.zeros((b, h), F32)


def _out5(y):
    return y.reshape(y.shape + (1, 1))


_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")      # i, f, z, o


def _lstm_weights(ctx, prefix, p, hidden):
    """W, R, b and the peepholes of one direction; ``prefix`` is its weightParams path."""
    parts = [ctx.weight(f"{prefix}.{g}WeightMatrix") for g in _GATES]
    parts += [ctx.weight(f"{prefix}.{g}RecursionMatrix") for g in _GATES]
    if p.hasBiasVectors:
        parts += [ctx.weight(f"{prefix}.{g}BiasVector") for g in _GATES]
    n_bias = 4 if p.hasBiasVectors else 0
    if p.hasPeepholeVectors:
        parts += [ctx.weight(f"{prefix}.{g}PeepholeVector") for g in ("inputGate", "forgetGate", "outputGate")]

    def stack(*arrs):
        W = np.concatenate(arrs[0:4])
        R = np.concatenate(arrs[4:8])
        b = np.concatenate(arrs[8:12]) if n_bias else np.zeros(4 * hidden, F32)
        if p.forgetBias:
            b = b.copy()
            b[hidden: 2 * hidden] += 1.0
        peep = list(arrs[8 + n_bias:]) if p.hasPeepholeVectors else None
        return W, R, b, peep
    return ctx.derived(("lstm", prefix), tuple(parts), stack)


def _lstm_run(ctx, x, h, c, weights, p, acts, reverse):
    W, R, b, peep = weights
    hidden = h.shape[1]
    f_gate, f_cell, f_out = acts
    xw = x @ W.T + b                       # [S, B, 4H]
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    ys = np.zeros((x.shape[0], x.shape[1], hidden), F32)
    clip = p.cellClipThreshold
    for t in steps:
        g = xw[t] + h @ R.T
        gi, gf, gz, go = g[:, :hidden], g[:, hidden:2 * hidden], g[:, 2 * hidden:3 * hidden], g[:, 3 * hidden:]
        if peep is not None:
            gi = gi + peep[0] * c
            gf = gf + peep[1] * c
        i = f_gate(gi)
        f = 1 - i if p.coupledInputAndForgetGate else f_gate(gf)
        z = f_cell(gz)
        c = f * c + i * z
        if clip:
            c = np.clip(c, -clip, clip)
        if peep is not None:
            go = go + peep[2] * c
        o = f_gate(go)
        h = _f(o * f_out(c))
        c = _f(c)
        ys[t] = h
    return ys, h, c


#: input/recursion matrix pairs per time step
_GATE_MATRICES = {"uniDirectionalLSTM": 4, "biDirectionalLSTM": 8, "gru": 3, "simpleRecurrent": 1}


def _geometry(ctx, p, ins):
    """(input size, hidden size, input [Seq, Batch, input size], Seq, Batch)."""
    insize, hidden = int(p.inputVectorSize), int(p.outputVectorSize)
    if insize <= 0 or hidden <= 0:
        ctx.fail(f"inputVectorSize {insize} and outputVectorSize {hidden} must be positive")
    x = _seq_input(ctx, ins[0], insize)
    s, b = x.shape[:2]
    if not ctx.shape_only:
        ctx.steps(s, "sequence length")   # one Python step per element
        ctx.work(float(s) * b * hidden * (insize + hidden) * _GATE_MATRICES[ctx.kind])
    ctx.room((s, b, 2 * hidden if ctx.kind == "biDirectionalLSTM" else hidden))
    return insize, hidden, x, s, b


def _scan(ctx, p, ins, x, hidden, step):
    """Run ``h = step(x[t], h)`` over the sequence (backwards with reverseInput), from
    the initial state input 1; the [output, last state] pair of GRU and simple RNN."""
    s, b = x.shape[:2]
    if ctx.shape_only:
        return [_out5(_zeros(((s if p.sequenceOutput else 1), b, hidden))), _out5(_zeros((1, b, hidden)))]
    h = _state(ins, 1, b, hidden)
    order = range(s - 1, -1, -1) if p.reverseInput else range(s)
    ys = np.zeros((s, b, hidden), F32)
    for t in order:
        h = _f(step(x[t], h))
        ys[t] = h
    y = ys if p.sequenceOutput else (ys[:1] if p.reverseInput else ys[-1:])
    return [_out5(y), _out5(h[None])]


@op("uniDirectionalLSTM")
def _uni_lstm(ctx, p, ins):
    insize, hidden, x, s, b = _geometry(ctx, p, ins)
    lp = p.params
    if ctx.shape_only:
        y = _zeros(((s if lp.sequenceOutput else 1), b, hidden))
        return [_out5(y), _out5(_zeros((1, b, hidden))), _out5(_zeros((1, b, hidden)))]
    acts = [_act_fn(ctx, a) for a in p.activations] or [_sigmoid, np.tanh, np.tanh]
    w = _lstm_weights(ctx, "weightParams", lp, hidden)
    h0, c0 = _state(ins, 1, b, hidden), _state(ins, 2, b, hidden)
    ys, h, c = _lstm_run(ctx, x, h0, c0, w, lp, acts, p.reverseInput)
    y = ys if lp.sequenceOutput else (ys[:1] if p.reverseInput else ys[-1:])
    return [_out5(y), _out5(h[None]), _out5(c[None])]


@op("biDirectionalLSTM")
def _bi_lstm(ctx, p, ins):
    insize, hidden, x, s, b = _geometry(ctx, p, ins)
    lp = p.params
    if ctx.shape_only:
        y = _zeros(((s if lp.sequenceOutput else 1), b, 2 * hidden))
        st = _out5(_zeros((1, b, hidden)))
        return [_out5(y), st, st, st, st]
    if len(p.weightParams) != 2:
        ctx.fail(f"needs 2 weightParams (forward, backward), has {len(p.weightParams)}")
    acts_f = [_act_fn(ctx, a) for a in p.activationsForwardLSTM] or [_sigmoid, np.tanh, np.tanh]
    acts_b = [_act_fn(ctx, a) for a in p.activationsBackwardLSTM] or [_sigmoid, np.tanh, np.tanh]
    wf = _lstm_weights(ctx, "weightParams[0]", lp, hidden)
    wb = _lstm_weights(ctx, "weightParams[1]", lp, hidden)
    yf, hf, cf = _lstm_run(ctx, x, _state(ins, 1, b, hidden), _state(ins, 2, b, hidden), wf, lp, acts_f, False)
    yb, hb, cb = _lstm_run(ctx, x, _state(ins, 3, b, hidden), _state(ins, 4, b, hidden), wb, lp, acts_b, True)
    if lp.sequenceOutput:
        y = np.concatenate([yf, yb], axis=2)
    else:
        y = np.concatenate([yf[-1:], yb[:1]], axis=2)
    return [_out5(y), _out5(hf[None]), _out5(cf[None]), _out5(hb[None]), _out5(cb[None])]


@op("gru")
def _gru(ctx, p, ins):
    insize, hidden, x, s, b = _geometry(ctx, p, ins)
    if ctx.shape_only:
        return _scan(ctx, p, ins, x, hidden, None)
    acts = [_act_fn(ctx, a) for a in p.activations] or [_sigmoid, np.tanh]
    f_gate, f_out = acts[0], acts[1]
    Wz, Wr, Wo = (ctx.weight(f"{g}GateWeightMatrix") for g in ("update", "reset", "output"))
    Rz, Rr, Ro = (ctx.weight(f"{g}GateRecursionMatrix") for g in ("update", "reset", "output"))
    if p.hasBiasVectors:
        bz, br, bo = (ctx.weight(f"{g}GateBiasVector") for g in ("update", "reset", "output"))
    else:
        bz = br = bo = np.zeros(hidden, F32)

    def step(xt, h):
        z = f_gate(xt @ Wz.T + h @ Rz.T + bz)
        r = f_gate(xt @ Wr.T + h @ Rr.T + br)
        o = f_out(xt @ Wo.T + (r * h) @ Ro.T + bo)
        return (1 - z) * o + z * h
    return _scan(ctx, p, ins, x, hidden, step)


@op("simpleRecurrent")
def _simple_rnn(ctx, p, ins):
    insize, hidden, x, s, b = _geometry(ctx, p, ins)
    if ctx.shape_only:
        return _scan(ctx, p, ins, x, hidden, None)
    f = _act_fn(ctx, p.activation) if p.HasField("activation") else np.tanh
    W, R = ctx.weight("weightMatrix"), ctx.weight("recursionMatrix")
    bias = ctx.weight("biasVector") if p.hasBiasVector else np.zeros(hidden, F32)
    return _scan(ctx, p, ins, x, hidden, lambda xt, h: f(xt @ W.T + h @ R.T + bias))
