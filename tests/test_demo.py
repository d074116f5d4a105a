"""The one-command demo as a newcomer runs it (`make run` is `inferlab up --demo`), reduced for
CI: the MLP only, the fp16 and int8 profiles, short benchmark windows and a small attack budget,
all through settings. Then the model report of what the demo produced, in the terminal and as
HTML, against the same live platform; then Ctrl-C, and a second start on the same data dir,
which must not seed again."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest

from shared.contracts.benchmark import (
    ConfigResult,
    HardwareFingerprint,
    LatencySummary,
    ModelBenchmarked,
)
from shared.contracts.conversion import ConversionReport, ConversionSkipped, ModelConverted, ParityReport
from shared.contracts.registry import ModelRecord, ModelRegistered
from shared.contracts.validation import CriterionResult, ModelValidated, ValidationReport
from shared.demo import DEMO_VERSION, MLP_NAME, Tracker, build_mlp, parse_kinds, stroke_groups, summary_rows
from shared.embedded import free_port, port_open
from shared.errors import InferlabError
from tests.support.platform import Platform

REF = f"{MLP_NAME}@{DEMO_VERSION}"


def _demo_lines(text: str) -> list[str]:
    return [line.removeprefix("demo ").strip() for line in text.splitlines() if line.startswith("demo ")]


@pytest.mark.slow
async def test_up_demo_seeds_an_empty_platform_follows_the_chain_and_keeps_running(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    platform = await Platform(home, port, "--demo", "--demo-models", "mlp").start(tmp_path)
    try:
        await platform.wait_for(r"demo (finished|incomplete) in \d+ s", timeout=200)
        lines = _demo_lines(platform.text)
        assert any(line.startswith(f"{REF}  trained: scikit-learn MLPClassifier") for line in lines), lines
        assert any(line.startswith(f"{REF}  registered  (") for line in lines), lines
        for profile in ("fp16", "int8-dynamic"):
            assert any(line.startswith(f"{REF}+{profile}  converted ({profile})") for line in lines), profile
        for ref in (REF, f"{REF}+fp16", f"{REF}+int8-dynamic"):
            bench = next(line for line in lines if line.startswith(f"{ref}  benchmarked"))
            assert re.search(r"p50 [0-9.]+ ms, p99 [0-9.]+ ms", bench), bench
            valid = next(line for line in lines if line.startswith(f"{ref}  validated"))
            assert re.search(r"(READY|NOT READY)  \(accuracy 0\.\d{4}", valid), valid
        assert "demo finished in" in platform.text, platform.text
        # the summary table: one row per variant with latency, accuracy and the verdict
        rows = [line for line in platform.text.splitlines() if line.startswith("│ " + MLP_NAME)]
        assert len(rows) == 3, platform.text
        for row in rows:
            cells = [c.strip() for c in row.strip("│").split("│")]
            assert float(cells[3]) > 0 and float(cells[4]) >= float(cells[3]), cells
            assert 0.85 < float(cells[5]) <= 1.0 and cells[6].startswith(("READY", "NOT READY")), cells

        # The platform keeps running for the user's own models, and the report shows the demo.
        rc, out, err = await platform.cli("status", "--json", cwd=tmp_path)
        assert rc == 0 and all(f'"name": "{s}"' in out for s in ("registry", "converter", "benchmarker", "validator"))
        rc, out, err = await platform.cli("report", REF, cwd=tmp_path)
        assert rc == 0, err
        for heading in (
            "readiness",
            "variants",
            "latency distribution per variant",
            f"history of {MLP_NAME}",
            "parity with the parent",
            "robustness: accuracy under Gaussian noise",
            f"fairness per group of {REF}",
        ):
            assert heading in out, (heading, out)
        assert re.search(r"heavy\s+│\s+\d+", out) and re.search(r"light\s+│\s+\d+", out), out
        page = tmp_path / "report" / "digits.html"
        rc, out, err = await platform.cli("report", REF, "--html", str(page), cwd=tmp_path)
        assert rc == 0 and f"wrote {page}" in out, err
        html = page.read_text()
        assert_self_contained(html)
        for anchor in ("readiness", "latency", "trend", "parity", "robustness", "fairness"):
            assert f"id='{anchor}'" in html, anchor
        svgs = re.findall(r"<svg .*?</svg>", html, re.DOTALL)
        assert len(svgs) >= 5  # latency, history, parity, robustness, fairness
        for fragment in svgs:
            ET.fromstring(fragment)  # well-formed
        for variant in ("base", "fp16", "int8-dynamic"):
            assert f"<title>{variant}</title></polyline>" in html, variant  # its latency histogram
        assert "no significant disparity" in html or "disparity detected" in html
    finally:
        code = await platform.stop()
    assert code == 0, platform.text
    assert "stopped embedded nats-server" in platform.text
    assert not port_open("127.0.0.1", port)

    # A second start on the same data dir runs the platform but does not seed again.
    again = await Platform(home, port, "--demo", "--demo-models", "mlp").start(tmp_path)
    try:
        await again.wait_for(r"demo skipped: the platform already holds models", timeout=120)
        assert "trained:" not in again.text
    finally:
        assert await again.stop() == 0, again.text


def assert_self_contained(html: str) -> None:
    """Opens offline: no script, no external URL of any kind (the SVG namespace is a name, not
    a fetch)."""
    assert "<script" not in html.lower()
    urls = re.findall(r"\b(?:https?|ftp|file|data):[^\s\"'<>)]*", html)
    assert set(urls) <= {"http://www.w3.org/2000/svg"}, set(urls)
    assert not re.search(r"\b(src|href)\s*=\s*[\"'](?!#)", html), "only in-page links"
    assert "@import" not in html and "url(" not in html


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_data_is_the_bundled_digits_with_real_stroke_groups(tmp_path: Path) -> None:
    import numpy as np

    model = build_mlp(tmp_path)
    data = np.load(model.dataset_path)
    assert set(data.files) == {"X", "labels", "groups"}
    assert data["X"].shape == (model.test_samples, 64) and data["X"].dtype == np.float32
    assert set(np.unique(data["groups"])) == {"heavy", "light"}
    ink = data["X"].sum(axis=1)
    assert ink[data["groups"] == "light"].max() < ink[data["groups"] == "heavy"].min()
    assert model.holdout_accuracy > 0.9
    # the exported graph predicts what scikit-learn predicted (checked in onnxruntime)
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.model_path), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"X": data["X"]})[0]
    assert abs(float((labels == data["labels"]).mean()) - model.holdout_accuracy) < 1e-9
    assert list(stroke_groups(np.array([[0.0] * 64, [1.0] * 64], dtype=np.float32), 10.0)) == ["light", "heavy"]


def test_demo_model_kinds() -> None:
    assert parse_kinds("mlp") == ["mlp"] and parse_kinds("cnn, mlp,cnn") == ["cnn", "mlp"]
    with pytest.raises(InferlabError, match="unknown demo model"):
        parse_kinds("resnet")


def _record(ref: str, variant: str, parent: str | None = None) -> ModelRecord:
    name = ref.partition("@")[0]
    return ModelRecord(
        name=name,
        version=DEMO_VERSION,
        variant=variant,
        ref=ref,
        sha256="ab" * 32,
        size_bytes=2048,
        artifact_uri="nats-obj://artifacts/sha256/ab",
        source_uri="nats-obj://artifacts/sha256/ab",
        parent=parent,
    )


def _registered(ref: str, variant: str, parent: str | None = None) -> ModelRegistered:
    record = _record(ref, variant, parent)
    return ModelRegistered(name=MLP_NAME, version=DEMO_VERSION, variant=variant, sha256=record.sha256, record=record)


def _benchmarked(ref: str, variant: str, p50: float) -> ModelBenchmarked:
    latency = LatencySummary(
        samples=1000,
        p50_ms=p50,
        p90_ms=p50 * 1.1,
        p95_ms=p50 * 1.2,
        p99_ms=p50 * 2,
        mean_ms=p50,
        std_ms=0.1,
        cv=0.1,
        min_ms=p50 / 2,
        max_ms=p50 * 3,
        p50_ci_ms=(p50, p50),
        p99_ci_ms=(p50 * 2, p50 * 2),
        outliers=0,
    )

    def result(batch: int) -> ConfigResult:
        return ConfigResult(
            run_id=f"r{batch}",
            provider="CPUExecutionProvider",
            batch_size=batch,
            intra_op_threads=1,
            concurrency=1,
            latency=latency if batch == 1 else msgspec.structs.replace(latency, p50_ms=9.0),
            throughput_ips=1000.0,
            stable=True,
            windows=3,
            duration_s=1.0,
            load_time_s=0.1,
            peak_memory_bytes=1,
            config_key=f"CPUExecutionProvider|b{batch}|t1|c1",
        )

    return ModelBenchmarked(
        name=MLP_NAME,
        version=DEMO_VERSION,
        variant=variant,
        ref=ref,
        hardware=HardwareFingerprint(id="h", cpu_model="cpu", cpu_cores=2, ort_version="1", provider="CPU"),
        results=[result(8), result(1)],
    )


def _validated(ref: str, variant: str, ready: bool) -> ModelValidated:
    criteria = [CriterionResult(metric="accuracy", op=">=", limit=0.9, measured=0.95, passed=True)]
    if not ready:
        criteria.append(CriterionResult(metric="p99_ms", op="<=", limit=0.001, measured=0.01, passed=False))
    return ModelValidated(
        name=MLP_NAME,
        version=DEMO_VERSION,
        variant=variant,
        ref=ref,
        ready=ready,
        accuracy=0.95,
        report=ValidationReport(criteria=criteria, ready=ready),
    )


def test_tracker_turns_the_chain_into_lines_and_knows_when_it_is_complete() -> None:
    tracker = Tracker([MLP_NAME], DEMO_VERSION, ["fp16", "int8-dynamic"])
    assert tracker.pending() == [f"{REF}: registration"]
    assert tracker.feed(
        ModelRegistered(name=MLP_NAME, version=DEMO_VERSION, sha256="ab" * 32, record=_record(REF, "base"))
    )
    # events about other models or versions are not the demo's
    assert (
        tracker.feed(ModelRegistered(name="other", version="1.0.0", sha256="ab", record=_record("other@1.0.0", "base")))
        == []
    )
    fp16 = f"{REF}+fp16"
    report = ConversionReport(
        profile="fp16",
        source_ref=REF,
        source_sha256="ab",
        size_before_bytes=2048,
        size_after_bytes=1024,
        duration_s=0.5,
        parity=ParityReport(passed=True, input_source="dataset", samples=128),
    )
    [line] = tracker.feed(
        ModelConverted(name=MLP_NAME, version=DEMO_VERSION, variant="fp16", ref=fp16, report=report, profile="fp16")
    )
    assert line.startswith(f"{fp16}  converted (fp16)  (2.0 KiB -> 1.0 KiB; parity passed on 128 dataset samples")
    tracker.feed(
        ModelRegistered(
            name=MLP_NAME, version=DEMO_VERSION, variant="fp16", sha256="cd", record=_record(fp16, "fp16", REF)
        )
    )
    assert f"{MLP_NAME}@{DEMO_VERSION}: conversion int8-dynamic" in tracker.pending()
    [line] = tracker.feed(
        ConversionSkipped(
            name=MLP_NAME, version=DEMO_VERSION, profile="int8-dynamic", reason="not_applicable", message="no MatMul"
        )
    )
    assert "skipped (not_applicable)" in line
    [line] = tracker.feed(_benchmarked(REF, "base", 0.5))
    # the lightest configuration (batch 1) is the one reported, not the last in the sweep
    assert "p50 0.5000 ms, p99 1.0000 ms" in line
    tracker.feed(_validated(REF, "base", True))
    assert tracker.pending() == [f"{fp16}: benchmark"]
    tracker.feed(_benchmarked(fp16, "fp16", 0.4))
    [line] = tracker.feed(_validated(fp16, "fp16", False))
    assert line == f"{fp16}  validated  NOT READY  (accuracy 0.9500; failed: p99_ms)"
    assert tracker.done()
    rows = summary_rows(tracker)
    assert [r[0] for r in rows] == [REF, fp16]
    assert rows[0][3:] == ["0.5000", "1.0000", "0.9500", "READY"]
    assert rows[1][6] == "NOT READY (p99_ms)"
