"""The graph index: node ids, order, producers/consumers, between, articulation blobs."""

from __future__ import annotations

import time

import pytest

from conftest import VALID_FILES, corpus_id
from specsurgery._proto import Model_pb2
from specsurgery.errors import NotFoundError, SpecSurgeryError, UnsupportedError
from specsurgery.graph import build_graph, node_id
from synthetic_nets import NetBuilder, residual_network, synthetic_network


def small_net():
    b = NetBuilder({"x": [1, 2, 4, 4]}, {"y": [1, 2, 4, 4]})
    b.conv("conv", "x", "c", 2, 2)
    b.relu("relu", "c", "r")
    b.add("add", ["x", "r"], "s")
    b.relu("out", "s", "y")
    return b.spec


def two_stage_pipeline():
    first = small_net()
    second = NetBuilder({"y": [1, 2, 4, 4]}, {"z": [1, 2, 4, 4]})
    second.relu("again", "y", "z")
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    spec.description.input.add().CopyFrom(first.description.input[0])
    spec.description.output.add().CopyFrom(second.spec.description.output[0])
    spec.pipeline.models.add().CopyFrom(first)
    stub = spec.pipeline.models.add()
    stub.specificationVersion = 4
    stub.description.input.add().CopyFrom(first.description.output[0])
    stub.description.output.add().CopyFrom(first.description.output[0])
    stub.description.output[0].name = "y2"
    stub.linkedModel.linkedModelFile.linkedModelFileName.defaultValue = "Mid.mlmodelc"
    stub.linkedModel.linkedModelFile.linkedModelSearchPath.defaultValue = ".:$BUNDLE_MAIN"
    spec.pipeline.models.add().CopyFrom(second.spec)
    spec.pipeline.names.extend(["backbone", "mid", "head"])
    return spec


def test_node_ids_and_attributes():
    gi = build_graph(small_net())
    g = gi.g
    assert {"input:x", "output:y", "blob:x", "blob:y", "layer:conv", "stage:"} <= set(g)
    conv = g.nodes["layer:conv"]
    assert conv["kind"] == "convolution" and conv["category"] == "Layer"
    assert conv["parameters"] == 2 * 2 * 3 * 3 + 2
    assert conv["weight_bytes"] == 4 * conv["parameters"] and conv["storage"] == "float32"
    assert conv["params"]["kernel"] == "3x3"
    assert g.has_edge("input:x", "blob:x") and g.has_edge("blob:x", "layer:conv")
    assert g.has_edge("layer:out", "blob:y") and g.has_edge("blob:y", "output:y")
    assert node_id("layer", "a/b", "c") == "layer:a/b/c" and node_id("linked", "mid") == "linked:mid"


def test_order_producers_consumers():
    gi = build_graph(small_net())
    assert gi.topological_layers() == ["conv", "relu", "add", "out"]
    assert gi.producers("r") == ["relu"] and gi.producers("x") == []
    assert gi.consumers("x") == ["conv", "add"]
    assert gi.blobs() == ["x", "c", "r", "s", "y"]
    assert gi.layer("add").WhichOneof("layer") == "add"
    with pytest.raises(NotFoundError, match=r"'rlu'.*did you mean 'relu'"):
        gi.layer("rlu")
    with pytest.raises(NotFoundError, match=r"unknown blobs: 'q'.*; 'zz'"):
        gi.between(["q"], ["zz"])


def test_out_of_order_layers_are_sorted():
    spec = small_net()
    layers = list(spec.neuralNetwork.layers)
    del spec.neuralNetwork.layers[:]
    for layer in reversed(layers):
        spec.neuralNetwork.layers.add().CopyFrom(layer)
    assert build_graph(spec).topological_layers() == ["conv", "relu", "add", "out"]


def test_cycle_is_named():
    spec = small_net()
    spec.neuralNetwork.layers[0].input[0] = "s"   # conv now reads the add's output
    gi = build_graph(spec)
    with pytest.raises(SpecSurgeryError, match=r"cycle: .*conv -\[c\]-> relu.*add"):
        gi.topological_layers()


def test_between_and_uncut_path():
    gi = build_graph(small_net())
    assert gi.between(["x"], ["y"]) == ["conv", "relu", "add", "out"]
    assert gi.between(["s"], ["y"]) == ["out"]
    with pytest.raises(SpecSurgeryError, match=r"un-cut path.*model input 'x' -> add -> 's'"):
        gi.between(["r"], ["y"])


def test_articulation_blobs_resnet():
    gi = build_graph(residual_network(blocks=3, classes=4))
    arts = gi.articulation_blobs()
    # block inputs and the head's blobs cut the graph; blobs inside a block do not
    assert arts[:5] == ["stem", "x0", "block0_sum", "x1", "block1_sum"]
    assert "block0_r1" not in arts and "probs" not in arts
    assert arts.index("x3") < arts.index("pooled") < arts.index("logits")
    assert gi.articulation_blobs(include_ends=True)[0] == "image"


