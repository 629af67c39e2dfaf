/* chat_lesson: the browser client.
 *
 * The same chat as the Go tutorial's Vue client, in plain JavaScript, with
 * its holes closed:
 *
 *   - Text from other people goes into the page with textContent only, so
 *     "<img src=x onerror=alert(1)>" shows up as those characters and runs
 *     nothing (the original used v-html).
 *   - Avatars are drawn here from the hash the server sends (no Gravatar, no
 *     CDN): a class on a LAN without internet still gets pictures.
 *   - The page scrolls to a new message only if you were already at the
 *     bottom; if you scrolled up to read, a "new messages" button appears.
 *   - When the connection drops, it tries again with exponential backoff
 *     (0.5 s, 1 s, 2 s ... 10 s, with jitter) and rejoins.
 *
 * Open the browser's developer tools (Network tab, "WS", Messages) to watch
 * the frames this file sends and receives.
 *
 * Wire protocol (see DESIGN.md):
 *   us -> server  {"type": "join", "username": ..., "email": ...}     once per connection
 *                 {"username": ..., "email": ..., "message": ...}     one per chat message
 *   server -> us  {"type": "message" | "join" | "leave" | "presence" | "history" | "error", ...}
 */
(function () {
  "use strict";

  // ---- settings ------------------------------------------------------------

  var SUBPROTOCOL = "chat-lesson.v1";
  // The server's limits arrive in its first event ("welcome"); until then 0 = not known yet.
  var limits = { max_username: 0, max_message: 0, max_frame: 0 };
  var BACKOFF_FIRST = 500;      // ms before the first reconnect attempt
  var BACKOFF_MAX = 10000;      // ms, the longest wait between attempts
  var STABLE_AFTER = 5000;      // ms open before a connection counts as healthy
  var BOTTOM_SLACK = 16;        // px: "at the bottom" if at most this far from it
  var GROUP_WINDOW = 5 * 60e3;  // ms: same author within this -> one group
  var MAX_ITEMS = 500;          // lines kept in the list
  var STORE = "chat_lesson.";   // localStorage key prefix

  var EMOJI = window.EMOJI || {};
  var PICKER = ["smile", "joy", "wink", "heart_eyes", "thinking", "sunglasses", "sob", "partying_face",
                "+1", "-1", "clap", "wave", "pray", "ok_hand", "eyes", "100",
                "heart", "fire", "tada", "rocket", "sparkles", "bug", "coffee", "white_check_mark"];

  // ---- state -----------------------------------------------------------------

  var state = {
    status: "idle",      // idle | connecting | online | offline
    username: "",
    email: "",
    gravatar: false,
    online: [],          // [{id, username, avatar}] from the last presence event
    you: null,           // our connection's id, from the welcome event
    myIds: {},           // every id we have had (one per connection): our messages carry one of them
    attempt: 0,          // failed connection attempts in a row
    retryAt: 0,          // when the next attempt starts (ms since epoch), if offline
    protocol: "",        // the subprotocol the server picked
    lastClose: null,     // {code, reason, text, long} of the last close
    connections: 0       // how many times we got connected
  };
  var socket = null;
  var openedAt = 0;
  var retryTimer = 0;
  var tickTimer = 0;
  var leaving = false;
  var unseen = 0;        // messages below the view while scrolled up
  var unreadTitle = 0;   // messages while the tab was hidden
  var lastSent = null;   // {text, at}: to give text back if the server refused it
  var outageNoted = false;
  var ownJoinPending = false; // the server echoes our join: say "You joined" once

  // ---- elements --------------------------------------------------------------

  function $(id) { return document.getElementById(id); }
  var app = $("app");
  var joinView = $("join-view"), chatView = $("chat-view");
  var joinForm = $("join-form"), nameInput = $("username"), emailInput = $("email");
  var gravatarInput = $("gravatar"), nameError = $("username-error");
  var list = $("messages"), newButton = $("new-messages"), newText = $("new-messages-text");
  var composer = $("composer"), input = $("message");
  var statusBox = $("status"), statusText = $("status-text"), retryButton = $("reconnect-now");
  var onlineList = $("online"), onlineCount = $("online-count"), onlineEmpty = $("online-empty");
  var onlineToggle = $("online-toggle"), onlineToggleCount = $("online-toggle-count");
  var leaveButton = $("leave"), notices = $("notices");
  var emojiButton = $("emoji-button"), picker = $("emoji-picker");
  var baseTitle = document.title;

  // Build an element; `text` (if given) always goes in as text, never as HTML.
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // ---- small helpers ---------------------------------------------------------

  var store = {
    get: function (key) {
      try { return window.localStorage.getItem(STORE + key); } catch (e) { return null; }
    },
    set: function (key, value) {
      try { window.localStorage.setItem(STORE + key, value); } catch (e) { /* private mode */ }
    },
    remove: function (key) {
      try { window.localStorage.removeItem(STORE + key); } catch (e) { /* private mode */ }
    }
  };

  function codePoints(s) { return Array.from(s).length; }

  function utf8Bytes(s) { return new TextEncoder().encode(s).length; }

  // ":smile:" -> "😄"; unknown shortcodes stay as typed.
  function emojify(text) {
    return text.replace(/:([a-z0-9_+\-]+):/gi, function (whole, name) {
      var hit = EMOJI[name.toLowerCase()];
      return hit === undefined ? whole : hit;
    });
  }

  // True for a short message made only of emoji: it is shown bigger.
  var EMOJI_ONLY = /^(?:\p{Extended_Pictographic}|\p{Emoji_Modifier}|\p{Regional_Indicator}|\u200d|\ufe0f|\u20e3|\s)+$/u;
  var PICTO = /\p{Extended_Pictographic}|\p{Regional_Indicator}{2}/gu;
  function emojiOnly(text) {
    if (!EMOJI_ONLY.test(text)) return false;
    var count = (text.match(PICTO) || []).length;
    return count > 0 && count <= 3;
  }

  // Put text into `parent`, with each run of emoji in its own <span class="emoji">
  // so the stylesheet can ask for a colour emoji font (some Linux fonts have
  // black-and-white emoji that would win otherwise).  Text nodes only: the
  // text is never parsed as HTML.
  var EMOJI_RUN = /(?:\p{Regional_Indicator}{2}|[#*0-9]\ufe0f?\u20e3|\p{Extended_Pictographic}[\ufe0f\u{1f3fb}-\u{1f3ff}]*(?:\u200d\p{Extended_Pictographic}[\ufe0f\u{1f3fb}-\u{1f3ff}]*)*)+/gu;
  var TEXT_SYMBOLS = /^[\u00a9\u00ae\u2122]$/;      // (c) (r) tm: leave them to the text font
  function renderText(parent, text) {
    var last = 0, match;
    EMOJI_RUN.lastIndex = 0;
    while ((match = EMOJI_RUN.exec(text)) !== null) {
      if (TEXT_SYMBOLS.test(match[0])) continue;
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      parent.appendChild(el("span", "emoji", match[0]));
      last = match.index + match[0].length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
    return parent;
  }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  function parseTime(iso) {
    var d = iso ? new Date(iso) : new Date();
    return isNaN(d.getTime()) ? new Date() : d;
  }

  function hhmm(d) { return pad2(d.getHours()) + ":" + pad2(d.getMinutes()); }

  // ---- avatars ---------------------------------------------------------------
  //
  // The server sends `avatar`: the MD5 of the sender's email (Gravatar's
  // hash), or "" when they gave none.  From the hash we draw a 5x5 mirrored
  // identicon; without one we show initials on a colour from the name.

  var HEX32 = /^[0-9a-f]{32}$/;

  function fnv1a(s) {            // a small, stable string hash (32-bit FNV-1a)
    var h = 0x811c9dc5;
    for (var i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h;
  }

  function hslToRgb(h, s, l) {
    s /= 100; l /= 100;
    var k = function (n) { return (n + h / 30) % 12; };
    var a = s * Math.min(l, 1 - l);
    var f = function (n) { return l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1))); };
    return [f(0), f(8), f(4)];
  }

  function luminance(rgb) {
    var lin = rgb.map(function (c) { return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); });
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  }

  // A colour from a number, and a text colour that reads well on it.
  function palette(n) {
    var hue = n % 360, sat = 55 + (n >>> 9) % 20, light = 40 + (n >>> 14) % 12;
    var rgb = hslToRgb(hue, sat, light);
    return {
      fill: "hsl(" + hue + " " + sat + "% " + light + "%)",
      // white text needs a dark background (contrast 4.5:1 and more)
      ink: luminance(rgb) > 0.18 ? "#111827" : "#ffffff"
    };
  }

  function initials(name) {
    var words = name.trim().split(/[\s._\-]+/).filter(Boolean);
    var first = words.length ? Array.from(words[0])[0] : "?";
    var second = words.length > 1 ? Array.from(words[1])[0] : "";
    return (first + second).toUpperCase();
  }

  var SVG = "http://www.w3.org/2000/svg";

  function identicon(hash) {
    var colour = palette(parseInt(hash.slice(25, 32), 16)).fill;
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "-0.5 -0.5 6 6");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("shape-rendering", "crispEdges");
    var bg = document.createElementNS(SVG, "rect");
    bg.setAttribute("x", "-0.5"); bg.setAttribute("y", "-0.5");
    bg.setAttribute("width", "6"); bg.setAttribute("height", "6");
    bg.setAttribute("class", "identicon-bg");
    svg.appendChild(bg);
    // 15 nibbles decide the left three columns; columns 3 and 4 mirror 1 and 0.
    for (var col = 0; col < 3; col++) {
      for (var row = 0; row < 5; row++) {
        if (parseInt(hash.charAt(col * 5 + row), 16) % 2 !== 0) continue;
        [col, 4 - col].forEach(function (x, i) {
          if (i === 1 && x === col) return;          // the middle column once
          var cell = document.createElementNS(SVG, "rect");
          cell.setAttribute("x", String(x)); cell.setAttribute("y", String(row));
          cell.setAttribute("width", "1"); cell.setAttribute("height", "1");
          cell.setAttribute("fill", colour);
          svg.appendChild(cell);
        });
      }
    }
    return svg;
  }

  function localAvatar(username, hash) {
    var box = el("span", "avatar");
    if (HEX32.test(hash)) {
      box.classList.add("avatar-identicon");
      box.appendChild(identicon(hash));
    } else {
      var p = palette(fnv1a(username));
      box.classList.add("avatar-initials");
      box.style.backgroundColor = p.fill;
      box.style.color = p.ink;
      box.appendChild(el("span", null, initials(username)));
    }
    box.setAttribute("aria-hidden", "true");
    return box;
  }

  // Gravatar only when the student switched it on; any failure -> local avatar.
  function avatar(username, hash) {
    hash = typeof hash === "string" ? hash.toLowerCase() : "";
    if (!state.gravatar || !HEX32.test(hash)) return localAvatar(username, hash);
    var box = el("span", "avatar avatar-photo");
    box.setAttribute("aria-hidden", "true");
    var img = document.createElement("img");
    img.alt = "";
    img.referrerPolicy = "no-referrer";
    img.decoding = "async";
    img.width = 80; img.height = 80;
    img.addEventListener("error", function () {
      if (box.parentNode) box.parentNode.replaceChild(localAvatar(username, hash), box);
    }, { once: true });
    img.src = "https://www.gravatar.com/avatar/" + hash + "?s=80&d=404";
    box.appendChild(img);
    return box;
  }

  // ---- the message list --------------------------------------------------------

  function atBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight <= BOTTOM_SLACK;
  }

  function scrollToBottom(smooth) {
    var reduce = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    if (smooth && !reduce && list.scrollTo) {
      list.scrollTo({ top: list.scrollHeight, behavior: "smooth" });
    } else {
      list.scrollTop = list.scrollHeight;
    }
  }

  function showUnseen() {
    if (unseen > 0) {
      newText.textContent = unseen === 1 ? "1 new message" : unseen + " new messages";
      newButton.hidden = false;
    } else {
      newButton.hidden = true;
    }
  }

  // Add one line; scroll only if the reader was at the bottom (or it is ours).
  function append(item, options) {
    options = options || {};
    var stick = atBottom() || options.force;
    list.appendChild(item);
    if (stick) {
      while (list.children.length > MAX_ITEMS) list.removeChild(list.firstChild);
      scrollToBottom(false);
    } else if (options.counts) {
      unseen += 1;
      showUnseen();
    }
  }

  list.addEventListener("scroll", function () {
    if (unseen && atBottom()) { unseen = 0; showUnseen(); }
  }, { passive: true });

  newButton.addEventListener("click", function () {
    unseen = 0;
    showUnseen();
    scrollToBottom(true);
    input.focus({ preventScroll: true });
  });

  // Keep the bottom in view when the list changes size (phone keyboard, rotation).
  var wasAtBottom = true;
  list.addEventListener("scroll", function () { wasAtBottom = atBottom(); }, { passive: true });
  if (window.ResizeObserver) {
    new ResizeObserver(function () { if (wasAtBottom) scrollToBottom(false); }).observe(list);
  }

  function lastItem() {
    var last = list.lastElementChild;
    return last && last.classList.contains("msg") ? last : null;
  }

  function timeElement(when) {
    var t = el("time", "msg-time", hhmm(when));
    t.dateTime = when.toISOString();
    t.title = when.toLocaleString();
    return t;
  }

  // After a reconnect the history repeats messages we already show.
  function alreadyShown(ev) {
    var at = String(parseTime(ev.time).getTime());
    return Array.prototype.some.call(list.querySelectorAll("li.msg"), function (li) {
      return li.dataset.id === String(ev.id) && li.dataset.at === at;
    });
  }

  function showMessage(ev, options) {
    var earlier = Boolean(options && options.earlier);
    var name = String(ev.username == null ? "?" : ev.username);
    var text = String(ev.message == null ? "" : ev.message);
    if (!text) return;                               // nothing to show
    var when = parseTime(ev.time);
    var mine = ev.from !== undefined && state.myIds[ev.from] === true;   // by id: a name can be copied

    var item = el("li", "msg");
    item.dataset.user = name;
    item.dataset.at = String(when.getTime());
    if (ev.id !== undefined) item.dataset.id = String(ev.id);
    if (mine) item.classList.add("mine");
    var prev = lastItem();
    if (prev && prev.dataset.user === name && when.getTime() - Number(prev.dataset.at) < GROUP_WINDOW) {
      item.classList.add("cont");                    // same author: no repeated header
    }
    if (!mine && state.username && text.toLowerCase().indexOf("@" + state.username.toLowerCase()) !== -1) {
      item.classList.add("mention");
    }

    var side = el("div", "msg-avatar");
    side.appendChild(avatar(name, ev.avatar));
    var body = el("div", "msg-body");
    var head = el("div", "msg-head");
    head.appendChild(el("span", "msg-name", name));
    if (mine) head.appendChild(el("span", "msg-you", "you"));
    head.appendChild(timeElement(when));
    var shown = emojify(text);
    var para = renderText(el("p", "msg-text"), shown);   // text nodes: never HTML
    if (emojiOnly(shown)) para.classList.add("jumbo");
    body.appendChild(head);
    body.appendChild(para);
    item.appendChild(side);
    item.appendChild(body);

    if (earlier) item.classList.add("earlier");
    append(item, { force: mine || earlier, counts: !earlier });
    if (!mine && !earlier && document.hidden) { unreadTitle += 1; updateTitle(); }
  }

  function showSystem(text, kind, iso) {
    var item = el("li", "sys" + (kind ? " sys-" + kind : ""));
    var when = parseTime(iso);
    item.appendChild(el("span", "sys-text", text));
    item.appendChild(timeElement(when));
    append(item, {});
  }

  function updateTitle() {
    document.title = unreadTitle ? "(" + unreadTitle + ") " + baseTitle : baseTitle;
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { unreadTitle = 0; updateTitle(); }
  });

  // ---- who is online ------------------------------------------------------------

  function showPresence(people) {
    state.online = people.map(function (p) {
      return { id: p && p.id, username: String(p && p.username != null ? p.username : "?"),
               avatar: p && typeof p.avatar === "string" ? p.avatar : "" };
    });
    var rows = state.online.map(function (p) {
      var row = el("li", "person");
      row.dataset.user = p.username;
      row.appendChild(avatar(p.username, p.avatar));
      row.appendChild(el("span", "person-name", p.username));
      if (p.id !== undefined && p.id === state.you) {
        row.classList.add("me");
        row.appendChild(el("span", "person-you", "you"));
      }
      return row;
    });
    onlineList.replaceChildren.apply(onlineList, rows);
    var n = String(state.online.length);
    onlineCount.textContent = n;
    onlineToggleCount.textContent = n;
    onlineEmpty.hidden = state.online.length > 0;
  }

  function setOnlinePanel(open) {
    app.classList.toggle("show-online", open);
    onlineToggle.setAttribute("aria-expanded", String(open));
  }

  onlineToggle.addEventListener("click", function () {
    setOnlinePanel(!app.classList.contains("show-online"));
  });

  // ---- transient notices -----------------------------------------------------------

  var FRIENDLY = {
    rate_limited: "You're sending too fast: wait a moment.",
    too_long: "That message is too long for the server.",
    bad_json: "The server could not read that (bad JSON).",
    bad_field: "The server refused that.",
    bad_frame: "The server wants text frames."
  };

  function notify(text, kind, detail) {
    var box = el("div", "notice notice-" + (kind || "info"));
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.appendChild(el("span", "notice-text", text));
    if (detail && detail !== text) box.appendChild(el("span", "notice-detail", detail));
    var close = el("button", "notice-close", "×");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    box.appendChild(close);
    var remove = function () { if (box.parentNode) box.parentNode.removeChild(box); };
    close.addEventListener("click", remove);
    notices.appendChild(box);
    while (notices.children.length > 3) notices.removeChild(notices.firstChild);
    setTimeout(remove, kind === "error" ? 6000 : 4000);
    return box;
  }

  function showError(ev) {
    var code = String(ev.code || "error");
    var detail = typeof ev.detail === "string" ? ev.detail : "";
    notify(FRIENDLY[code] || detail || "The server reported an error.", "error", detail);
    // The message that was refused is not lost: put it back in the box.
    if ((code === "rate_limited" || code === "too_long") && lastSent && !input.value &&
        Date.now() - lastSent.at < 5000) {
      input.value = lastSent.text;
      lastSent = null;
    }
  }

  // ---- connection status ------------------------------------------------------------

  // What each close code means, short for the status pill, long for the log.
  var CLOSE_TEXT = {
    1000: ["closed", "closed normally"],
    1001: ["server going away", "server going away (stopped or restarting)"],
    1002: ["protocol error", "protocol error"],
    1003: ["bad data", "sent data the server does not accept"],
    1006: ["connection lost", "connection lost (no close frame: network down or server gone)"],
    1007: ["bad data", "invalid data (not UTF-8)"],
    1008: ["policy", "closed by server policy"],
    1009: ["message too big", "a message was too big for the server"],
    1011: ["server error", "the server hit an error"],
    1012: ["server restarting", "the server is restarting"],
    1013: ["server busy", "the server is busy, try again later"]
  };

  function closeText(code, reason, long) {
    var known = CLOSE_TEXT[code] || ["closed", "closed"];
    var text = known[long ? 1 : 0];
    if (code === 1006 && !state.connections) text = "can't reach the chat server";
    if (code === 1008 && !reason && long) text += " (too slow to read, or this page's origin is not allowed)";
    if (reason) text += long ? ": " + reason : " (" + reason + ")";
    return code + " " + text;
  }

  // The pill is redrawn every 250 ms while counting down; screen readers hear
  // only the changes of state, through a separate live region.
  var announcer = $("status-announcer");

  function setStatus(status) {
    var changed = status !== state.status;
    state.status = status;
    statusBox.dataset.state = status;
    app.dataset.status = status;
    renderStatus();
    if (changed) {
      announcer.textContent = status === "online" ? "Connected to the chat." :
        status === "offline" ? "Connection lost" + (state.lastClose ? ": " + state.lastClose.long : "") +
          ". Reconnecting automatically." :
        status === "connecting" ? "" : "Not connected.";
    }
  }

  var lastStatusKey = "";

  function renderStatus() {
    var text, title = "", detail = "", after = "";
    retryButton.hidden = true;
    switch (state.status) {
      case "connecting":
        text = state.connections ? "Reconnecting…" : "Connecting…";
        break;
      case "online":
        text = "Online";
        title = "Connected with " + (state.protocol || "no subprotocol");
        break;
      case "offline":
        var secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
        text = "Offline";
        after = (secs > 0 ? " in " + secs + " s" : " now…");
        if (state.lastClose) {
          detail = " (" + state.lastClose.text + ")";
          title = "Offline: " + state.lastClose.long;
        }
        title = (title || text) + ". Reconnecting" + after;
        retryButton.hidden = false;
        break;
      default:
        text = "Not connected";
    }
    var key = [text, detail, after, title].join("|");
    if (key === lastStatusKey) return;
    lastStatusKey = key;
    statusText.textContent = text;
    if (detail) statusText.appendChild(el("span", "status-detail", detail));
    if (after) {
      // "· reconnecting in 3 s", or "· retry in 3 s" where space is short
      statusText.appendChild(document.createTextNode(" · "));
      statusText.appendChild(el("span", "status-long", "reconnecting"));
      statusText.appendChild(el("span", "status-short", "retry"));
      statusText.appendChild(document.createTextNode(after));
    }
    statusBox.title = title || text;
  }

  // ---- the WebSocket ------------------------------------------------------------------

  function wsURL() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(tickTimer);
    if (!location.host) {
      notify("Open this page from the chat server (http://…), not as a file.", "error");
      setStatus("idle");
      return;
    }
    leaving = false;
    setStatus("connecting");
    var ws;
    try {
      ws = new WebSocket(wsURL(), SUBPROTOCOL);
    } catch (err) {
      scheduleReconnect({ code: 1006, reason: "" });
      return;
    }
    socket = ws;

    ws.addEventListener("open", function () {
      if (ws !== socket) return;
      openedAt = Date.now();
      state.protocol = ws.protocol;
      var again = state.connections > 0;
      state.connections += 1;
      setStatus("online");
      // Say who we are, first thing on every connection (also after a reconnect).
      sendJSON({ type: "join", username: state.username, email: state.email });
      ownJoinPending = true;
      if (again && outageNoted) {
        showSystem("Reconnected. Messages sent while you were away are not shown.", "conn");
      }
      outageNoted = false;
    });

    ws.addEventListener("message", function (e) {
      if (ws !== socket) return;
      handleFrame(e.data);
    });

    ws.addEventListener("close", function (e) {
      if (ws !== socket) return;
      socket = null;
      if (leaving) { setStatus("idle"); return; }
      if (openedAt && Date.now() - openedAt >= STABLE_AFTER) state.attempt = 0;
      openedAt = 0;
      scheduleReconnect(e);
    });

    // An "error" event is always followed by "close"; the close handler decides.
    ws.addEventListener("error", function () {});
  }

  function scheduleReconnect(e) {
    state.lastClose = { code: e.code, reason: e.reason || "",
                        text: closeText(e.code, e.reason, false), long: closeText(e.code, e.reason, true) };
    if (!outageNoted && state.connections > 0) {
      showSystem("Connection closed: " + state.lastClose.long + ".", "conn");
      outageNoted = true;
    }
    if (e.code === 1009) notify("The server closed the connection: that message was too big.", "error");
    // 0.5 s, 1 s, 2 s, 4 s, 8 s, 10 s, 10 s ... each ±20 % so thirty laptops
    // do not all knock at the same instant when the server comes back.
    var base = Math.min(BACKOFF_MAX, BACKOFF_FIRST * Math.pow(2, state.attempt));
    var delay = Math.min(BACKOFF_MAX, Math.round(base * (0.8 + 0.4 * Math.random())));
    state.attempt += 1;
    state.retryAt = Date.now() + delay;
    setStatus("offline");
    clearTimeout(retryTimer);
    clearInterval(tickTimer);
    retryTimer = setTimeout(connect, delay);
    tickTimer = setInterval(renderStatus, 250);
  }

  function reconnectNow() {
    if (state.status === "offline") connect();
  }

  retryButton.addEventListener("click", reconnectNow);
  window.addEventListener("online", reconnectNow);

  // The server's limits, from its welcome event or, before we connect, from limits.json.
  function useLimits(given) {
    if (!given || typeof given !== "object") return;
    Object.keys(limits).forEach(function (k) {
      if (typeof given[k] === "number") limits[k] = given[k];
    });
    if (limits.max_username) {
      nameInput.maxLength = limits.max_username;
      $("username-help").textContent = "1 to " + limits.max_username + " characters.";
    }
  }
  if (window.fetch) {
    fetch("limits.json").then(function (r) { return r.ok ? r.json() : null; }).then(useLimits, function () {});
  }

  function sendJSON(obj) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(obj));
    return true;
  }

  function handleFrame(data) {
    var ev;
    try { ev = JSON.parse(data); } catch (err) { return; }
    if (!ev || typeof ev !== "object") return;
    switch (ev.type === undefined ? "message" : ev.type) {   // the Go original sends no type
      case "message":
        showMessage(ev);
        break;
      case "join":
        if (ev.from !== undefined && ev.from === state.you && ownJoinPending) {
          ownJoinPending = false;
          if (state.connections === 1) showSystem("You joined as " + ev.username, "join", ev.time);
        } else {
          showSystem(String(ev.username) + " joined", "join", ev.time);
        }
        break;
      case "leave":
        showSystem(String(ev.username) + " left", "leave", ev.time);
        break;
      case "welcome":                            // who we are, and the server's limits
        state.you = ev.you;
        state.myIds[ev.you] = true;
        useLimits(ev.limits);
        break;
      case "presence":
        if (Array.isArray(ev.online)) showPresence(ev.online);
        break;
      case "history":                            // what was said before we (re)connected
        if (Array.isArray(ev.messages)) ev.messages.forEach(function (m) {
          if (!alreadyShown(m)) showMessage(m, { earlier: true });
        });
        break;
      case "error":
        showError(ev);
        break;
      default:
        break;                                   // unknown events: ignore (newer servers)
    }
  }

  // Send one chat message: what was typed, shortcodes and all.
  function send(text) {
    text = String(text == null ? "" : text);
    if (!text.trim()) return false;
    if (state.status !== "online" || !socket || socket.readyState !== WebSocket.OPEN) {
      notify("Not connected: your message is still in the box.", "warn");
      return false;
    }
    var bytes = utf8Bytes(text);
    if (limits.max_message && bytes > limits.max_message) {
      notify("Too long: " + bytes + " bytes, the limit is " + limits.max_message + ".", "warn");
      return false;
    }
    // The Go original's shape, so its server would understand us too.
    var frame = JSON.stringify({ username: state.username, email: state.email, message: text });
    if (limits.max_frame && utf8Bytes(frame) > limits.max_frame) {   // quotes and backslashes grow in JSON
      notify("Too long once encoded as JSON: the limit is " + limits.max_frame + " bytes per frame.", "warn");
      return false;
    }
    socket.send(frame);
    lastSent = { text: text, at: Date.now() };
    return true;
  }

  // ---- joining and leaving --------------------------------------------------------------

  function showView(view) {
    app.dataset.view = view;
    joinView.hidden = view !== "join";
    chatView.hidden = view !== "chat";
    leaveButton.hidden = view !== "chat";
    onlineToggle.hidden = view !== "chat";
  }

  function enterChat() {
    showView("chat");
    state.attempt = 0;
    state.connections = 0;
    connect();
    input.focus();
  }

  joinForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var name = nameInput.value.trim();
    var problem = !name ? "Please choose a name." :
      limits.max_username && codePoints(name) > limits.max_username ?
        "At most " + limits.max_username + " characters, please." : "";
    nameError.textContent = problem;
    nameInput.setAttribute("aria-invalid", problem ? "true" : "false");
    if (problem) { nameInput.focus(); return; }
    state.username = name;
    state.email = emailInput.value.trim();
    state.gravatar = gravatarInput.checked;
    store.set("username", state.username);
    store.set("email", state.email);
    store.set("gravatar", state.gravatar ? "1" : "0");
    store.set("joined", "1");
    enterChat();
  });

  nameInput.addEventListener("input", function () {
    if (nameError.textContent && nameInput.value.trim()) {
      nameError.textContent = "";
      nameInput.setAttribute("aria-invalid", "false");
    }
  });

  leaveButton.addEventListener("click", function () {
    leaving = true;
    clearTimeout(retryTimer);
    clearInterval(tickTimer);
    store.remove("joined");
    if (socket) socket.close(1000, "left");
    socket = null;
    setStatus("idle");
    list.replaceChildren();
    unseen = 0; showUnseen();
    showPresence([]);
    setOnlinePanel(false);
    showView("join");
    nameInput.focus();
  });

  composer.addEventListener("submit", function (e) {
    e.preventDefault();
    if (send(input.value)) input.value = "";
    input.focus();
    closePicker();
  });

  // ---- the emoji picker: inserts shortcodes, so the frames show ":tada:" ------------------

  PICKER.forEach(function (code) {
    if (!EMOJI[code]) return;
    var b = el("button", "emoji-choice", EMOJI[code]);
    b.type = "button";
    b.title = ":" + code + ":";
    b.setAttribute("aria-label", ":" + code + ":");
    b.addEventListener("click", function () {
      var shortcode = ":" + code + ":";
      var start = input.selectionStart == null ? input.value.length : input.selectionStart;
      var end = input.selectionEnd == null ? start : input.selectionEnd;
      var before = input.value.slice(0, start), after = input.value.slice(end);
      var pre = before && !/\s$/.test(before) ? " " : "";
      var post = after && /^\s/.test(after) ? "" : " ";
      var insert = pre + shortcode + post;
      if ((before + insert + after).length > input.maxLength) return;
      input.value = before + insert + after;
      var caret = before.length + insert.length;
      input.focus();
      input.setSelectionRange(caret, caret);
    });
    picker.appendChild(b);
  });

  function closePicker() {
    picker.hidden = true;
    emojiButton.setAttribute("aria-expanded", "false");
  }

  emojiButton.addEventListener("click", function () {
    var open = picker.hidden;
    picker.hidden = !open;
    emojiButton.setAttribute("aria-expanded", String(open));
    if (open && picker.firstElementChild) picker.firstElementChild.focus();
  });

  document.addEventListener("click", function (e) {
    if (!picker.hidden && !picker.contains(e.target) && !emojiButton.contains(e.target)) closePicker();
    if (app.classList.contains("show-online") && !$("online-panel").contains(e.target) &&
        !onlineToggle.contains(e.target)) setOnlinePanel(false);
  });

  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape") return;
    if (!picker.hidden) { closePicker(); emojiButton.focus(); }
    if (app.classList.contains("show-online")) { setOnlinePanel(false); onlineToggle.focus(); }
  });

  // ---- start ------------------------------------------------------------------------------

  nameInput.value = store.get("username") || "";
  emailInput.value = store.get("email") || "";
  gravatarInput.checked = store.get("gravatar") === "1";
  showView("join");
  if (store.get("joined") === "1" && nameInput.value.trim()) {
    joinForm.requestSubmit ? joinForm.requestSubmit() : joinForm.dispatchEvent(new Event("submit", { cancelable: true }));
  } else {
    nameInput.focus();
  }

  // A tiny hook for tests and lessons: window.chat.state, .send(text), .socket
  window.chat = Object.freeze({
    get state() { return JSON.parse(JSON.stringify(state)); },
    get socket() { return socket; },
    send: send
  });
})();
