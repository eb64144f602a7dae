"""Live sync at scale: how fast a change crosses between open windows, and what each open window costs.

Run: python bench/live.py [--sessions 1,10,30] [--seconds 15] [--variants push,poll,autorefresh]

For each page design and each number N of open windows, it starts `streamlit run` on 127.0.0.1 (with
the local OpenAI test server), opens N headless Chromium windows on one channel plus a sender window,
and measures:
- propagation: from the message's created_at in the database (server side) to the moment a
  MutationObserver in each other window saw its text (performance.timeOrigin + performance.now()),
  p50/p95/max; messages stored but never shown in a window (missed); sends typed in the sender window
  that never reached the database (lost sends);
- AI reply: from the test model server writing a reply's first token (the app stores it at once) to
  that token being visible in each watching window, p50/p95;
- idle cost: the server process's CPU (utime+stime from /proc) over a window with no sends, less its
  CPU over as long a window once every browser window has closed (its own timers, the AI workers),
  per open window (the sender's included); its RSS growth per window after the first; and the TCP
  connections each window holds to the server after the idle window (ESTABLISHED sockets on the
  server's port, from /proc/net/tcp).
- own line: from Enter in the sender window to its text shown there (the list draws it at once), and to
  it shown as a stored message, p50/p95; and from Enter to the chat box taking the next line;
- active cost: the server's CPU over a long AI reply streaming with N windows watching, less the same
  with only the sender's window open, per watching window.
Designs: `push` (our page: the message list fed with content by its WebSocket, 15 s fallback), `poll` (the
same page with LIVE_PUSH=off, its fragment checking the channel's version every second), `fragment` (the
page before the message list: a stamp pushed over the WebSocket reruns the chat fragment in every window,
which draws each message with st.chat_message), `autorefresh`
(the whole page rerun every second by streamlit-autorefresh); `reread` (the polling page re-reading
the database every tick) is available too. Prints a Markdown table and writes docs/live.png.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import VIEWPORT, chromium, streamlit_server  # noqa: E402
from fake_openai import FakeOpenAI, Script  # noqa: E402

from core import chat  # noqa: E402
from core.store import connect  # noqa: E402

POLL = 1.0  # seconds: the interval the polling designs check at
FALLBACK = 15.0  # seconds: the push design's slow fallback check
SEND_EVERY = 2.0  # seconds between the sender window's messages
AI_REPLIES = 3  # replies whose first token is timed
SETTLE = 10.0  # seconds a window may take to show the last change before it counts as missed
AI_CHUNK_DELAY = 0.3  # seconds between the test model's tokens (the app writes at most 4 times a second)
TICK = os.sysconf("SC_CLK_TCK")
VARIANTS = {  # name: (script, environment)
    "push": ("app.py", {"REFRESH_SECONDS": str(FALLBACK)}),
    "poll": ("app.py", {"REFRESH_SECONDS": str(POLL), "LIVE_PUSH": "off"}),
    "autorefresh": ("bench/variants/chat_autorefresh.py", {"REFRESH_SECONDS": "60", "LIVE_PUSH": "off"}),
    "reread": ("bench/variants/chat_reread.py", {"REFRESH_SECONDS": str(POLL), "LIVE_PUSH": "off"}),
    "fragment": ("bench/variants/chat_fragment.py", {"REFRESH_SECONDS": str(FALLBACK)}),
}
INPUT = "[data-testid=stChatInput] textarea"
# Records when each token first shows in a window (seen), and when it first shows inside a stored message (stored:
# the sender's own line is drawn at Enter as "sending", then confirmed). The message list draws inside a shadow
# root, which a document-wide MutationObserver does not see: each shadow root is observed as it is attached.
OBSERVER = """
(() => {
  const seen = {}, stored = {}; window.__seen = seen; window.__stored = stored;
  const MESSAGE = "article.chat-message, [data-testid=stChatMessage]";  // not the chat box's own copy of its text
  const STORED = "article.chat-message:not(.echo), [data-testid=stChatMessage]";
  const inside = (element, selector) => element && (element.closest(selector) || element.querySelector(selector));
  const scan = (node) => {
    const text = node.textContent || ""; const re = /(tok|ai)-\\d+/g; let m;
    const element = node.nodeType === 1 ? node : node.parentElement;
    if (!inside(element, MESSAGE)) return;
    const kept = inside(element, STORED);
    while ((m = re.exec(text))) {
      const at = performance.timeOrigin + performance.now();
      if (!(m[0] in seen)) seen[m[0]] = at;
      if (kept && !(m[0] in stored)) stored[m[0]] = at;
    }
  };
  const observe = (root) => new MutationObserver(records => {
    for (const r of records) { if (r.type === "characterData") scan(r.target); r.addedNodes.forEach(scan); }
  }).observe(root, {subtree: true, childList: true, characterData: true});
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) { const root = attach.call(this, init); observe(root); return root; };
  observe(document);
})();
"""
STREAM_CHUNKS = 24  # the long reply whose streaming cost is measured: 24 tokens, AI_CHUNK_DELAY apart (~7 s)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def connections(port: int) -> int:
    """ESTABLISHED TCP connections whose local end is the server's port."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def delays(seen: list[dict], keys: list[str], stored: dict) -> tuple[list[float], int]:
    """(ms from stored to shown, for each key and window; how many stored keys a window never showed)."""
    latencies, missed = [], 0
    for page_seen in seen:
        for key in keys:
            if key in page_seen and key in stored:
                latencies.append(page_seen[key] - stored[key])
            elif key in stored:
                missed += 1
    return latencies, missed


