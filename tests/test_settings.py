"""The settings registry: every declared setting accepts its own default and refuses values
of the wrong kind or out of range with a message naming it."""
import math

import pytest
from conftest import APP, TIMEOUT
from streamlit.testing.v1 import AppTest

from explorer.mechanisms import REGISTRY
from ui import settings
from ui.settings import Setting


@pytest.fixture(scope="module")
def registry():
    """Every setting the app declares, the pages' own included (each page run once)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.sidebar.radio(key="source").set_value("Synthetic").run()
    at.sidebar.number_input(key="synth_n").set_value(64).run()
    at.sidebar.button[0].click().run()
    for page in ("compare", "dilution", "lsh", "lowrank", "segmented", "hierarchical", "memory", "routing", "relpos",
                 "corpus", "inside"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, page
    return dict(settings.SETTINGS)


def test_every_setting_accepts_its_default(registry):
    assert len(registry) > 80
    for key, s in registry.items():
        assert s.check(s.default) == s.default, key


def test_every_mechanism_parameter_is_a_setting_checked_by_its_param(registry):
    for mech in REGISTRY.values():
        for p in mech.params:
            if p.default is None or p.name in (mech.head_params or ()):
                continue
            s = registry[f"p.{mech.key}.{p.name}"]
            assert s.param is p and s.default == p.default


def test_page_settings_are_owned_by_their_page(registry):
    pages = {"compare", "dilution", "lsh", "lowrank", "segmented", "hierarchical", "memory", "routing", "relpos",
             "corpus"}
    own = [k for k in registry if not k.startswith("p.") and settings.owner_page(k) in pages]
    assert {settings.owner_page(k) for k in own} >= {"compare", "dilution", "lsh", "routing", "relpos", "corpus"}


@pytest.mark.parametrize("setting, bad, says", [
    (Setting("grid", 160, lo=8, hi=1024), 0, "out of range"),
    (Setting("grid", 160, lo=8, hi=1024), 10**9, "out of range"),
    (Setting("grid", 160, lo=8, hi=1024), "abc", "whole number"),
    (Setting("grid", 160, lo=8, hi=1024), True, "whole number"),
    (Setting("log_colour", True), "yes", "true or false"),
    (Setting("margin", 8.0, lo=0.0, hi=40.0), math.nan, "finite number"),
    (Setting("margin", 8.0, lo=0.0, hi=40.0), 41, "out of range"),
    (Setting("pool", "mean", choices=("mean", "max")), "median", "one of mean, max"),
    (Setting("model", "minilm", max_chars=200), "m" * 201, "at most 200 characters"),
    (Setting("mechs", ["lsh"], choices=("lsh", "memory")), ["lsh", "nope"], "one of lsh, memory"),
    (Setting("mechs", ["lsh"], choices=("lsh", "memory")), ["lsh", "lsh"], "once"),
    (Setting("zoom", (0, 10)), [5, 5], "start < stop"),
    (Setting("zoom", (0, 10)), [1, 2, 3], "pair"),
])
def test_bad_values_are_refused_with_their_setting_named(setting, bad, says):
    with pytest.raises(ValueError, match=says) as err:
        setting.check(bad)
    assert str(err.value).startswith(f"{setting.key}: ")


def test_a_parameter_setting_uses_the_mechanisms_own_check():
    s = settings.SETTINGS["p.lsh.n_rounds"]
    assert s.check(3) == 3
    with pytest.raises(ValueError, match="p.lsh.n_rounds: .*out of range"):
        s.check(99)


def test_a_conflicting_second_declaration_is_an_error():
    settings.register(Setting("test_probe", 1, lo=0, hi=5))
    settings.register(Setting("test_probe", 1, lo=0, hi=5))  # the same again is fine
    with pytest.raises(ValueError, match="declared twice"):
        settings.register(Setting("test_probe", 2))
