# prettier_bids: PRETTIER super-resolution of thick-slice brain MRI as a BIDS-App.
#
#   bash docker/build.sh                      # offline: local debootstrap base + host wheelhouse
#   bash docker/build.sh --base python:3.11-slim-bookworm
#   docker run --rm -v $PWD/data/test_bids:/bids:ro -v /tmp/out:/out prettier /bids /out participant
#
# The build uses no network: every Python package comes from the wheelhouse .whl/ in the
# build context (docker/make_wheelhouse.sh, run by docker/build.sh on the host).
# Build arguments:
#   BASE_IMAGE     any Debian bookworm image with CPython 3.11 and python3 -m venv
#                  (default: the public python:3.11-slim-bookworm; our CI uses
#                  prettier-base:bookworm-py311 from docker/make_base.sh)
#   TORCH_VARIANT  cpu (default), cuda (PyPI's CUDA build: docker/build.sh --gpu) or a PyTorch-index
#                  CUDA variant such as cu126; must match the torch wheel in the wheelhouse
#                  (docker/build.sh makes both)
#   VERSION, VCS_REF, BUILD_DATE   OCI labels (docker/build.sh fills them in)
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- deps: the virtualenv
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VARIANT=cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_INDEX=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# Dependencies (one cached layer per wheelhouse). pip runs from its wheel and is not installed.
# Trimmed: test suites, torch's C++ headers, test binaries and protoc (~250 MB, never imported).
COPY .whl/ /wheels/
RUN pip_whl=$(echo /wheels/build/pip-*.whl) \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/venv/bin/python "$pip_whl/pip" install --no-cache-dir --no-index --find-links /wheels \
        -r /wheels/requirements.txt \
 && /opt/venv/bin/python "$pip_whl/pip" check \
 && /opt/venv/bin/python -c "import sys, torch; v = '${TORCH_VARIANT}'; \
        ok = (torch.version.cuda is None) if v == 'cpu' else (torch.version.cuda is not None) if v == 'cuda' else torch.__version__.endswith('+' + v); \
        sys.exit(0 if ok else 'torch %s does not match TORCH_VARIANT=%s' % (torch.__version__, v))" \
 && sp=/opt/venv/lib/python3.11/site-packages \
 && find "$sp" -type d -name tests -prune -exec rm -rf {} + \
 && rm -rf "$sp/torch/test" "$sp/torch/include" "$sp/torch/share/cmake" \
 && find "$sp/torch/bin" -type f ! -name torch_shm_manager -delete

# ---------------------------------------------------------------- pkg: prettier_bids itself
# Installed under /pkg (a small layer of its own: a code change does not re-copy the 1 GB venv).
FROM deps AS pkg
COPY pyproject.toml setup.py setup.cfg README.md /src/
COPY prettier_bids/ /src/prettier_bids/
RUN pip_whl=$(echo /wheels/build/pip-*.whl) \
 && /opt/venv/bin/python "$pip_whl/pip" install --no-cache-dir --no-index --find-links /wheels/build \
        --no-deps --prefix /pkg /src \
 && cp -a /pkg/. /opt/venv/ \
 && /opt/venv/bin/python "$pip_whl/pip" check \
 && /opt/venv/bin/prettier-bids --version

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
ARG VERSION=unknown
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="prettier_bids" \
      org.opencontainers.image.description="PRETTIER super-resolution of thick-slice clinical brain MRI (2D FLAIR/T1w) to ~1 mm isotropic, as a BIDS-App" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="prettier_bids" \
      prettier-bids.torch-variant="${TORCH_VARIANT}"

# Non-root user. HOME is world-writable so that `docker run -u $(id -u):$(id -g)` (any uid)
# still has a usable home; matplotlib/nipype caches go to /tmp, which Apptainer binds.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash prettier \
 && chmod 0777 /home/prettier \
 && mkdir -p /bids /out /work \
 && chmod 0777 /out /work
COPY --from=deps /opt/venv /opt/venv
COPY --from=pkg /pkg/ /opt/venv/

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/prettier \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    NIPYPE_NO_ET=1 \
    PRETTIER_BIDS_CONTAINER_TYPE=docker \
    PRETTIER_BIDS_CONTAINER_TAG="prettier:${VERSION}" \
    PRETTIER_TORCH_VARIANT="${TORCH_VARIANT}"

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["prettier-bids"]
CMD ["--help"]
