"""The course's matplotlib figures: frame diagrams, header overhead, round-trip times, timelines.

Every function draws data it is given (bytes, measurements, a tap's
records) and returns the Axes (or Figure) so a cell can adjust it; nothing
here measures anything or opens a socket.  Pass ``ax=`` to draw into a
figure of your own.

Every figure is made to be read from the back of a classroom: 9.5 inches
wide (950 px at matplotlib's 100 dpi, the width of a notebook's output area
at 1024×768), and no text under ``SMALL`` points.

- :func:`frame_layout`: RFC 6455 §5.2's header diagram, redrawn 16 bits (2 bytes) to a row.
- :func:`frame_bits`: the same grid filled in with the bits of a real frame.
- :func:`overhead`: header bytes and header share against payload size.
- :func:`rtt`: round-trip times over time, with the added delay in force shaded.
- :func:`frame_timeline`: a tap's frames and events on a time axis, one lane per direction.
- :func:`detection`: dead-peer detection times against the band theory predicts.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Iterable, Sequence

from ..protocol.frames import describe

ROW_BITS = 16
"""Bits to a row in the frame diagrams.  The RFC draws 32; 16 keeps every bit and label legible on a projector."""

WIDTH = 9.5                 # inches: every figure's width
SMALL, BODY, TITLE = 10, 11.5, 13
"""Font sizes in points: the smallest text anywhere (bit numbers, notes), labels and ticks, titles."""

FIELD_COLOURS = {
    "FIN": "#fdd0a2",
    "RSV1": "#d9d9d9",
    "RSV2": "#d9d9d9",
    "RSV3": "#d9d9d9",
    "opcode": "#9ecae1",
    "MASK": "#fcbba1",
    "payload len": "#c7e9c0",
    "extended payload length": "#a1d99b",
    "masking key": "#fc9272",
    "payload": "#dadaeb",
}
"""One colour per header field, shared by every frame figure."""

OPCODE_COLOURS = {"TEXT": "#4c78a8", "BINARY": "#72b7b2", "CONT": "#9ecae9", "PING": "#f58518",
                  "PONG": "#54a24b", "CLOSE": "#e45756"}
DIRECTION_LABELS = {"c2s": "client → server", "s2c": "server → client"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _legend_below(ax: Any, ncol: int) -> None:
    """The legend under the plot, where it hides no data: the figure's own (constrained layout) or the axes'."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.figure.get_layout_engine() is not None and len(ax.figure.axes) == 1:
        ax.figure.legend(handles, labels, fontsize=SMALL, loc="outside lower center", ncol=ncol, frameon=False)
    else:
        ax.legend(handles, labels, fontsize=SMALL, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=ncol,
                  frameon=False)


def _segments(start: int, width: int) -> list[tuple[int, int, int]]:
    """Split bits [start, start+width) into (row, first column, width) pieces, 32 columns to a row."""
    pieces = []
    while width > 0:
        row, col = divmod(start, ROW_BITS)
        w = min(width, ROW_BITS - col)
        pieces.append((row, col, w))
        start, width = start + w, width - w
    return pieces


def _ruler(ax: Any, y: float) -> None:
    """Bit numbers 0-15 above the grid: a bit's place within its row (the rows' labels say which bytes)."""
    for col in range(ROW_BITS):
        ax.text(col + 0.5, y, str(col), ha="center", va="bottom", fontsize=SMALL, color="#555")


def _row_labels(ax: Any, rows: int, row_h: float) -> None:
    per_row = ROW_BITS // 8
    for row in range(rows):
        first = per_row * row
        ax.text(-0.25, -(row + 0.5) * row_h, f"bytes {first}-{first + per_row - 1}", ha="right", va="center",
                fontsize=SMALL, color="#555")


def _box(ax: Any, x: float, y: float, w: float, h: float, colour: str, hatch: str | None = None,
         dashed: bool = False) -> None:
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x, y), w, h, facecolor=colour, edgecolor="#333", lw=0.8, hatch=hatch,
                           linestyle="--" if dashed else "-"))


