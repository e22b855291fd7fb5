"""The text store that lets a link reopen a pasted text: by hash, bounded per text and in total."""
import os
import time

import pytest

from ui.texts import TextStore


def test_the_same_text_gets_the_same_key_and_comes_back(tmp_path):
    store = TextStore(tmp_path, 1000, 10_000)
    key = store.put("A pasted text. <b>not markup</b>")
    assert store.put("A pasted text. <b>not markup</b>") == key and len(key) == 32
    assert store.get(key) == "A pasted text. <b>not markup</b>"
    assert store.get("0" * 32) is None and store.get("../../etc/passwd") is None


def test_a_text_over_the_cap_is_refused(tmp_path):
    with pytest.raises(ValueError, match="a link can carry texts of up to"):
        TextStore(tmp_path, 100, 10_000).put("x" * 101)


def test_the_oldest_texts_go_first_beyond_the_total(tmp_path):
    store = TextStore(tmp_path, 1000, 2500)
    keys = []
    for i in range(3):
        keys.append(store.put(str(i) * 1000))
        path = tmp_path / f"{keys[-1]}.txt"
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    assert store.get(keys[0]) is None  # 3000 bytes > 2500: the oldest went
    assert store.get(keys[1]) and store.get(keys[2])
