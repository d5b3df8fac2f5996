"""The view page: what it gathers from a run, and the page itself in a real browser (headless Chromium, the Debian
package, driven by Selenium) — loaded from disk, a user and a session clicked through, the rendered content
checked against the run's files."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.envs.trace import read_trace
from recsim_personas.errors import ConfigError
from recsim_personas.view import collect, write_view

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def run_dir(tiny_split_dir, tmp_path_factory) -> Path:
    """A tiny gap benchmark with traces of every user (random and pop, 2 seeds, 6 days)."""
    from recsim_personas.cli import build_parser

    out = tmp_path_factory.mktemp("viewrun") / "gap"
    args = build_parser().parse_args(["benchmark", "--split", str(tiny_split_dir), "--policies", "random,pop",
                                      "--seeds", "0,1", "--days", "6", "--trace-users", "20", "--out", str(out),
                                      "--no-progress", "--json"])  # fmt: skip
    assert args.func(args) == 0
    return out


def test_collect_gathers_report_traces_users_and_titles(run_dir, tiny_split_dir):
    from recsim_personas.data import load_split

    data = collect(run_dir)
    split = load_split(tiny_split_dir)
    assert [r["policy"] for r in data["gap"]["results"]] == ["random", "pop"]
    assert sorted((t["policy"], t["seed"]) for t in data["traces"]) == [
        ("pop", 0),
        ("pop", 1),
        ("random", 0),
        ("random", 1),
    ]
    assert set(data["users"]) == {str(u) for u in split.user_ids}
    u = int(split.user_ids[0])
    entry = data["users"][str(u)]
    train = split.train[split.train["user_id"] == u]
    assert len(entry["history"]) == len(train) and set(entry["traits"]) == {"activity", "conformity", "diversity"}
    from recsim_personas.personas.traits import compute_traits

    world_traits = compute_traits(split.train, split.items)[0].set_index("user_id").loc[u]
    assert entry["traits"]["activity"]["score"] == pytest.approx(world_traits["activity_score"])
    assert entry["traits"]["conformity"]["level"] == world_traits["conformity_level"]
    shown = {i for t in data["traces"] for i in t["shown"]["item_id"]}
    assert {str(i) for i in shown} <= set(data["items"]) and data["notes"] == []
    page = json.loads(json.dumps(data))  # JSON-ready
    assert page["traces"][0]["counts"]["pages"] == len(page["traces"][0]["pages"]["page"])


def test_collect_refuses_an_empty_directory(tmp_path):
    with pytest.raises(ConfigError, match="holds no gap report"):
        collect(tmp_path)
    with pytest.raises(ConfigError, match="is not a directory"):
        collect(tmp_path / "nope")


def test_a_trace_without_its_split_is_shown_with_a_note(run_dir, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(run_dir / "traces" / "pop" / "seed-0", one)
    data = collect(one, split=tmp_path / "missing-split")
    assert data["users"] == {} and any("could not be loaded" in n for n in data["notes"])


def test_view_command_writes_a_self_contained_page(run_dir, capsys):
    from recsim_personas.cli import build_parser

    args = build_parser().parse_args(["view", str(run_dir), "--json"])
    assert args.func(args) == 0
    payload = json.loads(capsys.readouterr().out)
    html = Path(payload["file"]).read_text(encoding="utf-8")
    assert payload["file"] == str((run_dir / "view.html").resolve())
    assert "<script src" not in html and "<link" not in html and "url(http" not in html  # nothing fetched
    assert "Plotly" in html and '"policy":"pop"' in html


# ---------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        msg = f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}); `make test` installs the Debian packages"
        if os.environ.get("RECSIM_PERSONAS_REQUIRE_DATA") == "1" or os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def test_the_page_in_a_real_browser(run_dir, browser, tiny_split_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from recsim_personas.data import load_split

    page = write_view(run_dir)
    browser.get(page.resolve().as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    # Report: the policies' rows and the figures drawn by Plotly
    rows = browser.find_elements(By.CSS_SELECTOR, ".gap-table tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["random", "pop"]
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#fig-gap_scatter .main-svg"))
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#fig-alignment .main-svg"))

    # Users: click the first user; its real history and rating histogram appear
    split = load_split(tiny_split_dir)
    browser.find_element(By.CSS_SELECTOR, "button[data-tab=users]").click()
    first = browser.find_elements(By.CSS_SELECTOR, ".user-item")[0]
    user = int(first.get_attribute("data-user"))
    first.click()
    assert browser.find_element(By.CSS_SELECTOR, "#user-detail h2").text == f"User {user}"
    n_train = int((split.train["user_id"] == user).sum())
    assert browser.find_element(By.CSS_SELECTOR, ".real-history h3").text == f"real history (train) ({n_train})"
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#user-hist .main-svg"))

    # Sessions: the first user with a session in pop · seed 0, its first session replayed page by page
    _, shown, pages = read_trace(run_dir / "traces" / "pop" / "seed-0")
    browser.find_element(By.CSS_SELECTOR, "button[data-tab=sessions]").click()
    Select(browser.find_element(By.ID, "trace-select")).select_by_visible_text("pop · seed 0")
    who = int(pages["user_id"].iloc[0])
    Select(browser.find_element(By.ID, "session-user")).select_by_value(str(who))
    sessions = browser.find_elements(By.CSS_SELECTOR, ".session-item")
    mine = pages[pages["user_id"] == who]
    assert len(sessions) == mine["session"].nunique()
    sessions[0].click()
    blocks = browser.find_elements(By.CSS_SELECTOR, ".replay .page")
    first_session = mine[mine["session"] == 1]
    assert len(blocks) == len(first_session)
    slate = blocks[0].find_elements(By.CSS_SELECTOR, "table.slate tbody tr")
    page1 = shown[(shown["user_id"] == who) & (shown["session"] == 1) & (shown["page"] == 1)].sort_values("position")
    assert len(slate) == len(page1)
    watched = [r.find_elements(By.TAG_NAME, "td")[4].text == "yes" for r in slate]
    assert watched == page1["watched"].tolist()
    exit_text = browser.find_element(By.CSS_SELECTOR, ".replay .exit").text
    assert exit_text == f"session ended: {first_session['exit'].iloc[-1]}"
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".replay .dist .main-svg"))

    # Compare: two policies side by side
    browser.find_element(By.CSS_SELECTOR, "button[data-tab=compare]").click()
    heads = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".compare-column h3")]
    assert heads == ["random · seed 0", "pop · seed 0"]  # two policies, one seed
    Select(browser.find_element(By.ID, "cmp-seed")).select_by_value("1")
    Select(browser.find_element(By.ID, "cmp-user")).select_by_value(str(who))
    heads = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".compare-column h3")]
    assert heads == ["random · seed 1", "pop · seed 1"]
    summary = browser.find_elements(By.CSS_SELECTOR, ".compare-column p")[1].text
    _, _, pop1 = read_trace(run_dir / "traces" / "pop" / "seed-1")
    mine1 = pop1[pop1["user_id"] == who]
    assert summary.startswith(
        f"{mine1['session'].nunique()} sessions, {len(mine1)} pages, {int(mine1['watched'].sum())} watched"
    )
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_trait_scores_of_a_few_traced_users_are_relative_to_all_users(tiny_split_dir, tmp_path):
    """Scores and levels rank a user among all the split's users, not among the traced sample."""
    from recsim_personas.cli import build_parser
    from recsim_personas.data import load_split
    from recsim_personas.personas.traits import compute_traits

    args = build_parser().parse_args(["simulate", "--split", str(tiny_split_dir), "--days", "2", "--trace",
                                      str(tmp_path / "t"), "--trace-users", "3", "--no-progress"])  # fmt: skip
    assert args.func(args) == 0
    data = collect(tmp_path / "t")
    split = load_split(tiny_split_dir)
    full = compute_traits(split.train, split.items)[0].set_index("user_id")
    assert len(data["users"]) == 3
    for u, entry in data["users"].items():
        for t in ("activity", "conformity", "diversity"):
            assert entry["traits"][t]["score"] == pytest.approx(full.loc[int(u), f"{t}_score"])
