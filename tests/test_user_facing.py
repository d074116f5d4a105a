"""Small promises a new user meets first: ``import inferlab`` is the public API, the README's
examples point where the platform looks, generated files stay out of git, and ``models`` puts
an alias only on the row it resolves to."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from shared.config import Settings
from shared.contracts.registry import ModelRecord, ModelView
from tests.support.services import REPO


def test_import_inferlab_is_the_public_api(tmp_path: Path) -> None:
    # from another folder, as a user's script would: the installed package, not the checkout
    code = "import inferlab, shared.sdk; from inferlab import Client; assert Client is shared.sdk.Client; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_readme_nats_pub_imports_from_inside_the_default_import_root(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    line = next(t for t in readme.splitlines() if t.startswith("nats pub model.register"))
    uri = re.search(r"file://([^\\\"']+)", line)
    assert uri, line
    home = tmp_path / "home"
    path = Path(uri.group(1).replace("$HOME", str(home)))
    roots = Settings(home=str(home / ".inferlab")).effective_import_roots
    assert any(path.is_relative_to(root) for root in roots), (path, roots)


def test_readme_dataset_points_to_the_dataset_format() -> None:
    readme = (REPO / "README.md").read_text()
    assert "docs/validator.md#datasets" in readme
    assert "## Datasets" in (REPO / "docs" / "validator.md").read_text()


def test_generated_files_are_ignored() -> None:
    generated = [
        "digits-mlp.onnx",
        "digits-mlp-test.npz",
        "digits-mlp.html",
        "digits.tar.gz",
        "history/benchmark_runs.parquet",
        "sym_shape_infer_temp.onnx",
    ]
    done = subprocess.run(["git", "check-ignore", *generated], cwd=REPO, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(generated)
    kept = subprocess.run(["git", "check-ignore", "tests/support/models.py", "docs/corpus.md"], cwd=REPO)
    assert kept.returncode == 1  # nothing of the project's own is ignored


def test_models_shows_an_alias_only_on_the_base_row() -> None:
    from shared.cli.registry import _model_row

    def row(ref: str, variant: str) -> list:
        record = ModelRecord(
            name="digits",
            version="1.0.0",
            variant=variant,
            ref=ref,
            sha256="ab" * 32,
            size_bytes=1,
            artifact_uri="nats-obj://a/b",
            source_uri="nats-obj://a/b",
        )
        return _model_row(ModelView(record=record, aliases=["production"]))

    assert "production" in row("digits@1.0.0", "base")
    assert "production" not in row("digits@1.0.0+fp16", "fp16")
