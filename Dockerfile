# salespulse worker / demo image, used by docker-compose.yml (services worker and demo).
#   docker build -t salespulse:local .
#   docker run --rm -e SALESPULSE_KAFKA_BOOTSTRAP=host:9092 -p 6066:6066 salespulse:local
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what `pip install .` needs (there is no .dockerignore: never COPY . — .local holds Kafka
# data, .venv a virtualenv).
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY metrics ./metrics
RUN pip install . \
    && rm -rf /src/build /src/*.egg-info

# Run unprivileged; Faust keeps its local data dir under the working directory.
RUN useradd --system --create-home --home-dir /home/salespulse --uid 10001 salespulse
USER salespulse
WORKDIR /home/salespulse

ENV SALESPULSE_WEB_PORT=6066
EXPOSE 6066
CMD ["salespulse", "worker"]