def run_case(browser, variant: str, sessions: int, seconds: float, folder: Path, model: FakeOpenAI,
             replies: int = AI_REPLIES) -> dict:
    """One design with N watching windows: idle cost, then message propagation, then AI first tokens."""
    db_path = folder / f"{variant}-{sessions}.duckdb"
    db = connect(str(db_path))
    chat.create_user(db, "Sender")
    channel = chat.create_channel(db, "live", reply_policy="mention")  # only '@ai' messages get replies
    db.close()
    script, env = VARIANTS[variant]
    model.reset()
    with streamlit_server(db_path, openai_base_url=model.base_url, refresh_seconds=POLL, script=script,
                          log_dir=folder, extra_env=env) as server:
        url = f"{server.url}/?channel={channel}"
        contexts, pages = [], []
        for _ in range(sessions + 1):  # the last one sends
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(OBSERVER)
            page = context.new_page()
            page.goto(url, wait_until="commit")
            page.wait_for_selector(INPUT, timeout=180_000)  # 31 windows on 2 busy cores load slowly
            contexts.append(context)
            pages.append(page)
            if len(pages) == 1:
                rss_one = rss_mb(server.pid)  # the app's modules are loaded once the first window ran it
        watchers, sender = pages[:-1], pages[-1]
        time.sleep(2 * POLL)  # let every session settle into its rhythm

        cpu_before = cpu_seconds(server.pid)
        time.sleep(seconds)  # idle: nobody sends
        idle_cpu = cpu_seconds(server.pid) - cpu_before
        rss_with = rss_mb(server.pid)
        # After the idle window the page loads' keep-alive HTTP connections have closed: what is left
        # is what an open window holds (Streamlit's WebSocket, and the push listener's).
        tcp = connections(int(server.url.rsplit(":", 1)[1]))
        load = os.getloadavg()[0]  # the machine's run queue: other work shares these 2 cores

        tokens, pressed, ready = [], {}, []
        for i in range(max(3, int(seconds / SEND_EVERY))):
            token = f"tok-{i}"
            sender.fill(INPUT, f"message {token}")
            pressed[token] = sender.evaluate("performance.timeOrigin + performance.now()")
            started = time.monotonic()
            sender.press(INPUT, "Enter")
            tokens.append(token)
            sender.wait_for_selector(f"{INPUT}:not([disabled])", timeout=30_000)
            ready.append((time.monotonic() - started) * 1000)  # Enter -> the box takes the next line
            sender.wait_for_timeout(max(0.0, SEND_EVERY - (time.monotonic() - started)) * 1000)
        sender.wait_for_timeout(2 * POLL * 1000)

        firsts = []
        for k in range(replies):
            first = f"ai-{k}"
            model.push(Script(chunks=[f"{first} ", "and ", "the ", "rest ", "of ", "it."], chunk_delay=AI_CHUNK_DELAY))
            sender.fill(INPUT, f"@ai reply {k}")
            sender.press(INPUT, "Enter")
            firsts.append(first)
            sender.wait_for_timeout(6 * AI_CHUNK_DELAY * 1000 + 1500)
        answered = {piece.strip() for _, piece in model.chunks_sent} & set(firsts)
        deadline = time.monotonic() + SETTLE  # "missed" means never shown, not shown late: give stragglers time
        while True:
            seen = [page.evaluate("window.__seen") for page in watchers]
            if time.monotonic() > deadline or all(set(tokens) | answered <= set(s) for s in seen):
                break
            time.sleep(0.2)
        own_seen, own_stored = sender.evaluate("window.__seen"), sender.evaluate("window.__stored")
        streaming_cpu = _streaming_cpu(model, sender, server.pid)  # N windows watch a long reply stream
        for context in contexts[:-1]:
            context.close()
        time.sleep(2)
        streaming_cpu_alone = _streaming_cpu(model, sender, server.pid)  # only the sender's window is open
        contexts[-1].close()
        time.sleep(2)
        cpu_before = cpu_seconds(server.pid)
        time.sleep(seconds)  # the server alone (AI workers, its own timers): not any window's cost
        alone_cpu = cpu_seconds(server.pid) - cpu_before
    first_sent = {piece.strip(): at * 1000 for at, piece in model.chunks_sent if piece.strip() in firsts}

    db = connect(str(db_path))
    sent = {}
    for message in chat.list_messages(db, channel, limit=50):
        if message.author_id is not None and message.content.startswith("message tok-"):
            sent[message.content.split()[-1]] = message.created_at.replace(tzinfo=timezone.utc).timestamp() * 1000
    db.close()
    lost = [token for token in tokens if token not in sent]  # typed and sent, but never stored
    latencies, missed = delays(seen, tokens, sent)
    ai_latencies, ai_missed = delays(seen, firsts, first_sent)
    ai_lost = sum(first not in first_sent for first in firsts)  # the '@ai' send itself never got through
    windows = sessions + 1  # the sender window is open too
    echo = [own_seen[t] - pressed[t] for t in tokens if t in own_seen]
    confirmed = [own_stored[t] - pressed[t] for t in tokens if t in own_stored]
    return {
        "ready_p50": percentile(ready, 0.5), "ready_p95": percentile(ready, 0.95),
        "echo_p50": percentile(echo, 0.5), "echo_p95": percentile(echo, 0.95),
        "confirmed_p50": percentile(confirmed, 0.5), "confirmed_p95": percentile(confirmed, 0.95),
        "active_pct_per_watcher": 100 * max(0.0, streaming_cpu[0] - streaming_cpu_alone[0])
        / max(streaming_cpu[1], 1e-9) / max(1, sessions),
        "variant": variant, "sessions": sessions, "samples": len(latencies), "missed": missed,
        "lost": len(lost), "sent": len(tokens),
        "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
        "max": max(latencies) if latencies else float("nan"),
        "ai_p50": percentile(ai_latencies, 0.5), "ai_p95": percentile(ai_latencies, 0.95), "ai_missed": ai_missed,
        "ai_lost": ai_lost,
        "cpu_pct_per_session": 100 * max(0.0, round(idle_cpu - alone_cpu, 3)) / seconds / windows,
        "cpu_pct_alone": 100 * alone_cpu / seconds,
        "rss_per_session": (rss_with - rss_one) / max(1, windows - 1),
        "tcp_per_window": tcp / windows,
        "load": load,
    }


