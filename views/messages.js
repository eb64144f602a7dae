// The channel's message list (views/messages.py mounts it; views/socket.js is put in front of this file).
// It keeps one state per channel outside the element (this code runs again on every rerun, and an element may
// be remounted): the entries by message id, each replaced only by a higher version, so the page's own read
// and the socket's pushes can arrive in any order. Entry HTML was rendered and sanitized on the server
// (core/render.py); everything else is set as text.

const REPEAT_MS = 1000;  // the same line again this soon is one Enter the browser sent twice (views/chat.py stores it once)
const UNCONFIRMED_MS = 20000;  // a line neither stored nor refused by then is marked, never dropped
const BOTTOM_SLACK_PX = 48;  // this close to the end counts as "at the bottom": new messages keep it there
const INPUT = '[data-testid="stChatInputTextArea"]', SUBMIT = '[data-testid="stChatInputSubmitButton"]';
const STEP_ICONS = { tool: "🔍\ufe0e", retrieval: "🕘\ufe0e", budget: "✂\ufe0e", fallback: "ℹ\ufe0e" };

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clock(ms) {  // the reader's own time zone: "HH:MM" today, "d Mon HH:MM" before
  const at = new Date(ms), now = new Date();
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  if (at.toDateString() === now.toDateString()) return time;
  return `${at.getDate()} ${at.toLocaleString("en", { month: "short" })} ${time}`;
}

function stepLine(step) {
  let text = `${STEP_ICONS[step.kind] || STEP_ICONS.fallback} ${step.label || ""}`;
  if (step.state === "error") text += ` — ${step.error || ""}`;
  else if (step.summary) text += ` ${step.summary}`;
  return element("div", "step", text);
}

function listState(channel) {
  const lists = (window.__channelChatLists = window.__channelChatLists || {});
  if (!lists[channel]) {
    lists[channel] = { channel, entries: new Map(), nodes: new Map(), echoes: [], floor: undefined, data: null,
                       root: null, seenRefusals: new Set(), actions: 0 };
  }
  return lists[channel];
}

// One listener on the page for the chat box: a line is drawn the moment Enter is pressed, in the list on screen.
function watchChatBox() {
  if (window.__channelChatEcho) return;
  window.__channelChatEcho = true;
  const sent = () => {
    const box = document.querySelector(INPUT);
    const list = window.__channelChatCurrent;
    if (!box || box.disabled || !list || !list.data || !list.data.viewer || list.data.viewer.id == null) return;
    const text = box.value;
    if (!text.trim()) return;
    const now = Date.now();
    const last = list.echoes[list.echoes.length - 1];
    if (last && last.text === text && now - last.at < REPEAT_MS) return;
    const newest = Math.max(0, ...list.entries.keys());
    list.echoes.push({ text, at: now, after: newest, state: "sending", reason: null, node: null });
    count("__channelChatEchoes");
    draw(list);
    setTimeout(() => draw(list), UNCONFIRMED_MS + 50);
  };
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.target.matches && event.target.matches(INPUT)) sent();
  }, true);
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest(SUBMIT)) sent();
  }, true);
}

function act(list, doWhat, id, extra) {  // extra: an edit's {text}, a reaction's {emoji}
  if (!list.trigger) return;
  list.trigger("action", { ...extra, do: doWhat, id: id === undefined ? null : id, n: ++list.actions });  // n: never deduplicated
}

function mayAct(list, entry) {
  const viewer = list.data.viewer || {};
  return viewer.id != null && (viewer.all || (entry.asked_by || []).includes(viewer.id));
}

function drawContext(list, entry, details) {
  const body = details.querySelector(".context-body");
  const context = (list.data.contexts || {})[String(entry.id)];
  body.replaceChildren();
  if (!context) { body.append(element("div", "step", "Loading…")); return; }
  if (context.error) { body.append(element("div", "error", context.error)); return; }
  for (const step of context.steps || []) {
    body.append(stepLine(step));
    if (step.kind === "tool") body.append(element("pre", "output", `${step.tool || ""}(${step.arguments || ""})`));
    if (step.output) body.append(element("pre", "output", step.output));
  }
  if (context.request) body.append(element("pre", "output request", context.request));
}

