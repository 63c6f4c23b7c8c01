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
  // fragment (data-live-src) when one of those events arrives.
  function refresh(element) {
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
        if (names.indexOf(event.name) >= 0 || names.indexOf("*") >= 0) { refresh(element); }
      });
    });
    socket.addEventListener("open", function () { document.body.dataset.live = "on"; });
    socket.addEventListener("close", function () {
      document.body.dataset.live = "off";
      setTimeout(function () { connect(Math.min(attempt + 1, 6)); }, 500 * Math.pow(2, attempt));
    });
  }

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
