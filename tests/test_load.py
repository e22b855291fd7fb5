"""Eight visitors at once (issue 19, item 8): one server, eight browser sessions opening the app
together, each then choosing its own text (four pasted, four samples), pressing Run and visiting
pages. Every session must finish within a bound, its sidebar must answer Run while the others
compute, and the numbers on its page must be those of its own text encoded alone here.

Loopback only. Prints each session's times and the server's peak memory (pytest -s), and writes
them to the test's tmp_path as load.json.
"""
import asyncio
import io
import json
import random
import time

import pandas as pd
import torch
from browser import APP_ROOT, CHROMIUM, CHROMIUM_ARGS, EXCEPTION, RUNNING_ICON, SIDEBAR, VIEWPORT, streamlit_server
from browser import _IDLE_JS as IDLE_JS

import explorer
from explorer.core.samples import load_sample

SESSION_S = 300  # every session, from opening the app to its last page
ANSWER_S = 30  # from pressing Run to the sidebar's status: the sidebar answers whatever the others do
PAGES = ("LSH buckets", "Segmented")  # visited after the dense page, by every session
SAMPLES = ("The Notched Key", "The Notched Key", "Incident Report: Telemetry Loss at Kaldvik Fjord Marine Station",
           "A Field Guide to Reading Long Documents")  # the shorter ones; two ask for one text at the same time
WORDS = (300, 800, 1400, 2000)  # the pasted texts' lengths
STATUS_JS = """sel => { const t = document.querySelector(sel)?.innerText ?? '';
    return t.includes('Encoding…') || t.includes('Encoded ') || t.includes('encoded earlier'); }"""


def pasted_text(words: int, seed: int) -> str:
    """A text of its own per session: seeded sentences over a small vocabulary, in paragraphs."""
    rng = random.Random(seed)
    vocab = ("river stone lantern keeper harbour signal winter ledger orchard bridge quiet copper letter "
             "station tide archive north window measure story engine morning valley record distant").split()
    out, n = [], 0
    while n < words:
        sentence = [rng.choice(vocab) for _ in range(rng.randint(6, 16))]
        out.append(" ".join(sentence).capitalize() + "." + ("\n\n" if rng.random() < 0.15 else " "))
        n += len(sentence)
    return "".join(out).strip()


async def idle(page, timeout_s: float) -> None:
    await page.evaluate("() => { window.__stBusyAt = performance.now(); }")
    await page.wait_for_function(IDLE_JS, arg=[APP_ROOT, RUNNING_ICON, 500], timeout=timeout_s * 1000, polling=200)
    if await page.locator(EXCEPTION).count():
        raise AssertionError("the app shows an exception:\n" + "\n".join(await page.locator(EXCEPTION).all_inner_texts()))


async def session(browser, url: str, name: str, source: str, choice: str, deadline: float) -> dict:
    """Open the app, choose the text, press Run, read the dense page's numbers, visit PAGES."""
    context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(SESSION_S * 1000)  # each step's own bound is the session's deadline
    left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
    started = time.monotonic()
    out = {"session": name}
    try:
        await page.goto(url)
        await idle(page, left())
        out["first_visit_s"] = round(time.monotonic() - started, 1)
        side = page.locator(SIDEBAR)
        if source == "Paste":
            await side.get_by_text("Paste", exact=True).click()
            await idle(page, left())
            await side.locator("textarea").fill(choice)
            await side.locator("textarea").press("Control+Enter")
        else:
            await side.locator('[data-testid="stSelectbox"]').first.click()  # "Sample text", above the model's
            await page.get_by_role("option", name=choice, exact=True).click()
        await idle(page, left())
        pressed = time.monotonic()
        await side.get_by_role("button", name="Run", exact=True).click()
        await page.wait_for_function(STATUS_JS, arg=SIDEBAR, timeout=ANSWER_S * 1000, polling=100)
        out["run_answered_s"] = round(time.monotonic() - pressed, 1)
        await idle(page, left())
        for _ in range(5):  # read after idle, as drawn for this text; under load a rerun may not have drawn it yet
            said = [t for t in await side.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
                    if " tokens · " in t]
            if said:
                break
            await page.wait_for_timeout(1000)
            await idle(page, left())
        assert said, f"{name}: the sidebar never said how many tokens the text has"
        caption = said[0]
        out["tokens"] = int(caption.split(" tokens")[0].replace(",", ""))
        out["layer"] = int(caption.split("layer ")[1].split(" ")[0])
        out["head"] = int(await side.get_by_label("Head", exact=True).input_value())
        button = page.get_by_role("button", name="Per-token statistics (CSV)")
        await button.wait_for(timeout=left() * 1000)  # drawn once the dense pass is exact
        await idle(page, left())
        out["dense_page_s"] = round(time.monotonic() - started, 1)
        out["csv"] = await download(page, button)
        for title in PAGES:
            await side.locator('[data-testid="stSidebarNavLink"]').get_by_text(title, exact=True).click()
            await idle(page, left())
        out["total_s"] = round(time.monotonic() - started, 1)
        return out
    finally:
        await context.close()


async def download(page, button, tries: int = 3) -> str:
    """The file a download button gives (asked again if the browser cancels it, as it may under load)."""
    for attempt in range(tries):
        try:
            async with page.expect_download() as started:
                await button.click()
            return (await (await started.value).path()).read_text()
        except Exception:  # noqa: BLE001 - a canceled download: once more, then the error
            if attempt == tries - 1:
                raise
            await idle(page, 60)


async def visitors(url: str, plan: list) -> list:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            deadline = time.monotonic() + SESSION_S
            return await asyncio.gather(*(session(browser, url, name, source, choice, deadline)
                                          for name, source, choice, _ in plan), return_exceptions=True)
        finally:
            await browser.close()


def test_eight_visitors_at_once_each_get_their_own_text_in_time(tmp_path):
    plan = [(f"paste {w} words", "Paste", pasted_text(w, seed), pasted_text(w, seed))
            for seed, w in enumerate(WORDS)]
    plan += [(f"sample {i}: {s[:20]}", "Sample", s, load_sample(s)) for i, s in enumerate(SAMPLES)]
    with streamlit_server() as server:
        results = asyncio.run(visitors(server.url, plan))
        peak = server.peak_rss_mib()
    for got in results:
        print({k: v for k, v in got.items() if k != "csv"} if isinstance(got, dict) else repr(got)[:300])
    print(f"server peak memory: {peak:.0f} MiB")
    failed = [f"{name}: {got!r}" for (name, *_), got in zip(plan, results) if isinstance(got, BaseException)]
    assert not failed, "sessions that did not finish:\n" + "\n".join(failed)
    for (name, _, _, text), got in zip(plan, results):
        doc = explorer.encode(text, "minilm", layer=got["layer"])
        assert got["tokens"] == doc.n, f"{name}: the sidebar says {got['tokens']} tokens, its text has {doc.n}"
        q, k, v = doc.head(got["head"])
        want = explorer.attention_stats(q, k, v, rule=doc.model_rule.of_head(got["head"]))
        shown = pd.read_csv(io.StringIO(got.pop("csv")))
        for column, expected in (("entropy", want.entropy[0]), ("log-sum-exp", want.lse[0])):
            torch.testing.assert_close(torch.tensor(shown[column].to_numpy()), expected.double().cpu(),
                                       atol=1e-4, rtol=0, msg=lambda m: f"{name}, {column}: {m}")
    report = {"sessions": results, "peak_rss_mib": round(peak)}
    (tmp_path / "load.json").write_text(json.dumps(report, indent=1))
    assert all(got["total_s"] <= SESSION_S for got in results)
