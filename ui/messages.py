"""Messages to a visitor: user text shown as written, errors said in words, never a traceback."""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager

import streamlit as st

LOG = logging.getLogger("explorer.app")
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:/@&=])")
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=\bwww)(?=\.)|(?<=@)", re.I)  # GFM links these even escaped
JOINER = "\u2060"  # WORD JOINER: invisible, it keeps "https://", "www." and "a@b" from becoming links


def plain(text: str) -> str:
    """Text shown as written, never as markdown, a link or HTML (names from a link are not to be trusted)."""
    return _MARKUP.sub(r"\\\1", _AUTOLINK.sub(JOINER, str(text)))


def error(err: BaseException, then: str = "") -> None:
    """A library's ValueError, in its own words (escaped: it may quote what a visitor typed), and
    `then`, what to change on the page: the library cannot know the app's fields."""
    st.error(plain(f"{str(err).rstrip('.')}. {then}" if then else str(err)))


@contextmanager
def guarded(what: str):
    """Run a part of the page: a ValueError becomes its message; anything else a short message
    and a log line with the traceback (for the server's log, not for the visitor)."""
    try:
        yield
    except ValueError as err:
        error(err)
    except Exception:  # noqa: BLE001 - the last line of defence; st.stop and reruns are BaseExceptions and pass
        LOG.exception("unexpected error while %s", what)
        st.error(f"Something went wrong while {what}. The error was logged on the server; try another setting "
                 "or reload the page.")
