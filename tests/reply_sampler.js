// Records every text an AI reply showed in this window (tests/test_failover_browser.py), from the page's start.
// The message list draws inside a shadow root, which a document-wide observer does not see: each shadow root is
// observed as it is attached. A sample is taken at every change and every 20 ms; one differing from the last
// is kept, with its time: {at, text, status, steps}, text "" when the reply shows no text (or is not drawn).
(() => {
  const roots = [document];
  const samples = (window.__replySamples = {});
  const look = () => {
    const now = performance.now();
    for (const root of roots) {
      for (const node of root.querySelectorAll("article.chat-message.ai")) {
        const id = node.dataset.messageId;
        const text = node.querySelector(".text");
        const sample = {
          at: now,
          text: text ? text.textContent.replace("▌", "").trim() : "",
          status: node.dataset.status,
          steps: [...node.querySelectorAll(".step")].map((step) => step.textContent).join(" | "),
        };
        const list = (samples[id] = samples[id] || []);
        const last = list[list.length - 1];
        if (!last || last.text !== sample.text || last.status !== sample.status || last.steps !== sample.steps) list.push(sample);
      }
    }
    for (const [id, list] of Object.entries(samples)) {  // a reply that was drawn and is gone now counts as empty
      const last = list[list.length - 1];
      const drawn = roots.some((root) => root.querySelector(`article.chat-message.ai[data-message-id="${id}"]`));
      if (!drawn && last.status !== "gone") list.push({ at: now, text: "", status: "gone", steps: "" });
    }
  };
  const observe = (root) => new MutationObserver(look).observe(root, { subtree: true, childList: true, characterData: true, attributes: true });
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    const root = attach.call(this, init);
    roots.push(root);
    observe(root);
    return root;
  };
  observe(document);
  setInterval(look, 20);
})();
