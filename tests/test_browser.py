"""The MLflow UI as a newcomer meets it, in a real headless Chromium (Debian's, driven by Selenium).

`make ui` serves a store holding a smoke study; the test opens the exact link it printed and
checks that the runs table shows the run names and one run's test_acc, and that the run's page
lists its weights artifact. Screenshots go to test-output/browser/. Needs `chromium` and
`chromium-driver` (`make system-deps`); in CI a missing browser fails the test instead of skipping.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from suite.cli import main
from suite.tracking import run_url

from conftest import ROOT, needs_mnist, store_at

CHROMIUM, DRIVER = "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = ROOT / "test-output" / "browser"
needs_browser = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()) and os.environ.get("CI") != "true",
                                   reason="Chromium not installed (make system-deps); in CI this fails instead")
pytestmark = [needs_mnist, needs_browser, pytest.mark.slow, pytest.mark.browser]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smoke_store(tiny_study, tmp_path, data_dir):
    store = store_at(tmp_path / "mlflow.db")
    args = ["study", "tiny", "--smoke", "--executor", "serial", "--studies-dir", str(tiny_study.parent), "--tracking-uri", store,
            "--reports-dir", str(tmp_path / "reports"), "--data-dir", str(data_dir)]
    assert main(args) == 0
    return store


@pytest.fixture
def ui(smoke_store, tmp_path):
    """`make ui` over the store; yields (the lines it printed once ready, its process)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": smoke_store}
    proc = subprocess.Popen(["make", "--no-print-directory", "ui", f"PORT={port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, started = [], time.monotonic()
    try:
        while time.monotonic() - started < 120:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "tiny/smoke" in line:
                break
        assert any("tiny/smoke" in line for line in lines), "\n".join(lines)
        yield lines, proc, time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def group(pgid: int) -> list[str]:
    """Command lines of the processes in a process group (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                found.append((stat.parent / "cmdline").read_text().replace("\0", " "))
        except (OSError, IndexError, ValueError):
            continue
    return found


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def wait_for_text(driver, texts, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    raise AssertionError(f"page never showed {texts}; it shows:\n{body[:3000]}")


def test_make_ui_link_opens_the_runs_table_with_metrics_and_the_weights(ui, smoke_store):
    lines, proc, ready_after = ui
    url = re.search(r"tiny/smoke\s+(\S+)", "\n".join(lines)).group(1)
    assert url.startswith("http://127.0.0.1:")
    mlflow.set_tracking_uri(smoke_store)
    runs = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")
    assert len(runs) == 4
    one = runs.sort_values("tags.mlflow.runName").iloc[0]
    shown = f"{one['metrics.test_acc']:.4g}"  # how the runs table prints a metric

    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = browser()
    try:
        driver.get(url)
        body = wait_for_text(driver, [*sorted(runs["tags.mlflow.runName"]), "test_acc"])
        driver.save_screenshot(str(SHOTS / "runs_table.png"))
        assert shown in body, f"test_acc {shown} of {one['tags.mlflow.runName']} is not on the page:\n{body[:3000]}"
        # the classic runs table (the GenAI view calls it "Training runs"), under the study's question
        assert "Run Name" in body and "Training runs" not in body and "Does weight decay change anything" in body
        # the study's metric and the parameter its variants vary are columns (header cells of the table)
        headers = {h.text for h in driver.find_elements("css selector", "[role=columnheader]")}
        assert {"test_acc", "optimizer.weight_decay"} <= headers, headers

        base = url.split("#")[0].rstrip("/")
        driver.get(run_url(base, one["experiment_id"], one["run_id"]))  # the link a report with --ui-url gives
        wait_for_text(driver, [one["tags.mlflow.runName"], "Artifacts"])
        driver.find_element("xpath", "//*[@role='tab' and normalize-space()='Artifacts'] | //a[normalize-space()='Artifacts']").click()
        wait_for_text(driver, ["weights.pt", "resolved_config.json"])
        driver.save_screenshot(str(SHOTS / "run_artifacts.png"))
    finally:
        driver.quit()
    assert proc.poll() is None  # the server is still up
    # pointed at a tracking server, `suite ui` starts nothing and prints that server's links
    out = subprocess.run([sys.executable, "-m", "suite", "ui", "--tracking-uri", base], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and url in out.stdout, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == f"MLflow UI of the tracking server {base.rstrip('/')}/"  # (it named the server twice)
    out = subprocess.run([sys.executable, "-m", "suite", "ui", "--tracking-uri", base, "--port", "5001"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: --port: the UI of the tracking server") and out.stderr.count("\n") == 1
    # one light server process answered within the minute (the README quotes the measured figure)
    assert ready_after < 60 and len(group(proc.pid)) == 2, group(proc.pid)  # make, and the one server
