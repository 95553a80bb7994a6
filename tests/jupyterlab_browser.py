"""A lesson run as a learner runs it: JupyterLab in a real browser, Run All, then look.

JupyterLab is started on a free loopback port with the kit's own settings (`jupyter/`: no
news pop-up) on a folder holding the lesson's copy; headless Chromium (Debian's, through
Playwright: never `playwright install`, which downloads a browser) opens it, runs every
cell with JupyterLab's own "Run All" command, waits until the kernel is done, and reads
what the page shows: which outputs are red (stderr and errors), a screenshot.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def missing() -> str | None:
    """Why a browser run cannot happen here, or None."""
    if shutil.which("chromium") is None:
        return "no chromium on PATH (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright; no browser download)"
    return None


@dataclass
class RedOutput:
    cell: int  # index among the notebook's cells, as JupyterLab shows them
    source: str  # the cell's first line
    text: str


@dataclass
class BrowserRun:
    code_cells: int
    executed: int  # code cells with an execution count once Run All was done
    red: list[RedOutput]
    news_prompt: bool  # JupyterLab asked whether to fetch news
    screenshot: Path
    seconds: float


@contextmanager
def jupyterlab(folder: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """JupyterLab serving `folder` on loopback, logging to `log`; yields its URL and token."""
    from labkit.services import free_port

    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
        "--ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    config = f"{ROOT / 'jupyter'}:{env['JUPYTER_CONFIG_PATH']}" if env.get(
        "JUPYTER_CONFIG_PATH") else str(ROOT / "jupyter")
    log_file = log.open("w")
    server = subprocess.Popen(
        command, env={**env, "JUPYTER_CONFIG_PATH": config}, stdout=log_file, stderr=log_file,
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield f"{url}|{token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()


# JupyterLab's own state, read in the page: the notebook's cells, their prompts and outputs.
READ_CELLS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets;
  return cells.map((cell, index) => {
    const model = cell.model;
    const outputs = [];
    if (model.type === 'code') {
      for (let i = 0; i < model.outputs.length; i++) {
        const out = model.outputs.get(i).toJSON();
        outputs.push(out);
      }
    }
    return {index, type: model.type, source: model.sharedModel.getSource(),
            count: model.type === 'code' ? model.executionCount : null, outputs};
  });
}"""

KERNEL_BUSY = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !kernel || kernel.status !== 'idle'
    || panel.content.widgets.some(c => c.model.type === 'code'
                                       && c.promptNode && c.promptNode.textContent.includes('*'));
}"""


def run_all_in_browser(url_and_token: str, lesson: str, screenshot: Path,
                       timeout: float = 600) -> BrowserRun:
    """Open `lesson` in JupyterLab in headless Chromium, Run All, and read what it shows."""
    from playwright.sync_api import sync_playwright

    url, token = url_and_token.split("|")
    began = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/{lesson}?token={token}")
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext"
                " && window.jupyterapp.shell.currentWidget.sessionContext.isReady",
                timeout=120_000,
            )
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            time.sleep(1)  # the first cell's [*] appears once the command has queued it
            deadline = time.monotonic() + timeout
            quiet_since = None
            while time.monotonic() < deadline:
                if page.evaluate(KERNEL_BUSY):
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > 2:
                    break
                time.sleep(0.25)
            cells = page.evaluate(READ_CELLS)
            news = page.get_by_text("official Jupyter news").count() > 0
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    code = [c for c in cells if c["type"] == "code"]
    red = [
        RedOutput(c["index"], c["source"].split("\n", 1)[0], red_text(out))
        for c in code for out in c["outputs"] if red_text(out)
    ]
    return BrowserRun(
        code_cells=len(code),
        executed=sum(1 for c in code if c["count"]),
        red=red,
        news_prompt=news,
        screenshot=screenshot,
        seconds=time.monotonic() - began,
    )


def red_text(output: dict) -> str:
    """What JupyterLab draws on a red background: errors and stderr."""
    if output.get("output_type") == "error":
        return f"{output.get('ename')}: {output.get('evalue')}"
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = output.get("text", "")
        return "".join(text) if isinstance(text, list) else text
    return ""
