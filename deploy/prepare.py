"""`python deploy/prepare.py`: what a fresh server's first visitor would otherwise wait for, made at
image build (the Dockerfile) and saved on disk, so that every container starts with it: the first
visit's page is run once as a visitor with no link runs it (Streamlit's AppTest of app.py, in this
process), which saves the layer and head the default text opens on (ui.saved) and, once its dense
pass is exact, the map a first visitor is shown while the model loads (ui.opening). Exits 1 when the
map could not be saved.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def first_visit(timeout: float = 600):
    """The AppTest of a plain first visit, drawn again once its dense pass has every row (exact)."""
    from streamlit.testing.v1 import AppTest

    return exact(AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout).run())


def exact(at):
    """The AppTest's page drawn again once the dense pass it started has every row."""
    from ui import compute, maps
    from ui.state import Run

    if at.exception or "encoded" not in at.session_state:
        return at
    enc = at.session_state["encoded"]
    grid = at.session_state["grid"] if "grid" in at.session_state else maps.GRID.default  # as maps.grid() reads it
    compute.dense(Run(enc, int(at.session_state["head"]), doc=compute.encoded(enc)), int(grid))
    return at.run()


if __name__ == "__main__":
    os.environ.setdefault("EXPLORER_WARM", "0")  # this process is the first visit: no warm-up beside it
    sys.path.insert(0, str(ROOT))
    at = first_visit()
    from ui import opening, saved

    if at.exception or not opening.is_saved():
        sys.exit(f"the first visit's map was not saved: {[e.message for e in at.exception] or 'see above'}")
    print(f"saved the first visit's map and head choice in {saved.Saved.from_env().root}")
