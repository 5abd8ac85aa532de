# soilcarbon-mrv: a slim image that runs `mrv` (e.g. as a scheduled Prefect worker).
# Build: docker build -t soilcarbon-mrv .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MPLBACKEND=Agg

# rasterio, pyproj and shapely wheels bundle GDAL/PROJ/GEOS; git records the revision in manifests.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 mrv
WORKDIR /opt/mrv

COPY pyproject.toml constraints.txt README.md ./
COPY mrv ./mrv
COPY flows ./flows
RUN pip install -c constraints.txt ".[postgres]"

COPY configs ./configs
COPY sample_data ./sample_data

USER mrv
ENTRYPOINT ["mrv"]
CMD ["--help"]
