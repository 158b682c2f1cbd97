#!/usr/bin/env python3
"""Write the Teams app package of secmon's triage bot: the zip a Teams administrator uploads.

Usage:
  scripts/teams-app.py --bot-app-id GUID --edge-host HOST [--name secmon] [--website URL] [--out secmon-teams.zip]

The zip holds, at its root, manifest.json (Teams app manifest schema 1.19) and the two icons it names:
color.png (192x192, full colour) and outline.png (32x32, white on transparent), drawn here (no image
library: standard-library Python only). The bot is offered in teams (channel posts) and group chats
(the two places a `teams: { bot: ... }` receiver posts to); add `--scope personal` for 1:1 chats.

The manifest's app id is derived from the bot's app id (a name-based UUID), so a package generated again
for the same bot updates the app already uploaded instead of adding a second one; raise --version when
you do. Steps around it (app registration, Azure Bot, upload, install): docs/triage.md, "Setup".
"""
import argparse
import json
import re
import struct
import sys
import uuid
import zipfile
import zlib
from pathlib import Path

MANIFEST_VERSION = "1.19"
SCHEMA = f"https://developer.microsoft.com/json-schemas/teams/v{MANIFEST_VERSION}/MicrosoftTeams.schema.json"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
HEX_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
# Namespace of the derived Teams app ids (fixed: the same bot always gets the same app id).
APP_ID_NAMESPACE = uuid.UUID("6f0c0e52-7a8e-4d1b-9c4e-5ec0a5e0b22d")
SCOPES = ("team", "groupChat", "personal")


# ---- PNG, written by hand -----------------------------------------------------------------------

