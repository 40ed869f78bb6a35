"""Where relative search-path entries are looked for."""

from specsurgery._proto import Model_pb2
from specsurgery.linked import resolve_linked


def _stub(search_path="."):
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    f = spec.linkedModel.linkedModelFile
    f.linkedModelFileName.defaultValue = "Backbone.mlmodelc"
    f.linkedModelSearchPath.defaultValue = search_path
    return spec


def test_stored_entries_are_relative_to_the_stub_file(tmp_path, monkeypatch):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "Backbone.mlmodel").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)  # "." must not mean the current folder
    found, _ = resolve_linked(_stub("."), base_dir=tmp_path / "bundle")
    assert found == tmp_path / "bundle" / "Backbone.mlmodel"
    found, tried = resolve_linked(_stub("."), base_dir=tmp_path)
    assert found is None and str(tmp_path / "Backbone.mlmodelc") in tried


def test_a_typed_override_is_relative_to_the_current_folder_first(tmp_path, monkeypatch):
    (tmp_path / "out" / "bundle").mkdir(parents=True)
    target = tmp_path / "out" / "bundle" / "Backbone.mlmodel"
    target.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    # the model file lives in out/bundle; the user types the folder from where they stand
    found, tried = resolve_linked(_stub(), search_path="out/bundle", base_dir=tmp_path / "out" / "bundle")
    assert found.resolve() == target.resolve()
    # and an override entry relative to the stub's folder still works
    found, tried = resolve_linked(_stub(), search_path=".", base_dir=tmp_path / "out" / "bundle")
    assert found.resolve() == target.resolve()


def test_nothing_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found, tried = resolve_linked(_stub(), search_path="a:b", base_dir=tmp_path / "m")
    assert found is None
    assert len(tried) == 12  # 2 entries x (cwd, stub folder) x (.mlmodelc, .mlmodel, .mlpackage)


def test_same_folder_reached_twice_is_listed_once(tmp_path):
    # '.' and $BUNDLE_MAIN both mean the stub's folder: the error listed every candidate twice
    found, tried = resolve_linked(_stub(".:$BUNDLE_MAIN"), base_dir=tmp_path)
    assert found is None and len(tried) == len(set(tried)) == 3


def test_a_file_name_too_long_for_the_file_system_is_not_found(tmp_path):
    import nnbuild as nb
    from specsurgery.linked import resolve_linked

    stub = nb.tiny_linked(file_name="B" * 5000 + ".mlmodelc", search_path=".")
    found, tried = resolve_linked(stub, base_dir=tmp_path)
    assert found is None and tried
