/* chat_lesson: emoji shortcodes.
 *
 * The Go original used the emojione library from a CDN to turn ":smile:" into
 * a picture.  We keep it offline: a plain table from shortcode to the emoji
 * character, applied in the browser at display time.  What travels over the
 * WebSocket is exactly what the student typed (":smile:"), so the frames a
 * lesson decodes stay readable ASCII.
 *
 * Loaded before app.js as a classic script; it defines window.EMOJI only.
 */
(function () {
  "use strict";

  var table = {
    // faces
    "smile": "😄", "smiley": "😃", "grin": "😁", "grinning": "😀",
    "laughing": "😆", "satisfied": "😆", "sweat_smile": "😅", "joy": "😂",
    "rofl": "🤣", "slightly_smiling_face": "🙂", "upside_down_face": "🙃",
    "wink": "😉", "blush": "😊", "innocent": "😇", "heart_eyes": "😍",
    "star_struck": "🤩", "kissing_heart": "😘", "yum": "😋",
    "stuck_out_tongue": "😛", "stuck_out_tongue_winking_eye": "😜",
    "zany_face": "🤪", "hugs": "🤗", "hugging_face": "🤗",
    "thinking": "🤔", "shushing_face": "🤫", "zipper_mouth_face": "🤐",
    "raised_eyebrow": "🤨", "neutral_face": "😐", "expressionless": "😑",
    "no_mouth": "😶", "smirk": "😏", "unamused": "😒", "roll_eyes": "🙄",
    "grimacing": "😬", "relieved": "😌", "pensive": "😔", "sleepy": "😪",
    "sleeping": "😴", "mask": "😷", "nerd_face": "🤓", "sunglasses": "😎",
    "cool": "😎", "partying_face": "🥳", "confused": "😕", "worried": "😟",
    "slightly_frowning_face": "🙁", "open_mouth": "😮", "astonished": "😲",
    "flushed": "😳", "pleading_face": "🥺", "cry": "😢", "sob": "😭",
    "scream": "😱", "confounded": "😖", "disappointed": "😞", "sweat": "😓",
    "weary": "😩", "tired_face": "😫", "yawning_face": "🥱", "triumph": "😤",
    "rage": "😡", "angry": "😠", "exploding_head": "🤯", "skull": "💀",
    "poop": "💩", "hankey": "💩", "clown_face": "🤡", "ghost": "👻",
    "alien": "👽", "robot": "🤖", "see_no_evil": "🙈", "melting_face": "🫠",
    "saluting_face": "🫡", "face_with_monocle": "🧐", "smiling_imp": "😈",

    // hands and people
    "+1": "👍", "thumbsup": "👍", "-1": "👎", "thumbsdown": "👎",
    "ok_hand": "👌", "wave": "👋", "clap": "👏", "raised_hands": "🙌",
    "pray": "🙏", "muscle": "💪", "point_up": "☝️", "point_down": "👇",
    "point_left": "👈", "point_right": "👉", "v": "✌️", "crossed_fingers": "🤞",
    "handshake": "🤝", "raised_hand": "✋", "hand": "✋", "fist": "✊",
    "facepunch": "👊", "punch": "👊", "writing_hand": "✍️", "eyes": "👀",
    "brain": "🧠", "shrug": "🤷", "facepalm": "🤦", "man_technologist": "👨‍💻",
    "woman_technologist": "👩‍💻", "technologist": "🧑‍💻", "wave_hand": "👋",

    // hearts and symbols
    "heart": "❤️", "orange_heart": "🧡", "yellow_heart": "💛",
    "green_heart": "💚", "blue_heart": "💙", "purple_heart": "💜",
    "black_heart": "🖤", "broken_heart": "💔", "sparkling_heart": "💖",
    "two_hearts": "💕", "100": "💯", "fire": "🔥", "sparkles": "✨",
    "star": "⭐", "star2": "🌟", "zap": "⚡", "boom": "💥", "collision": "💥",
    "dizzy": "💫", "tada": "🎉", "confetti_ball": "🎊", "balloon": "🎈",
    "gift": "🎁", "trophy": "🏆", "medal": "🏅", "check": "✅",
    "white_check_mark": "✅", "heavy_check_mark": "✔️", "x": "❌",
    "warning": "⚠️", "question": "❓", "grey_question": "❔",
    "exclamation": "❗", "bangbang": "‼️", "no_entry": "⛔",
    "no_entry_sign": "🚫", "bulb": "💡", "speech_balloon": "💬",
    "thought_balloon": "💭", "zzz": "💤", "recycle": "♻️", "infinity": "♾️",
    "arrow_right": "➡️", "arrow_left": "⬅️", "arrow_up": "⬆️",
    "arrow_down": "⬇️", "repeat": "🔁", "hourglass": "⌛", "stopwatch": "⏱️",
    "alarm_clock": "⏰", "lock": "🔒", "unlock": "🔓", "key": "🔑",
    "link": "🔗", "mag": "🔍", "bell": "🔔", "mega": "📣", "loudspeaker": "📢",
    "pushpin": "📌", "paperclip": "📎", "memo": "📝", "pencil": "📝",
    "pencil2": "✏️", "book": "📖", "books": "📚", "clipboard": "📋",
    "calendar": "📆", "chart_with_upwards_trend": "📈",
    "chart_with_downwards_trend": "📉", "bar_chart": "📊", "package": "📦",
    "email": "📧", "envelope": "✉️", "inbox_tray": "📥", "outbox_tray": "📤",
    "satellite": "📡", "signal_strength": "📶", "electric_plug": "🔌",
    "battery": "🔋", "gear": "⚙️", "wrench": "🔧", "hammer": "🔨",
    "hammer_and_wrench": "🛠️", "toolbox": "🧰", "test_tube": "🧪",
    "microscope": "🔬", "bomb": "💣", "shield": "🛡️", "dart": "🎯",
    "game_die": "🎲", "video_game": "🎮", "jigsaw": "🧩", "art": "🎨",
    "musical_note": "🎵", "notes": "🎶", "headphones": "🎧",
    "checkered_flag": "🏁", "triangular_flag_on_post": "🚩",

    // tech
    "computer": "💻", "desktop_computer": "🖥️", "keyboard": "⌨️",
    "iphone": "📱", "phone": "☎️", "floppy_disk": "💾", "cd": "💿",
    "bug": "🐛", "beetle": "🪲", "rocket": "🚀", "globe_with_meridians": "🌐",
    "earth_africa": "🌍", "earth_americas": "🌎", "earth_asia": "🌏",
    "octopus": "🐙", "snake": "🐍", "crab": "🦀", "whale": "🐳",
    "penguin": "🐧", "gopher": "🐹", "hamster": "🐹", "turtle": "🐢",
    "snail": "🐌", "unicorn": "🦄", "dog": "🐶", "cat": "🐱", "fox_face": "🦊",
    "panda_face": "🐼", "owl": "🦉", "bee": "🐝", "honeybee": "🐝",
    "butterfly": "🦋", "duck": "🦆", "rubber_duck": "🦆", "sloth": "🦥",

    // nature and weather
    "sunny": "☀️", "sun_with_face": "🌞", "cloud": "☁️", "rainbow": "🌈",
    "umbrella": "☔", "snowflake": "❄️", "snowman": "⛄", "ocean": "🌊",
    "droplet": "💧", "seedling": "🌱", "evergreen_tree": "🌲",
    "deciduous_tree": "🌳", "cactus": "🌵", "four_leaf_clover": "🍀",
    "maple_leaf": "🍁", "sunflower": "🌻", "rose": "🌹", "tulip": "🌷",
    "crescent_moon": "🌙", "full_moon": "🌕", "comet": "☄️",
    "volcano": "🌋", "mountain": "⛰️",

    // food and drink
    "coffee": "☕", "tea": "🍵", "beer": "🍺", "beers": "🍻",
    "tropical_drink": "🍹", "pizza": "🍕", "hamburger": "🍔", "fries": "🍟",
    "hotdog": "🌭", "taco": "🌮", "burrito": "🌯", "sushi": "🍣",
    "ramen": "🍜", "rice": "🍚", "dumpling": "🥟", "bento": "🍱",
    "cake": "🍰", "birthday": "🎂", "cookie": "🍪", "doughnut": "🍩",
    "chocolate_bar": "🍫", "candy": "🍬", "lollipop": "🍭", "icecream": "🍦",
    "popcorn": "🍿", "apple": "🍎", "green_apple": "🍏", "banana": "🍌",
    "watermelon": "🍉", "strawberry": "🍓", "cherries": "🍒", "peach": "🍑",
    "avocado": "🥑", "hot_pepper": "🌶️", "croissant": "🥐", "bread": "🍞",
    "cheese": "🧀", "egg": "🥚", "fork_and_knife": "🍴",

    // travel and places
    "car": "🚗", "bike": "🚲", "train": "🚆", "bus": "🚌", "airplane": "✈️",
    "ship": "🚢", "house": "🏠", "school": "🏫", "office": "🏢",
    "construction": "🚧", "stop_sign": "🛑", "vertical_traffic_light": "🚦"
  };

  // A few that people type from habit on other chat apps.
  table["thumbs_up"] = table["+1"];
  table["thumbs_down"] = table["-1"];
  table["laugh"] = table["laughing"];
  table["party"] = table["partying_face"];
  table["ok"] = "🆗";
  table["new"] = "🆕";
  table["free"] = "🆓";
  table["sos"] = "🆘";

  window.EMOJI = Object.freeze(table);
})();