def _label(ax: Any, x: float, y: float, w: float, text: str, fontsize: float = BODY, boxed: bool = False) -> None:
    """Text centred in a field, shrunk to fit its width but never below ``SMALL``; a one-bit field's name is
    written across it, one letter under another if it is longer than the field is wide."""
    longest = max(len(line) for line in text.split("\n"))
    # points per bit: the grid spans ROW_BITS + LEFT units across ~95% of the figure's width
    per_bit = ax.figure.get_figwidth() * 72 * 0.95 / (ROW_BITS + LEFT)
    if w == 1 and longest > 2:
        ax.text(x + w / 2, y, text.replace("\n", " "), ha="center", va="center", rotation=90, fontsize=SMALL)
        return
    size = min(fontsize, (w * per_bit - 4) / (0.6 * longest))
    box = {"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1} if boxed else None
    ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=max(SMALL, size), linespacing=1.15, bbox=box)


LEFT = 2.6        # bit columns' worth of room left of the grid, for the rows' labels


def _finish_grid(ax: Any, rows: int, row_h: float, title: str | None) -> None:
    ax.set_xlim(-LEFT, ROW_BITS + 0.1)
    ax.set_ylim(-rows * row_h - 0.1, 0.75)
    ax.set_aspect("auto")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=TITLE, loc="left")


def frame_layout(ax: Any = None, title: str | None = "RFC 6455 §5.2: the frame header, 16 bits (2 bytes) to a row"
                 ) -> Any:
    """RFC 6455 §5.2's diagram of a frame, redrawn: every field of the longest header (14 bytes).

    The extended payload length is 16 bits when "payload len" is 126 and 64
    bits when it is 127 (its last 48 bits are hatched: only the 64-bit form
    has them); the masking key is there only when MASK is 1 (client frames).
    """
    plt = _plt()
    rows, row_h = 8, 1.0
    if ax is None:
        ax = plt.subplots(figsize=(WIDTH, 0.62 * rows + 0.7), layout="constrained")[1]
    fields = [
        ("FIN", 0, 1, "FIN", None), ("RSV1", 1, 1, "RSV1", None), ("RSV2", 2, 1, "RSV2", None),
        ("RSV3", 3, 1, "RSV3", None), ("opcode", 4, 4, "opcode\n(4 bits)", None), ("MASK", 8, 1, "MASK", None),
        ("payload len", 9, 7, "payload len\n(7 bits)", None),
        ("extended payload length", 16, 16, "extended payload length (16 bits)\nif payload len = 126 or 127", None),
        ("extended payload length", 32, 48, "extended payload length continued\n(64 bits in all), "
                                            "only if payload len = 127", "//"),
        ("masking key", 80, 32, "masking key (32 bits)\nonly if MASK = 1", None),
        ("payload", 112, 16, "payload data … (payload len bytes, right after the header)", None),
    ]
    _ruler(ax, 0.05)
    for name, start, width, text, hatch in fields:
        pieces = _segments(start, width)
        for i, (row, col, w) in enumerate(pieces):
            y = -(row + 1) * row_h
            _box(ax, col, y, w, row_h, FIELD_COLOURS[name], hatch=hatch, dashed=name == "payload")
            shown = text if i == 0 else (text.split("\n")[0] + " (cont.)" if w >= 12 else "(cont.)")
            _label(ax, col, y + row_h / 2, w, shown, boxed=hatch is not None)
    _row_labels(ax, rows, row_h)
    _finish_grid(ax, rows, row_h, title)
    return ax


def _payload_label(byte: int, plain: int | None) -> str:
    def show(b: int) -> str:
        return repr(chr(b)) if 32 <= b < 127 else ""

    if plain is None:
        return f"{byte:02x} {show(byte)}".rstrip()
    return f"{byte:02x}\n→ {plain:02x} {show(plain)}".rstrip()


