#!/usr/bin/env python3
"""The Teams app package scripts/teams-app.py writes is one Teams takes: the manifest's required keys and
values, the bot id, the icons' sizes and the outline icon's colours (decoded here from the PNG), files at
the zip's root; and bad arguments are refused with a message naming them.

Usage: test_teams_app.py   (standard library only; exit 1 on failure)
"""
import json
import re
import struct
import subprocess
import sys
import tempfile
import uuid
import zipfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "teams-app.py"
BOT = "0b7e6c1a-5d2f-4c3e-9a8b-7f6e5d4c3b2a"
HOST = "func-secmon-edge-abc123.azurewebsites.net"
# Keys the 1.19 schema requires at the root, and in developer / name / description / icons / bots[].
REQUIRED = ["$schema", "manifestVersion", "version", "id", "developer", "name", "description", "icons", "accentColor"]
GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def decode_png(data: bytes):
    """(width, height, color type, rows of RGBA tuples) of an 8-bit PNG; raises on anything else."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", "IHDR first and IEND last"
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0, f"depth {depth}, interlace {interlace}"
    channels = {6: 4, 2: 3}[ctype]
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            else:
                assert f == 0, f"filter {f}"
        rows.append([tuple(line[x * channels:(x + 1) * channels]) for x in range(width)])
        prev = line
    return width, height, ctype, rows


def test_package():
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "sub", "secmon-teams.zip")
        r = run("--bot-app-id", BOT.upper(), "--edge-host", HOST, "--name", "secmon SOC", "--out", str(out))
        check(r.returncode == 0, f"the script failed: {r.stderr}")
        if r.returncode != 0:
            return
        with zipfile.ZipFile(out) as z:
            names = sorted(z.namelist())
            check(names == ["color.png", "manifest.json", "outline.png"], f"zip holds {names}, files at its root")
            m = json.loads(z.read("manifest.json"))
            icons = {n: z.read(n) for n in ("color.png", "outline.png")}
    for key in REQUIRED:
        check(key in m, f"manifest has no {key}")
    version = m.get("manifestVersion", "0")
    check(tuple(int(p) for p in version.split(".")) >= (1, 17), f"manifestVersion {version} is older than 1.17")
    check(m.get("$schema", "").endswith(f"/v{version}/MicrosoftTeams.schema.json"), "$schema names another version")
    check(re.match(r"^\d+\.\d+\.\d+$", m.get("version", "")), "version is not x.y.z")
    check(GUID_RE.match(m.get("id", "")) and m["id"] != BOT, "the app id is a GUID of its own")
    dev = m.get("developer", {})
    for key in ("name", "websiteUrl", "privacyUrl", "termsOfUseUrl"):
        check(dev.get(key), f"developer.{key} missing")
    for key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        check(str(dev.get(key, "")).startswith("https://"), f"developer.{key} is not https")
    check(m.get("name", {}).get("short") == "secmon SOC" and len(m["name"]["short"]) <= 30, "name.short")
    check(0 < len(m.get("name", {}).get("full", "")) <= 100, "name.full")
    check(0 < len(m.get("description", {}).get("short", "")) <= 80, "description.short (1..80)")
    check(0 < len(m.get("description", {}).get("full", "")) <= 4000, "description.full (1..4000)")
    check(re.match(r"^#[0-9a-fA-F]{6}$", m.get("accentColor", "")), "accentColor is not #RRGGBB")
    bots = m.get("bots", [])
    check(len(bots) == 1, f"{len(bots)} bots")
    bot = bots[0] if bots else {}
    check(bot.get("botId") == BOT, f"botId {bot.get('botId')!r}, expected the app id {BOT} (lower case)")
    check(bot.get("supportsFiles") is False, "supportsFiles must be false")
    check(bot.get("isNotificationOnly") is False, "isNotificationOnly must be false: the cards have buttons")
    check(sorted(bot.get("scopes", [])) == ["groupChat", "team"], f"scopes {bot.get('scopes')}")
    check(m.get("validDomains") == [HOST], f"validDomains {m.get('validDomains')}")
    check(m.get("icons") == {"color": "color.png", "outline": "outline.png"}, "icons name the two files")

    w, h, ctype, rows = decode_png(icons["color.png"])
    check((w, h) == (192, 192), f"color icon is {w}x{h}, Teams wants 192x192")
    opaque = {px[3] for row in rows for px in row}
    check(opaque == {255}, "color icon must be opaque (a full-bleed colour icon)")
    w, h, ctype, rows = decode_png(icons["outline.png"])
    check((w, h) == (32, 32), f"outline icon is {w}x{h}, Teams wants 32x32")
    check(ctype == 6, "outline icon needs an alpha channel")
    pixels = [px for row in rows for px in row]
    bad = [px for px in pixels if px[3] != 0 and px[:3] != (255, 255, 255)]
    check(not bad, f"outline icon has {len(bad)} pixels neither white nor transparent")
    drawn = sum(1 for px in pixels if px[3] == 255)
    check(0 < drawn < len(pixels) // 2, f"outline icon draws {drawn} of {len(pixels)} pixels")

    # Generated again for the same bot: the same Teams app id (an update, not a second app).
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "again.zip")
        run("--bot-app-id", BOT, "--edge-host", HOST, "--out", str(out))
        with zipfile.ZipFile(out) as z:
            again = json.loads(z.read("manifest.json"))
        check(again["id"] == m["id"], "the app id changes between runs for the same bot")
        out2 = Path(tmp, "other.zip")
        run("--bot-app-id", str(uuid.uuid4()), "--edge-host", HOST, "--out", str(out2), "--scope", "personal")
        with zipfile.ZipFile(out2) as z:
            other = json.loads(z.read("manifest.json"))
        check(other["id"] != m["id"], "two bots get the same Teams app id")
        check(other["bots"][0]["scopes"] == ["personal"], "--scope replaces the default scopes")


def test_refusals():
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "x.zip")
        cases = [
            (["--bot-app-id", "not-a-guid", "--edge-host", HOST], "--bot-app-id 'not-a-guid': not a GUID"),
            (["--bot-app-id", BOT, "--edge-host", HOST, "--name", "x" * 31], "--name: 31 characters"),
            (["--bot-app-id", BOT, "--edge-host", "https://" + HOST], "--edge-host"),
            (["--bot-app-id", BOT], "--website: required without --edge-host"),
            (["--bot-app-id", BOT, "--website", "http://example.com"], "must be an https:// URL"),
            (["--bot-app-id", BOT, "--edge-host", HOST, "--version", "1.0"], "--version '1.0': must be x.y.z"),
        ]
        for args, needle in cases:
            r = run(*args, "--out", str(out))
            check(r.returncode != 0 and needle in r.stderr, f"{args}: expected a refusal naming {needle!r}, got "
                  f"exit {r.returncode}: {r.stderr.strip()[-200:]}")
            check(not out.exists(), f"{args}: a zip was written despite the refusal")
        r = run("--help")
        check(r.returncode == 0 and "--bot-app-id" in r.stdout and "docs/triage.md" in r.stdout, "--help")


def main() -> int:
    test_package()
    test_refusals()
    for f in failures:
        print("test_teams_app: FAIL", f)
    print(f"test_teams_app: {len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
