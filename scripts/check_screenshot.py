"""Check that a browser's screenshot of the report is not blank (used by .ci/run).

    python scripts/check_screenshot.py shot.png

Decodes the PNG with the standard library alone (zlib), then counts the pixels that are not
white and the distinct colours. A page that failed to render is one colour (white or grey);
the report has text, charts and heat maps, so it has thousands of non-white pixels and
hundreds of colours. Exit code 0 if it looks like a rendered report, 1 if not.
"""
import struct
import sys
import zlib


def read_png(path):
    """(width, height, rows), each row a list of (r, g, b) tuples. 8-bit RGB or RGBA,
    not interlaced: what Chromium writes."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {colour_type}, interlace {interlace})")
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):                     # undo the PNG row filter
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * channels:x * channels + 3]) for x in range(width)])
        previous = line
    return width, height, rows


def main(path):
    try:
        width, height, rows = read_png(path)
    except (OSError, ValueError, zlib.error) as e:
        print(f"no usable screenshot: {e}")
        return 1
    colours, ink = set(), 0
    for row in rows:
        colours.update(row)
        ink += sum(1 for pixel in row if pixel != (255, 255, 255))
    share = ink / (width * height)
    print(f"{path}: {width}x{height}, {len(colours)} distinct colours, {share:.1%} of pixels not white")
    if len(colours) < 50 or share < 0.02:
        print("the screenshot looks blank: the page did not render")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