def frame_bits(raw: bytes, ax: Any = None, title: str | None = None, max_payload: int = 8) -> Any:
    """A real frame in the §5.2 grid: every header bit, each field coloured and labelled with its value.

    The header comes from ``frames.describe(raw)``; after it, the first
    ``max_payload`` payload bytes are drawn 8 bits each, as hex (for a masked
    frame: the byte on the wire → the byte unmasked, and its character).
    """
    plt = _plt()
    fields = describe(raw)
    header_bits = sum(f.width for f in fields)
    header = header_bits // 8
    key = None
    for f in fields:
        if f.name == "masking key":
            key = f.value.to_bytes(4, "big")
    payload = bytes(raw[header:])
    shown = payload[:max_payload]
    total_bits = header_bits + 8 * len(shown)
    rows = max(1, math.ceil(total_bits / ROW_BITS))
    row_h, bits_h = 1.5, 0.55
    if ax is None:
        ax = plt.subplots(figsize=(WIDTH, 0.85 * rows + 0.8), layout="constrained")[1]
    _ruler(ax, 0.05)

    def text_of(f) -> str:
        if f.name in ("FIN", "RSV1", "RSV2", "RSV3", "MASK"):
            return f.name
        if f.name == "opcode":
            return f"opcode 0x{f.value:X}\n{f.meaning.split(' frame')[0]}"
        if f.name == "payload len":
            return f"payload len\n{f.value}" + (" → next 16 bits" if f.value == 126 else
                                              " → next 64 bits" if f.value == 127 else "")
        if f.name == "extended payload length":
            return f"extended payload length ({f.width} bits)\n= {f.value}"
        if f.name == "masking key":
            return f"masking key\n{f.value.to_bytes(4, 'big').hex(' ')}"
        return f.name

    items = [(f.name, f.start, f.width, text_of(f), f.bits) for f in fields]
    for i, byte in enumerate(shown):
        plain = byte ^ key[i % 4] if key else None
        items.append(("payload", header_bits + 8 * i, 8, _payload_label(byte, plain), f"{byte:08b}"))
    for name, start, width, text, bits in items:
        offset = 0
        for i, (row, col, w) in enumerate(_segments(start, width)):
            y = -(row + 1) * row_h
            _box(ax, col, y + bits_h, w, row_h - bits_h, FIELD_COLOURS[name])
            _box(ax, col, y, w, bits_h, "white")
            for k in range(w):
                ax.text(col + k + 0.5, y + bits_h / 2, bits[offset + k], ha="center", va="center",
                        fontsize=BODY, family="monospace")
            label = text if i == 0 else text.split("\n")[0] + " (cont.)"
            _label(ax, col, y + bits_h + (row_h - bits_h) / 2, w, label)
            offset += w
    _row_labels(ax, rows, row_h)
    if len(payload) > len(shown):
        end = total_bits % ROW_BITS or ROW_BITS
        more = f"… {len(payload) - len(shown)} more bytes"
        if end <= ROW_BITS - 6:
            ax.text(end + 0.3, -rows * row_h + row_h / 2, more, ha="left", va="center", fontsize=BODY, color="#333")
        else:
            ax.text(ROW_BITS, -rows * row_h - 0.1, more, ha="right", va="top", fontsize=BODY, color="#333")
            rows += 0.35
    if title is None:
        title = f"{len(raw)} bytes: {header} of header, {len(payload)} of payload"
    _finish_grid(ax, rows, row_h, title)
    return ax


