"""Live sync at scale: how fast a message crosses between open windows, and what each open window costs.

Run: python bench/live.py [--sessions 1,5,10,20] [--seconds 10] [--variants chat,reread,autorefresh]

For each variant of the chat page and each number N of open windows, it starts `streamlit run` on
127.0.0.1 (with the local OpenAI test server), opens N headless Chromium pages on one channel plus a
sender page, and measures:
- propagation: from the message's created_at in DuckDB (server side) to the moment a MutationObserver
  in each other page saw its text (performance.timeOrigin + performance.now()), p50/p95/max;
- delivery: messages stored but never shown in a window (missed), and sends typed in the sender
  window that never reached DuckDB (lost sends);
- idle cost: the server process's CPU (utime+stime from /proc) over a window with no sends, per
  session and per rerun ((N + 1) x seconds / refresh interval reruns: the sender page polls too),
  and its RSS growth per window after the first.
Variants, at the same 1 s interval: `chat` (our page: version-gated fragment), `reread` (the same
page re-reading DuckDB every tick), `autorefresh` (the whole page rerun by streamlit-autorefresh).
Prints a Markdown table and writes docs/live.png.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import VIEWPORT, chromium, streamlit_server  # noqa: E402
from core import chat  # noqa: E402
from core.db import connect  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402

REFRESH = 1.0  # seconds: the interval every variant polls at
SEND_EVERY = 2.0  # seconds between the sender page's messages
TICK = os.sysconf("SC_CLK_TCK")
VARIANTS = {
    "chat": ("app.py", {}),
    "reread": ("bench/variants/chat_reread.py", {}),
    "autorefresh": ("bench/variants/chat_autorefresh.py", {"REFRESH_SECONDS": "60"}),
}
INPUT = "[data-testid=stChatInput] textarea"
OBSERVER = """
(() => {
  const seen = {}; window.__seen = seen;
  const scan = (node) => {
    const text = node.textContent || ""; const re = /tok-\\d+/g; let m;
    while ((m = re.exec(text))) if (!(m[0] in seen)) seen[m[0]] = performance.timeOrigin + performance.now();
  };
  new MutationObserver(records => {
    for (const r of records) { if (r.type === "characterData") scan(r.target); r.addedNodes.forEach(scan); }
  }).observe(document, {subtree: true, childList: true, characterData: true});
})();
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_case(browser, variant: str, sessions: int, seconds: float, folder: Path, openai_url: str) -> dict:
    """One variant with N watching windows: propagation latency, then idle CPU and memory."""
    db_path = folder / f"{variant}-{sessions}.duckdb"
    db = connect(str(db_path))
    chat.create_user(db, "Sender")
    channel = chat.create_channel(db, "live", reply_policy="off")
    db.close()
    script, env = VARIANTS[variant]
    # The sender writes every SEND_EVERY s, past the default per-person rate limit: this measures delivery, not limits.
    env = {**(env or {}), "MESSAGES_PER_MINUTE": "0", "AI_REPLIES_PER_HOUR": "0"}
    with streamlit_server(db_path, openai_base_url=openai_url, refresh_seconds=REFRESH, script=script,
                          log_dir=folder, extra_env=env) as server:
        url = f"{server.url}/?channel={channel}"
        contexts, pages = [], []
        for _ in range(sessions + 1):  # the last one sends
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(OBSERVER)
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector(INPUT, timeout=60_000)
            contexts.append(context)
            pages.append(page)
            if len(pages) == 1:
                rss_one = rss_mb(server.pid)  # the app's modules are loaded once the first window ran it
        watchers, sender = pages[:-1], pages[-1]
        time.sleep(2 * REFRESH)  # let every session settle into its rhythm

        cpu_before = cpu_seconds(server.pid)
        time.sleep(seconds)  # idle: nobody sends
        idle_cpu = cpu_seconds(server.pid) - cpu_before
        rss_with = rss_mb(server.pid)

        tokens = []
        for i in range(max(3, int(seconds / SEND_EVERY))):
            token = f"tok-{i}"
            sender.fill(INPUT, f"message {token}")
            sender.press(INPUT, "Enter")
            tokens.append(token)
            sender.wait_for_timeout(SEND_EVERY * 1000)
        sender.wait_for_timeout(2 * REFRESH * 1000)
        seen = [page.evaluate("window.__seen") for page in watchers]
        for context in contexts:
            context.close()
    db = connect(str(db_path))
    sent = {}
    for message in chat.list_messages(db, channel, limit=len(tokens)):
        token = message.content.split()[-1]
        sent[token] = message.created_at.replace(tzinfo=timezone.utc).timestamp() * 1000
    db.close()
    lost = [token for token in tokens if token not in sent]  # typed and sent, but never stored
    latencies, missed = [], 0
    for page_seen in seen:
        for token in tokens:
            if token in page_seen and token in sent:
                latencies.append(page_seen[token] - sent[token])
            elif token in sent:
                missed += 1  # stored, but this window never showed it
    polling = sessions + 1  # the sender page polls too
    reruns = polling * seconds / REFRESH
    return {
        "variant": variant, "sessions": sessions, "samples": len(latencies), "missed": missed,
        "lost": len(lost), "sent": len(tokens),
        "p50": percentile(latencies, 0.5) if latencies else float("nan"),
        "p95": percentile(latencies, 0.95) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
        "cpu_pct_per_session": 100 * idle_cpu / seconds / polling,
        "ms_per_rerun": 1000 * idle_cpu / reruns,
        "rss_per_session": (rss_with - rss_one) / (polling - 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | windows | p50 ms | p95 ms | max ms | missed | lost sends | server CPU % of a core per idle window "
        "| CPU ms per rerun | idle windows per core | server RSS MB per window |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_core = 100 / r["cpu_pct_per_session"] if r["cpu_pct_per_session"] > 0 else float("inf")
        lines.append(
            f"| {r['variant']} | {r['sessions']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['max']:.0f} | {r['missed']} "
            f"| {r['lost']}/{r['sent']} "
            f"| {r['cpu_pct_per_session']:.2f} | {r['ms_per_rerun']:.2f} | {per_core:.0f} | {r['rss_per_session']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install -r requirements-dev.txt): no plot written", file=sys.stderr)
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        xs = [r["sessions"] for r in mine]
        (line,) = left.plot(xs, [r["p95"] for r in mine], marker="o", label=f"{variant} p95")
        left.plot(xs, [r["p50"] for r in mine], marker=".", linestyle="--", color=line.get_color(), label=f"{variant} p50")
        right.plot(xs, [r["cpu_pct_per_session"] for r in mine], marker="o", color=line.get_color(), label=variant)
    left.axhline(REFRESH * 1000 + 150, color="grey", linewidth=0.8, label="target p95")
    left.set(xlabel="open windows", ylabel="send → visible (ms)", title="Propagation latency")
    right.axhline(2, color="grey", linewidth=0.8, label="target 2 %")
    right.set(xlabel="open windows", ylabel="% of a core per idle window", title="Server CPU per session")
    for axis in (left, right):
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,5,10,20", help="comma-separated numbers of watching windows")
    parser.add_argument("--seconds", type=float, default=10.0, help="idle window and send phase length")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "live.png"), help="PNG to write ('' for none)")
    args = parser.parse_args(argv)
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder, FakeOpenAI() as openai_server, chromium() as browser:
        for variant in args.variants.split(","):
            for sessions in [int(n) for n in args.sessions.split(",")]:
                rows.append(run_case(browser, variant, sessions, args.seconds, Path(folder), openai_server.base_url))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print(f"\n{os.cpu_count()} CPUs, refresh {REFRESH:g} s, {args.seconds:g} s windows, "
          f"total {time.monotonic() - started:.0f} s")
    if args.plot:
        plot(rows, Path(args.plot))
    return rows


if __name__ == "__main__":
    main()