function fileUrl(list, file, thumb) {  // views/files.py; in login mode it asks for the page's ticket for this channel
  const params = new URLSearchParams();
  if (thumb) params.set("thumb", "1");
  const ticket = list.data && list.data.viewer && list.data.viewer.ticket;
  if (ticket) params.set("ticket", ticket);
  const query = params.toString();
  return `/files/${file.id}${query ? "?" + query : ""}`;
}

function sizeWords(bytes) {
  if (bytes >= 1048576) return `${(bytes / 1048576).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}

function filesNode(list, files) {  // names are set as text: a file's name is anyone's text
  const box = element("div", "files");
  for (const file of files) {
    if (file.kind === "image") {
      const link = element("a", "file image");
      link.href = fileUrl(list, file, false);
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      const img = element("img");
      img.src = fileUrl(list, file, true);
      img.alt = file.name;
      img.loading = "lazy";
      if (file.width && file.height) {  // the box keeps its place before the thumbnail arrives
        const scale = Math.min(1, 240 / Math.max(file.width, file.height));
        img.width = Math.round(file.width * scale);
        img.height = Math.round(file.height * scale);
      }
      link.append(img);
      box.append(link);
    } else if (file.kind === "audio") {
      const figure = element("figure", "file audio");
      const audio = element("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = fileUrl(list, file, false);
      figure.append(audio, element("figcaption", null, `${file.name} · ${sizeWords(file.size)}`));
      box.append(figure);
    } else {
      const link = element("a", "file download", `📎\ufe0e ${file.name}`);
      link.href = fileUrl(list, file, false);
      link.setAttribute("download", file.name);
      link.rel = "noopener noreferrer";
      link.append(element("span", "size", ` · ${sizeWords(file.size)}`));
      box.append(link);
    }
  }
  return box;
}

function messageNode(list, entry) {
  const node = element("article", "chat-message" + (entry.ai ? " ai" : ""));
  node.dataset.messageId = entry.id;
  node.dataset.status = entry.status;
  node.setAttribute("aria-busy", entry.status === "pending" || entry.status === "streaming" ? "true" : "false");
  const avatar = element("div", "avatar", entry.ai ? "AI" : (entry.author || "?").trim().charAt(0).toUpperCase());
  avatar.setAttribute("aria-hidden", "true");
  const main = element("div", "body");
  const head = element("div", "head");
  head.append(element("strong", "author", entry.author), element("span", "time", ` · ${clock(entry.at)}`));
  if (entry.edited && !entry.deleted) head.append(editedMark(entry));
  main.append(head);
  if (entry.deleted) { main.append(element("div", "tombstone", "Message deleted")); node.append(avatar, main); return node; }
  const open = entry.status === "pending" || entry.status === "streaming";
  if (entry.ai && open) for (const step of entry.steps || []) main.append(stepLine(step));
  if (entry.status === "pending" && !entry.html) main.append(element("div", "typing", "typing …"));
  else if (entry.html) {  // a reply picked up after a crash keeps its text, marked by its step, until rewritten
    const text = element("div", "text");
    text.innerHTML = entry.html;  // rendered and sanitized on the server (core/render.py)
    if (entry.status === "streaming") {
      const cursor = element("span", "cursor", "▌");
      cursor.setAttribute("aria-hidden", "true");  // decoration: the reply is aria-busy while it streams
      text.append(cursor);
    }
    main.append(text);
  }
  if (entry.files && entry.files.length) main.append(filesNode(list, entry.files));
  if (entry.status === "error") main.append(element("div", "error", entry.error));
  if (entry.stopped) main.append(element("div", "step", "Stopped."));
  const buttons = element("div", "buttons");
  if (entry.ai && open && mayAct(list, entry)) {
    const stop = element("button", "act stop", "Stop");
    stop.onclick = () => { stop.disabled = true; act(list, "stop", entry.id); };
    buttons.append(stop);
  }
  if (entry.ai && (entry.status === "error" || entry.stopped) && mayAct(list, entry)) {
    const retry = element("button", "act retry", "Retry");
    retry.onclick = () => { retry.disabled = true; act(list, "retry", entry.id); };
    buttons.append(retry);
  }
  if (buttons.childElementCount) main.append(buttons);
  main.append(...messageActs(list, entry));  // views/message_acts.js: edit, delete, regenerate, reactions
  if (entry.ai && !open && entry.has_context) {
    const details = element("details", "context");
    details.append(element("summary", null, "Context used"), element("div", "context-body"));
    details.open = list.opened && list.opened.has(entry.id);
    if (details.open) drawContext(list, entry, details);
    details.addEventListener("toggle", () => {
      list.opened = list.opened || new Set();
      if (!details.open) { list.opened.delete(entry.id); return; }
      list.opened.add(entry.id);
      drawContext(list, entry, details);
      if (!(list.data.contexts || {})[String(entry.id)]) act(list, "context", entry.id);
    });
    main.append(details);
  }
  node.append(avatar, main);
  return node;
}

function echoNode(list, echo) {
  const node = element("article", `chat-message echo ${echo.state}`);
  const viewer = list.data.viewer || {};
  const avatar = element("div", "avatar", (viewer.name || "?").trim().charAt(0).toUpperCase());
  avatar.setAttribute("aria-hidden", "true");
  const main = element("div", "body");
  const head = element("div", "head");
  head.append(element("strong", "author", viewer.name || ""), element("span", "time", ` · ${clock(echo.at)}`));
  main.append(head, element("div", "text plain", echo.text));
  if (echo.state === "refused") main.append(element("div", "error", `Not sent. ${echo.reason || ""}`.trim()));
  else if (Date.now() - echo.at > UNCONFIRMED_MS) main.append(element("div", "step", "Not confirmed yet: check your connection."));
  else main.append(element("div", "step sending", "Sending…"));
  node.append(avatar, main);
  return node;
}

function merge(list, entries) {  // keep, per id, the highest version; returns whether anything new was added
  let added = false;
  for (const entry of entries || []) {
    const known = list.entries.get(entry.id);
    if (known && known.version > entry.version) continue;
    if (!known) added = true;
    list.entries.set(entry.id, entry);
  }
  return added;
}

function settleEchoes(list) {  // a stored line of the viewer's confirms the oldest echo sent before it was stored
  const viewer = (list.data && list.data.viewer) || {};
  for (const refusal of list.data.refused || []) {
    const key = `${refusal.at}|${refusal.text}`;
    if (list.seenRefusals.has(key)) continue;
    list.seenRefusals.add(key);
    const echo = list.echoes.find((e) => e.state === "sending" && e.text === refusal.text);
    if (echo) { echo.state = "refused"; echo.reason = refusal.reason; }
  }
  const mine = [...list.entries.values()].filter((e) => !e.ai && e.author_id === viewer.id).map((e) => e.id).sort((a, b) => a - b);
  for (const echo of list.echoes) {
    if (echo.state !== "sending") continue;
    const id = mine.find((m) => m > echo.after && !list.claimed?.has(m));
    if (id === undefined) continue;
    list.claimed = list.claimed || new Set();
    list.claimed.add(id);
    echo.state = "stored";
  }
  list.echoes = list.echoes.filter((e) => e.state !== "stored");
}

function draw(list) {
  const root = list.root;
  if (!root || !list.data) return;
  settleEchoes(list);
  const log = root.querySelector(".log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight <= BOTTOM_SLACK_PX;
  const heightBefore = log.scrollHeight, topBefore = log.scrollTop;
  const floor = list.floor;
  const shown = [...list.entries.values()].filter((e) => floor === null || floor === undefined || e.id >= floor).sort((a, b) => a.id - b.id);
  const prepended = shown.length && list.firstShown !== undefined && shown[0].id < list.firstShown;
  list.firstShown = shown.length ? shown[0].id : undefined;
  const children = [];
  for (const entry of shown) {
    const drawn = list.nodes.get(entry.id);
    const context = (list.data.contexts || {})[String(entry.id)];
    const stamp = `${entry.version}|${mayAct(list, entry)}|${context ? 1 : 0}|${actsStamp(list, entry)}`;
    if (!drawn || drawn.stamp !== stamp) list.nodes.set(entry.id, { stamp, node: messageNode(list, entry) });
    children.push(list.nodes.get(entry.id).node);
  }
  for (const echo of list.echoes) {
    const stamp = `${echo.state}|${Date.now() - echo.at > UNCONFIRMED_MS}`;
    if (!echo.node || echo.stamp !== stamp) { echo.node = echoNode(list, echo); echo.stamp = stamp; }
    children.push(echo.node);
  }
  const current = log.children;
  const same = children.length === current.length && children.every((c, i) => current[i] === c);
  const grew = children.some((c) => !c.isConnected);
  if (!same) {  // only what changed is touched: a page that redraws often must stay cheap on a slow device
    if (!children.length) log.replaceChildren(element("div", "empty", "No messages yet. Say hello!"));
    else if (children.slice(0, current.length).every((c, i) => current[i] === c)) log.append(...children.slice(current.length));
    else log.replaceChildren(...children);
  }
  root.querySelector(".older").hidden = !list.data.more;
  const error = root.querySelector(".list-error");
  error.hidden = !list.data.error;
  error.textContent = list.data.error || "";
  if (prepended && !atBottom) log.scrollTop = topBefore + (log.scrollHeight - heightBefore);  // "Load older" keeps your place
  else if (atBottom || list.stick) { log.scrollTop = log.scrollHeight; list.stick = false; }
  if (grew && !atBottom && !prepended) root.querySelector(".new-below").hidden = false;
  if (atBottom) root.querySelector(".new-below").hidden = true;
  refocus(list);
  count("__channelChatDraws");
}

function build(parentElement, list) {
  const root = element("div", "messages");
  const older = element("button", "act older", "Load older");
  older.onclick = () => { older.disabled = true; act(list, "older"); };
  const log = element("div", "log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  log.setAttribute("aria-label", "Messages");
  log.tabIndex = 0;
  const below = element("button", "new-below", "New messages ↓");
  below.hidden = true;
  below.onclick = () => { log.scrollTop = log.scrollHeight; below.hidden = true; };
  log.addEventListener("scroll", () => {
    if (log.scrollHeight - log.scrollTop - log.clientHeight <= BOTTOM_SLACK_PX) below.hidden = true;
  });
  const error = element("div", "list-error error");
  error.setAttribute("role", "alert");
  root.append(older, log, below, error);
  for (const stale of parentElement.querySelectorAll(":scope > .messages")) stale.remove();  // keep Streamlit's <style>
  parentElement.append(root);
  list.stick = true;
  return root;
}

export default function ({ data: bytes, parentElement, setTriggerValue }) {
  const data = JSON.parse(new TextDecoder().decode(bytes));
  count("__channelChatListRuns");  // once per script run that handed the list new data (tests count them)
  const list = listState(data.channel);
  window.__channelChatCurrent = list;
  list.trigger = setTriggerValue;
  if (list.parent !== parentElement || !list.root || !list.root.isConnected) {
    list.parent = parentElement;
    list.nodes = new Map();
    list.root = build(parentElement, list);
  }
  list.data = data;
  merge(list, data.entries);
  // What the page was given decides how far back the list reaches (never nearer than it reached: what a
  // person is reading stays); pushes add what is newer. null: everything there is.
  const floor = data.more && data.entries.length ? data.entries[0].id : null;
  list.floor = floor === null || list.floor === undefined ? floor : list.floor === null ? null : Math.min(list.floor, floor);
  const older = list.root.querySelector(".older");
  older.disabled = false;
  watchChatBox();
  let live = null;
  if (data.live) {
    live = hold(parentElement, data.live.path, data.live.ticket);
    live.watch = ["0"];  // the users and channels lists: the page redraws them; this list draws its channel itself
    live.trigger = (name, value) => setTriggerValue("action", { do: "changed", id: null, n: value });
    live.onContent = (frame) => { if (frame.channel === list.channel) { merge(list, frame.messages); draw(list); } };
    live.shown = data.live.shown;
    live.asking = false;
    live.check();
  }
  draw(list);
  return () => { if (live) parentElement.__channelChatLive.release(); };
}
