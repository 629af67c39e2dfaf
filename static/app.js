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
 *   - The list keeps at most MAX_ITEMS lines, scrolled up or not, and a burst
 *     of joins and leaves is one line ("alice, bob and 10 others joined").
 *   - The teacher opens the page with the teacher link (#teacher=<secret>):
 *     the secret stays in sessionStorage, leaves the address bar at once,
 *     and that page gets kick, mute, ban, lock and clear buttons.
 *
 * Open the browser's developer tools (Network tab, "WS", Messages) to watch
 * the frames this file sends and receives.
 *
 * Wire protocol (see DESIGN.md):
 *   us -> server  {"type": "join", "username", "email", "teacher"?}   once per connection
 *                 {"username": ..., "email": ..., "message": ...}     one per chat message
 *                 {"type": "rename", "username": ...}
 *                 {"type": "kick" | "ban" | "unmute", "target": id}   teacher only, like the three below
 *                 {"type": "mute", "target": id, "seconds": 300}
 *                 {"type": "lock" | "unlock" | "clear"}
 *   server -> us  {"type": "welcome" | "presence" | "history" | "message" | "join" | "leave" |
 *                          "rename" | "system" | "error", ...}
 *   presence (the whole list) comes once, after welcome; then join, leave and
 *   rename change it one person at a time.
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
  var MAX_ITEMS = 500;          // lines kept in the list, scrolled up or not
  var CHURN_WINDOW = 5000;      // ms: joins and leaves this close together share one line
  var CHURN_NAMES = 2;          // names shown in such a line before "and N others"
  var MUTE_SECONDS = 300;       // what the teacher's mute button asks for
  var TEACHER_KEY = "chat_lesson.teacher";   // sessionStorage: the teacher link's secret
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
    online: [],          // [{id, username, avatar, teacher}]: presence, then join/leave/rename
    teacher: false,      // the server said this page is the teacher's
    muted: false,        // the teacher muted us: sending is off until unmute
    locked: false,       // the teacher locked the room
    removed: "",         // "kick" | "ban" once the teacher removed us: no reconnecting
    mutedIds: {},        // who is muted (by id), for the teacher's buttons
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
  var joined = false;    // the server accepted our join on this connection
  var renamePending = ""; // the name we asked for, until the server answers
  var teacherSecret = "";  // from the teacher link, kept in sessionStorage only

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
  var sendButton = $("send"), mutedBanner = $("muted-banner"), removedBanner = $("removed-banner");
  var removedText = $("removed-text"), rejoinButton = $("rejoin");
  var roomState = $("room-state"), teacherTools = $("teacher-tools");
  var lockButton = $("lock-room"), clearButton = $("clear-chat");
  var renameOpen = $("rename-open"), renameForm = $("rename-form"), renameInput = $("rename-input");
  var renameError = $("rename-error"), renameCancel = $("rename-cancel");
  var confirmBox = $("confirm"), confirmText = $("confirm-text"), confirmOk = $("confirm-ok");
  var confirmCancel = $("confirm-cancel");
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

  // Where the reader is, measured before lines are added: at the bottom (then
  // we follow), or reading an older line (the anchor), which must stay put
  // when lines are added below and the oldest dropped above.
  function measure() {
    var view = { stick: atBottom(), anchor: null, anchorTop: 0 };
    if (!view.stick) {
      var top = list.scrollTop;
      for (var node = list.firstElementChild; node; node = node.nextElementSibling) {
        if (node.offsetTop + node.offsetHeight > top) { view.anchor = node; break; }
      }
      if (view.anchor) view.anchorTop = view.anchor.offsetTop - top;
    }
    return view;
  }

  // Lines are added (and the oldest dropped) at once, so the list never holds
  // more than MAX_ITEMS, scrolled up or not.  Putting the view right costs a
  // layout of the whole list: the first few lines of a frame get it at once,
  // and a burst (a reconnect flood, 700 messages in a second) waits for the
  // next frame, one layout for all of them instead of one each.
  var AT_ONCE = 3;       // lines per frame whose view is put right at once
  var view = null;       // the reader's position, while lines wait to be scrolled to
  var placed = 0;        // lines added since the last frame
  var frameBooked = false;

  function settle() {
    var v = view;
    view = null;
    if (!v) return;
    if (v.stick) scrollToBottom(false);
    else if (v.anchor && v.anchor.isConnected) list.scrollTop = v.anchor.offsetTop - v.anchorTop;
  }

  function nextFrame() {
    frameBooked = false;
    placed = 0;
    settle();
  }

  // Add one line; scroll only if the reader was at the bottom (or it is ours).
  function append(item, options) {
    options = options || {};
    if (!view) view = measure();
    if (options.force) view.stick = true;
    list.appendChild(item);
    var extra = list.children.length - MAX_ITEMS;
    while (extra-- > 0) list.removeChild(list.firstElementChild);
    if (!view.stick && options.counts) {
      unseen += 1;
      showUnseen();
    }
    placed += 1;
    if (!frameBooked) { frameBooked = true; requestAnimationFrame(nextFrame); }
    if (placed <= AT_ONCE) settle();
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
    var teacher = ev.teacher === true;
    if (teacher) item.classList.add("from-teacher");
    var prev = lastItem();
    if (prev && prev.dataset.user === name && prev.classList.contains("from-teacher") === teacher &&
        when.getTime() - Number(prev.dataset.at) < GROUP_WINDOW) {
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
    if (teacher) head.appendChild(teacherBadge("msg-teacher"));
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

  // Only the server can set `teacher` on an event, and only for the teacher's connection.
  function teacherBadge(className) {
    var badge = el("span", "badge-teacher " + className, "teacher");
    badge.title = "The teacher";
    badge.dataset.testid = "teacher-badge";
    return badge;
  }

  function showSystem(text, kind, iso) {
    var item = el("li", "sys" + (kind ? " sys-" + kind : ""));
    var when = parseTime(iso);
    item.appendChild(el("span", "sys-text", text));
    item.appendChild(timeElement(when));
    append(item, {});
    return item;
  }

  // ---- joins and leaves: a burst is one line ------------------------------------
  //
  // Thirty laptops joining at the start of class, or one troll reconnecting in
  // a loop, would fill the list with "X joined" lines.  A join or leave that
  // comes within CHURN_WINDOW of the last one, with nothing said in between,
  // updates that line instead: "alice, bob and 10 others joined · 3 people left".

  var churn = null;      // {item, text, joined: [names], left: [names], at} of the last such line

  function namesText(names, verb) {
    if (names.length === 1) return names[0] + " " + verb;
    if (names.length === 2) return names[0] + " and " + names[1] + " " + verb;
    if (verb === "left") return names.length + " people left";
    var others = names.length - CHURN_NAMES;
    return names.slice(0, CHURN_NAMES).join(", ") + " and " + others +
      (others === 1 ? " other " : " others ") + verb;
  }

  function showChurn(kind, name, iso) {
    var now = Date.now();
    if (!churn || churn.item !== list.lastElementChild || now - churn.at > CHURN_WINDOW) {
      churn = { item: showSystem("", "churn sys-" + kind, iso), joined: [], left: [], first: kind, at: now };
      churn.text = churn.item.querySelector(".sys-text");
      churn.item.dataset.testid = "churn";
    }
    churn.at = now;
    (kind === "join" ? churn.joined : churn.left).push(name);
    var parts = [];
    if (churn.joined.length) parts.push(namesText(churn.joined, "joined"));
    if (churn.left.length) parts.push(namesText(churn.left, "left"));
    if (churn.first === "leave") parts.reverse();       // in the order they happened
    churn.text.textContent = parts.join(" · ");
    churn.item.classList.toggle("sys-join", churn.joined.length > 0 && !churn.left.length);
    churn.item.classList.toggle("sys-leave", churn.left.length > 0 && !churn.joined.length);
    churn.item.dataset.joined = String(churn.joined.length);
    churn.item.dataset.left = String(churn.left.length);
    var all = [];
    if (churn.joined.length) all.push("Joined: " + churn.joined.slice(0, 50).join(", ") +
                                      (churn.joined.length > 50 ? " …" : ""));
    if (churn.left.length) all.push("Left: " + churn.left.slice(0, 50).join(", ") +
                                    (churn.left.length > 50 ? " …" : ""));
    churn.item.title = all.join("\n");
  }

  function updateTitle() {
    document.title = unreadTitle ? "(" + unreadTitle + ") " + baseTitle : baseTitle;
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { unreadTitle = 0; updateTitle(); }
  });

  // ---- who is online ------------------------------------------------------------
  //
  // The whole list comes once (presence, after welcome); then each join, leave
  // and rename changes one row, so a crowd joining costs one row each, not the
  // whole list each time.

  var rows = {};         // id -> <li> in #online

  function person(p) {
    return { id: p && p.id, username: String(p && p.username != null ? p.username : "?"),
             avatar: p && typeof p.avatar === "string" ? p.avatar : "", teacher: Boolean(p && p.teacher === true) };
  }

  function byName(a, b) {
    var x = a.username.toLowerCase(), y = b.username.toLowerCase();
    return x < y ? -1 : x > y ? 1 : (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  function toolButton(action, label, title, target) {
    var b = el("button", "person-tool tool-" + action, label);
    b.type = "button";
    b.title = title;
    b.setAttribute("aria-label", title);
    b.dataset.testid = action;
    b.dataset.action = action;
    b.dataset.target = String(target.id);
    return b;
  }

  function personRow(p) {
    var row = el("li", "person");
    row.dataset.user = p.username;
    row.dataset.id = String(p.id);
    row.appendChild(avatar(p.username, p.avatar));
    var line = el("span", "person-line");          // the name shrinks first, the badges stay whole
    line.appendChild(el("span", "person-name", p.username));
    if (p.teacher) { row.classList.add("teacher"); line.appendChild(teacherBadge("person-teacher")); }
    var me = p.id !== undefined && p.id === state.you;
    if (me) {
      row.classList.add("me");
      line.appendChild(el("span", "person-you", "you"));
    }
    row.appendChild(line);
    if (state.mutedIds[p.id]) row.classList.add("muted");
    // The teacher's buttons: for everyone but the teacher (the server checks again).
    if (state.teacher && !me && !p.teacher) {
      var tools = el("span", "person-tools");
      var muted = Boolean(state.mutedIds[p.id]);
      tools.appendChild(muted ? toolButton("unmute", "unmute", "Let " + p.username + " write again", p) :
                                toolButton("mute", "mute", "Mute " + p.username + " for " + MUTE_SECONDS / 60 +
                                           " minutes", p));
      tools.appendChild(toolButton("kick", "kick", "Remove " + p.username + " from the chat", p));
      tools.appendChild(toolButton("ban", "ban", "Ban " + p.username + " from this chat", p));
      row.appendChild(tools);
    }
    return row;
  }

  function countOnline() {
    var n = String(state.online.length);
    onlineCount.textContent = n;
    onlineToggleCount.textContent = n;
    onlineEmpty.hidden = state.online.length > 0;
  }

  function showPresence(people) {
    state.online = people.map(person).sort(byName);
    rows = {};
    var items = state.online.map(function (p) { return (rows[p.id] = personRow(p)); });
    onlineList.replaceChildren.apply(onlineList, items);
    countOnline();
  }

  function redrawPerson(id) {
    var index = indexOfPerson(id);
    if (index < 0 || !rows[id]) return;
    var row = personRow(state.online[index]);
    onlineList.replaceChild(row, rows[id]);
    rows[id] = row;
  }

  function indexOfPerson(id) {
    for (var i = 0; i < state.online.length; i++) if (state.online[i].id === id) return i;
    return -1;
  }

  function removePerson(id) {
    var index = indexOfPerson(id);
    if (index >= 0) state.online.splice(index, 1);
    if (rows[id]) { if (rows[id].parentNode) rows[id].parentNode.removeChild(rows[id]); delete rows[id]; }
    countOnline();
  }

  function addPerson(p) {
    p = person(p);
    if (p.id === undefined) return;
    removePerson(p.id);                               // a repeat, or a rename: one row per id
    var lo = 0, hi = state.online.length;             // keep the list sorted by name
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (byName(state.online[mid], p) < 0) lo = mid + 1; else hi = mid;
    }
    state.online.splice(lo, 0, p);
    var row = rows[p.id] = personRow(p);
    onlineList.insertBefore(row, lo + 1 < state.online.length ? rows[state.online[lo + 1].id] : null);
    countOnline();
  }

  function redrawOnline() { showPresence(state.online.slice()); }

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

  // Errors that refuse a join: the page goes back to the form and says why.
  var JOIN_REFUSED = { name_taken: true, bad_name: true, locked: true, banned: true };

  function showError(ev) {
    var code = String(ev.code || "error");
    var detail = typeof ev.detail === "string" ? ev.detail : "";
    if (renamePending && (code === "name_taken" || code === "bad_name" || code === "bad_field" ||
                          code === "rate_limited" || code === "not_joined" || code === "muted" ||
                          code === "locked")) {
      renameRefused(detail || FRIENDLY[code] || "The server refused that name.");
      return;
    }
    if (!joined && code === "not_teacher" && teacherSecret) {     // a teacher link from another room
      teacherSecret = "";
      try { window.sessionStorage.removeItem(TEACHER_KEY); } catch (e) { /* private mode */ }
      backToForm(detail || "That teacher link is not this room's.");
      return;
    }
    if (!joined && JOIN_REFUSED[code]) {
      backToForm(detail || "The server refused to let you in (" + code + ").");
      return;
    }
    if (code === "muted") setMuted(true, "You are muted: " + (detail || "by the teacher"), muteSeconds(ev));
    if (code === "locked") setLocked(true);
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

  // The socket lives next to this page: its directory + "ws".  Served directly
  // that is ws://127.0.0.1:8000/ws; through a Jupyter server (JupyterHub,
  // Binder: jupyter-server-proxy) the page is at /user/alice/proxy/8000/ and
  // the socket at /user/alice/proxy/8000/ws on the same host.  An https page
  // must use wss: (a browser blocks ws: from it as mixed content).
  function wsURL() {
    var dir = location.pathname.replace(/[^\/]*$/, "");
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + dir + "ws";
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
      var hello = { type: "join", username: state.username, email: state.email };
      if (teacherSecret) hello.teacher = teacherSecret;
      joined = false;
      renamePending = "";
      sendJSON(hello);
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
      if (!state.removed && (e.code === 4001 || e.code === 4003)) {   // kicked (4001) or banned (4003)
        setRemoved(e.code === 4003 ? "ban" : "kick", "the teacher");
      }
      if (state.removed) { setStatus("idle"); return; }     // kicked or banned: do not knock again
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
        onJoin(ev);
        break;
      case "leave":
        if (ev.from !== undefined) removePerson(ev.from);
        if (ev.from !== undefined && state.mutedIds[ev.from]) delete state.mutedIds[ev.from];
        showChurn("leave", String(ev.username), ev.time);
        break;
      case "rename":
        onRename(ev);
        break;
      case "system":
        onSystem(ev);
        break;
      case "welcome":                            // who we are, and the server's limits
        state.you = ev.you;
        state.myIds[ev.you] = true;
        useLimits(ev.limits);
        if (typeof ev.teacher === "boolean") setTeacher(ev.teacher);
        if (typeof ev.locked === "boolean") setLocked(ev.locked);
        break;
      case "presence":                           // the whole list: once, after welcome
        if (Array.isArray(ev.online)) {
          showPresence(ev.online);
          if (indexOfPerson(state.you) >= 0) joined = true;
        }
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

  function onJoin(ev) {
    addPerson({ id: ev.from, username: ev.username, avatar: ev.avatar, teacher: ev.teacher });
    if (ev.from !== undefined && ev.from === state.you) {
      joined = true;
      if (ev.teacher === true) setTeacher(true);
      else if (state.locked) setLocked(false);          // a student gets in only while the room is open
      if (ownJoinPending) {
        ownJoinPending = false;
        if (state.connections === 1) {
          showSystem("You joined as " + ev.username + (state.teacher ? " (teacher)" : ""), "join", ev.time);
        }
      }
      return;
    }
    showChurn("join", String(ev.username), ev.time);
  }

  function onRename(ev) {
    var name = String(ev.username == null ? "?" : ev.username);
    var old = String(ev.old == null ? "?" : ev.old);
    var index = indexOfPerson(ev.from);
    var p = index >= 0 ? state.online[index] : { id: ev.from, teacher: false };
    addPerson({ id: ev.from, username: name, avatar: typeof ev.avatar === "string" ? ev.avatar : p.avatar,
                teacher: p.teacher });
    var mine = ev.from !== undefined && ev.from === state.you;
    if (mine) {
      state.username = name;
      store.set("username", name);
      nameInput.value = name;
      renamePending = "";
      closeRename();
    }
    var line = showSystem(old + " is now " + name, "rename", ev.time);
    line.dataset.testid = "rename-line";
  }

  // The teacher's actions, as everyone sees them.
  function onSystem(ev) {
    var action = String(ev.action || "");
    var target = ev.target && typeof ev.target === "object" ? ev.target : null;
    var me = Boolean(target && target.id !== undefined && target.id === state.you);
    var by = typeof ev.by === "string" && ev.by ? ev.by : "the teacher";
    var detail = typeof ev.detail === "string" && ev.detail ? ev.detail :
      action + (target ? " " + String(target.username) : "") + " by " + by;
    if (action === "clear") {
      list.replaceChildren();
      churn = null;
      unseen = 0; showUnseen();
    }
    if (action === "mute" && target) { state.mutedIds[target.id] = true; redrawPerson(target.id); }
    if (action === "unmute" && target) { delete state.mutedIds[target.id]; redrawPerson(target.id); }
    if (action === "lock") setLocked(true);
    if (action === "unlock") setLocked(false);
    if (me && action === "mute") setMuted(true, "You are muted: " + detail, muteSeconds(ev));
    if (me && action === "unmute") { setMuted(false); notify("You can write again.", "info"); }
    if (me && (action === "kick" || action === "ban")) setRemoved(action, by);
    var line = showSystem(detail, "system sys-" + action, ev.time);
    line.dataset.action = action;
    line.dataset.testid = "system";
    if (me) line.classList.add("sys-you");
  }

  // Send one chat message: what was typed, shortcodes and all.
  function send(text) {
    text = String(text == null ? "" : text);
    if (!text.trim()) return false;
    if (state.status !== "online" || !socket || socket.readyState !== WebSocket.OPEN) {
      notify("Not connected: your message is still in the box.", "warn");
      return false;
    }
    if (state.muted) {
      notify("You are muted: the teacher will let you write again.", "warn");
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
    resetRoom();
    showView("join");
    nameInput.focus();
  });

  composer.addEventListener("submit", function (e) {
    e.preventDefault();
    if (send(input.value)) input.value = "";
    input.focus();
    closePicker();
  });

  // ---- the room's state: muted, locked, removed --------------------------------------------

  // The box and its buttons are off while we may not write (the server refuses anyway).
  function updateComposer() {
    var why = state.removed ? "You are no longer in the chat" :
      state.muted ? "You are muted" :
      state.locked && !state.teacher ? "The room is locked" : "";
    var wasOff = input.disabled;
    input.disabled = sendButton.disabled = emojiButton.disabled = Boolean(why);
    renameOpen.disabled = Boolean(why);               // the server refuses a rename then too
    if (why && !renameForm.hidden) closeRename();
    input.placeholder = why || "Say hi :wave:";
    if (why) closePicker();
    if (wasOff && !why && chatView.hidden === false) input.focus({ preventScroll: true });
  }

  var muteTimer = 0;

  // Muted by the teacher: for `seconds` (the server does not say when a mute
  // runs out, so the page counts too), or until an unmute.
  function setMuted(muted, text, seconds) {
    state.muted = muted;
    clearTimeout(muteTimer);
    if (muted && seconds > 0) {
      muteTimer = setTimeout(function () {
        if (!state.muted) return;
        setMuted(false);
        notify("Your mute is over: you can write again.", "info");
      }, seconds * 1000 + 500);
    }
    app.classList.toggle("is-muted", muted);
    mutedBanner.hidden = !muted;
    if (muted && text) mutedBanner.textContent = text;
    updateComposer();
  }

  function muteSeconds(ev) {
    if (typeof ev.seconds === "number" && ev.seconds > 0) return ev.seconds;
    var said = /for (\d+(?:\.\d+)?) (?:more )?seconds/.exec(String(ev.detail || ""));
    if (said) return Number(said[1]);
    return typeof limits.mute_seconds === "number" && limits.mute_seconds > 0 ? limits.mute_seconds : MUTE_SECONDS;
  }

  function setLocked(locked) {
    state.locked = locked;
    roomState.hidden = !locked;
    lockButton.textContent = locked ? "Unlock room" : "Lock room";
    lockButton.setAttribute("aria-pressed", String(locked));
    lockButton.dataset.action = locked ? "unlock" : "lock";
    app.classList.toggle("is-locked", locked);
    updateComposer();
  }

  function setTeacher(teacher) {
    if (teacher === state.teacher) return;
    state.teacher = teacher;
    app.classList.toggle("is-teacher", teacher);
    teacherTools.hidden = !teacher;
    redrawOnline();                                  // the buttons in each row
    updateComposer();
  }

  // The teacher removed us: say so, and do not reconnect on our own.
  function setRemoved(action, by) {
    state.removed = action;
    clearTimeout(retryTimer);
    clearInterval(tickTimer);
    store.remove("joined");
    removedText.textContent = action === "ban" ?
      "You were banned from this chat by " + by + "." :
      "You were removed from the chat by " + by + ".";
    removedBanner.hidden = false;
    rejoinButton.hidden = action === "ban";
    closeRename();
    setMuted(false);                                  // and updateComposer(): all off
  }

  function clearRemoved() {
    state.removed = "";
    removedBanner.hidden = true;
    updateComposer();
  }

  rejoinButton.addEventListener("click", function () {
    clearRemoved();
    store.set("joined", "1");
    state.attempt = 0;
    connect();
  });

  // Our join was refused (name taken, room locked ...): back to the form, with the reason.
  function backToForm(reason) {
    leaving = true;
    clearTimeout(retryTimer);
    clearInterval(tickTimer);
    store.remove("joined");
    if (socket) socket.close(1000, "join refused");
    socket = null;
    setStatus("idle");
    resetRoom();
    showView("join");
    nameError.textContent = reason;
    nameInput.setAttribute("aria-invalid", "true");
    nameInput.focus();
  }

  // Forget everything about the room this page was in.
  function resetRoom() {
    list.replaceChildren();
    churn = null;
    unseen = 0; showUnseen();
    state.mutedIds = {};
    setTeacher(false);
    showPresence([]);
    setOnlinePanel(false);
    setMuted(false);
    setLocked(false);
    clearRemoved();
    closeRename();
  }

  // ---- changing name, without reconnecting ---------------------------------------------------

  function openRename() {
    renameForm.hidden = false;
    renameOpen.setAttribute("aria-expanded", "true");
    renameError.textContent = "";
    renameInput.value = state.username;
    if (limits.max_username) renameInput.maxLength = limits.max_username;
    renameInput.focus();
    renameInput.select();
  }

  function closeRename() {
    renameForm.hidden = true;
    renameOpen.setAttribute("aria-expanded", "false");
    renameError.textContent = "";
    renamePending = "";
  }

  function renameRefused(reason) {
    renamePending = "";
    if (renameForm.hidden) openRename();
    renameError.textContent = reason;
    renameInput.setAttribute("aria-invalid", "true");
    renameInput.focus();
  }

  // Ask the server for a new name; the rename event (or an error) answers.
  function rename(name) {
    name = String(name == null ? "" : name).trim();
    var problem = !name ? "Please choose a name." :
      limits.max_username && codePoints(name) > limits.max_username ?
        "At most " + limits.max_username + " characters, please." : "";
    if (!problem && name === state.username) { closeRename(); return false; }
    if (!problem && !sendJSON({ type: "rename", username: name })) problem = "Not connected.";
    if (problem) { renameRefused(problem); return false; }
    renamePending = name;
    renameInput.setAttribute("aria-invalid", "false");
    return true;
  }

  renameOpen.addEventListener("click", function () {
    if (renameForm.hidden) openRename(); else closeRename();
  });
  renameCancel.addEventListener("click", function () { closeRename(); renameOpen.focus(); });
  renameForm.addEventListener("submit", function (e) {
    e.preventDefault();
    rename(renameInput.value);
  });

  // ---- the teacher's controls (the server checks the secret; these are only buttons) --------

  // Ask before the actions that cannot be undone; a <dialog>, not confirm(), so
  // the page keeps running and the projector shows a readable question.
  var confirmAction = null;

  function ask(question, okText, action) {
    confirmText.textContent = question;
    confirmOk.textContent = okText;
    confirmAction = action;
    if (typeof confirmBox.showModal === "function") confirmBox.showModal(); else confirmBox.setAttribute("open", "");
    confirmCancel.focus();
  }

  function closeConfirm() {
    confirmAction = null;
    if (typeof confirmBox.close === "function" && confirmBox.open) confirmBox.close();
    else confirmBox.removeAttribute("open");
  }

  confirmOk.addEventListener("click", function () {
    var action = confirmAction;
    closeConfirm();
    if (action) action();
  });
  confirmCancel.addEventListener("click", closeConfirm);
  confirmBox.addEventListener("cancel", function () { confirmAction = null; });

  function command(obj) {
    if (!state.teacher) return false;
    if (!sendJSON(obj)) { notify("Not connected.", "warn"); return false; }
    return true;
  }

  onlineList.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("button.person-tool") : null;
    if (!button || !onlineList.contains(button)) return;
    var id = Number(button.dataset.target);
    var index = indexOfPerson(id);
    var name = index >= 0 ? state.online[index].username : "?";
    switch (button.dataset.action) {
      case "mute": command({ type: "mute", target: id, seconds: MUTE_SECONDS }); break;
      case "unmute": command({ type: "unmute", target: id }); break;
      case "kick": command({ type: "kick", target: id }); break;
      case "ban":
        ask("Ban " + name + "? They cannot come back into this chat.", "Ban " + name,
            function () { command({ type: "ban", target: id }); });
        break;
      default: break;
    }
  });

  lockButton.addEventListener("click", function () {
    command({ type: state.locked ? "unlock" : "lock" });
  });

  clearButton.addEventListener("click", function () {
    ask("Clear the chat for everyone? The messages are gone from every page.", "Clear chat",
        function () { command({ type: "clear" }); });
  });

  // The teacher link is the page's address plus #teacher=<secret>.  A fragment
  // never goes to a server (no logs); we keep the secret in sessionStorage (this
  // tab only) and take it out of the address bar before anyone sees it.
  function readTeacherLink() {
    var match = /(?:^#|&)teacher=([^&]*)/.exec(location.hash);
    if (match) {
      var secret = "";
      try { secret = decodeURIComponent(match[1]); } catch (e) { secret = match[1]; }
      try { window.sessionStorage.setItem(TEACHER_KEY, secret); } catch (e) { /* private mode */ }
      teacherSecret = secret;
      if (window.history && history.replaceState) {
        history.replaceState(history.state, "", location.pathname + location.search);
      }
    } else {
      try { teacherSecret = window.sessionStorage.getItem(TEACHER_KEY) || ""; } catch (e) { teacherSecret = ""; }
    }
  }

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

  readTeacherLink();

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
    send: send,
    rename: rename
  });
})();
