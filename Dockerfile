# Fish Speech compatible TTS server, CPU image.
#
#   docker build -t fish-speech-server .
#   docker run -p 8080:8080 -v "$PWD/checkpoints:/srv/fish-speech/checkpoints:ro" \
#       -v "$PWD/references:/srv/fish-speech/references" -v "$PWD/data:/srv/fish-speech/data" \
#       fish-speech-server
#
# Nothing is downloaded at run time: with checkpoints/openaudio-s1-mini mounted the Fish
# engine runs, without it the embedded engine (shipped in the Python packages) speaks.
# CUDA variant: build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
# and run with --gpus all (the CUDA wheels bring their own runtime; the host needs the
# NVIDIA driver and container toolkit). docker-compose.yml has both as services.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/fish-speech
# torch first, from the chosen index, so the package install below keeps that build.
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.5,<2.14"
COPY pyproject.toml README.md LICENSE ./
COPY fish_speech ./fish_speech
COPY tools ./tools
# The project itself: its dependency ranges are in pyproject.toml, nothing to pin here.
# hadolint ignore=DL3013
RUN pip install ".[embedded,redis]"

COPY docker/entrypoint.sh docker/healthcheck.py /usr/local/bin/
RUN useradd --create-home --uid 1000 fish \
    && mkdir -p /srv/fish-speech/references /srv/fish-speech/data /srv/fish-speech/checkpoints \
    && chown -R fish:fish /srv/fish-speech
USER 1000:1000
# Relative defaults (checkpoints/, references/, data/) resolve here: mount them.
WORKDIR /srv/fish-speech
VOLUME ["/srv/fish-speech/references", "/srv/fish-speech/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/usr/local/bin/healthcheck.py"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
