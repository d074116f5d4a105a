"""The validator end to end: registry and validator in-process against a real nats-server,
real skl2onnx models and scikit-learn datasets, the CLI as a real child process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from services.registry.service import RegistryService
from services.validator.jobs import Job
from services.validator.service import ValidatorService
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import ValidationFailedAlert
from shared.contracts.base import new_id
from shared.contracts.validation import ModelValidated, Requirement, ValidateModel, ValidationProgress
from shared.errors import Rejected
from shared.sdk import Client
from tests.support import validator_models as vm
from tests.support.cli import cli as run_cli
from tests.support.facts import benchmarked
from tests.support.services import running


@pytest.fixture
def vsettings(settings: Settings) -> Settings:
    # Small budgets: the checks are the same, the test set stays fast.
    return settings.with_overrides(
        validator_attack_queries=150,
        validator_attack_samples=40,
        validator_attack_time_s=5.0,
        validator_bootstrap=300,
        validator_noise_samples=400,
    )


@pytest.fixture
async def stack(vsettings: Settings) -> AsyncIterator[ValidatorService]:
    async with running(vsettings, RegistryService), running(vsettings, ValidatorService) as validator:
        yield validator  # type: ignore[misc]


@pytest.fixture
async def vclient(vsettings: Settings) -> AsyncIterator[Client]:
    c = await Client.connect(vsettings)
    yield c
    await c.close()


async def _messages(client: Client, subject: str, idle: float = 0.6) -> list:
    return [e.message async for e in client.events(subject, replay=True, idle_timeout=idle)]


async def _wait_for(client: Client, subject: str, predicate, timeout: float = 60.0):
    async def scan():
        async for event in client.events(subject, replay=True):
            if event.message is not None and predicate(event.message):
                return event.message
        return None

    return await asyncio.wait_for(scan(), timeout)


async def test_validate_a_registered_model_with_progress_report_and_registry_signals(
    stack, vclient: Client, tmp_path: Path
) -> None:
    model = vm.sk_classifier(tmp_path / "digits.onnx")
    data = vm.sk_dataset(tmp_path / "digits.npz", groups=np.arange(719) % 2)
    await vclient.register(model, name="digits", version="1.0.0", task="classification", dataset=data)
    progress: list[ValidationProgress] = []
    event = await vclient.validate(
        "digits@1.0.0", requirements=["accuracy>=0.9", "macro_f1>=0.9"], on_progress=progress.append, timeout=120
    )
    assert isinstance(event, ModelValidated)
    assert event.ready and event.ref == "digits@1.0.0"
    assert 0.93 < event.accuracy < 0.99
    report = event.report
    status = {c.name: c.status for c in report.checks}
    assert status == {
        "structural": "passed",
        "parity": "skipped",
        "metrics": "passed",
        "fairness": "passed",
        "robustness": "passed",
        "adversarial": "passed",
    }
    assert report.samples == 719 and report.task == "classification" and report.trigger == "model.validate"
    low, high = report.intervals["accuracy"]
    assert low < event.accuracy < high
    metrics_figures = next(c for c in report.checks if c.name == "metrics").figures
    assert len(metrics_figures["confusion_matrix"]["rows_true_cols_predicted"]) == 10
    assert metrics_figures["fold_spread"]["accuracy"]["k"] == 5
    assert {c.metric: c.source for c in report.criteria} == {
        "accuracy": "request",
        "macro_f1": "request",
        "structural": "default",
        "fairness": "default",
    }
    assert progress[0].stage == "inference" and progress[-1].stage == "readiness"
    assert progress[-1].step == progress[-1].steps

    stored = await _messages(vclient, subjects.validated("digits"))
    assert [m.event_id for m in stored] == [event.event_id]
    assert event.event_id.startswith("validated-")
    assert await _messages(vclient, "alerts.validation.>") == []  # ready: no alert

    latest = await vclient.report("digits@1.0.0")
    assert isinstance(latest, ModelValidated) and latest.event_id == event.event_id

    # The registry keeps the verdict as a signal (find ranks by it).
    for _ in range(50):
        view = await vclient.get("digits@1.0.0")
        if view.signals and view.signals.accuracy is not None:
            break
        await asyncio.sleep(0.1)
    assert view.signals.accuracy == pytest.approx(event.accuracy) and view.signals.ready is True


@pytest.mark.slow
async def test_damaged_variant_fails_parity_and_mcnemar_with_an_alert(stack, vclient: Client, tmp_path: Path) -> None:
    base = vm.sk_classifier(tmp_path / "digits.onnx")
    damaged = vm.damaged_variant(base, tmp_path / "damaged.onnx")
    await vclient.register(
        base,
        name="digits",
        version="1.0.0",
        dataset=vm.sk_dataset(tmp_path / "d.npz"),
        metadata={"requirements": ["accuracy>=0.9"]},
    )
    await vclient.register(damaged, name="digits", version="1.0.0", variant="damaged", parent="digits@1.0.0")
    # the variant has no dataset of its own: the parent's is used
    event = await vclient.validate("digits@1.0.0+damaged", checks=["structural", "parity", "metrics"])
    assert not event.ready
    parity = next(c for c in event.report.checks if c.name == "parity")
    assert parity.status == "failed"
    mcnemar = parity.figures["mcnemar"]
    assert mcnemar["p_value"] < 1e-6 and mcnemar["b_parent_only"] > 5 * mcnemar["c_variant_only"]
    assert event.report.metrics["accuracy_drop"] > 10
    assert event.report.parent_ref == "digits@1.0.0"
    assert any("McNemar" in r for r in event.report.recommendations)
    alerts = await _messages(vclient, subjects.alert("validation", "failed", "digits"))
    assert len(alerts) == 1
    alert = alerts[0]
    assert isinstance(alert, ValidationFailedAlert)
    assert alert.ref == "digits@1.0.0+damaged" and alert.validated_event_id == event.event_id
    # the variant states no requirements of its own: it is held to its parent's
    assert [(c.metric, c.source) for c in alert.failed] == [("accuracy", "parent-metadata"), ("parity", "default")]
    assert "parity check failed" in alert.summary


@pytest.mark.slow
async def test_benchmarked_event_triggers_validation_and_latency_requirement_fails(
    stack, vclient: Client, tmp_path: Path
) -> None:
    model = vm.sk_classifier(tmp_path / "iris.onnx", "iris")
    await vclient.register(
        model,
        name="iris",
        version="2.0.0",
        dataset=vm.sk_dataset(tmp_path / "iris.npz", "iris"),
        metadata={"requirements": ["p99_ms<=1.5", "accuracy>=0.8"]},
    )
    bench = benchmarked("iris@2.0.0", p99_ms=2.5)
    await vclient.bus.publish(subjects.benchmarked("iris"), bench)
    event = await _wait_for(vclient, subjects.validated("iris"), lambda m: m.event_id == f"validated-{bench.event_id}")
    assert not event.ready and event.report.trigger == "model.benchmarked"
    by = {c.metric: c for c in event.report.criteria}
    assert by["p99_ms"].passed is False and by["p99_ms"].measured == 2.5 and by["p99_ms"].limit == 1.5
    assert by["p99_ms"].source == "metadata" and by["accuracy"].passed is True
    assert any("p99_ms 2.500 ms is 67% over the 1.500 ms limit" in r for r in event.report.recommendations)
    alert = await _wait_for(vclient, subjects.alert("validation", "failed", "iris"), lambda m: True)
    assert [c.metric for c in alert.failed] == ["p99_ms"] and alert.variant == "base"


@pytest.mark.slow
async def test_without_a_dataset_only_structural_runs(stack, vclient: Client, tmp_path: Path) -> None:
    await vclient.register(vm.token_classifier(tmp_path / "t.onnx"), name="topics", version="1.0.0")
    bench = benchmarked("topics@1.0.0", p99_ms=0.2)
    await vclient.bus.publish(subjects.benchmarked("topics"), bench)
    event = await _wait_for(vclient, subjects.validated("topics"), lambda m: True)
    status = {c.name: c.status for c in event.report.checks}
    assert status["structural"] == "passed" and all(s == "skipped" for k, s in status.items() if k != "structural")
    # structure and performance only: a verdict without accuracy evidence is never READY
    assert not event.ready and event.verdict == "not_validated_for_accuracy"
    assert event.accuracy is None and event.report.metrics["p99_ms"] == 0.2
    assert await _messages(vclient, subjects.alert("validation", "failed", "topics")) == []  # not an alert
    assert event.report.task == "text-classification"


@pytest.mark.slow
async def test_errors_are_precise_events_and_the_service_keeps_running(
    stack, vsettings: Settings, vclient: Client, tmp_path: Path
) -> None:
    await vclient.register(
        vm.sk_classifier(tmp_path / "wine.onnx", "wine"),
        name="wine",
        version="1.0.0",
        dataset=vm.sk_dataset(tmp_path / "wine.npz", "wine"),
    )
    await vclient.register(vm.unloadable_model(tmp_path / "u.onnx"), name="mystery", version="1.0.0")
    bad_rank = tmp_path / "bad.npz"
    np.savez(bad_rank, X=np.zeros((10, 13, 2), dtype=np.float32), labels=np.zeros(10, dtype=np.int64))
    outside = tmp_path / "outside.npz"
    np.savez(outside, X=np.zeros((5, 13), dtype=np.float32), labels=np.zeros(5, dtype=np.int64))

    async def reason_of(**kwargs) -> str:
        with pytest.raises(Rejected) as info:
            await vclient.validate(**kwargs, timeout=60)
        return info.value.code

    assert await reason_of(ref="ghost@1.0.0") == "unknown_model"
    assert await reason_of(ref="wine@1.0.0", dataset="dataset://nope") == "unknown_dataset"
    assert await reason_of(ref="wine@1.0.0", dataset=bad_rank) == "invalid_dataset"
    assert await reason_of(ref="wine@1.0.0", dataset=f"file://{outside}") == "import_not_allowed"
    assert await reason_of(ref="mystery@1.0.0") == "model_load_failed"
    assert await reason_of(ref="wine@1.0.0", options={"attack_epsilon": "big"}) == "invalid_options"
    assert await reason_of(ref="wine@1.0.0", options={"no_such_option": 1}) == "invalid_options"
    # a hand-written command (no SDK-side parsing) naming a metric that nothing measures
    reply = await vclient.send_and_wait(
        subjects.VALIDATE,
        ValidateModel(ref="wine@1.0.0", requirements=[Requirement(metric="bogus", op=">=", value=1)]),
        timeout=60,
    )
    assert reply["type"] == "model.validation_failed" and reply["reason"] == "invalid_requirement"
    policies = vsettings.home_path / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "wine.json").write_text("{broken")
    assert await reason_of(ref="wine@1.0.0") == "invalid_policy"
    (policies / "wine.json").unlink()

    errored = await _messages(vclient, "model.validation_failed.>")
    assert len(errored) == 9 and all(e.message for e in errored)
    assert {e.name for e in errored} == {"ghost", "wine", "mystery"}
    event = await vclient.validate("wine@1.0.0", checks=["structural", "metrics"])
    assert event.ready and event.accuracy > 0.85  # still running, still right
    assert all(w.dead_lettered == 0 for w in stack.workers)


@pytest.mark.slow
async def test_a_redelivered_trigger_publishes_each_outcome_once(stack, vclient: Client, tmp_path: Path) -> None:
    await vclient.register(
        vm.sk_classifier(tmp_path / "bc.onnx", "breast_cancer"),
        name="cancer",
        version="1.0.0",
        dataset=vm.fairness_dataset(tmp_path / "bc.npz", disadvantaged=True),
    )
    job = Job(
        ref="cancer@1.0.0",
        trigger="model.validate",
        event_id="trigger-1",
        correlation_id="trigger-1",
        requirements=[Requirement(metric="accuracy", op=">=", value=0.99)],
        checks=["structural", "metrics", "fairness"],
    )
    first = await stack.handle(job)
    second = await stack.handle(job)  # as if the trigger were redelivered after a crash
    assert first.event_id == second.event_id == "validated-trigger-1"
    assert first.report.metrics == second.report.metrics  # seeded: the same figures
    assert len(await _messages(vclient, subjects.validated("cancer"))) == 1
    alerts = await _messages(vclient, subjects.alert("validation", "failed", "cancer"))
    assert len(alerts) == 1
    # the disadvantaged group is found and named
    assert {c.metric for c in alerts[0].failed} == {"accuracy", "fairness"}
    fairness = next(c for c in first.report.checks if c.name == "fairness")
    assert fairness.status == "failed" and fairness.figures["worst_group"] == "b"
    assert any("group 'b' is disadvantaged" in r for r in first.report.recommendations)


@pytest.mark.slow
async def test_named_datasets_and_policy_precedence(
    stack, vsettings: Settings, vclient: Client, tmp_path: Path
) -> None:
    policies = vsettings.home_path / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "iris.toml").write_text(
        'requirements = ["accuracy>=0.8", "macro_f1>=0.5"]\nchecks = ["structural", "metrics"]\n'
    )
    (policies / "default.json").write_text(json.dumps({"requirements": ["top1_agreement>=0.99", "macro_f1>=0.99"]}))
    await vclient.register(
        vm.sk_classifier(tmp_path / "iris.onnx", "iris"),
        name="iris",
        version="1.0.0",
        metadata={"requirements": {"accuracy": ">=0.85"}},
    )
    uri = await vclient.put_dataset(vm.sk_dataset(tmp_path / "iris.npz", "iris"), "iris-holdout")
    assert uri == "dataset://iris-holdout"
    event = await vclient.validate("iris@1.0.0", dataset=uri, requirements=["accuracy>=0.9"])
    assert [c.name for c in event.report.checks] == ["structural", "metrics"]  # the policy's checks
    sources = {(c.metric, c.limit, c.source) for c in event.report.criteria}
    assert sources == {
        ("accuracy", 0.9, "request"),
        ("macro_f1", 0.5, "policy"),
        ("structural", 1.0, "default"),
    }  # the default policy's top1_agreement does not apply to a model without a parent
    assert event.ready
    assert event.report.dataset_uri == "dataset://iris-holdout"
    # dataset://<model> names the dataset registered with a model
    await vclient.register(
        vm.sk_classifier(tmp_path / "iris2.onnx", "iris"),
        name="iris-copy",
        version="1.0.0",
        dataset=vm.sk_dataset(tmp_path / "iris2.npz", "iris"),
    )
    other = await vclient.validate("iris@1.0.0", dataset="dataset://iris-copy", checks=["metrics"])
    assert other.accuracy == pytest.approx(event.accuracy)


@pytest.mark.slow
async def test_cli_validate_and_report(stack, vsettings: Settings, vclient: Client, tmp_path: Path) -> None:
    model = vm.sk_classifier(tmp_path / "digits.onnx")
    await vclient.register(model, name="digits", version="1.0.0")
    data = vm.sk_dataset(tmp_path / "digits.npz")

    async def cli(*args: str) -> tuple[int, str, str]:
        return await run_cli(vsettings, *args, timeout=120.0)

    rc, out, err = await cli(
        "validate",
        "digits@1.0.0",
        "--dataset",
        str(data),
        "--require",
        "accuracy>=0.9",
        "--check",
        "structural",
        "--check",
        "metrics",
        "--wait",
    )
    assert rc == 0, err
    assert "digits@1.0.0  READY" in out and "accuracy" in out and "✓" in out
    rc, out, err = await cli(
        "validate",
        "digits@1.0.0",
        "--dataset",
        str(data),
        "--require",
        "accuracy>=0.99",
        "--check",
        "metrics",
        "--wait",
        "--json",
    )
    assert rc == 1
    doc = json.loads(out)
    assert doc["ready"] is False and doc["report"]["criteria"][0]["metric"] == "accuracy"
    rc, out, err = await cli("report", "digits@1.0.0")
    assert rc == 0 and "NOT READY" in out and "readiness" in out and "recommendations" in out
    rc, out, err = await cli("validate", "digits@1.0.0", "--require", "speed>=1", "--wait")
    assert rc == 1 and "unknown metric 'speed'" in err and "Traceback" not in err
    rc, out, err = await cli("report", "nothing@1.0.0")
    assert rc == 1 and "error:" in err


@pytest.mark.fault
async def test_a_validator_killed_mid_validation_is_replaced_and_reports_once(
    vsettings: Settings, vclient: Client, tmp_path: Path
) -> None:
    from tests.support.services import ServiceProcess

    settings = vsettings.with_overrides(validator_attack_time_s=4.0, validator_attack_queries=100_000)
    async with running(settings, RegistryService):
        await vclient.register(
            vm.sk_classifier(tmp_path / "digits.onnx"),
            name="digits",
            version="1.0.0",
            dataset=vm.sk_dataset(tmp_path / "d.npz"),
        )
        first = ServiceProcess("validator", settings, tmp_path / "logs").start()
        inbox = vclient.bus.nc.new_inbox()
        stages: asyncio.Queue[str] = asyncio.Queue()

        async def on_msg(msg) -> None:
            await stages.put(json.loads(msg.data).get("stage", "outcome"))

        sub = await vclient.bus.nc.subscribe(inbox, cb=on_msg)
        command = ValidateModel(event_id=new_id(), ref="digits@1.0.0", reply_to=inbox)
        await vclient.send(subjects.VALIDATE, command)
        try:
            while await asyncio.wait_for(stages.get(), 60) != "adversarial":
                pass
            first.kill()  # mid-attack, before anything was published
            second = ServiceProcess("validator", settings, tmp_path / "logs").start()
            try:
                event = await _wait_for(vclient, subjects.validated("digits"), lambda m: True, timeout=90)
                assert event.event_id == f"validated-{command.event_id}" and event.ready
                await asyncio.sleep(1.0)
                assert len(await _messages(vclient, subjects.validated("digits"))) == 1
            finally:
                second.stop()
        finally:
            await sub.unsubscribe()
            first.stop()


@pytest.mark.slow
async def test_models_without_a_batch_are_fed_as_resolved_and_loose_declarations_only_warn(
    stack, vclient: Client, tmp_path: Path
) -> None:
    """A VAD-like model (state [2, batch, 128], scalar sample rate) and a classifier fixed at
    batch 1 whose output declaration is wrong: both READY, the wrong declaration a warning
    with its figures (it used to be a false NOT READY)."""
    from tests.support.input_models import fixed_batch_one, vad

    for name, path in (("vad", vad(tmp_path)), ("fixed", fixed_batch_one(tmp_path, declared_classes=7))):
        await vclient.register(path, name=name, version="1.0.0")
        await vclient.bus.publish(subjects.benchmarked(name), benchmarked(f"{name}@1.0.0", p99_ms=0.2))
        event = await _wait_for(vclient, subjects.validated(name), lambda m: True)
        structural = next(c for c in event.report.checks if c.name == "structural")
        assert structural.status == "passed", structural.summary
        assert event.verdict == "not_validated_for_accuracy", event.report.recommendations  # no dataset
        if name == "fixed":
            assert structural.figures["samples"] == 16  # one sample per call, 16 calls
            assert any("dimension 1 is 5, declared 7" in w for w in structural.figures["warnings"])
            assert "1 warnings" in structural.summary
        else:
            assert structural.figures["samples"] == 1 and not structural.figures["warnings"]
    # a variant of the VAD: parity runs one call per seeded sample and compares them all
    await vclient.register(vad(tmp_path), name="vad", version="1.0.0", variant="copy", parent="vad@1.0.0")
    await vclient.bus.publish(subjects.benchmarked("vad"), benchmarked("vad@1.0.0+copy", p99_ms=0.2))
    event = await _wait_for(vclient, subjects.validated("vad"), lambda m: m.variant == "copy")
    parity = next(c for c in event.report.checks if c.name == "parity")
    assert parity.status == "passed" and "(16 samples)" in parity.summary, parity.summary


@pytest.mark.slow
async def test_a_model_that_needs_an_input_spec_is_an_outcome_not_an_alert(
    stack, vclient: Client, tmp_path: Path
) -> None:
    from tests.support.input_models import vad

    await vclient.register(vad(tmp_path, pad=5000), name="stuck", version="1.0.0")
    await vclient.bus.publish(subjects.benchmarked("stuck"), benchmarked("stuck@1.0.0", p99_ms=0.2))
    event = await _wait_for(vclient, subjects.validated("stuck"), lambda m: True)
    structural = next(c for c in event.report.checks if c.name == "structural")
    assert structural.status == "skipped" and structural.summary.startswith("needs_input_spec: ")
    assert "--shape input:NxN" in structural.summary
    assert not event.ready  # nothing has shown that it runs
    assert not await _messages(vclient, subjects.alert("validation", "failed", "stuck"))
