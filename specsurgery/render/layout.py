"""A fast layered layout for big graphs.

Graphviz's ``dot`` (2.43, as Debian ships it) needs minutes to place a
2,000-layer network: its x-coordinate pass solves a network-simplex problem
whose feasible-tree start is quadratic.  Neural networks are mostly chains,
so a simple Sugiyama-style layout does well: rank = longest path from the
inputs, order within a rank by the barycentre of the predecessors, x from the
predecessors' mean with overlaps pushed apart.  The result is written as
pinned ``pos`` attributes and drawn by ``neato -n2`` (no layout, only edges
and rendering), which takes well under a second.
"""

from __future__ import annotations

from collections import defaultdict

CHAR_W = 6.0        # points per character at fontsize 10 (Helvetica, average)
LINE_H = 13.0       # points per label line
PAD_W, PAD_H = 16.0, 10.0
NODE_SEP = 18.0
RANK_SEP = 26.0
EDGE_LABEL_H = 24.0  # room for a two-line edge label between ranks


#: extra width of shapes whose label box is smaller than the outline
SHAPE_WIDTH = {"house": 1.45, "invhouse": 1.45, "box3d": 1.1, "component": 1.15}


def node_size(label: str, shape: str = "box") -> tuple[float, float]:
    """Estimated (width, height) in points of a node drawn with fontsize 10."""
    lines = label.split("\n")
    width = max(len(l) for l in lines) * CHAR_W + PAD_W
    return width * SHAPE_WIDTH.get(shape, 1.0), len(lines) * LINE_H + PAD_H


