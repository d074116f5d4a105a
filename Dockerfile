# syntax=docker/dockerfile:1
# One image for the four services (registry, converter, benchmarker, validator); compose.yaml
# picks the module to run with `python -m services.<name>`.
#
#   docker build -t inferlab:0.1.0 .                      # CPU image (target runtime)
#   docker build --target gpu -t inferlab-gpu:0.1.0 .     # + onnxruntime-gpu, TensorRT (see docs/operations.md)
#
# The base is pinned to a Python minor version and a Debian release. Pin it by digest as well
# in your registry mirror (`docker buildx imagetools inspect python:3.11-slim-bookworm`); the
# digest could not be resolved where this file was written (no access to the image registry).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: resolve and install the pinned dependencies into a virtual environment ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/inferlab
WORKDIR /src
# Dependencies first, so that editing the code does not invalidate this layer. The package
# list is the base dependencies of pyproject.toml pinned by constraints.txt: no torch, no
# scikit-learn, no test tools in the image.
COPY pyproject.toml constraints.txt README.md ./
COPY shared ./shared
COPY services ./services
RUN /opt/inferlab/bin/pip install --no-compile -c constraints.txt . \
 && /opt/inferlab/bin/python -c "import services.registry, services.converter, services.benchmarker, services.validator"

# --- runtime: the venv on a clean base, run as an unprivileged user --------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="inferlab" \
      org.opencontainers.image.description="Event-driven model operations for ONNX models" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 inferlab \
 && useradd --system --uid 10001 --gid inferlab --home-dir /var/lib/inferlab --shell /usr/sbin/nologin inferlab \
 && mkdir -p /var/lib/inferlab/imports /var/lib/inferlab/policies \
 && chown -R inferlab:inferlab /var/lib/inferlab
COPY --from=build /opt/inferlab /opt/inferlab
ENV PATH=/opt/inferlab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INFERLAB_HOME=/var/lib/inferlab
USER inferlab
WORKDIR /var/lib/inferlab
# compose.yaml sets the command of each service; this default runs the registry.
CMD ["python", "-m", "services.registry"]

# --- gpu: CUDA and TensorRT for the converter and benchmarker (profile "gpu" in compose) -----
# NOT built or run where this was written (no Docker engine, no GPU): the versions below are
# the newest on PyPI at the time that fit each other by their documentation; check them on a
# GPU host. The CUDA and cuDNN libraries come as NVIDIA's pip wheels; the host needs the
# NVIDIA driver and the NVIDIA Container Toolkit. TensorRT engines (the converter's trt-*
# profiles) also need PyTorch with CUDA for the parity check's device buffers:
# --build-arg GPU_EXTRA_PACKAGES=torch.
FROM runtime AS gpu
ARG ORT_GPU_VERSION=1.31.1
ARG TENSORRT_VERSION=10.16.1.11
ARG CUDA_PYTHON_VERSION=12.9.10
ARG GPU_EXTRA_PACKAGES=""
USER root
RUN /opt/inferlab/bin/pip uninstall -y onnxruntime \
 && /opt/inferlab/bin/pip install --no-cache-dir --no-compile \
      "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}" \
      "tensorrt==${TENSORRT_VERSION}" \
      "cuda-python==${CUDA_PYTHON_VERSION}" \
      ${GPU_EXTRA_PACKAGES} \
 && find /opt/inferlab/lib -path '*site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u \
      > /etc/ld.so.conf.d/inferlab-nvidia.conf \
 && find /opt/inferlab/lib -path '*site-packages/tensorrt_libs*' -name 'lib*.so*' -printf '%h\n' | sort -u \
      >> /etc/ld.so.conf.d/inferlab-nvidia.conf \
 && ldconfig
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER inferlab
