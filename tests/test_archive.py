"""Model archives: content, rebuild only when needed, and a handler that runs unpacked."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import sweeper.archive as archive
from handlers.handler import SweeperHandler
from handlers.models import MODELS
from sweeper.errors import SpecError


@pytest.fixture(scope="module")
def mlp_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store")
    archive.build_archive("mlp", store)
    return store


def test_archive_holds_handler_models_weights_and_config(mlp_store):
    mar = mlp_store / "mlp.mar"
    with zipfile.ZipFile(mar) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        config = json.loads(z.read(archive.CONFIG_FILE))
        weights = torch.load(io.BytesIO(z.read("mlp.pt")), weights_only=True)
        handler_source = z.read(archive.HANDLER_FILE)
    assert {"sweeper_handler.py", "sweeper_models.py", "mlp.pt", "sweeper_model.json"} <= names
    assert manifest["model"]["handler"] == "sweeper_handler.py"
    assert manifest["model"]["serializedFile"] == "mlp.pt"
    assert config == {"model": "mlp", "weights": "mlp.pt", "source_sha256": archive.source_digest("mlp")}
    assert handler_source == (Path(archive.__file__).parents[1] / "handlers" / "handler.py").read_bytes()
    for key, value in MODELS["mlp"].build().state_dict().items():
        assert torch.equal(weights[key], value), key
    assert not list(mlp_store.glob(".*building*")), "temporary export dir left behind"


def test_second_build_does_not_rebuild_and_force_does(mlp_store):
    mar = mlp_store / "mlp.mar"
    before = mar.stat()
    assert archive.build_archive("mlp", mlp_store) == mar
    after = mar.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    archive.build_archive("mlp", mlp_store, force=True)
    assert mar.stat().st_ino != before.st_ino  # replaced by a new file


def test_changed_sources_trigger_a_rebuild(mlp_store, monkeypatch):
    mar = mlp_store / "mlp.mar"
    before = mar.stat().st_ino
    monkeypatch.setattr(archive, "source_digest", lambda name: "0" * 64)
    archive.build_archive("mlp", mlp_store)
    assert mar.stat().st_ino != before
    assert archive.archived_digest(mar) == "0" * 64


def test_source_digest_depends_on_the_name_and_is_stable():
    assert archive.source_digest("mlp") == archive.source_digest("mlp") != archive.source_digest("cnn")


def test_a_broken_archive_counts_as_missing(tmp_path):
    (tmp_path / "mlp.mar").write_bytes(b"not a zip")
    assert archive.archived_digest(tmp_path / "mlp.mar") is None
    assert archive.archived_digest(tmp_path / "absent.mar") is None


def test_unknown_names_are_refused_before_anything_is_built(tmp_path):
    with pytest.raises(SpecError, match=r"unknown model 'resnet', expected one of: cnn, mlp, mlp_faulty, transformer"):
        archive.build_archive("resnet", tmp_path)
    with pytest.raises(SpecError, match="resnet"):
        archive.ensure_archives(tmp_path, ["mlp", "resnet"])
    assert list(tmp_path.iterdir()) == []


def test_ensure_archives_maps_names_to_paths(mlp_store):
    assert archive.ensure_archives(mlp_store, ["mlp"]) == {"mlp": mlp_store / "mlp.mar"}


def test_cli_builds_then_reports_up_to_date(tmp_path, capsys):
    store = tmp_path / "store"
    assert archive.main(["--model-store", str(store), "mlp"]) == 0
    assert archive.main(["--model-store", str(store), "mlp"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{store}/mlp.mar: built", f"{store}/mlp.mar: up to date"]
    assert archive.main(["--model-store", str(store), "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_the_archived_handler_runs_unpacked_outside_the_repository(mlp_store, tmp_path):
    # As TorchServe runs it: top-level modules in the model dir, no `handlers` package.
    model_dir = tmp_path / "unpacked"
    with zipfile.ZipFile(mlp_store / "mlp.mar") as z:
        z.extractall(model_dir)
    body = MODELS["mlp"].example_request(3)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(model_dir)!r})
        import sweeper_handler
        assert "handlers" not in sys.modules, "imported the repository's package"

        class Context:
            system_properties = {{"model_dir": {str(model_dir)!r}}}
            def __init__(self): self.headers = {{}}
            def set_response_header(self, idx, key, value): self.headers[key] = value
            def set_response_content_type(self, idx, value): pass
            def set_response_status(self, code=200, phrase="", idx=0): pass

        context = Context()
        assert sweeper_handler.handle(None, context) is None
        answer = sweeper_handler.handle([{{"body": {body!r}}}], context)
        print(json.dumps({{"answer": answer[0].decode(), "headers": context.headers}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=model_dir, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    want = json.loads(SweeperHandler.for_model("mlp").handle([{"body": body}], _NullContext())[0])
    assert json.loads(out["answer"]) == want
    assert out["headers"]["X-Batch-Size"] == "1"


class _NullContext:
    def set_response_header(self, idx, key, value):
        pass

    def set_response_content_type(self, idx, value):
        pass

    def set_response_status(self, code=200, phrase="", idx=0):
        pass
