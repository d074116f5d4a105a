"""silero-vad: voice-activity detectors with recurrent state inputs and (in most builds) a
scalar int64 sample-rate input; one float16 build, one fixed-shape OpenVINO build."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "silero-vad"
FILES = {
    "silero-vad": ("silero_vad.onnx", "Silero VAD v6 (If on sample rate), state [2,B,128], scalar sr"),
    "silero-vad-op15": ("silero_vad_16k_op15.onnx", "Silero VAD 16 kHz, opset 15, scalar sr"),
    "silero-vad-seq": ("silero_vad_16k_sequence.onnx", "Silero VAD 16 kHz over a sequence of 576-sample chunks"),
    "silero-vad-half": ("silero_vad_half.onnx", "Silero VAD with float16 weights inside"),
    "silero-vad-op18": ("silero_vad_op18_ifless.onnx", "Silero VAD opset 18 without If, scalar sr"),
    "silero-vad-ov16k": ("silero_vad_openvino_16k.onnx", "Silero VAD fixed [1,576] OpenVINO build"),
}


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("silero_vad", PACKAGE) / "data"
    return [
        CorpusModel(name, copy_model(root / file, out, name), PACKAGE, text, traits=("recurrent-state",))
        for name, (file, text) in FILES.items()
    ]