def png(width: int, height: int, pixel) -> bytes:
    """An RGBA PNG (8 bits per channel); pixel(x, y) -> (r, g, b, a)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type 0 (None) for every scanline
        for x in range(width):
            rows.extend(pixel(x, y))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b"")


def shield(u: float, v: float) -> bool:
    """Whether (u, v) in the unit square lies in a shield: straight sides, a pointed bottom."""
    if not 0.2 <= u <= 0.8 or v < 0.14 or v > 0.9:
        return False
    if v <= 0.55:
        return True
    # Below the middle the sides slope in to the point at (0.5, 0.9).
    half = 0.3 * (0.9 - v) / 0.35
    return abs(u - 0.5) <= half


def check_mark(u: float, v: float, width: float) -> bool:
    """Whether (u, v) is on a check mark drawn inside the shield."""
    def near(ax, ay, bx, by):
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy)))
        return (u - ax - t * dx) ** 2 + (v - ay - t * dy) ** 2 <= width * width
    return near(0.36, 0.48, 0.47, 0.6) or near(0.47, 0.6, 0.66, 0.36)


def color_icon(accent: str) -> bytes:
    """192x192: a white shield with an accent-coloured check on an accent background."""
    r, g, b = (int(accent[i:i + 2], 16) for i in (1, 3, 5))

    def pixel(x, y):
        u, v = (x + 0.5) / 192, (y + 0.5) / 192
        if shield(u, v):
            return (r, g, b, 255) if check_mark(u, v, 0.035) else (255, 255, 255, 255)
        return (r, g, b, 255)
    return png(192, 192, pixel)


def outline_icon() -> bytes:
    """32x32: the shield's outline and check, white on transparent (Teams' rule for outline icons)."""
    def pixel(x, y):
        u, v = (x + 0.5) / 32, (y + 0.5) / 32
        inner = shield(0.5 + (u - 0.5) / 0.78, 0.52 + (v - 0.52) / 0.84)
        on = (shield(u, v) and not inner) or check_mark(u, v, 0.05)
        return (255, 255, 255, 255) if on else (0, 0, 0, 0)
    return png(32, 32, pixel)


# ---- manifest -----------------------------------------------------------------------------------

def manifest(args) -> dict:
    bot_id = args.bot_app_id.lower()
    domains = [args.edge_host] if args.edge_host else []
    return {
        "$schema": SCHEMA,
        "manifestVersion": MANIFEST_VERSION,
        "version": args.version,
        "id": str(uuid.uuid5(APP_ID_NAMESPACE, bot_id)),
        "developer": {
            "name": args.developer,
            "websiteUrl": args.website,
            "privacyUrl": args.privacy_url or args.website,
            "termsOfUseUrl": args.terms_url or args.website,
        },
        "name": {"short": args.name, "full": args.full_name or f"{args.name}: Microsoft 365 security alerts"},
        "description": {
            "short": "Defender alerts in Teams, with buttons to act on them.",
            "full": ("secmon posts Microsoft Defender alerts to this channel or chat as cards with buttons: "
                     "Acknowledge, Resolve as benign, True positive, Silence 24 h and Open in Defender. A click "
                     "changes the alert in Defender, adds a comment naming the person, is recorded in secmon's "
                     "audit trail, and updates the card in place. Only the people the operator allows may act."),
        },
        "icons": {"color": "color.png", "outline": "outline.png"},
        "accentColor": args.accent,
        "bots": [{
            "botId": bot_id,
            "scopes": args.scope,
            "supportsFiles": False,
            "isNotificationOnly": False,
        }],
        "validDomains": domains,
    }


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="teams-app.py",
        description="Write the Teams app package (manifest.json + icons, zipped) of secmon's triage bot, "
                    "for a Teams administrator to upload (Teams admin center > Manage apps > Upload new app).",
        epilog="See docs/triage.md, \"Setup\", for the steps before and after.")
    p.add_argument("--bot-app-id", required=True, metavar="GUID",
                   help="the bot's Microsoft App ID: the client id of its app registration (Bicep parameter botAppId)")
    p.add_argument("--name", default="secmon", help="short name shown in Teams (at most 30 characters; default secmon)")
    p.add_argument("--full-name", default="", help="full name (at most 100 characters; default '<name>: Microsoft 365 security alerts')")
    p.add_argument("--edge-host", default="",
                   help="host name of the edge app (output SECMON_FUNCTION_HOST), listed in validDomains")
    p.add_argument("--developer", default="secmon operators", help="developer.name (your organisation)")
    p.add_argument("--website", default="",
                   help="developer.websiteUrl (https; Teams requires one): your organisation's page for this app; "
                        "also the privacy and terms URLs unless given. Default: https://<edge host>/ when --edge-host is given")
    p.add_argument("--privacy-url", default="", help="developer.privacyUrl (https)")
    p.add_argument("--terms-url", default="", help="developer.termsOfUseUrl (https)")
    p.add_argument("--version", default="1.0.0", help="the app's version, x.y.z; raise it for each upload of a change")
    p.add_argument("--accent", default="#1F4E79", help="accent colour, #RRGGBB (also the colour icon's background)")
    p.add_argument("--scope", action="append", choices=SCOPES,
                   help="where the bot can be installed; repeat for several (default: team and groupChat)")
    p.add_argument("--out", default="secmon-teams.zip", help="the zip to write (default secmon-teams.zip)")
    args = p.parse_args(argv)
    args.scope = args.scope or ["team", "groupChat"]
    errors = []
    if not args.website:
        if args.edge_host:
            args.website = f"https://{args.edge_host}/"
        else:
            errors.append("--website: required without --edge-host (Teams requires developer.websiteUrl, an https URL)")
    if not GUID_RE.match(args.bot_app_id):
        errors.append(f"--bot-app-id {args.bot_app_id!r}: not a GUID (the app registration's application (client) id)")
    if not 1 <= len(args.name) <= 30:
        errors.append(f"--name: {len(args.name)} characters; Teams allows 1 to 30")
    if len(args.full_name) > 100:
        errors.append(f"--full-name: {len(args.full_name)} characters; Teams allows at most 100")
    if args.edge_host and not HOST_RE.match(args.edge_host):
        errors.append(f"--edge-host {args.edge_host!r}: a host name without scheme or path, e.g. func-secmon-edge-abc.azurewebsites.net")
    for flag in ("website", "privacy_url", "terms_url"):
        value = getattr(args, flag)
        if value and not value.startswith("https://"):
            errors.append(f"--{flag.replace('_', '-')} {value!r}: must be an https:// URL")
    if not VERSION_RE.match(args.version):
        errors.append(f"--version {args.version!r}: must be x.y.z")
    if not HEX_RE.match(args.accent):
        errors.append(f"--accent {args.accent!r}: must be #RRGGBB")
    if len(set(args.scope)) != len(args.scope):
        errors.append("--scope: a scope is given twice")
    if errors:
        p.error("\n  ".join(errors))
    return args


def main(argv) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    body = json.dumps(manifest(args), indent=2) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", body)
        z.writestr("color.png", color_icon(args.accent))
        z.writestr("outline.png", outline_icon())
    print(f"teams-app: wrote {out} (bot {args.bot_app_id.lower()}, scopes {', '.join(args.scope)}); "
          "upload it in the Teams admin center (Manage apps > Upload new app), then add it to the team")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
