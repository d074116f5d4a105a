"""The converter: faster variants of every model (ONNX Runtime graph optimisation, float16,
int8 dynamic and static, opset conversion, TensorRT engines), each proven equivalent to its
source by a parity check before it is registered (``python -m services.converter``)."""
