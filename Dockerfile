# syntax=docker/dockerfile:1
# One image per role, from one file:
#   runtime  - stream worker, recall service, topic creation (project + `cpu` extra, no torch)
#   trainer  - runtime + torch (CPU wheel) and the `train` extra, to train and export bundles
# Every job is configured by the settings' environment variables only (README, "Settings").

ARG PYTHON_IMAGE=python:3.11-slim
ARG TORCH_VERSION=2.13.0

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MINDSTREAM_DATA_DIR=/var/lib/mindstream \
    MINDSTREAM_BUNDLE=/bundles/current
RUN useradd --system --create-home --uid 10001 mindstream \
 && mkdir -p /var/lib/mindstream /bundles \
 && chown mindstream:mindstream /var/lib/mindstream /bundles
WORKDIR /app
# Dependencies first, from pyproject.toml alone, so source edits do not reinstall them.
COPY pyproject.toml ./
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["cpu"] + extras["rocksdb"]))
PY
RUN pip install -r /tmp/requirements.txt

FROM base AS runtime
COPY README.md ./
COPY mindstream/ mindstream/
COPY infra/ infra/
COPY model_export/ model_export/
COPY stream/ stream/
COPY recall/ recall/
RUN pip install --no-deps . && rm -rf build *.egg-info
USER mindstream
WORKDIR /home/mindstream
CMD ["mindstream", "--help"]

FROM runtime AS trainer
ARG TORCH_VERSION
USER root
# The CPU wheel from PyTorch's own index: PyPI's default build pulls in CUDA (several GB).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
 && python - <<'PY' > /tmp/train-requirements.txt
import tomllib
project = tomllib.load(open("/app/pyproject.toml", "rb"))["project"]
print("\n".join(project["optional-dependencies"]["train"]))
PY
RUN pip install -r /tmp/train-requirements.txt
USER mindstream
CMD ["mindstream", "train"]
