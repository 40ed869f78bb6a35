"""check never crashes: corrupted specs give findings (or a SpecSurgeryError), not tracebacks."""

from __future__ import annotations

import random

import nnbuild as b
from specsurgery._proto import Model_pb2
from specsurgery.check import check, min_spec_version
from specsurgery.errors import SpecSurgeryError
from specsurgery.io import serialize


def test_byte_flipped_specs_never_crash():
    rng = random.Random(1234)
    seeds = [serialize(f()) for f in (b.tiny_nn, b.tiny_classifier, b.tiny_pipeline, b.tiny_conv,
                                      b.tiny_linked, b.tiny_regressor)]
    parsed = 0
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        spec = Model_pb2.Model()
        try:
            spec.ParseFromString(bytes(data))
        except Exception:
            continue
        parsed += 1
        try:
            findings = check(spec)
            min_spec_version(spec)
        except SpecSurgeryError:
            continue
        assert all(f.severity in ("error", "warning", "info") and f.rule for f in findings)
    assert parsed > 100


def test_empty_model_message():
    spec = Model_pb2.Model()
    rules = {f.rule for f in check(spec)}
    assert {"version.missing", "model.no-type", "interface.no-outputs"} <= rules
