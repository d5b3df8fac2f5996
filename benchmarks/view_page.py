"""The view page of a run in headless Chromium: its size, how long it takes to build, how fast it paints, and a
screenshot of each of its four views (for the README).

Builds ``RUN/view.html`` (:func:`recsim_personas.view.write_view`), then loads it ``--loads`` times from disk in
Debian's headless Chromium (Selenium; one uncounted warm-up load first) and reads the browser's own timings: first
contentful paint and the moment the page's script finished laying out the first view (``viewReadyMs``), both from
navigation start; the median is reported against ``--target-paint-s``. Then it clicks through Report, Users (the
first user), Sessions (the first session of the first user who had one, in the first trace) and Compare, and saves
a screenshot of each into ``--images``. Prints one JSON object and writes ``report.md`` / ``report.json`` into
``--out``.

    .venv/bin/python benchmarks/view_page.py --run runs/demo/gap --personas runs/demo/personas \\
        --fidelity runs/demo/fidelity_suite --images docs/images
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Args:
    run: str = "runs/demo/gap"
    """the run directory (a `benchmark --out` with --trace-users)"""
    personas: str = "runs/demo/personas"
    """the personas directory of its split ('' for none)"""
    fidelity: str = "runs/demo/fidelity_suite"
    """a fidelity suite to show beside the report ('' for none)"""
    loads: int = 5
    """page loads timed"""
    target_paint_s: float = 2.0
    """first paint wanted within this many seconds"""
    width: int = 1400
    """browser window width"""
    images: str = "docs/images"
    """where the screenshots go"""
    out: str = "runs/bench/view"
    """report directory"""


def parse() -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(d).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def main() -> None:
    args = parse()
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.view import write_view

    t0 = time.perf_counter()
    page = write_view(args.run, personas=args.personas or None, fidelity=args.fidelity or None).resolve()
    build_s = time.perf_counter() - t0
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={args.width},1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    ready = lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"  # noqa: E731
    paints, readies = [], []
    try:
        fcp_js = "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;"
        for k in range(args.loads + 1):  # the first load warms the browser up and is not counted
            driver.get("about:blank")
            driver.get(page.as_uri())
            WebDriverWait(driver, 60).until(ready)
            try:  # the paint entry appears once the frame after the script's layout is painted
                fcp = WebDriverWait(driver, 10).until(lambda d: d.execute_script(fcp_js))
            except TimeoutException:
                fcp = None
            if k:
                paints.append(None if fcp is None else fcp / 1000)
                readies.append(driver.execute_script("return window.viewReadyMs") / 1000)
        images = Path(args.images)
        images.mkdir(parents=True, exist_ok=True)
        shots = {}

        def shot(name: str) -> None:
            time.sleep(1.0)  # let Plotly finish drawing
            path = images / f"view-{name}.png"
            driver.save_screenshot(str(path))
            shots[name] = str(path)

        shot("report")
        driver.find_element(By.CSS_SELECTOR, "button[data-tab=users]").click()
        driver.find_elements(By.CSS_SELECTOR, ".user-item")[0].click()
        shot("users")
        driver.find_element(By.CSS_SELECTOR, "button[data-tab=sessions]").click()
        users = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#session-user option")]
        for value in users:
            driver.find_element(By.CSS_SELECTOR, f"#session-user option[value='{value}']").click()
            found = driver.find_elements(By.CSS_SELECTOR, ".session-item")
            if found:
                found[0].click()
                break
        shot("sessions")
        driver.find_element(By.CSS_SELECTOR, "button[data-tab=compare]").click()
        shot("compare")
    finally:
        driver.quit()
    fcps = [p for p in paints if p is not None]
    summary = {
        "args": asdict(args),
        "page": str(page),
        "page_mib": page.stat().st_size / 2**20,
        "build_s": build_s,
        "first_paint_s": fcps,
        "ready_s": readies,
        "first_paint_median_s": statistics.median(fcps) if fcps else None,
        "ready_median_s": statistics.median(readies),
        "screenshots": shots,
    }
    summary["target_met"] = (
        summary["first_paint_median_s"] is not None and summary["first_paint_median_s"] <= args.target_paint_s
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", summary)
    fp = summary["first_paint_median_s"]
    md = [
        "# The view page in headless Chromium",
        "",
        f"`{page}`: {summary['page_mib']:.1f} MiB, built in {build_s:.1f} s.",
        "",
        f"Over {args.loads} loads from disk the median first contentful paint came {fp:.2f} s after navigation"
        f" start ({'meets' if summary['target_met'] else 'misses'} the {args.target_paint_s:g} s target), and the"
        f" first view was laid out after {summary['ready_median_s']:.2f} s.",
        "",
        "Screenshots: " + ", ".join(f"`{p}`" for p in shots.values()) + ".",
    ]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
