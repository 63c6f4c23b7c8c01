/* The agent's screens (inbox, conversation, search), in plain JavaScript:
 * - j / k move through a list ([data-row]), Enter opens the selected row;
 * - n focuses the note, e resolves the ticket, Ctrl+Enter sends the form being typed in,
 *   Escape leaves the field (so the letter keys work again);
 * - forms marked data-ajax are sent with fetch (CSRF header, files streamed), their
 *   errors shown in place, the live regions refreshed after success;
 * - canned responses: pick one from the list or type /shortcut then Tab or space;
 * - "agent is typing" for web chats.
 * Nothing here builds HTML from data: texts go in with textContent. */
(function () {
  "use strict";

  // -- lists: j / k / Enter ---------------------------------------------------------
  let selectedId = null;

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-row]")); }

  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    if (!row) { return; }
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    selectedId = row.getAttribute("data-id");
    row.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    const list = rows();
    if (!list.length) { return; }
    let index = list.findIndex(function (r) { return r.classList.contains("selected"); });
    index = index < 0 ? (step > 0 ? 0 : list.length - 1)
      : Math.min(list.length - 1, Math.max(0, index + step));
    select(list[index]);
  }

  function open(row) {
    const href = row && row.getAttribute("data-href");
    if (href) { location.href = href; }
  }

  document.addEventListener("cc:refreshed", function () {
    if (selectedId === null) { return; }
    const again = rows().find(function (r) { return r.getAttribute("data-id") === selectedId; });
    if (again) { again.classList.add("selected"); again.setAttribute("aria-selected", "true"); }
  });

  document.addEventListener("click", function (event) {
    const row = event.target.closest && event.target.closest("[data-row]");
    if (!row || event.target.closest("a, button, input, select, textarea, label")) { return; }
    open(row);
  });

  // -- keys ---------------------------------------------------------------------------
  function typing(target) {
    return target && (target.isContentEditable || /INPUT|TEXTAREA|SELECT/.test(target.tagName));
  }

  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.form
        && target.tagName === "TEXTAREA") {
      event.preventDefault();
      target.form.requestSubmit();
      return;
    }
    if (event.key === "Escape" && typing(target)) { target.blur(); return; }
    if (typing(target) || event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.key === "j") { event.preventDefault(); move(1); }
    else if (event.key === "k") { event.preventDefault(); move(-1); }
    else if (event.key === "Enter") {
      const row = document.querySelector("[data-row].selected");
      if (row) { event.preventDefault(); open(row); }
    } else if (event.key === "n") {
      const note = document.querySelector("[data-shortcut=note]");
      if (note) { event.preventDefault(); note.focus(); }
    } else if (event.key === "e") {
      const resolve = document.querySelector("[data-shortcut=resolve]");
      if (resolve) { event.preventDefault(); resolve.click(); }
    }
  });

  // -- forms sent with fetch ------------------------------------------------------------
  function showError(form, message) {
    const box = form.querySelector(".form-error");
    if (box) { box.textContent = message; box.hidden = !message; }
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!form.matches || !form.matches("form[data-ajax]") || !window.fetch) { return; }
    event.preventDefault();
    const question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { return; }
    const data = new FormData(form, event.submitter || undefined);
    const buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    showError(form, "");
    window.ccFetch(form.action, {
      method: "POST", body: data,
      headers: { "X-Requested-With": "fetch", "Accept": "application/json" },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { ok: response.ok, status: response.status, body: body };
      });
    }).then(function (result) {
      buttons.forEach(function (b) { b.disabled = false; });
      if (!result.ok) {
        showError(form, (result.body && result.body.error) || ("HTTP " + result.status));
        return;
      }
      form.dispatchEvent(new CustomEvent("cc:sent", { bubbles: true, detail: result.body }));
      if (form.hasAttribute("data-reset")) {
        form.reset();
        document.querySelectorAll("[data-live-src]").forEach(function (element) {
          if (window.ccRefresh) { window.ccRefresh(element); }
        });
      } else {
        location.reload();
      }
    }).catch(function (error) {
      buttons.forEach(function (b) { b.disabled = false; });
      showError(form, String(error));
    });
  });

  // -- canned responses -----------------------------------------------------------------
  function cannedBody(key, byShortcut) {
    const items = document.querySelectorAll(".canned-list li");
    for (let i = 0; i < items.length; i += 1) {
      const item = items[i];
      const name = byShortcut ? item.getAttribute("data-shortcut-name") : item.getAttribute("data-id");
      if (name === key) { return item.textContent; }
    }
    return null;
  }

  function insert(textarea, text, from, to) {
    const value = textarea.value;
    const start = from === undefined ? textarea.selectionStart : from;
    const end = to === undefined ? textarea.selectionEnd : to;
    textarea.value = value.slice(0, start) + text + value.slice(end);
    const caret = start + text.length;
    textarea.setSelectionRange(caret, caret);
    textarea.focus();
  }

  document.addEventListener("change", function (event) {
    const picker = event.target;
    if (!picker.matches || !picker.matches("[data-canned-select]") || !picker.value) { return; }
    const textarea = picker.form && picker.form.querySelector("[data-canned-input]");
    const body = cannedBody(picker.value, false);
    if (textarea && body !== null) { insert(textarea, body); }
    picker.value = "";
  });

  document.addEventListener("keydown", function (event) {
    const textarea = event.target;
    if (!textarea.matches || !textarea.matches("[data-canned-input]")) { return; }
    if (event.key !== "Tab" && event.key !== " ") { return; }
    const caret = textarea.selectionStart;
    const before = textarea.value.slice(0, caret);
    const match = /(^|\s)\/([\w\u3400-\u9fff-]{1,50})$/.exec(before);
    if (!match) { return; }
    const body = cannedBody(match[2], true);
    if (body === null) { return; }
    event.preventDefault();
    insert(textarea, body, caret - match[2].length - 1, caret);
  });

  // -- typing notice for web chats ------------------------------------------------------
  let lastTyping = 0;
  document.addEventListener("input", function (event) {
    const form = event.target.form;
    const url = form && form.getAttribute("data-typing");
    if (!url || event.target.tagName !== "TEXTAREA") { return; }
    const now = Date.now();
    if (now - lastTyping < 3000) { return; }
    lastTyping = now;
    window.ccFetch(url, { method: "POST", headers: { "X-Requested-With": "fetch" } });
  });
}());
