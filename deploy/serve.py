"""`python deploy/serve.py [streamlit run options]`: `streamlit run app.py`, with the first visit's
values (ui.sidebar.warm_first_visit) made from the moment the server starts rather than when the
first visitor arrives. Streamlit 1.67 runs no code of the app before a session opens, so this
starts the warm-up beside the server, in the same process: the script's sessions import the
same ui modules and find the same cache. deploy/serve.sh, the hosted demo's entrypoint, runs it.
"""
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything loads OpenMP: see explorer/core/__init__.py

ROOT = Path(__file__).resolve().parent.parent


def warm() -> None:
    """Once the server's runtime exists (the shared cache lives in it), start the warm-up."""
    from streamlit.runtime import Runtime

    while not Runtime.exists():
        time.sleep(0.05)
    from ui import sidebar

    sidebar.warm_first_visit()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    threading.Thread(target=warm, name="warm-up at start", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *sys.argv[1:]]
    cli.main()