def test_classifier_outputs_and_preprocessing():
    gi = build_graph(residual_network(blocks=1, classes=3, image=True))
    g = gi.g
    assert g.has_edge("input:image", "preprocess:image") and g.has_edge("preprocess:image", "blob:image")
    assert g.nodes["preprocess:image"]["scaler"]["channelScale"] == pytest.approx(1 / 255)
    assert g.has_edge("blob:probs", "classifier:")
    assert g.has_edge("classifier:", "output:classLabel")
    assert g.has_edge("classifier:", "output:classLabel_probs")


def test_pipeline_stages_and_linked_stub():
    gi = build_graph(two_stage_pipeline())
    g = gi.g
    assert list(gi.models) == ["", "backbone", "mid", "head"]
    assert gi.nn_paths == ["backbone", "head"]
    assert gi.topological_layers("backbone") == ["conv", "relu", "add", "out"]
    assert gi.producers("z", "head") == ["again"]
    assert "layer:backbone/conv" in g and "layer:head/again" in g
    stub = g.nodes["linked:mid"]
    assert stub["file_name"] == "Mid.mlmodelc" and stub["search_path"] == ".:$BUNDLE_MAIN"
    # data flows through the pipeline's namespace: backbone -> stub and head
    assert g.has_edge("output:backbone/y", "blob:y") and g.has_edge("blob:y", "input:mid/y")
    assert g.has_edge("blob:y", "input:head/y") and g.has_edge("input:mid/y", "linked:mid")
    assert g.nodes["stage:mid"]["name"] == "mid" and g.nodes["stage:head"]["index"] == (2,)
    import networkx as nx

    assert nx.has_path(g, "input:x", "output:z")
    with pytest.raises(UnsupportedError, match=r"stage 'mid' is a linkedModel.*backbone, head"):
        gi.topological_layers("mid")
    with pytest.raises(NotFoundError, match=r"stage path.*'bakbone'.*did you mean 'backbone'"):
        gi.topological_layers("bakbone")


@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in VALID_FILES if p.suffix == ".mlpackage"], ids=corpus_id)
def test_mlprogram_ops(path):
    gi = build_graph(path)
    ops = gi.nodes_of("op")
    assert ops and gi.nodes_of("function")
    consts = [gi.g.nodes[o] for o in ops if gi.g.nodes[o]["kind"].startswith("const")]
    assert sum(c["blob_bytes"] for c in consts) > 0
    import networkx as nx

    outs = gi.nodes_of("output")
    assert all(nx.has_path(gi.g, gi.nodes_of("input")[0], o) for o in outs)


@pytest.mark.corpus
@pytest.mark.parametrize("path", VALID_FILES, ids=corpus_id)
def test_every_corpus_file_builds(path):
    gi = build_graph(path)
    for p in gi.nn_paths:
        order = gi.topological_layers(p)
        assert sorted(order) == sorted(l.name for l in gi.net(p).layers)
        gi.articulation_blobs(p)


def test_two_thousand_layers_build_fast():
    spec = synthetic_network(2000)
    start = time.perf_counter()
    gi = build_graph(spec)
    order = gi.topological_layers()
    arts = gi.articulation_blobs()
    elapsed = time.perf_counter() - start
    assert len(order) == 2000 and len(arts) > 600
    assert elapsed < 5  # well under a second on a quiet machine; loose for shared CI


def _const(block, name, dtype_code, shape):
    op = block.operations.add()
    op.type = "const"
    out = op.outputs.add()
    out.name = name
    val = op.attributes["val"]
    val.type.tensorType.dataType = dtype_code
    val.type.tensorType.rank = len(shape)
    for d in shape:
        val.type.tensorType.dimensions.add().constant.size = d
        out.type.tensorType.dimensions.add().constant.size = d
    val.blobFileValue.fileName = "@model_path/weights/weight.bin"
    return op


def test_compressed_weight_storage_names():
    from specsurgery._proto import MIL_pb2
    from specsurgery.graph import block_storages, mil_compression

    block = MIL_pb2.Block()
    _const(block, "idx", 35, [64, 16])        # uint4 indices (iOS 18 style, fed by name)
    _const(block, "lut", 10, [64, 1, 16, 1])  # float16 palettes
    lut = block.operations.add()
    lut.type = "constexpr_lut_to_dense"
    lut.outputs.add().name = "w"
    lut.inputs["indices"].arguments.add().name = "idx"
    lut.inputs["lut"].arguments.add().name = "lut"
    _const(block, "plain", 10, [8])
    assert block_storages(block) == {0: "lut4", 1: "lut4", 2: "lut4"}
    # iOS 16 style: a 1-D table of 2^bits entries beside uint8-packed indices
    assert mil_compression("constexpr_lut_to_dense", {"lut": ("float16", [16]), "indices": ("uint8", [1152])}) == "lut4"
    assert mil_compression("constexpr_affine_dequantize", {"quantized_data": ("int8", [4, 4])}) == "linear8"
    assert mil_compression("constexpr_blockwise_shift_scale", {"data": ("int4", [4, 4])}) == "linear4"
    assert mil_compression("const", {}) is None


