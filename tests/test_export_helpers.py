"""``Client.register_sklearn`` / ``Client.register_torch`` against the real registry: the user's
estimator or module is exported (skl2onnx, torch.onnx), registered, and its record names the
exporter and its version; the exported graph answers like the original in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from services.registry.service import RegistryService
from shared.config import Settings
from shared.exporters import export_sklearn, export_torch
from shared.sdk import Client
from tests.support.services import running


async def test_register_sklearn_records_the_exporter(settings: Settings, client: Client, tmp_path: Path) -> None:
    import skl2onnx
    import sklearn

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    async with running(settings, RegistryService):
        record = await client.register_sklearn(
            model, x[:5], name="iris", version="1.0.0", metadata={"owner": "ml"}, task="classification"
        )
    assert not isinstance(record, str)
    assert record.metadata == {
        "exporter": "skl2onnx",
        "exporter_version": skl2onnx.__version__,
        "source_framework": "scikit-learn",
        "source_framework_version": sklearn.__version__,
        "owner": "ml",
    }
    assert all(o.dtype != "unknown" for o in record.outputs)  # tensors, not a sequence of maps

    exported = export_sklearn(model, x[:5], tmp_path / "iris.onnx")
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    labels = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    assert (labels == model.predict(x)).mean() > 0.98


async def test_register_torch_records_the_exporter(settings: Settings, client: Client, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    example = torch.zeros(2, 4)
    async with running(settings, RegistryService):
        record = await client.register_torch(net, example, name="tiny", version="1.0.0")
    assert not isinstance(record, str)
    assert record.metadata["exporter"] == "torch.onnx"
    assert record.metadata["exporter_version"] == torch.__version__
    assert record.inputs[0].name == "input"

    exported = export_torch(net, example, tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)  # another batch size
    got = session.run(None, {"input": batch})[0]
    want = net(torch.from_numpy(batch)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
