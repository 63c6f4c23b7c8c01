/* The console's live parts, in plain JavaScript (no libraries, no CDN):
 * - a WebSocket to /console/ws that reloads marked regions when something changes;
 * - the CSRF token on every fetch();
 * - keyboard shortcuts (g i: inbox, g c: customers, /: search, r: reply, ?: help). */
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  window.ccFetch = function (url, options) {
    options = options || {};
    options.headers = Object.assign({ "X-CSRF-Token": csrf, "Accept": "application/json" },
      options.headers || {});
    options.credentials = "same-origin";
    return fetch(url, options);
  };

  // Live updates: any element with data-live="event.name ..." re-fetches its own
  // fragment (data-live-src) when one of those events arrives. With
  // data-live-match="customer_id=12 ticket_id=34" only events naming one of those
  // ids count. Bursts of events are folded into one fetch per element.
  const pendingRefresh = new WeakMap();

  function matches(element, event) {
    const rule = element.getAttribute("data-live-match");
    if (!rule) { return true; }
    const data = event.data || {};
    return rule.split(/\s+/).some(function (pair) {
      const parts = pair.split("=");
      return parts.length === 2 && data[parts[0]] !== undefined && data[parts[0]] !== null
        && String(data[parts[0]]) === parts[1];
    });
  }

  // A burst of events reloads a region once: 250 ms after the first, and a region is
  // reloaded at most once a second (a busy center's events would otherwise make every
  // console ask the server again and again).
  const lastLoaded = new WeakMap();
  function refresh(element) {
    if (pendingRefresh.get(element)) { return; }
    pendingRefresh.set(element, true);
    const since = Date.now() - (lastLoaded.get(element) || 0);
    setTimeout(function () {
      pendingRefresh.delete(element);
      const active = document.activeElement;
      if (active && element.contains(active) && /INPUT|TEXTAREA|SELECT/.test(active.tagName)) {
        refresh(element);  // the agent is typing in this region: reload it afterwards
        return;
      }
      lastLoaded.set(element, Date.now());
      load(element);
    }, Math.max(250, 1000 - since));
  }
  window.ccRefresh = refresh;

  function load(element) {
    const src = element.getAttribute("data-live-src");
    if (!src) { return; }
    window.ccFetch(src, { headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        element.innerHTML = html;  // server-rendered and escaped by the server
        element.classList.remove("live-flash");
        void element.offsetWidth;
        element.classList.add("live-flash");
        document.dispatchEvent(new CustomEvent("cc:refreshed", { detail: element }));
      });
  }

  function connect(attempt) {
    if (!csrf || !("WebSocket" in window)) { return; }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + "/console/ws");
    socket.addEventListener("message", function (message) {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      document.dispatchEvent(new CustomEvent("cc:event", { detail: event }));
      document.querySelectorAll("[data-live]").forEach(function (element) {
        const names = element.getAttribute("data-live").split(/\s+/);
        if ((names.indexOf(event.name) >= 0 || names.indexOf("*") >= 0) && matches(element, event)) {
          refresh(element);
        }
      });
    });
    socket.addEventListener("open", function () { document.body.dataset.live = "on"; });
    socket.addEventListener("close", function () {
      document.body.dataset.live = "off";
      setTimeout(function () { connect(Math.min(attempt + 1, 6)); }, 500 * Math.pow(2, attempt));
    });
  }

  // Screen pops and mentions: a small notice in the corner, on every console page. The
  // texts come translated from the page (#shortcut-help data-i18n-*); values go in as
  // text, the caller's card is server-rendered HTML.
  function toast(title, link, linkText, cardSrc) {
    let area = document.getElementById("toasts");
    if (!area) {
      area = document.createElement("div");
      area.id = "toasts";
      area.setAttribute("aria-live", "assertive");
      document.body.appendChild(area);
    }
    const box = document.createElement("div");
    box.className = "toast";
    box.setAttribute("role", "alert");
    const heading = document.createElement("strong");
    heading.textContent = title;
    box.appendChild(heading);
    if (link) {
      const anchor = document.createElement("a");
      anchor.href = link;
      anchor.textContent = linkText || link;
      box.appendChild(anchor);
    }
    if (cardSrc) {
      const card = document.createElement("div");
      card.className = "toast-card";
      card.setAttribute("data-live-src", cardSrc);
      box.appendChild(card);
      load(card);
    }
    const close = document.createElement("button");
    close.className = "link toast-close";
    close.textContent = "×";
    close.addEventListener("click", function () { box.remove(); });
    box.appendChild(close);
    area.appendChild(box);
    setTimeout(function () { box.remove(); }, 60000);
  }

  function text(name, fallback) {
    const help = document.getElementById("shortcut-help");
    return (help && help.getAttribute("data-i18n-" + name)) || fallback;
  }

  document.addEventListener("cc:event", function (message) {
    const event = message.detail || {};
    const data = event.data || {};
    if (event.name === "call.screen_pop") {
      toast(text("call", "Incoming call") + ": " + (data.name || data.number || ""),
        null, null, data.customer_id ? "/console/customers/" + data.customer_id + "/card" : null);
    } else if (event.name === "note.mentioned") {
      toast(text("mention", "You were mentioned") + ": " + (data.author_name || ""),
        "/console/conversations/" + data.conversation_id, text("open", "Open"), null);
    }
  });

  let pending = "";
  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (target && (target.isContentEditable || /INPUT|TEXTAREA|SELECT/.test(target.tagName))) {
      return;
    }
    const key = event.key;
    if (pending === "g") {
      pending = "";
      if (key === "i") { location.href = "/console/inbox"; }
      if (key === "c") { location.href = "/console/customers"; }
      return;
    }
    if (key === "g") { pending = "g"; return; }
    if (key === "/") {
      const search = document.querySelector("[data-shortcut=search]");
      if (search) { event.preventDefault(); search.focus(); }
    }
    if (key === "r") {
      const reply = document.querySelector("[data-shortcut=reply]");
      if (reply) { event.preventDefault(); reply.focus(); }
    }
    if (key === "?") {
      const help = document.getElementById("shortcut-help");
      if (help) { help.hidden = !help.hidden; }
    }
  });

  document.addEventListener("DOMContentLoaded", function () { connect(0); });
}());
