"""Model_pb2 without paying for `import coremltools` (which imports torch)."""

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_proto_import_does_not_import_torch_or_coremltools_init():
    out = _run("import sys, specsurgery._proto as p; p.Model_pb2.Model();"
               "print('torch' in sys.modules, 'coremltools.models' in sys.modules)")
    assert out == "False False"


def test_later_coremltools_import_works_and_shares_classes():
    out = _run("import specsurgery._proto as p\n"
               "import coremltools as ct\n"
               "from coremltools.proto import Model_pb2\n"
               "print(Model_pb2 is p.Model_pb2, callable(ct.convert), hasattr(ct.models, 'MLModel'))")
    assert out.splitlines()[-1] == "True True True"


def test_direct_submodule_import_after_fast_path():
    out = _run("import specsurgery._proto as p\n"
               "import coremltools.models.utils as u\n"
               "from coremltools.models import MLModel\n"
               "print(callable(u.load_spec), MLModel.__name__)")
    assert out.splitlines()[-1] == "True MLModel"


def test_import_specsurgery_is_light():
    out = _run("import sys, specsurgery; print('numpy' in sys.modules, 'coremltools' in sys.modules)")
    assert out == "False False"
