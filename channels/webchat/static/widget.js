/*
 * Contact-center web chat widget. Embed with one tag:
 *   <script src="https://YOUR-SERVER/webchat/widget.js" async></script>
 * Optional: data-lang="zh" or "en" on the tag (default: the page's <html lang>).
 *
 * Vanilla JS, no libraries, no build step; everything (CSS included) comes from this file.
 * Works under a strict Content-Security-Policy (no inline styles or scripts needed).
 * Visitor and agent texts are only ever set with textContent.
 */
(function () {
  "use strict";
  if (window.__ccWebchatLoaded) {
    return;
  }
  window.__ccWebchatLoaded = true;

  var CONFIG = "__CC_WEBCHAT_CONFIG__";
  if (typeof CONFIG !== "object" || CONFIG === null) {
    CONFIG = {};
  }
  var SOCKET_PATH = CONFIG.socketPath || "/webchat/ws";
  var MAX_CHARS = CONFIG.maxChars || 4000;
  var PRECHAT = CONFIG.prechat || "optional";
  var VISITOR_COOKIE = "cc_visitor";
  var STORE = "cc_webchat_";
  var UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  var script = document.currentScript || (function () {
    var tags = document.getElementsByTagName("script");
    for (var i = tags.length - 1; i >= 0; i--) {
      if (/\/webchat\/widget\.js(\?|$)/.test(tags[i].src)) {
        return tags[i];
      }
    }
    return null;
  })();
  var base = new URL(script && script.src ? script.src : "/webchat/widget.js", location.href);
  var socketUrl = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + SOCKET_PATH;

  // --- language ---------------------------------------------------------------------
  function pickLang() {
    var wanted = (script && script.getAttribute("data-lang")) ||
      document.documentElement.lang || "";
    return /^zh/i.test(wanted) ? "zh" : "en";
  }
  var lang = pickLang();
  var TEXTS = {
    zh: {
      open: "打开在线客服", close: "关闭", placeholder: "请输入消息…", send: "发送",
      online: "客服在线", offline: "暂无客服在线", connecting: "正在连接…",
      reconnecting: "连接已断开，正在重新连接…",
      offlineNotice: "目前没有客服在线。请留下您的邮箱，我们会通过邮件回复您。",
      offlineSaved: "我们会回复到您的邮箱：",
      prechatIntro: "开始对话前，请告诉我们如何称呼您和联系方式（选填）。",
      prechatRequired: "开始对话前，请留下您的称呼和邮箱或手机号。",
      name: "称呼", email: "邮箱", phone: "手机号", start: "开始对话", skip: "跳过",
      sending: "发送中…", failed: "未发送，点击重试", you: "我", agent: "客服",
      typing: "正在输入…", viaEmail: "（已通过邮件回复）", unread: "条未读消息",
      needEmail: "请填写有效的邮箱地址。", needContact: "请填写邮箱或手机号。",
      errors: {
        rate_limited: "发送太快了，请稍候再试。",
        too_long: "消息太长了（最多 {max} 个字符）。",
        empty: "消息不能为空。",
        invalid_email: "邮箱地址无效。",
        invalid_phone: "手机号无效。",
        email_required: "请先留下您的邮箱。",
        unavailable: "服务暂时不可用，稍后会自动重发。",
        bad_frame: "消息无法发送。",
        default: "出错了，请稍后再试。"
      }
    },
    en: {
      open: "Open chat", close: "Close", placeholder: "Type a message…", send: "Send",
      online: "We're online", offline: "No agent online", connecting: "Connecting…",
      reconnecting: "Connection lost, reconnecting…",
      offlineNotice: "No agent is online right now. Leave your e-mail address and we will answer by e-mail.",
      offlineSaved: "We will answer by e-mail to ",
      prechatIntro: "Before we start, tell us your name and how to reach you (optional).",
      prechatRequired: "Before we start, please leave your name and an e-mail address or phone number.",
      name: "Name", email: "E-mail", phone: "Phone", start: "Start chat", skip: "Skip",
      sending: "Sending…", failed: "Not sent, tap to retry", you: "You", agent: "Support",
      typing: " is typing…", viaEmail: " (answered by e-mail)", unread: "unread messages",
      needEmail: "Please enter a valid e-mail address.",
      needContact: "Please enter an e-mail address or a phone number.",
      errors: {
        rate_limited: "You're sending messages too fast; please wait a moment.",
        too_long: "The message is too long (at most {max} characters).",
        empty: "The message is empty.",
        invalid_email: "That e-mail address is not valid.",
        invalid_phone: "That phone number is not valid.",
        email_required: "Please leave your e-mail address first.",
        unavailable: "The service is unavailable; the message will be resent.",
        bad_frame: "The message could not be sent.",
        default: "Something went wrong; please try again."
      }
    }
  };
  var T = TEXTS[lang];
  var TITLE = (CONFIG.title && CONFIG.title[lang]) || (lang === "zh" ? "在线客服" : "Chat with us");
  var GREETING = (CONFIG.greeting && CONFIG.greeting[lang]) || "";

  // --- storage ----------------------------------------------------------------------
  function load(key, fallback) {
    try {
      var raw = window.localStorage.getItem(STORE + key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (e) {
      return fallback;
    }
  }
  function save(key, value) {
    try {
      window.localStorage.setItem(STORE + key, JSON.stringify(value));
    } catch (e) { /* private mode or full: the chat still works */ }
  }
  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); });
    return h.slice(0, 4).join("") + "-" + h.slice(4, 6).join("") + "-" + h.slice(6, 8).join("") +
      "-" + h.slice(8, 10).join("") + "-" + h.slice(10).join("");
  }
  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) {
        return decodeURIComponent(parts[i].slice(eq + 1));
      }
    }
    return null;
  }
  function visitorId() {
    var id = readCookie(VISITOR_COOKIE);
    if (!id || !UUID_RE.test(id)) {
      id = load("visitor", null);
    }
    if (!id || !UUID_RE.test(id)) {
      id = uuid();
    }
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = VISITOR_COOKIE + "=" + id + "; path=/; max-age=31536000; SameSite=Lax" + secure;
    save("visitor", id);
    return id;
  }

  var state = {
    visitor: visitorId(),
    profile: load("profile", null),
    prechatDone: load("prechat_done", false),
    pending: load("pending", []),
    socket: null,
    welcomed: false,
    online: null,
    open: false,
    unread: 0,
    retry: 0,
    shown: {},
    typingTimer: null,
    errorTimer: null
  };

  // --- DOM --------------------------------------------------------------------------
  var CSS = [
    ":host{all:initial}",
    ".cc{position:fixed;right:20px;bottom:20px;z-index:2147483000;font:14px/1.45 system-ui,-apple-system,'PingFang SC','Microsoft YaHei','WenQuanYi Micro Hei',sans-serif;color:#1f2328}",
    ".cc-launcher{position:relative;width:56px;height:56px;border-radius:50%;border:0;background:#1a73e8;color:#fff;cursor:pointer;display:flex;align-items:center;justify-content:center;padding:0;box-shadow:0 4px 14px rgba(0,0,0,.25)}",
    ".cc-launcher:focus-visible{outline:3px solid #9ec5ff}",
    ".cc-badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;padding:0 5px;box-sizing:border-box;border-radius:10px;background:#d93025;color:#fff;font-size:12px;line-height:20px;text-align:center}",
    ".cc-panel{position:absolute;right:0;bottom:70px;width:340px;max-width:calc(100vw - 40px);height:480px;max-height:calc(100vh - 110px);display:flex;flex-direction:column;background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);overflow:hidden}",
    "[hidden]{display:none!important}",
    ".cc-head{display:flex;align-items:center;gap:8px;padding:12px 14px;background:#1a73e8;color:#fff}",
    ".cc-title{font-weight:600;flex:1}",
    ".cc-status{font-size:12px;opacity:.9}",
    ".cc-close{border:0;background:transparent;color:#fff;font-size:20px;cursor:pointer;line-height:1}",
    ".cc-notice{padding:8px 14px;background:#fff8e1;border-bottom:1px solid #f0e0a0;font-size:13px}",
    ".cc-log{flex:1;overflow-y:auto;padding:12px;background:#f6f8fa}",
    ".cc-quick{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 8px}",
    ".cc-quick-reply{border:1px solid #1677ff;background:#fff;color:#1677ff;border-radius:14px;padding:4px 10px;font:inherit;font-size:13px;cursor:pointer}",
    ".cc-msg{max-width:80%;margin:6px 0;padding:8px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word;overflow-wrap:anywhere}",
    ".cc-visitor{margin-left:auto;background:#1a73e8;color:#fff;border-bottom-right-radius:2px}",
    ".cc-reply{margin-right:auto;background:#fff;border:1px solid #e1e4e8;border-bottom-left-radius:2px}",
    ".cc-greeting{color:#57606a}",
    ".cc-who{display:block;font-size:12px;font-weight:600;color:#1a73e8;margin-bottom:2px}",
    ".cc-meta{display:block;font-size:11px;opacity:.75;margin-top:2px}",
    ".cc-failed{background:#fce8e6;color:#a50e0e;cursor:pointer}",
    ".cc-typing{padding:2px 14px 6px;font-size:12px;color:#57606a;background:#f6f8fa}",
    ".cc-error{padding:6px 14px;font-size:13px;color:#a50e0e;background:#fce8e6}",
    ".cc-form{padding:12px 14px;display:flex;flex-direction:column;gap:8px;border-bottom:1px solid #e1e4e8}",
    ".cc-form label{display:flex;flex-direction:column;font-size:12px;color:#57606a;gap:2px}",
    ".cc-form input{font:inherit;padding:6px 8px;border:1px solid #d0d7de;border-radius:6px}",
    ".cc-row{display:flex;gap:8px;justify-content:flex-end}",
    ".cc-btn{font:inherit;padding:6px 12px;border-radius:6px;border:1px solid #1a73e8;background:#1a73e8;color:#fff;cursor:pointer}",
    ".cc-btn.cc-plain{background:#fff;color:#1a73e8}",
    ".cc-compose{display:flex;gap:8px;padding:10px;border-top:1px solid #e1e4e8}",
    ".cc-input{flex:1;font:inherit;resize:none;height:40px;padding:8px;border:1px solid #d0d7de;border-radius:6px}"
  ].join("\n");

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  var host = el("div");
  host.id = "cc-webchat";
  host.setAttribute("data-state", "connecting");
  host.setAttribute("lang", lang === "zh" ? "zh-CN" : "en");
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  // A constructed style sheet is not an inline <style>: a shop page whose
  // Content-Security-Policy forbids inline styles still shows the widget styled.
  if (root !== host && "adoptedStyleSheets" in root && typeof CSSStyleSheet === "function") {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } else {
    var style = el("style");
    style.textContent = CSS;
    root.appendChild(style);
  }

  var box = el("div", "cc");
  var launcher = el("button", "cc-launcher");
  launcher.type = "button";
  var SVG = "http://www.w3.org/2000/svg";
  var icon = document.createElementNS(SVG, "svg");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("width", "28");
  icon.setAttribute("height", "28");
  icon.setAttribute("aria-hidden", "true");
  var bubble = document.createElementNS(SVG, "path");
  bubble.setAttribute("fill", "currentColor");
  bubble.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z");
  icon.appendChild(bubble);
  launcher.appendChild(icon);
  launcher.setAttribute("aria-label", T.open);
  var badge = el("span", "cc-badge");
  badge.hidden = true;
  launcher.appendChild(badge);

  var panel = el("section", "cc-panel");
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", TITLE);
  var head = el("div", "cc-head");
  var title = el("span", "cc-title", TITLE);
  var status = el("span", "cc-status", T.connecting);
  var closeButton = el("button", "cc-close", "×");
  closeButton.type = "button";
  closeButton.setAttribute("aria-label", T.close);
  head.appendChild(title);
  head.appendChild(status);
  head.appendChild(closeButton);

  var notice = el("div", "cc-notice");
  notice.hidden = true;

  var form = el("form", "cc-form cc-prechat");
  form.hidden = true;
  form.noValidate = true;
  var formIntro = el("div", "cc-intro");
  function field(labelText, type, className, autocomplete) {
    var label = el("label", null, labelText);
    var input = el("input", className);
    input.type = type;
    input.autocomplete = autocomplete;
    input.maxLength = type === "tel" ? 40 : 200;
    label.appendChild(input);
    form.appendChild(label);
    return input;
  }
  form.appendChild(formIntro);
  var nameInput = field(T.name, "text", "cc-name", "name");
  var emailInput = field(T.email, "email", "cc-email", "email");
  var phoneInput = field(T.phone, "tel", "cc-phone", "tel");
  var formError = el("div", "cc-form-error cc-error");
  formError.hidden = true;
  form.appendChild(formError);
  var formRow = el("div", "cc-row");
  var skipButton = el("button", "cc-btn cc-plain cc-skip", T.skip);
  skipButton.type = "button";
  var startButton = el("button", "cc-btn cc-start", T.start);
  startButton.type = "submit";
  formRow.appendChild(skipButton);
  formRow.appendChild(startButton);
  form.appendChild(formRow);

  var log = el("div", "cc-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  if (GREETING) {
    log.appendChild(el("div", "cc-msg cc-reply cc-greeting", GREETING));
  }
  var typing = el("div", "cc-typing");
  typing.hidden = true;
  var errorLine = el("div", "cc-error cc-error-line");
  errorLine.hidden = true;

  var compose = el("form", "cc-compose");
  var input = el("textarea", "cc-input");
  input.placeholder = T.placeholder;
  input.maxLength = MAX_CHARS;
  input.rows = 1;
  var sendButton = el("button", "cc-btn cc-send", T.send);
  sendButton.type = "submit";
  compose.appendChild(input);
  compose.appendChild(sendButton);

  panel.appendChild(head);
  panel.appendChild(notice);
  panel.appendChild(form);
  panel.appendChild(log);
  panel.appendChild(typing);
  panel.appendChild(errorLine);
  panel.appendChild(compose);
  box.appendChild(panel);
  box.appendChild(launcher);
  root.appendChild(box);

  // --- rendering --------------------------------------------------------------------
  function clock(value) {
    var date = value ? new Date(value) : new Date();
    if (isNaN(date.getTime())) {
      date = new Date();
    }
    return ("0" + date.getHours()).slice(-2) + ":" + ("0" + date.getMinutes()).slice(-2);
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function visitorMessage(cmid, text, at, pending) {
    var key = "c:" + cmid;
    var node = state.shown[key];
    if (!node) {
      node = el("div", "cc-msg cc-visitor");
      node.setAttribute("data-cmid", cmid);
      node.appendChild(el("span", "cc-text", text));
      node.appendChild(el("span", "cc-meta"));
      state.shown[key] = node;
      log.appendChild(node);
    }
    node.classList.remove("cc-failed");
    node.querySelector(".cc-meta").textContent = pending ? T.sending : clock(at);
    scrollDown();
    return node;
  }

  function quickReplies(rows) {
    // The bot's menu: one button per option; choosing one sends its label and removes them.
    var box = el("div", "cc-quick");
    box.setAttribute("role", "group");
    (rows || []).forEach(function (row) {
      (row || []).forEach(function (item) {
        if (!item || !item.text) {
          return;
        }
        var button = el("button", "cc-quick-reply", String(item.text));
        button.type = "button";
        button.addEventListener("click", function () {
          if (box.parentNode) {
            box.parentNode.removeChild(box);
          }
          sendText(String(item.text));
        });
        box.appendChild(button);
      });
    });
    return box.childNodes.length ? box : null;
  }

  function replyMessage(outboxId, text, agentName, at, via, buttons) {
    var key = outboxId !== undefined && outboxId !== null ? "o:" + outboxId : null;
    if (key && state.shown[key]) {
      return false;
    }
    var node = el("div", "cc-msg cc-reply");
    node.appendChild(el("span", "cc-who cc-agent", agentName || T.agent));
    node.appendChild(el("span", "cc-text", text));
    node.appendChild(el("span", "cc-meta", clock(at) + (via === "email" ? T.viaEmail : "")));
    if (key) {
      node.setAttribute("data-outbox", String(outboxId));
      state.shown[key] = node;
    }
    log.appendChild(node);
    var quick = buttons ? quickReplies(buttons) : null;
    if (quick) {
      var old = log.querySelectorAll(".cc-quick");
      for (var i = 0; i < old.length; i += 1) {
        old[i].parentNode.removeChild(old[i]);
      }
      log.appendChild(quick);
    }
    scrollDown();
    return true;
  }

  function markFailed(cmid, reason) {
    var node = state.shown["c:" + cmid];
    if (node) {
      node.classList.add("cc-failed");
      node.querySelector(".cc-meta").textContent = (reason ? reason + " " : "") + T.failed;
    }
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = false;
    clearTimeout(state.errorTimer);
    state.errorTimer = setTimeout(function () { errorLine.hidden = true; }, 6000);
  }

  function errorText(code) {
    return (T.errors[code] || T.errors["default"]).replace("{max}", String(MAX_CHARS));
  }

  function setBadge() {
    badge.hidden = state.unread === 0;
    badge.textContent = state.unread > 99 ? "99+" : String(state.unread);
    launcher.setAttribute("aria-label", state.unread ? T.open + " (" + state.unread + " " + T.unread + ")" : T.open);
  }

  function setStatus() {
    var connected = state.socket && state.socket.readyState === 1 && state.welcomed;
    var name = !connected ? (state.retry ? "disconnected" : "connecting") :
      (state.online ? "online" : "offline");
    host.setAttribute("data-state", name);
    status.textContent = name === "online" ? T.online : name === "offline" ? T.offline :
      name === "connecting" ? T.connecting : T.reconnecting;
  }

  function needsEmail() {
    return state.online === false && !(state.profile && state.profile.email);
  }

  function updateForms() {
    var offline = state.online === false;
    if (offline) {
      notice.hidden = false;
      notice.textContent = state.profile && state.profile.email ?
        T.offlineSaved + state.profile.email : T.offlineNotice;
    } else {
      notice.hidden = true;
    }
    var wantPrechat = PRECHAT !== "off" && !state.prechatDone && state.online === true &&
      Object.keys(state.shown).length === 0;
    var showForm = needsEmail() || wantPrechat;
    form.hidden = !showForm;
    compose.hidden = showForm;
    skipButton.hidden = !(wantPrechat && !needsEmail() && PRECHAT === "optional");
    formIntro.textContent = needsEmail() ? T.offlineNotice :
      (PRECHAT === "required" ? T.prechatRequired : T.prechatIntro);
    emailInput.required = needsEmail();
  }

  // --- the socket -------------------------------------------------------------------
  function send(frame) {
    if (state.socket && state.socket.readyState === 1) {
      state.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function savePending() {
    save("pending", state.pending);
  }

  function flushPending() {
    if (!state.welcomed || needsEmail()) {
      return;
    }
    state.pending.forEach(function (item) {
      send({ type: "message", client_message_id: item.cmid, text: item.text });
    });
  }

  function connect() {
    var socket;
    try {
      socket = new WebSocket(socketUrl);
    } catch (e) {
      reconnectLater();
      return;
    }
    state.socket = socket;
    state.welcomed = false;
    setStatus();
    socket.onopen = function () {
      var hello = { type: "hello", visitor_id: state.visitor, lang: lang };
      if (state.profile) {
        hello.profile = state.profile;
      }
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      handle(frame);
    };
    socket.onclose = function () {
      if (state.socket === socket) {
        state.socket = null;
        state.welcomed = false;
        reconnectLater();
      }
    };
  }

  function reconnectLater() {
    state.retry += 1;
    setStatus();
    var delay = Math.min(30000, 1000 * Math.pow(2, Math.min(state.retry - 1, 5)));
    setTimeout(connect, delay + Math.floor(Math.random() * 500));
  }

  var handlers = {
    welcome: function (frame) {
      state.welcomed = true;
      state.retry = 0;
      state.online = !!frame.agents_online;
      (frame.history || []).forEach(function (item) {
        if (item.direction === "in" && item.client_message_id) {
          visitorMessage(item.client_message_id, item.text, item.at, false);
          dropPending(item.client_message_id);
        } else if (item.direction === "in") {
          log.appendChild(el("div", "cc-msg cc-visitor", item.text));
        } else {
          replyMessage(item.outbox_id, item.text, item.agent_name, item.at, item.via);
        }
      });
      state.pending.forEach(function (item) {
        visitorMessage(item.cmid, item.text, null, true);
      });
      setStatus();
      updateForms();
      flushPending();
    },
    ack: function (frame) {
      var item = dropPending(frame.client_message_id);
      var node = state.shown["c:" + frame.client_message_id];
      if (node) {
        node.classList.remove("cc-failed");
        node.querySelector(".cc-meta").textContent = clock(item ? item.at : null);
        node.setAttribute("data-acked", "true");
      }
    },
    message: function (frame) {
      typing.hidden = true;
      if (replyMessage(frame.outbox_id, frame.text, frame.agent_name, frame.sent_at, null,
                       frame.buttons) &&
          !state.open) {
        state.unread += 1;
        setBadge();
      }
    },
    typing: function (frame) {
      typing.textContent = (frame.agent_name || T.agent) + (lang === "zh" ? " " : "") + T.typing;
      typing.hidden = false;
      clearTimeout(state.typingTimer);
      state.typingTimer = setTimeout(function () { typing.hidden = true; }, 6000);
    },
    presence: function (frame) {
      state.online = !!frame.agents_online;
      setStatus();
      updateForms();
    },
    profile_ok: function () {
      state.prechatDone = true;
      save("prechat_done", true);
      save("profile", state.profile);
      formError.hidden = true;
      updateForms();
      flushPending();
    },
    error: function (frame) {
      var text = errorText(frame.code);
      if (frame.code === "invalid_email" || frame.code === "invalid_phone") {
        state.profile = null;
        save("profile", null);
        state.prechatDone = false;
        formError.textContent = text;
        formError.hidden = false;
        form.hidden = false;
        compose.hidden = true;
        return;
      }
      if (frame.code === "email_required") {
        state.online = false;
        updateForms();
        showError(text);
        return;  // the message stays pending until the address is given
      }
      if (frame.client_message_id) {
        if (frame.code === "unavailable") {
          setTimeout(flushPending, 3000);
          showError(text);
          return;
        }
        dropPending(frame.client_message_id);
        markFailed(frame.client_message_id, text);
        return;
      }
      showError(text);
    },
    pong: function () {}
  };

  function handle(frame) {
    if (frame && typeof frame.type === "string" && handlers.hasOwnProperty(frame.type)) {
      handlers[frame.type](frame);
    }
  }

  function dropPending(cmid) {
    for (var i = 0; i < state.pending.length; i++) {
      if (state.pending[i].cmid === cmid) {
        var item = state.pending.splice(i, 1)[0];
        savePending();
        return item;
      }
    }
    return null;
  }

  // --- user actions -----------------------------------------------------------------
  function sendText(text, cmid) {
    var item = { cmid: cmid || uuid(), text: text, at: new Date().toISOString() };
    dropPending(item.cmid);
    state.pending.push(item);
    savePending();
    visitorMessage(item.cmid, text, null, true);
    if (state.welcomed && !needsEmail()) {
      send({ type: "message", client_message_id: item.cmid, text: text });
    }
  }

  compose.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.replace(/^\s+|\s+$/g, "");
    if (!text) {
      return;
    }
    if (text.length > MAX_CHARS) {
      showError(errorText("too_long"));
      return;
    }
    input.value = "";
    sendText(text);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      compose.requestSubmit ? compose.requestSubmit() : sendButton.click();
    }
  });
  log.addEventListener("click", function (event) {
    var node = event.target.closest ? event.target.closest(".cc-failed") : null;
    if (node && node.getAttribute("data-cmid")) {
      sendText(node.querySelector(".cc-text").textContent, node.getAttribute("data-cmid"));
    }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var profile = {
      name: nameInput.value.trim() || null,
      email: emailInput.value.trim() || null,
      phone: phoneInput.value.trim() || null
    };
    var emailOk = !profile.email || /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(profile.email);
    if (!emailOk || (needsEmail() && !profile.email)) {
      formError.textContent = T.needEmail;
      formError.hidden = false;
      return;
    }
    if (PRECHAT === "required" && !needsEmail() && !profile.email && !profile.phone) {
      formError.textContent = T.needContact;
      formError.hidden = false;
      return;
    }
    state.profile = profile;
    if (!send({ type: "profile", name: profile.name, email: profile.email, phone: profile.phone })) {
      save("profile", profile);  // goes with the next hello
    }
  });
  skipButton.addEventListener("click", function () {
    state.prechatDone = true;
    save("prechat_done", true);
    updateForms();
    input.focus();
  });

  function openPanel() {
    state.open = true;
    panel.hidden = false;
    state.unread = 0;
    setBadge();
    updateForms();
    scrollDown();
    (compose.hidden ? (needsEmail() ? emailInput : nameInput) : input).focus();
  }
  function closePanel() {
    state.open = false;
    panel.hidden = true;
  }
  launcher.addEventListener("click", function () {
    if (state.open) {
      closePanel();
    } else {
      openPanel();
    }
  });
  closeButton.addEventListener("click", closePanel);

  window.ccWebchat = { open: openPanel, close: closePanel, visitorId: state.visitor };

  function mount() {
    document.body.appendChild(host);
    setBadge();
    connect();
  }
  if (document.body) {
    mount();
  } else {
    document.addEventListener("DOMContentLoaded", mount);
  }
})();