def overhead(sizes: Sequence[int], server_header: Sequence[int], client_header: Sequence[int],
             marks: dict[str, float] | None = None, axes: Any = None) -> Any:
    """Header bytes (left) and header share of the bytes on the wire (right) against payload size.

    ``server_header[i]`` and ``client_header[i]`` are the header bytes of a
    frame with ``sizes[i]`` payload bytes, unmasked and masked.  ``marks``
    labels payload sizes worth pointing at (a chat message, say).
    """
    plt = _plt()
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(WIDTH, 5.0), layout="constrained")[1]
    left, right = axes
    xs = [max(s, 0.8) for s in sizes]           # 0 bytes drawn at the left edge of the log axis
    for header, label, colour in ((client_header, "client → server (masked: +4 bytes of key)", "#e45756"),
                                  (server_header, "server → client (not masked)", "#4c78a8")):
        left.step(xs, header, where="post", color=colour, label=label, lw=2)
        share = [100 * h / (h + s) for h, s in zip(header, sizes)]
        right.plot(xs, share, color=colour, label=label, lw=2)
    for i, ax in enumerate(axes):
        ax.set_xscale("log")
        ax.set_xlabel("payload bytes", fontsize=BODY)
        ax.tick_params(labelsize=SMALL)
        ax.grid(alpha=0.3, which="both")
        for edge in (126, 65536):
            ax.axvline(edge, color="#777", ls=":", lw=1)
        for name, x in (marks or {}).items():
            ax.axvline(x, color="#54a24b", ls="--", lw=1.2, label=name if i == 0 else None)
    left.set_ylabel("header bytes", fontsize=BODY)
    left.set_ylim(0, 15.5)
    left.set_yticks([2, 4, 6, 8, 10, 14])
    for edge, text in ((126, "126 B:\n+2 bytes"), (65536, "65536 B:\n+6 more")):
        left.text(edge * 0.85, 15.2, text, fontsize=SMALL, color="#555", va="top", ha="right")
    left.set_title("header size, by length form", fontsize=TITLE)
    figure = left.figure
    figure.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=BODY,
                  frameon=False)
    right.set_yscale("log")
    right.set_ylabel("header share of the frame (%)", fontsize=BODY)
    right.set_title("overhead: header / (header + payload)", fontsize=TITLE)
    right.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}%"))
    return axes


