"""The report in a real browser: headless Chromium opens data/report/index.html from disk and
every image loads (naturalWidth > 0), with the network off. Skips, saying why, where Debian's
`chromium` is not installed (`make test` installs it when it can)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report.test_html import build_report_project

pytestmark = pytest.mark.slow
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
TIMEOUT = 120

# Appended to a copy of the page: after `load`, mark every image and write the counts where --dump-dom shows them.
CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images), broken = [];
  imgs.forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0 && img.naturalHeight > 0;
    img.setAttribute("data-loaded", ok ? "yes" : "no");
    if (!ok) { broken.push(img.getAttribute("src").slice(0, 80)); }
  });
  var out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = "images=" + imgs.length + " broken=" + broken.length + " " + JSON.stringify(broken);
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    """The chromium binary, or skip with the reason."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if not path:
            continue
        try:
            done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"{path} --version failed: {exc}")
        if done.returncode == 0 and "chrom" in done.stdout.lower():
            return path
        pytest.skip(f"{path} is not a working Chromium: {done.stdout.strip() or done.stderr.strip()[-200:]}")
    pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium; `make test` tries)")


def _browse(chromium: str, profile: Path, page: Path, *extra: str) -> str:
    """Run headless Chromium on `page` (file://) in its own process group; stdout, or fail with stderr."""
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    env = dict(os.environ, HOME=str(profile))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    return out


def _check(chromium: str, profile: Path, page: Path) -> tuple[int, int, str, str]:
    """(images, broken, the broken srcs, the dumped DOM) of `page` with CHECK appended."""
    text = page.read_text(encoding="utf-8")
    probe = page.with_name("check.html")
    probe.write_text(text.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    dom = _browse(chromium, profile, probe, "--virtual-time-budget=15000", "--dump-dom")
    found = re.search(r'id="image-check">images=(\d+) broken=(\d+) (.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run: {dom[-1500:]}"
    return int(found.group(1)), int(found.group(2)), found.group(3), dom


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


def test_report_renders_with_no_broken_images(chromium: str, tmp_path_factory: pytest.TempPathFactory,
                                              tmp_path: Path) -> None:
    project = build_report_project(tmp_path_factory)
    report = tmp_path / "report"
    shutil.copytree(project / "data" / "report", report)  # a copy: the check page must not touch the DVC output
    expected = (report / "index.html").read_text(encoding="utf-8").count("<img ")
    assert expected > 20

    images, broken, which, dom = _check(chromium, tmp_path / "profile", report / "index.html")
    assert images == expected
    assert broken == 0, f"broken images: {which}"
    assert dom.count('data-loaded="yes"') == expected

    shot = tmp_path / "shot.png"
    _browse(chromium, tmp_path / "profile", report / "index.html", "--window-size=1280,2400",
            f"--screenshot={shot}")
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"))
    assert img.shape == (2400, 1280)
    assert img.std() > 20, "the screenshot should show the page, not a blank window"


def test_the_check_sees_a_broken_image(chromium: str, tmp_path: Path) -> None:
    """The check itself: a page with one missing image and one good one reports exactly one broken."""
    good = Image.new("RGB", (8, 8), (200, 30, 30))
    good.save(tmp_path / "good.png")
    page = tmp_path / "index.html"
    page.write_text('<!DOCTYPE html><html><body><img src="good.png" alt="good">'
                    '<img src="missing.png" alt="missing"></body></html>', encoding="utf-8")
    images, broken, which, _ = _check(chromium, tmp_path / "profile", page)
    assert (images, broken) == (2, 1) and "missing.png" in which
