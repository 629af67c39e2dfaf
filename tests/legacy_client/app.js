// tests/legacy_client/app.js: the Go original's Vue 2 client (scotch-io/go-realtime-chat,
// public/app.js), copied byte-for-byte from the article's listing
// (/work/shared/original/app.js.txt) EXCEPT two lines the printing mangled, restored
// as in the original repository:
//   - gravatarURL: printed `return '#39; + CryptoJS.MD5(email);`, restored to
//     `return 'http://www.gravatar.com/avatar/' + CryptoJS.MD5(email);`
//   - the avatar <img>: printed with URL-encoded spaces (`'<img src="'%20+%20...%20+%20'">'`,
//     a SyntaxError), restored to `'<img src="' + self.gravatarURL(msg.email) + '">'`.
// Everything below this comment block is the listing as printed. Do not "fix" it: the
// test (tests/test_legacy_client.py) checks that OUR server keeps THIS client working.
// The Vue client as printed in the article (its Gravatar URL was mangled in the printing).
 new Vue({
    el: '#app',

    data: {
        ws: null, // Our websocket
        newMsg: '', // Holds new messages to be sent to the server
        chatContent: '', // A running list of chat messages displayed on the screen
        email: null, // Email address used for grabbing an avatar
        username: null, // Our username
        joined: false // True if email and username have been filled in
    },

    created: function() {
        var self = this;
        this.ws = new WebSocket('ws://' + window.location.host + '/ws');
        this.ws.addEventListener('message', function(e) {
            var msg = JSON.parse(e.data);
            self.chatContent += '<div class="chip">'
                    + '<img src="' + self.gravatarURL(msg.email) + '">' // Avatar
                    + msg.username
                + '</div>'
                + emojione.toImage(msg.message) + '<br/>'; // Parse emojis

            var element = document.getElementById('chat-messages');
            element.scrollTop = element.scrollHeight; // Auto scroll to the bottom
        });
    },

    methods: {
        send: function () {
            if (this.newMsg != '') {
                this.ws.send(
                    JSON.stringify({
                        email: this.email,
                        username: this.username,
                        message: $('<p>'). html (this.newMsg).text() // Strip out html
                    }
                ));
                this.newMsg = ''; // Reset newMsg
            }
        },

        join: function () {
            if (!this.email) {
                Materialize.toast('You must enter an email', 2000);
                return
            }
            if (!this.username) {
                Materialize.toast('You must choose a username', 2000);
                return
            }
            this.email = $('<p>').html(this.email).text();
            this.username = $('<p>').html(this.username).text();
            this.joined = true;
        },

        gravatarURL: function(email) {
            return 'http://www.gravatar.com/avatar/' + CryptoJS.MD5(email);
        }
    }
});  

