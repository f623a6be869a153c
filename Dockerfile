# The mu coordinator. Built by `cdk deploy` as a linux/amd64 image asset and run as a Fargate task.
# The base is python:3.12-slim pinned to the digest of its linux/amd64 image (Python 3.12.13,
# Debian trixie), as docker-library/repo-info records it; README "The coordinator image" says how
# to refresh it.
FROM python:3.12-slim@sha256:d657ab0ade19f404a6ccc883ab399540de667aff751748ce23c07330c5a89e64

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
# The job user's own, writable directory: a relative `-O timing.json` is written here.
WORKDIR /home/mu
EXPOSE 13579 13580
ENTRYPOINT ["mu"]
CMD ["--help"]
