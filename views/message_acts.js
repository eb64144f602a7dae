// A message's own controls in the list (views/messages.js draws the message; this file its acts): Edit with an
// inline box, Delete with a confirm step, Regenerate, and the reaction row. Every entry is shared by all windows,
// so what this viewer may do is decided here from the viewer's id (core decides again when a button is pressed):
// edit your own message, delete your own (admins: any), react to anything that is not deleted.

const EMOJI_DEFAULT = ["👍", "❤️", "😂", "🎉", "👀"];  // views/chat.py hands core.reactions.DEFAULT_ROW; this if not

function actButton(label, className, onclick, ariaLabel) {
  const button = element("button", `act ${className}`, label);
  button.type = "button";
  if (ariaLabel) button.setAttribute("aria-label", ariaLabel);
  button.onclick = onclick;
  return button;
}

function isMine(list, entry) {
  const viewer = list.data.viewer || {};
  return viewer.id != null && !entry.ai && entry.author_id === viewer.id;
}

function mayDelete(list, entry) {
  const viewer = list.data.viewer || {};
  return !entry.deleted && viewer.id != null && (viewer.admin || isMine(list, entry));
}

function mayRegenerate(list, entry) {  // the message it answers was edited after this reply was asked for
  if (!entry.ai || entry.deleted || entry.status === "pending" || entry.status === "streaming") return false;
  const trigger = entry.trigger != null ? list.entries.get(entry.trigger) : null;
  return !!(trigger && !trigger.deleted && trigger.edited && trigger.edited > (entry.asked_at || 0) && mayAct(list, entry));
}

// What of the viewer's own state a drawn message depends on: a change of it redraws the message. (An open
// picker is not: the element keeps it, and a redraw for another reason must not take the focus from it.)
function actsStamp(list, entry) {
  const trigger = entry.trigger != null ? list.entries.get(entry.trigger) : null;
  return [list.editing === entry.id, list.confirming === entry.id,
          trigger ? `${trigger.edited}|${trigger.deleted}` : ""].join("|");
}

function editedMark(entry) {
  const mark = element("span", "edited", " (edited)");
  mark.title = `Edited ${clock(entry.edited)}`;
  return mark;
}

function editor(list, entry) {
  const form = element("div", "editor");
  const box = element("textarea", "edit-box");
  box.setAttribute("aria-label", "Edit your message");
  box.value = list.draft !== undefined ? list.draft : entry.text || "";
  box.rows = Math.min(8, Math.max(2, box.value.split("\n").length));
  box.oninput = () => { list.draft = box.value; };
  const close = () => {
    list.editing = null;
    list.draft = undefined;
    list.refocus = `[data-message-id="${entry.id}"] .act.edit`;  // back to the button that opened the box
    draw(list);
  };
  const save = () => {
    const text = box.value;
    close();
    if (text !== entry.text) act(list, "edit", entry.id, { text });
  };
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();  // typed text is not the page's shortcuts (Streamlit's "c", "r" see only the shadow host)
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); save(); }
    else if (event.key === "Escape") { event.preventDefault(); close(); }
  });
  const row = element("div", "buttons");
  row.append(actButton("Save", "save", save), actButton("Cancel", "cancel", close));
  form.append(box, element("div", "hint", "Enter saves · Shift+Enter new line · Escape cancels"), row);
  list.refocus = `[data-message-id="${entry.id}"] .edit-box`;
  return form;
}

function confirmDelete(list, entry) {
  const box = element("div", "confirm");
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Confirm delete");
  const cancel = () => { list.confirming = null; list.refocus = `[data-message-id="${entry.id}"] .act.delete`; draw(list); };
  const yes = actButton("Delete", "confirm-delete", () => { list.confirming = null; act(list, "delete", entry.id); draw(list); });
  const extra = entry.ai ? "This AI reply's text is removed for everyone." :
    "Its text is removed for everyone, and so is the AI reply it asked for.";
  box.append(element("span", "question", `Delete this message? ${extra}`), yes, actButton("Cancel", "cancel", cancel));
  box.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.preventDefault(); cancel(); } });
  list.refocus = `[data-message-id="${entry.id}"] .confirm-delete`;
  return box;
}

