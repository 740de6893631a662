#!/usr/bin/env bash
# check-core-purity.sh: checks that the `core` crate stays a pure state machine.
#
# The core must do no I/O, read no clock, start no threads, use no async and no global
# randomness (see DESIGN.md section 2): time, wall-clock time and randomness are inputs.
# This script fails if any Rust source under core/src mentions one of the forbidden names
# below outside a comment (string literals count: they are code), and prints each offending
# line as `path:line: text`. It also fails if core/Cargo.toml depends on one of the runtime
# crates (tokio, smol, isahc, mysql_async, redis, rusqlite, cacache).
#
# Run from anywhere:  ./scripts/check-core-purity.sh   (exit 0 = pure, 1 = impure)
# Optional argument: the crate directory to check (default: <repo>/core).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CRATE_DIR="${1:-$ROOT/core}"

if [[ ! -d "$CRATE_DIR/src" ]]; then
    echo "check-core-purity: no $CRATE_DIR/src directory" >&2
    exit 1
fi

exec python3 - "$CRATE_DIR" "$ROOT" <<'PY'
import os
import re
import sys

crate_dir, root = sys.argv[1], sys.argv[2]

# Plain substrings, matched anywhere in code (so `truckeefs_runtime_smol` counts as `smol`).
FORBIDDEN = [
    "Instant::now",
    "SystemTime::now",
    "std::fs",
    "std::net",
    "std::thread",
    "tokio",
    "smol",
    "async fn",
    ".await",
    "isahc",
    "mysql_async",
    "redis::",
    "rusqlite",
    "cacache",
    "thread_rng",
    "rand::random",
]
FORBIDDEN_RE = re.compile("|".join(re.escape(p) for p in FORBIDDEN))
FORBIDDEN_DEPS = ["tokio", "smol", "async-std", "isahc", "mysql_async", "redis", "rusqlite", "cacache"]


def strip_comments(src: str) -> str:
    """Replace the text of every comment with spaces, keeping newlines (so line numbers hold).

    Understands line comments (// /// //!), nested block comments, string literals with escapes,
    byte strings, raw strings r#"..."#, and tells char literals from lifetimes.
    """
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        nxt = src[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("".join(ch if ch == "\n" else " " for ch in src[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 300]) and not (i > 0 and (src[i - 1].isalnum() or src[i - 1] == "_") and src[i - 1] != "b"):
            m = re.match(r'r(#*)"', src[i:])
            close = '"' + m.group(1)
            j = src.find(close, i + len(m.group(0)))
            j = n if j < 0 else j + len(close)
            out.append(src[i:j])
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(src[i:j])
            i = j
        elif c == "'":
            # char literal ('a', '\n', '\u{1F600}', '"') or a lifetime ('a, 'static)
            m = re.match(r"'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'", src[i:i + 16])
            if m:
                out.append(m.group(0))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


bad = 0
src_dir = os.path.join(crate_dir, "src")
for dirpath, dirnames, filenames in os.walk(src_dir):
    dirnames.sort()
    for name in sorted(filenames):
        if not name.endswith(".rs"):
            continue
        path = os.path.join(dirpath, name)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        code = strip_comments(text).split("\n")
        raw = text.split("\n")
        for lineno, line in enumerate(code, 1):
            found = sorted(set(FORBIDDEN_RE.findall(line)))
            if found:
                bad += 1
                rel = os.path.relpath(path, root)
                print(f"{rel}:{lineno}: [{', '.join(found)}] {raw[lineno - 1].strip()}")

# Dependencies: a runtime crate in core/Cargo.toml would make the core impure whatever its code says.
manifest = os.path.join(crate_dir, "Cargo.toml")
if os.path.exists(manifest):
    section = ""
    with open(manifest, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            s = line.split("#", 1)[0].strip()
            if s.startswith("["):
                section = s
                continue
            if "dependencies" not in section or "dev-dependencies" in section or "=" not in s:
                continue
            dep = s.split("=", 1)[0].strip().strip('"')
            if dep.split(".")[0] in FORBIDDEN_DEPS:
                bad += 1
                print(f"{os.path.relpath(manifest, root)}:{lineno}: forbidden dependency: {line.strip()}")

if bad:
    print(f"check-core-purity: FAILED: {bad} impure line(s) in {os.path.relpath(crate_dir, root)} "
          f"(the core takes time, randomness and I/O results as inputs; move this to a runtime crate)")
    sys.exit(1)
print(f"check-core-purity: ok ({os.path.relpath(crate_dir, root)}/src mentions none of: {', '.join(FORBIDDEN)})")
PY
