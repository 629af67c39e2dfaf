// A stand-in for the Go original's browser client, for tests/test_legacy_client.py.
//
// This is our own code.  It imitates, for compatibility tests, how the
// original's client behaves on the wire and on the page; it shares no code
// with it.  The behaviour it reproduces:
//   * one WebSocket to /ws on the page's own host, opened as the page loads,
//     offering no subprotocol (so our server treats it as a legacy client);
//   * every post is one text frame holding one JSON object with the keys
//     username, email and message;
//   * every frame received is parsed as such an object, and its username and
//     message are put into the page as HTML, unescaped.  That is unsafe on
//     purpose: the original does the same, and the test checks that our
//     server's escaping for legacy clients is what keeps it harmless;
//   * an avatar is derived from the email (a Gravatar page would hash it into
//     an image URL; we skip the hash and only show whether an email came);
//   * posting shows nothing by itself: a line appears only when the server
//     sends it back;
//   * once the connection closes it stays closed: no reconnect, ever.
(function () {
  "use strict";

  var statusBox = document.getElementById("status");
  var feed = document.getElementById("feed");
  var composer = document.getElementById("composer");
  var who = document.getElementById("who");
  var address = document.getElementById("address");
  var words = document.getElementById("words");

  var secure = window.location.protocol === "https:";
  var socket = new WebSocket((secure ? "wss://" : "ws://") + window.location.host + "/ws");

  // What the test reads back: the socket itself and a few counts.
  window.legacyPage = { socket: socket, framesIn: 0, framesOut: 0 };

  socket.addEventListener("open", function () {
    statusBox.textContent = "open";
  });

  socket.addEventListener("close", function () {
    statusBox.textContent = "closed";          // and nothing more is attempted
  });

  socket.addEventListener("message", function (event) {
    window.legacyPage.framesIn += 1;
    var post = JSON.parse(event.data);

    var row = document.createElement("div");
    row.className = "post";

    var face = document.createElement("span");
    face.className = "avatar";
    face.textContent = post.email ? "[" + post.email.charAt(0).toUpperCase() + "]" : "[?]";
    row.appendChild(face);

    var body = document.createElement("span");
    body.className = "body";
    // Deliberately unsafe, like the client it imitates: HTML from the wire.
    body.innerHTML = "<b class=\"author\">" + post.username + "</b>: " +
                     "<span class=\"text\">" + post.message + "</span>";
    row.appendChild(body);

    feed.appendChild(row);
  });

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    if (words.value === "") {
      return;
    }
    socket.send(JSON.stringify({
      username: who.value,
      email: address.value,
      message: words.value
    }));
    window.legacyPage.framesOut += 1;
    words.value = "";                          // no local copy: wait for the server
  });
}());