function reactionRow(list, entry) {
  const viewer = list.data.viewer || {};
  const row = element("div", "reactions");
  row.setAttribute("role", "group");
  row.setAttribute("aria-label", "Reactions");
  const react = (emoji) => act(list, "react", entry.id, { emoji });
  for (const group of entry.reactions || []) {
    const names = (group.names || []).join(", ");
    const chip = actButton(`${group.emoji} ${group.count}`, "chip", () => react(group.emoji),
                           `${group.emoji} ${group.count}: ${names}`);
    chip.title = names;
    chip.setAttribute("aria-pressed", (group.by || []).includes(viewer.id) ? "true" : "false");
    chip.disabled = viewer.id == null;
    row.append(chip);
  }
  if (viewer.id == null) return row;
  const picker = element("details", "picker");
  const summary = element("summary", "act add-reaction", "☺+");
  summary.setAttribute("aria-label", "Add a reaction");
  picker.append(summary);
  picker.open = list.picking === entry.id;
  picker.addEventListener("toggle", () => {
    if (picker.open) list.picking = entry.id;
    else if (list.picking === entry.id) list.picking = null;
  });
  const choices = element("div", "choices");
  const offered = viewer.emoji || EMOJI_DEFAULT;  // on an AI reply 👍 and 👎 are also feedback: offer both
  for (const emoji of entry.ai ? [...new Set([...offered, "👍", "👎"])] : offered) {
    choices.append(actButton(emoji, "emoji", () => { list.picking = null; react(emoji); }, `React with ${emoji}`));
  }
  const other = element("input", "any-emoji");
  other.type = "text";
  other.maxLength = 16;
  other.placeholder = "any emoji";
  other.setAttribute("aria-label", "Any emoji");
  const add = () => { const emoji = other.value.trim(); if (emoji) { list.picking = null; react(emoji); } };
  other.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter" && !event.isComposing) { event.preventDefault(); add(); }
    else if (event.key === "Escape") { event.preventDefault(); picker.open = false; summary.focus(); }
  });
  choices.append(other, actButton("Add", "add", add, "Add this emoji"));
  picker.append(choices);
  row.append(picker);
  return row;
}

// The controls under a message (none on a tombstone): the edit box in place of the buttons while editing.
function messageActs(list, entry) {
  if (entry.deleted) return [];
  if (list.editing === entry.id && isMine(list, entry)) return [editor(list, entry)];
  const parts = [];
  const open = entry.status === "pending" || entry.status === "streaming";
  if (!open || (entry.reactions || []).length) parts.push(reactionRow(list, entry));
  const buttons = element("div", "buttons message-acts");
  if (mayRegenerate(list, entry)) {
    const again = actButton("Regenerate reply", "regenerate", () => { again.disabled = true; act(list, "regenerate", entry.id); });
    buttons.append(again);
  }
  if (isMine(list, entry)) {
    buttons.append(actButton("Edit", "edit", () => { list.editing = entry.id; list.draft = undefined; draw(list); },
                             "Edit message"));
  }
  if (mayDelete(list, entry) && list.confirming !== entry.id) {
    buttons.append(actButton("Delete", "delete", () => { list.confirming = entry.id; draw(list); }, "Delete message"));
  }
  if (buttons.childElementCount) parts.push(buttons);
  if (list.confirming === entry.id && mayDelete(list, entry)) parts.push(confirmDelete(list, entry));
  return parts;
}

function refocus(list) {  // after a redraw that replaced the focused control, focus its successor
  if (!list.refocus || !list.root) return;
  const target = list.root.querySelector(list.refocus);
  list.refocus = null;
  if (target) target.focus();
}
