# soilcarbon-mrv: an image that runs `mrv` (the demo out of the box, or as a scheduled Prefect worker).
#
#   docker build --build-arg MRV_SOURCE_REVISION="$(git rev-parse HEAD)" -t soilcarbon-mrv .
#   docker run --rm soilcarbon-mrv run configs/demo.yaml
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/out:/data" soilcarbon-mrv run configs/demo.yaml
#
# Layers, so a code edit rebuilds in seconds: the pinned third-party dependencies are installed from
# pyproject.toml + constraints.txt alone (stage `deps`); the package is built on top of them into its own
# prefix (stage `project`) and copied into the runtime venv as a small last layer. The runtime stage has no
# compilers, git or pip cache. Builds with the classic builder and with BuildKit (no heredocs or mounts).
#
# Build arguments:
#   BASE_IMAGE           python:3.11-slim-bookworm, or a stand-in built by scripts/docker-stand-in-base.sh
#   MRV_SOURCE_REVISION  source revision recorded in manifests (the image has no .git); e.g. git rev-parse HEAD
#   MRV_EXTRAS           optional dependency groups of pyproject.toml to install (default: postgres)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL   package index for the build stages (default: pip's own)
#   EXTRA_CA_CERT_PEM    PEM text of a CA the build stages' pip must trust (TLS-inspecting proxies); it is used
#                        in the build stages only and never reaches the runtime image
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1

# ---------------------------------------------------------------------------------------------------------
# Third-party dependencies only: invalidated by pyproject.toml / constraints.txt, never by a code edit.
FROM base AS deps
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG EXTRA_CA_CERT_PEM
ARG MRV_EXTRAS=postgres
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /build
RUN python3 -m venv /opt/venv \
    && if [ -n "$EXTRA_CA_CERT_PEM" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /build/ca.pem \
        && printf '%s\n' "$EXTRA_CA_CERT_PEM" >> /build/ca.pem; \
    fi
COPY pyproject.toml constraints.txt ./
# requirements.txt = [project] dependencies + the chosen optional groups, read from pyproject.toml.
# The third-party test suites (`tests` directories: pandas, xarray, scipy, numpy, ...; about 140 MB with
# their bytecode) are removed; nothing imports them at run time. Bytecode is kept: a container cannot
# write it, so without it every start compiles Prefect, pandas, etc. again (importing the run's modules
# took 17-20 s with it, 46-51 s without, on 2 cores at load 10).
RUN if [ -s /build/ca.pem ]; then export PIP_CERT=/build/ca.pem; fi \
    && python3 -c 'import sys, tomllib; \
p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
groups = [g for g in sys.argv[1].split(",") if g]; \
print("\n".join(p["dependencies"] + [r for g in groups for r in p["optional-dependencies"][g]]))' \
        "$MRV_EXTRAS" > requirements.txt \
    && /opt/venv/bin/pip install --quiet -c constraints.txt -r requirements.txt \
    && /opt/venv/bin/pip check \
    && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------------------
# The package itself, installed without dependencies into its own prefix (merged into /opt/venv below).
FROM deps AS project
COPY README.md ./
COPY mrv ./mrv
COPY flows ./flows
RUN if [ -s /build/ca.pem ]; then export PIP_CERT=/build/ca.pem; fi \
    && /opt/venv/bin/pip install --quiet --no-deps --prefix /opt/project .

# ---------------------------------------------------------------------------------------------------------
FROM base AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    PREFECT_HOME=/opt/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MRV_MODEL_REGISTRY=/data/models
# The model registry (mrv.modeling.registry) lives on the data volume: the installed package is read-only.
# Runtime user 1000 by default; any other uid works too (docker run --user "$(id -u):$(id -g)"), so /data
# (outputs) and PREFECT_HOME are writable by everyone, with the sticky bit as on /tmp. Caches go to /tmp:
# the venv is read-only and an arbitrary uid has no home (numba's cache=True fails without NUMBA_CACHE_DIR).
RUN useradd --create-home --uid 1000 mrv \
    && mkdir -p /data /opt/prefect \
    && chmod 1777 /data /opt/prefect
COPY --from=deps /opt/venv /opt/venv
# Prefect's SQLite database, migrated at build time: without it every fresh container migrates it on the
# first flow run. Files stay writable for any uid.
RUN prefect server database upgrade -y >/dev/null \
    && chmod -R a+rwX /opt/prefect
WORKDIR /opt/mrv
COPY configs ./configs
COPY sample_data ./sample_data
# configs/demo.yaml writes to ../out/demo, i.e. /data/demo.
RUN ln -s /data /opt/mrv/out
COPY --from=project /opt/project/ /opt/venv/
ARG MRV_SOURCE_REVISION=
ENV MRV_SOURCE_REVISION=${MRV_SOURCE_REVISION}
LABEL org.opencontainers.image.title="soilcarbon-mrv" \
    org.opencontainers.image.licenses="Apache-2.0" \
    org.opencontainers.image.revision="${MRV_SOURCE_REVISION}"
USER 1000:1000
VOLUME ["/data"]
ENTRYPOINT ["mrv"]
CMD ["--help"]