def test_control_flow_layers_read_and_write_through_nested_networks():
    b = NetBuilder({"x": [1, 2], "cond": [1]}, {"y": [1, 2]})
    b.relu("relu", "x", "a")
    br = b.nn.layers.add()
    br.name = "br"
    br.input.append("cond")
    inner = br.branch.ifBranch.layers.add()
    inner.name, inner.input[:], inner.output[:] = "inner_relu", ["a"], ["y"]
    inner.activation.ReLU.SetInParent()
    other = br.branch.elseBranch.layers.add()
    other.name, other.input[:], other.output[:] = "inner_copy", ["a"], ["y"]
    other.copy.SetInParent()
    b.relu("after", "y", "z")   # re-reads y
    gi = build_graph(b.spec)
    assert gi.producers("y") == ["br"] and "br" in gi.consumers("a")
    assert gi.between(["x", "cond"], ["y"]) == ["relu", "br"]
    with pytest.raises(SpecSurgeryError, match="model input 'cond'"):
        gi.between(["x"], ["y"])
    from specsurgery.render import to_dot

    text = to_dot(b.spec)
    assert '"layer:relu" -> "layer:br"' in text and '"layer:br" -> "output:y"' in text


def test_rewritten_blob_is_read_from_the_latest_writer():
    b = NetBuilder({"x": [1, 2]}, {"y": [1, 2]})
    b.relu("first", "x", "t")
    b.relu("use_first", "t", "u")
    second = b.nn.layers.add()
    second.name, second.input[:], second.output[:] = "second", ["u"], ["t"]   # copy overwrites t
    second.copy.SetInParent()
    b.relu("use_second", "t", "y")
    gi = build_graph(b.spec)
    assert gi.topological_layers() == ["first", "use_first", "second", "use_second"]
    assert gi.between(["x"], ["y"]) == ["first", "use_first", "second", "use_second"]
    assert gi.between(["u"], ["y"]) == ["second", "use_second"]


def test_nested_pipeline_paths():
    inner = two_stage_pipeline()
    tail = NetBuilder({"z": [1, 2, 4, 4]}, {"w": [1, 2, 4, 4]})
    tail.relu("last", "z", "w")
    outer = Model_pb2.Model()
    outer.specificationVersion = 4
    outer.description.input.add().CopyFrom(inner.description.input[0])
    outer.description.output.add().CopyFrom(tail.spec.description.output[0])
    outer.pipeline.models.add().CopyFrom(inner)
    outer.pipeline.models.add().CopyFrom(tail.spec)   # no names: model0, model1
    gi = build_graph(outer)
    assert list(gi.models) == ["", "model0", "model0/backbone", "model0/mid", "model0/head", "model1"]
    assert gi.nn_paths == ["model0/backbone", "model0/head", "model1"]
    assert "layer:model0/backbone/conv" in gi.g and "linked:model0/mid" in gi.g
    assert gi.topological_layers("model0/head") == ["again"]
    import networkx as nx

    assert nx.has_path(gi.g, "input:x", "output:w")
    from specsurgery.render import to_dot
    from specsurgery.summary import tree_text

    text = to_dot(outer)
    assert 'label="model0: pipeline v4"' in text and 'label="backbone: neuralNetwork v4"' in text
    assert "│   ├── backbone: neuralNetwork v4" in tree_text(outer)


def test_weight_shapes_come_from_the_layer_kind_table():
    """Regressions: weight_shapes said [X1, X2] for batchedMatmul (the runtime and
    compress read the column-major matrix as C-order [X2, X1]) and called a bias
    layer's weight "data"."""
    from specsurgery._proto import NeuralNetwork_pb2
    from specsurgery.graph import weight_shapes

    mm = NeuralNetwork_pb2.NeuralNetworkLayer(name="mm")
    mm.batchedMatmul.weightMatrixFirstDimension = 3
    mm.batchedMatmul.weightMatrixSecondDimension = 2
    assert weight_shapes(mm) == {"weights": [2, 3]}
    bias = NeuralNetwork_pb2.NeuralNetworkLayer(name="b")
    bias.bias.shape.extend([4, 1, 1])
    assert weight_shapes(bias) == {"bias": [4, 1, 1]}
    conv = small_net().neuralNetwork.layers[0]
    assert weight_shapes(conv)["weights"][:2] == [2, 2]
    dyn = NeuralNetwork_pb2.NeuralNetworkLayer(name="dyn", input=["a", "b"])
    dyn.batchedMatmul.SetInParent()
    assert weight_shapes(dyn) == {}
