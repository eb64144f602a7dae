"""Files in Chromium: attached in the chat box, the thumbnail in every window of the channel, downloads inert."""
from __future__ import annotations

import io

import pytest
from browser import INPUT, MESSAGE, VIEWPORT, chromium, streamlit_server, wait_page
from PIL import Image

from core import attachments, chat
from core.store import connect

pytestmark = pytest.mark.browser

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script><circle r="9"/></svg>'


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 200), (30, 140, 90)).save(out, format="PNG")
    return out.getvalue()


def test_files_sent_from_the_chat_box_reach_the_other_window_and_nothing_in_them_runs(tmp_path):
    path = tmp_path / "chat.duckdb"
    db = connect(str(path))
    chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "files", reply_policy="off")
    db.close()
    with streamlit_server(path, refresh_seconds=60, log_dir=tmp_path) as app, chromium() as browser:
        dialogs = []
        watcher = browser.new_page(viewport=VIEWPORT)
        sender = browser.new_page(viewport=VIEWPORT)
        for page in (watcher, sender):
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(f"{app.url}/?channel={channel}")
            page.wait_for_selector(INPUT, timeout=30_000)
        sender.locator("[data-testid=stChatInput] input[type=file]").set_input_files([
            {"name": "chart.png", "mimeType": "image/png", "buffer": _png()},
            {"name": "logo.svg", "mimeType": "image/svg+xml", "buffer": SVG},
        ])
        sender.wait_for_selector("text=logo.svg", timeout=15_000)  # the box lists what it will send
        sender.locator(INPUT).fill("two files")
        sender.locator(INPUT).press("Enter")

        thumb = f"{MESSAGE} .files img[alt='chart.png']"
        for page in (watcher, sender):
            wait_page(page, lambda p: p.locator(thumb).count() == 1
                      and p.locator(thumb).evaluate("img => img.complete && img.naturalWidth > 0"),
                      timeout=30, what="the thumbnail, loaded")
        natural = watcher.locator(thumb).evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert max(natural) <= attachments.THUMB_PIXELS and natural[0] > natural[1]

        download_link = watcher.locator(f"{MESSAGE} .files a.download", has_text="logo.svg")
        assert download_link.count() == 1
        with watcher.expect_download() as caught:
            download_link.click()
        assert caught.value.suggested_filename == "logo.svg"
        served = watcher.request.get(app.url + download_link.get_attribute("href"))
        assert served.headers["content-type"].startswith("text/plain")  # never image/svg+xml
        assert served.headers["content-disposition"].startswith("attachment;")
        assert served.headers["x-content-type-options"] == "nosniff"
        full = watcher.request.get(app.url + watcher.locator(f"{MESSAGE} .files a.image").get_attribute("href"))
        assert full.headers["content-type"] == "image/png" and full.body() == _png()
        assert dialogs == []  # the SVG's script ran in no window