def rtt(samples: Sequence[tuple[float, float]], phases: Sequence[tuple[float, float, float]],
        ax: Any = None, title: str = "Round-trip time of pings through the tap") -> Any:
    """Round-trip times over time: ``samples`` are (t_sent_s, rtt_s); ``phases`` are (start_s, end_s, delay_ms).

    Each phase is shaded and labelled with the delay the tap added each way;
    a dashed line marks 2 × delay, the round trip's share of it.
    """
    plt = _plt()
    if ax is None:
        ax = plt.subplots(figsize=(WIDTH, 4.6), layout="constrained")[1]
    colours = ["#eef3fb", "#fdf1e6", "#fbe9e9", "#eaf5ea"]
    for i, (start, end, delay) in enumerate(phases):
        ax.axvspan(start, end, color=colours[i % len(colours)], zorder=0)
        ax.hlines(2 * delay, start, end, colors="#777", linestyles="--", lw=1, zorder=1)
        ax.text((start + end) / 2, 0.98, f"+{delay:g} ms each way", transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=BODY, color="#333")
    xs = [t for t, _ in samples]
    ys = [r * 1000 for _, r in samples]
    ax.plot(xs, ys, "o-", ms=3.5, lw=0.8, color="#4c78a8", label="measured RTT (ping → pong)", zorder=3)
    ax.plot([], [], ls="--", color="#777", label="2 × added delay")
    for start, end, _delay in phases:
        inside = sorted(r for t, r in samples if start <= t < end)
        if inside:
            median = inside[len(inside) // 2] if len(inside) % 2 else sum(inside[len(inside) // 2 - 1:][:2]) / 2
            ax.text((start + end) / 2, median * 1000, f"median {median * 1000:.1f} ms\n", ha="center", va="bottom",
                    fontsize=BODY, color="#1f4e79")
    ax.set_xlabel("seconds since the first ping", fontsize=BODY)
    ax.set_ylabel("round-trip time (ms)", fontsize=BODY)
    ax.tick_params(labelsize=SMALL)
    ax.set_ylim(0, max(ys + [2 * d for *_, d in phases] + [1]) * 1.3)
    ax.set_title(title, fontsize=TITLE)
    ax.legend(fontsize=SMALL, loc="center left")
    ax.grid(alpha=0.3)
    return ax


def _event_label(e: dict[str, Any]) -> str:
    who = {"c2s": "client", "s2c": "server"}.get(e.get("dir") or "", "")
    if e["kind"] == "fault":
        return e["detail"].split(";")[0]
    if e["kind"] == "eof":
        return f"FIN from {who}" if who else "FIN"
    if e["kind"] == "reset":
        return "RST"
    if e["kind"] == "close":
        return "TCP closed"
    return e["kind"]


def frame_timeline(timeline: dict[str, Any], ax: Any = None, conn: int | None = None,
                   start: float | None = None, end: float | None = None,
                   spans: Iterable[tuple[float, float, str]] = (),
                   notes: Iterable[tuple[float, str, str]] = (), title: str | None = None,
                   event_kinds: Iterable[str] = ("fault", "eof", "reset", "close")) -> Any:
    """A tap's timeline (``tap.timeline()``): each frame a marker in its direction's lane.

    Markers are coloured by opcode and labelled (close frames with their
    code); the tap's events (faults, FINs, resets, the end of a connection)
    are vertical lines, labelled once where several fall together.
    ``spans`` are (t0, t1, label) intervals drawn as arrows under the lanes
    (how long a dead peer took to detect, say); ``notes`` are (t, "c2s" or
    "s2c", text) callouts pointing at one frame.  Times are seconds since
    the tap started; ``start``/``end`` crop.
    """
    plt = _plt()
    spans, notes = list(spans), list(notes)
    if ax is None:
        ax = plt.subplots(figsize=(WIDTH, 5.0), layout="constrained")[1]
    lanes = {"c2s": 1.0, "s2c": 0.0}
    rows = [dict(zip(("t", "conn", "dir", "opcode", "close_code"), r))
            for r in zip(timeline["t"], timeline["conn"], timeline["dir"], timeline["opcode"],
                         timeline["close_code"])]
    rows = [r for r in rows if (conn is None or r["conn"] == conn)
            and (start is None or r["t"] >= start) and (end is None or r["t"] <= end)]
    times = [r["t"] for r in rows] + [t for s in spans for t in s[:2]]
    lo = start if start is not None else min(times + [0.0])
    hi = end if end is not None else max(times + [1.0])
    width = max(hi - lo, 1e-3)
    seen: set[str] = set()
    last_label = {d: -math.inf for d in lanes}
    for r in rows:
        colour = OPCODE_COLOURS.get(r["opcode"], "#999")
        y = lanes[r["dir"]]
        ax.plot([r["t"]], [y], marker="v" if r["dir"] == "s2c" else "^", ms=9, color=colour, ls="none",
                label=None if r["opcode"] in seen else r["opcode"], zorder=3)
        seen.add(r["opcode"])
        text = r["opcode"].lower() + (f" {r['close_code']}" if r["close_code"] else "")
        noted = any(abs(t - r["t"]) < 1e-9 and d == r["dir"] for t, d, _ in notes)
        if r["opcode"] in ("PING", "PONG", "CLOSE") and r["t"] - last_label[r["dir"]] > width * 0.06 and not noted:
            ax.text(r["t"], y + (0.14 if r["dir"] == "c2s" else -0.14), text, ha="center",
                    va="bottom" if r["dir"] == "c2s" else "top", fontsize=SMALL, color=colour)
            last_label[r["dir"]] = r["t"]
    kinds = set(event_kinds)
    styles = {"fault": ("#7b3294", "-"), "close": ("#444", "-."), "eof": ("#888", ":"), "reset": ("#d62728", ":")}
    events = [e for e in timeline.get("events", []) if e["kind"] in kinds
              and (conn is None or e["conn"] in (conn, None))
              and (start is None or e["t"] >= start) and (end is None or e["t"] <= end)]
    groups: list[list[dict[str, Any]]] = []
    for e in sorted(events, key=lambda e: e["t"]):
        colour, style = styles.get(e["kind"], ("#999", ":"))
        ax.axvline(e["t"], color=colour, ls=style, lw=1.2, zorder=1)
        if groups and e["t"] - groups[-1][0]["t"] < width * 0.03:
            groups[-1].append(e)
        else:
            groups.append([e])
    for group in groups:
        labels = list(dict.fromkeys(_event_label(e) for e in group))
        colour = styles.get(group[0]["kind"], ("#999", ":"))[0]
        ax.text(group[0]["t"], 1.72, " " + " · ".join(labels), rotation=90, fontsize=SMALL, color=colour,
                va="top", ha="right")
    for t, direction, text in notes:
        y = lanes[direction]
        ax.annotate(text, xy=(t, y + 0.1), xytext=(t, y + 0.4), ha="center", va="bottom", fontsize=SMALL, color="#222",
                    arrowprops={"arrowstyle": "->", "color": "#555", "lw": 0.9},
                    bbox={"fc": "#fffbe6", "ec": "#d9c36a", "pad": 1.5, "lw": 0.6})
    for i, (t0, t1, label) in enumerate(spans):
        y = -0.72 - 0.3 * i
        ax.annotate("", xy=(t1, y), xytext=(t0, y), arrowprops={"arrowstyle": "<->", "color": "#333", "lw": 1.2})
        ax.text((t0 + t1) / 2, y + 0.04, label, ha="center", va="bottom", fontsize=SMALL,
                bbox={"fc": "white", "ec": "none", "alpha": 0.85, "pad": 0.5})
    ax.set_ylim(-0.85 - 0.3 * max(0, len(spans) - 1), 1.75)
    ax.set_yticks([1.0, 0.0], [DIRECTION_LABELS["c2s"], DIRECTION_LABELS["s2c"]])
    ax.tick_params(labelsize=SMALL)
    ax.set_xlim(lo - width * 0.02, hi + width * 0.02)
    ax.set_xlabel("seconds since the tap started", fontsize=BODY)
    ax.grid(axis="x", alpha=0.3)
    _legend_below(ax, ncol=6)
    if title:
        ax.set_title(title, fontsize=TITLE)
    return ax


def detection(freeze_phase: Sequence[float], detected: Sequence[float], ping_interval: float,
              ping_timeout: float, ax: Any = None, predicted: tuple[float, float] | None = None) -> Any:
    """Measured dead-peer detection times against when, after a ping, the line froze.

    The shaded band is [ping_timeout, ping_interval + ping_timeout]; the
    dotted line is theory: the next ping leaves ``ping_interval - phase``
    after the freeze, and ``ping_timeout`` later the peer is declared dead.
    ``predicted`` (earliest, latest) draws a reader's own prediction.
    """
    plt = _plt()
    if ax is None:
        ax = plt.subplots(figsize=(WIDTH, 5.0), layout="constrained")[1]
    ax.axhspan(ping_timeout, ping_interval + ping_timeout, color="#e8f0fb", zorder=0,
               label=f"ping_timeout … ping_interval + ping_timeout ({ping_timeout:g} … {ping_interval + ping_timeout:g} s)")
    xs = [i / 100 * ping_interval for i in range(101)]
    ax.plot(xs, [ping_interval - x + ping_timeout for x in xs], ":", color="#555",
            label="theory: ping_interval − phase + ping_timeout")
    if predicted is not None:
        for y in predicted:
            ax.axhline(y, color="#f58518", lw=1.2, ls="--")
        ax.plot([], [], color="#f58518", ls="--", label=f"your prediction ({predicted[0]:g} … {predicted[1]:g} s)")
    ax.plot(freeze_phase, detected, "o", color="#e45756", ms=7, label="measured", zorder=3)
    ax.set_xlim(0, ping_interval)
    ax.set_ylim(0, (ping_interval + ping_timeout) * 1.25)
    ax.set_xlabel("phase: seconds from the last ping to the freeze", fontsize=BODY)
    ax.set_ylabel("detection time (s)", fontsize=BODY)
    ax.tick_params(labelsize=SMALL)
    ax.set_title(f"Dead peer detected after … (ping_interval={ping_interval:g} s, ping_timeout={ping_timeout:g} s)",
                 fontsize=TITLE)
    _legend_below(ax, ncol=2)
    ax.grid(alpha=0.3)
    return ax
