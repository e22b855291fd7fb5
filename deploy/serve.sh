#!/bin/sh
# The hosted demo's entrypoint: the Dockerfile's CMD, and the same command outside a container.
# PORT and ADDRESS choose where it listens; EXPLORER_* settings are described in README.md.
# deploy/serve.py is `streamlit run app.py` that starts making the first visit's page with the server.
set -e
cd "$(dirname "$0")/.."
export EXPLORER_HOSTED="${EXPLORER_HOSTED:-1}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${PYTHON:-python}" deploy/serve.py --server.port "${PORT:-8501}" --server.address "${ADDRESS:-0.0.0.0}" \
    --server.headless true --server.fileWatcherType none --browser.gatherUsageStats false
