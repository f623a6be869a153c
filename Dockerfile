# The mu coordinator. Built by `cdk deploy` (image asset) and run as a Fargate task.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 mu
WORKDIR /opt/mu

COPY pyproject.toml README.md ./
COPY coordinator/ coordinator/
COPY lambda_worker/ lambda_worker/
RUN pip install --no-cache-dir . && rm -rf build ./*.egg-info

USER 10001
EXPOSE 13579
ENTRYPOINT ["mu"]
CMD ["--help"]
