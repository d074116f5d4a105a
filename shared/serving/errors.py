"""Errors of the inference server, each with the HTTP status it answers."""

from __future__ import annotations

from shared.errors import InferlabError


class ServingError(InferlabError):
    """Base of the errors a request can meet; ``status`` is the HTTP status answered."""

    code = "serving_error"
    status = 500


class BadRequest(ServingError):
    """The request body does not fit the model's inputs (names, dtypes, shapes, format)."""

    code = "bad_request"
    status = 400


class NotAcceptable(ServingError):
    """The response format asked for cannot hold the model's outputs."""

    code = "not_acceptable"
    status = 406


class PayloadTooLarge(ServingError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(ServingError):
    code = "unsupported_media_type"
    status = 415


class NotReady(ServingError):
    """No model is loaded and warmed yet (or the server is shutting down)."""

    code = "not_ready"
    status = 503


class InferenceFailed(ServingError):
    """ONNX Runtime refused or failed the run (a shape it cannot take, a kernel error)."""

    code = "inference_failed"
    status = 422