def _streaming_cpu(model: FakeOpenAI, sender, pid: int) -> tuple[float, float]:
    """(server CPU seconds, wall seconds) over one long AI reply, asked for from the sender's window."""
    model.push(Script(chunks=[f"w{i} " for i in range(STREAM_CHUNKS)], chunk_delay=AI_CHUNK_DELAY))
    sender.fill(INPUT, "@ai a long one")
    sender.press(INPUT, "Enter")
    sender.wait_for_timeout(500)  # the send's own run, not the stream's cost
    before, started = cpu_seconds(pid), time.monotonic()
    sender.wait_for_timeout(STREAM_CHUNKS * AI_CHUNK_DELAY * 1000)
    return cpu_seconds(pid) - before, time.monotonic() - started


def table(rows: list[dict]) -> str:
    lines = [
        "| design | windows | p50 ms | p95 ms | max ms | missed | lost sends | AI first token p50 / p95 ms "
        "| server CPU % of a core per idle window | idle windows per core | server alone % "
        "| TCP connections per window | server RSS MB per window | load average "
        "| own line shown p50 / p95 ms | own line stored, shown p50 / p95 ms | box ready again p50 / p95 ms "
        "| CPU % per window watching a reply stream |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_core = f"{100 / r['cpu_pct_per_session']:,.0f}" if r["cpu_pct_per_session"] > 0 else "∞"
        ai_notes = "".join(f" ({r[k]} {k[3:]})" for k in ("ai_missed", "ai_lost") if r[k])
        lines.append(
            f"| {r['variant']} | {r['sessions']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['max']:.0f} | {r['missed']} "
            f"| {r['lost']}/{r['sent']} | {r['ai_p50']:.0f} / {r['ai_p95']:.0f}{ai_notes} "
            f"| {r['cpu_pct_per_session']:.3f} | {per_core} | {r['cpu_pct_alone']:.2f} | {r['tcp_per_window']:.1f} "
            f"| {r['rss_per_session']:.1f} | {r['load']:.0f} | {r['echo_p50']:.0f} / {r['echo_p95']:.0f} "
            f"| {r['confirmed_p50']:.0f} / {r['confirmed_p95']:.0f} | {r['ready_p50']:.0f} / {r['ready_p95']:.0f} "
            f"| {r['active_pct_per_watcher']:.3f} |"
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
    left.set(xlabel="open windows", ylabel="send → visible in another window (ms)", title="Propagation latency")
    right.axhline(0.1, color="grey", linewidth=0.8, label="push target 0.1 %")
    right.set(xlabel="open windows", ylabel="% of a core per idle window", title="Server CPU per idle window",
              yscale="log")
    for axis in (left, right):
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,10,30", help="comma-separated numbers of watching windows")
    parser.add_argument("--seconds", type=float, default=FALLBACK, help="idle window and send phase length")
    parser.add_argument("--variants", default="push,fragment,poll", help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--replies", type=int, default=AI_REPLIES, help="AI replies whose first token is timed")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "live.png"), help="PNG to write ('' for none)")
    args = parser.parse_args(argv)
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder, FakeOpenAI() as model, chromium() as browser:
        for variant in args.variants.split(","):
            for sessions in [int(n) for n in args.sessions.split(",")]:
                rows.append(run_case(browser, variant, sessions, args.seconds, Path(folder), model, args.replies))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print(f"\n{os.cpu_count()} CPUs, poll {POLL:g} s, push fallback {FALLBACK:g} s, {args.seconds:g} s windows, "
          f"total {time.monotonic() - started:.0f} s")
    if args.plot:
        plot(rows, Path(args.plot))
    return rows


if __name__ == "__main__":
    main()
