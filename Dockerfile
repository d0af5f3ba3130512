# driftline worker image: hash-pinned dependencies, non-root user.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock requirements-build.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-build.lock \
 && pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY detectors ./detectors
COPY stream ./stream
COPY loadtest ./loadtest
COPY examples ./examples
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && useradd --system driftline
USER driftline
EXPOSE 9464
ENTRYPOINT ["driftline"]
CMD ["run", "--config", "/etc/driftline/config.yaml"]