def layered_positions(nodes: list[str], edges: list[tuple[str, str]], sizes: dict,
                      rankdir: str = "TB", edge_labels: bool = True,
                      clusters: dict | None = None) -> tuple[dict, dict]:
    """({node: (x, y)}, {(u, v): [(x, y), ...] bends of edges spanning several ranks}).

    Points are in Graphviz points, y growing upwards.  An edge that skips
    ranks runs through "virtual" slots in the ranks it crosses, placed beside
    the real nodes, so residual connections do not hide behind the chain.
    """
    index = {n: i for i, n in enumerate(nodes)}
    succ = defaultdict(list)
    pred = defaultdict(list)
    indeg = {n: 0 for n in nodes}
    for u, v in edges:
        if u in index and v in index and u != v:
            succ[u].append(v)
            pred[v].append(u)
            indeg[v] += 1
    # ranks: longest path over a topological order (spec order breaks ties; cycles fall back to order)
    order = []
    ready = sorted((n for n in nodes if indeg[n] == 0), key=index.get, reverse=True)
    left = dict(indeg)
    while ready:
        n = ready.pop()
        order.append(n)
        for v in succ[n]:
            left[v] -= 1
            if left[v] == 0:
                ready.append(v)
        ready.sort(key=index.get, reverse=True)
    placed = set(order)
    order += [n for n in nodes if n not in placed]
    rank = {}
    for n in order:
        rank[n] = max((rank[p] + 1 for p in pred[n] if p in rank), default=0)
    # sources other than the first (constants, weights) sit just above their first consumer
    first_source = order[0] if order else None
    for n in reversed(order):
        if not pred[n] and succ[n] and n != first_source and not str(n).startswith("input:"):
            rank[n] = max(0, min(rank[v] for v in succ[n]) - 1)
    # virtual slots for edges that skip ranks
    vpred = {n: list(pred[n]) for n in order}
    virtual: dict = {}
    chains: dict = {}
    vsize = (8.0, 8.0)
    for u, v in edges:
        if u not in rank or v not in rank or rank[v] - rank[u] <= 1:
            continue
        prev = u
        chain = []
        for r in range(rank[u] + 1, rank[v]):
            vid = ("virtual", u, v, r)
            virtual[vid] = r
            rank[vid] = r
            vpred[vid] = [prev]
            chain.append(vid)
            prev = vid
        chains[(u, v)] = chain
    layers = defaultdict(list)
    for n in order:
        layers[rank[n]].append(n)
    for vid, r in virtual.items():
        layers[r].append(vid)
    n_ranks = max(layers) + 1 if layers else 0
    horizontal = rankdir in ("LR", "RL")

    def size(n):
        return vsize if n in virtual else sizes[n]

    along = (lambda n: size(n)[0]) if not horizontal else (lambda n: size(n)[1])
    across = (lambda n: size(n)[1]) if not horizontal else (lambda n: size(n)[0])
    # order within ranks: barycentre of predecessors' slots; virtual slots after real nodes
    pos_in_rank: dict = {}
    for r in range(n_ranks):
        row = layers[r]
        row_index = {m: i for i, m in enumerate(row)}

        def bary(n):
            ps = [pos_in_rank[p] for p in vpred.get(n, ()) if p in pos_in_rank]
            return (sum(ps) / len(ps) if ps else row_index[n], n in virtual, row_index[n])

        row.sort(key=bary)
        for i, n in enumerate(row):
            pos_in_rank[n] = i
    # coordinates along the rank: follow the predecessors, then push overlaps apart
    coord: dict = {}
    for r in range(n_ranks):
        row = layers[r]
        want = []
        for n in row:
            ps = [coord[p] for p in vpred.get(n, ()) if p in coord]
            want.append(sum(ps) / len(ps) if ps else None)
        xs = []
        for i, n in enumerate(row):
            target = want[i]
            if xs:
                prev_n = row[i - 1]
                min_x = xs[-1] + along(prev_n) / 2 + NODE_SEP + along(n) / 2
                target = min_x if target is None else max(target, min_x)
            elif target is None:
                target = 0.0
            xs.append(target)
        # keep real nodes on their wanted positions (virtual slots just move aside)
        known = [(x, w) for x, w, n in zip(xs, want, row) if w is not None and n not in virtual]
        if known:
            shift = sum(w - x for x, w in known) / len(known)
            xs = [x + shift for x in xs]
        for n, x in zip(row, xs):
            coord[n] = x
    # coordinates across ranks
    gap = RANK_SEP + (EDGE_LABEL_H if edge_labels else 0)
    if horizontal and edge_labels:
        gap = RANK_SEP + 70.0
    # clusters (``clusters``: node -> tuple of enclosing cluster keys) need room for their
    # borders and titles where ranks leave or enter them
    def levels(r):
        out = set()
        for n in layers[r]:
            chain = (clusters or {}).get(n, ())
            for i in range(1, len(chain) + 1):
                out.add(chain[:i])
        return out

    depth, offsets = 0.0, []
    prev_levels = set()
    for r in range(n_ranks):
        here = levels(r) if clusters else set()
        if r and clusters:
            exited = {len(c) for c in prev_levels - here}
            entered = {len(c) for c in here - prev_levels}
            depth += 10 * len(exited) + 26 * len(entered)
        elif clusters:
            depth += 26 * len({len(c) for c in here})
        prev_levels = here
        extent = max((across(n) for n in layers[r]), default=0)
        offsets.append(depth + extent / 2)
        depth += extent + gap

    def place(a, b):
        if rankdir == "TB":
            return (a, -b)
        if rankdir == "BT":
            return (a, b)
        if rankdir == "LR":
            return (b, -a)
        return (-b, -a)

    out = {n: place(coord[n], offsets[rank[n]]) for n in order}
    routes = {edge: [place(coord[vid], offsets[rank[vid]]) for vid in chain] for edge, chain in chains.items()}
    return out, routes


def edge_pos(start: tuple, bends: list, end: tuple, start_size: tuple, end_size: tuple,
             rankdir: str = "TB") -> tuple[str, tuple]:
    """A Graphviz edge ``pos`` (straight cubic segments through ``bends``) and a label point."""
    horizontal = rankdir in ("LR", "RL")
    sign = -1 if rankdir in ("TB", "LR") else 1

    def border(center, sz, outgoing):
        x, y = center
        if horizontal:
            dx = sz[0] / 2 * (-sign if outgoing else sign)
            return (x + dx, y)
        dy = sz[1] / 2 * (sign if outgoing else -sign)
        return (x, y + dy)

    p0 = border(start, start_size, True)
    tip = border(end, end_size, False)
    points = [p0] + list(bends)
    # stop short of the tip so the arrowhead has room
    last = points[-1]
    dx, dy = tip[0] - last[0], tip[1] - last[1]
    dist = max((dx * dx + dy * dy) ** 0.5, 1e-6)
    arrow = min(7.0, dist / 2)
    stop = (tip[0] - dx / dist * arrow, tip[1] - dy / dist * arrow)
    points.append(stop)
    seq = [points[0]]
    for a, b in zip(points, points[1:]):
        seq += [a, b, b]
    text = f"e,{tip[0]:.1f},{tip[1]:.1f} " + " ".join(f"{x:.1f},{y:.1f}" for x, y in seq)
    label_at = bends[0] if bends else ((p0[0] + stop[0]) / 2, (p0[1] + stop[1]) / 2)
    return text, label_at
