"""Tree-ensemble rules (treeEnsembleClassifier / treeEnsembleRegressor), after
Core ML's ``TreeEnsembleCommon.cpp``, which builds the trees and rejects the
model on any of these; unlike the C++ (which stops after 50), every problem is
reported."""

from __future__ import annotations

from .findings import Findings

LEAF = 6  # TreeNodeBehavior.LeafNode; 0..5 are the branch modes
BRANCH_MODES = {0: "BranchOnValueLessThanEqual", 1: "BranchOnValueLessThan",
                2: "BranchOnValueGreaterThanEqual", 3: "BranchOnValueGreaterThan",
                4: "BranchOnValueEqual", 5: "BranchOnValueNotEqual"}
_LIMIT = 20  # findings per rule, so that a broken 50,000-node ensemble stays readable


def _node(key) -> str:
    return f"(treeId {key[0]}, nodeId {key[1]})"


def check_tree_ensemble(spec, kind: str, out: Findings) -> None:
    msg = getattr(spec, kind)
    ens = msg.treeEnsemble
    dims = int(ens.numPredictionDimensions)
    where = "treeEnsemble"
    counts: dict[str, int] = {}

    def err(rule: str, text: str, place: str = where) -> None:
        counts[rule] = counts.get(rule, 0) + 1
        if counts[rule] <= _LIMIT:
            out.error(place, rule, text)

    if dims == 0:
        err("tree.no-dimensions", "numPredictionDimensions is 0; set it to the number of outputs "
            "(regressor) or of classes (1 for a binary classifier)")
    table: dict[tuple[int, int], object] = {}
    branches: list[tuple[tuple[int, int], int, int]] = []   # (key, false child, true child)
    for n in ens.nodes:
        tree = n.treeId
        key = (tree, n.nodeId)
        if key in table:
            err("tree.duplicate-node", f"node {_node(key)} is declared twice; (treeId, nodeId) "
                "pairs must be unique")
            continue
        table[key] = n
        behavior = n.nodeBehavior
        if behavior == LEAF:
            infos = n.evaluationInfo
            if len(infos) == 1:
                values = [infos[0].evaluationIndex]
            else:
                values = [e.evaluationIndex for e in infos]
            if not values:
                err("tree.leaf-no-values", f"leaf node {_node(key)} has no evaluationInfo; give "
                    "it a value for each prediction dimension it adds to")
                continue
            if dims and max(values) >= dims:
                bad = sorted({v for v in values if v >= dims})
                err("tree.leaf-dimension", f"leaf node {_node(key)} adds to dimension(s) "
                    f"{', '.join(map(str, bad))}, but numPredictionDimensions is {dims}; "
                    f"use evaluationIndex 0..{dims - 1} or raise numPredictionDimensions")
            if len(values) > 1 and len(set(values)) != len(values):
                dup = sorted({v for v in values if values.count(v) > 1})
                err("tree.leaf-duplicate-dimension", f"leaf node {_node(key)} gives dimension(s) "
                    f"{', '.join(map(str, dup))} more than one evaluation value; keep one each")
            continue
        if behavior not in BRANCH_MODES:
            err("tree.bad-node-behavior", f"node {_node(key)} has nodeBehavior {behavior}, "
                "which is no branch mode and not LeafNode; use one of "
                + ", ".join(BRANCH_MODES.values()) + " or LeafNode")
        branches.append((key, n.falseChildNodeId, n.trueChildNodeId))
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    children: dict[tuple[int, int], list] = {}
    branches.sort()
    for key, false_id, true_id in branches:
        for side, cid in (("false", false_id), ("true", true_id)):
            child = (key[0], cid)
            if child not in table:
                err("tree.missing-child", f"node {_node(key)} names {side} child nodeId {cid}, "
                    f"which tree {key[0]} does not declare; add the node or fix {side}ChildNodeId")
                break
            if child == key:
                err("tree.self-child", f"node {_node(key)} is its own {side} child; point "
                    f"{side}ChildNodeId at another node")
                break
            if child in parent:
                err("tree.shared-child", f"node {_node(child)} is the {side} child of "
                    f"{_node(key)} but already the child of nodeId {parent[child][1]}; "
                    "every node has one parent")
                break
            parent[child] = key
            children.setdefault(key, []).append(child)
    roots = sorted(k for k in table if k not in parent)
    by_tree: dict[int, list[int]] = {}
    for tree, node in roots:
        by_tree.setdefault(tree, []).append(node)
    for tree, ids in sorted(by_tree.items()):
        if len(ids) > 1:
            err("tree.multiple-roots", f"tree {tree} has {len(ids)} root nodes (nodeIds "
                f"{', '.join(map(str, ids[:10]))}{', ...' if len(ids) > 10 else ''}); a tree has "
                "one root: link the others under it or give them their own treeId")
    reached = set(roots)
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in reached:
                reached.add(child)
                stack.append(child)
    lost = sorted(k for k in table if k not in reached) if len(reached) != len(table) else []
    if lost:
        err("tree.unreachable", f"{len(lost)} node(s) are not reachable from a root: "
            + ", ".join(_node(k) for k in lost[:8]) + (", ..." if len(lost) > 8 else "")
            + " (a cycle of child links, or children of a broken link); remove them or link them")
    base = len(ens.basePredictionValue)
    if base and base != dims:
        err("tree.base-prediction-size", f"basePredictionValue has {base} values but "
            f"numPredictionDimensions is {dims}; give one per dimension or none")
    _check_classes(msg, kind, dims, out, err)


def _check_classes(msg, kind, dims, out: Findings, err) -> None:
    if kind == "treeEnsembleClassifier":
        which = msg.WhichOneof("ClassLabels")
        classes = len(getattr(msg, which).vector) if which else 0
        if classes and dims and not ((dims == 1 and classes == 2) or (dims >= 2 and classes == dims)):
            err("tree.classes-dimensions", f"the classifier has {classes} class labels but "
                f"numPredictionDimensions is {dims}; a binary classifier has 2 labels and 1 "
                "dimension, otherwise one dimension per label", "classLabels")
