"""agentenv-dotfiles' helper (image/dotfiles.sh runs it): dotfile managers done by
agentenv itself, and what a setup changed in the home.

    python3 dotfiles.py detect           which manager the repo in ~/.dotfiles is laid out for
    python3 dotfiles.py apply MANAGER    plain, rcm, stow or chezmoi: puts the repo's files into ~
    python3 dotfiles.py snapshot FILE    the home as it is now (for diff)
    python3 dotfiles.py diff FILE        what changed since the snapshot: "ADDED CHANGED REMOVED LINKS"

What each manager does is in docs/dotfiles.md (the rules table). The rules every one
shares: links are relative (into ~/.dotfiles), so the home works wherever it is mounted;
anything in the way is moved to ~/.local/state/agentenv/dotfiles-backup/, never deleted;
agentenv's own state and paths the overlay writes are never touched; a directory the
home reaches through a link is never written through, unless the link is one agentenv
made into ~/.dotfiles (it is then replaced by a real directory: "unfolded"). What was
done is appended to the log; what the user should know (templates not applied, scripts
not run) is printed on stderr, one line each.
"""

import fnmatch
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
import time

HOME = os.environ["HOME"]
REPO = os.path.join(HOME, ".dotfiles")
STATE_REL = ".local/state/agentenv"
STATE = os.path.join(HOME, STATE_REL)
LOG = os.path.join(STATE, "dotfiles.log")
BACKUP = os.path.join(STATE, "dotfiles-backup")
OVERLAY = os.environ.get("AGENTENV_OVERLAY_DIR", "/run/agentenv/handoff/overlay")
CHEZMOI_MANIFEST = os.path.join(STATE, "dotfiles-chezmoi.json")
# the repository's own files, never a home's
GIT_METADATA = {".git", ".github", ".gitignore", ".gitmodules", ".gitattributes"}
MANAGERS = ("plain", "rcm", "stow", "chezmoi")


def note(message):
    print(f"agentenv: {message}", file=sys.stderr)


def inside(path, root):
    return path == root or path.startswith(root + "/")


class Home:
    """Writes into ~ (links, copies, directories) by the shared rules; logs each change."""

    def __init__(self):
        self.log = open(LOG, "a", encoding="utf-8")
        self.skipped = []

    def say(self, line):
        self.log.write(line + "\n")

    @staticmethod
    def protected(rel):
        """agentenv's state dir, a path in it, or one of its parents."""
        return inside(rel, STATE_REL) or STATE_REL.startswith(rel + "/")

    @staticmethod
    def overlay_owns(rel):
        return os.path.lexists(os.path.join(OVERLAY, rel))

    def skip(self, rel, why):
        self.skipped.append(f"~/{rel} ({why})")
        self.say(f"skipped ~/{rel}: {why}")

    def move_aside(self, rel):
        target = os.path.join(HOME, rel)
        backup = os.path.join(BACKUP, rel)
        if os.path.lexists(backup):
            backup += time.strftime(".%Y%m%d%H%M%S")
        os.makedirs(os.path.dirname(backup), exist_ok=True)
        os.rename(target, backup)
        self.say(f"moved ~/{rel} to {backup}")

    def unfold(self, rel):
        """~/REL is a link agentenv made to a directory of the repo: a real directory of links to its entries instead."""
        target = os.path.join(HOME, rel)
        source = os.path.normpath(os.path.join(os.path.dirname(target), os.readlink(target)))
        os.unlink(target)
        os.mkdir(target)
        for name in sorted(os.listdir(source)):
            os.symlink(os.path.relpath(os.path.join(source, name), target), os.path.join(target, name))
        self.say(f"unfolded ~/{rel} (a link into ~/.dotfiles) into a directory of links")

    def is_repo_dir_link(self, path):
        if not os.path.islink(path):
            return False
        resolved = os.path.realpath(path)
        return inside(resolved, os.path.realpath(REPO)) and os.path.isdir(resolved)

    def directory(self, rel, mode=None):
        """~/REL as a real directory of the home (made, unfolded, or what was there moved aside); False when it cannot be."""
        if rel in ("", "."):
            return True
        if not self.directory(os.path.dirname(rel)):
            return False
        path = os.path.join(HOME, rel)
        if self.is_repo_dir_link(path):
            self.unfold(rel)
        elif os.path.islink(path):
            resolved = os.path.realpath(path)
            if os.path.isdir(resolved) and inside(resolved, os.path.realpath(HOME)) and not inside(resolved, os.path.realpath(REPO)):
                return True
            self.skip(rel, "a link the home has there leads out of the home or into ~/.dotfiles")
            return False
        elif os.path.lexists(path) and not os.path.isdir(path):
            if self.protected(rel) or self.overlay_owns(rel):
                self.skip(rel, "agentenv's own state or the overlay's")
                return False
            self.move_aside(rel)
        if not os.path.isdir(path):
            os.mkdir(path)
            self.say(f"made ~/{rel}/")
        if mode is not None and stat.S_IMODE(os.stat(path).st_mode) != mode:
            os.chmod(path, mode)
        return True

    def clear(self, rel):
        """Makes way for ~/REL; False when it must not be replaced."""
        if self.protected(rel):
            self.skip(rel, "agentenv's own state")
            return False
        if self.overlay_owns(rel):
            return False  # the overlay writes it after the setup
        if not self.directory(os.path.dirname(rel)):
            return False
        if os.path.lexists(os.path.join(HOME, rel)):
            self.move_aside(rel)
        return True

    def link(self, source_rel, rel):
        """~/REL → ~/.dotfiles/SOURCE_REL, relative."""
        target = os.path.join(HOME, rel)
        text = os.path.relpath(os.path.join(REPO, source_rel), os.path.dirname(target))
        if os.path.islink(target) and os.readlink(target) == text:
            return
        if not self.clear(rel):
            return
        os.symlink(text, target)
        self.say(f"linked ~/{rel} -> {text}")

    def copy(self, rel, data, mode, owned=lambda rel, current: False):
        """~/REL as a file holding DATA; a file OWNED (written by agentenv before, unchanged since) is replaced without a backup."""
        target = os.path.join(HOME, rel)
        if os.path.isfile(target) and not os.path.islink(target):
            with open(target, "rb") as f:
                current = f.read()
            if current == data:
                if stat.S_IMODE(os.lstat(target).st_mode) != mode:
                    os.chmod(target, mode)
                return
            if owned(rel, current) and not self.protected(rel) and not self.overlay_owns(rel):
                os.unlink(target)
        if not self.clear(rel):
            return
        tmp = f"{target}.agentenv-new"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.rename(tmp, target)
        self.say(f"wrote ~/{rel}")

    def symlink(self, rel, text):
        """~/REL → TEXT, as given (chezmoi's symlink_)."""
        target = os.path.join(HOME, rel)
        if os.path.islink(target) and os.readlink(target) == text:
            return
        if not self.clear(rel):
            return
        os.symlink(text, target)
        self.say(f"linked ~/{rel} -> {text}")

    def finish(self):
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else "")
            note(f"not placed: {shown}")
        self.log.close()


# ---------------------------------------------------------------- detect


def detect():
    """The manager the repo is laid out for: chezmoi, rcm, stow, else plain."""
    names = sorted(os.listdir(REPO))
    if any(n.startswith(".chezmoi") for n in names) or any(re.match(r"^((private|readonly|empty|executable|exact|encrypted|symlink|create|modify|remove)_)*dot_", n) for n in names):
        return "chezmoi"
    if os.path.isfile(os.path.join(REPO, "rcrc")) or any(re.match(r"^(tag|host)-.", n) and os.path.isdir(os.path.join(REPO, n)) for n in names):
        return "rcm"
    if ".stowrc" in names:
        return "stow"
    dotted = [n for n in names if n.startswith(".") and n not in GIT_METADATA and n not in (".stow-local-ignore", ".editorconfig")]
    if not dotted:
        for n in names:
            path = os.path.join(REPO, n)
            if n.startswith(".") or not os.path.isdir(path) or os.path.islink(path):
                continue
            if any(e.startswith(".") or e.startswith("dot-") for e in os.listdir(path)):
                return "stow"
    return "plain"


# ---------------------------------------------------------------- plain


def plain(home):
    """Top-level .NAME entries linked as ~/.NAME; directories both have merged, level by level."""

    def tree(rel_dir, top):
        for name in sorted(os.listdir(os.path.join(REPO, rel_dir))):
            if top and (not name.startswith(".") or name in GIT_METADATA):
                continue
            rel = os.path.join(rel_dir, name)
            source, target = os.path.join(REPO, rel), os.path.join(HOME, rel)
            if os.path.isdir(source) and not os.path.islink(source) and os.path.isdir(target) and not os.path.islink(target):
                tree(rel, False)
            else:
                home.link(rel, rel)

    tree("", True)


# ---------------------------------------------------------------- rcm


def rcrc():
    """rcm's settings: ~/.rcrc when the home has one, else the repo's rcrc; sourced by sh, as rcm does."""
    path = os.path.join(HOME, ".rcrc")
    if not os.path.exists(path):
        path = os.path.join(REPO, "rcrc")
    names = ["EXCLUDES", "INCLUDES", "TAGS", "UNDOTTED", "NEVER_UNDOTTED", "SYMLINK_DIRS", "MK_DIRS", "COPY_ALWAYS", "HOSTNAME"]
    if not os.path.isfile(path):
        return {n: "" for n in names}
    script = '. "$1" >/dev/null 2>&1 </dev/null; shift; for n; do eval "v=\\${$n:-}"; printf \'%s\\0\' "$v"; done'
    out = subprocess.run(["sh", "-c", script, "sh", path, *names], capture_output=True, env={**os.environ, "HOSTNAME": ""}, cwd=HOME, timeout=30)
    values = out.stdout.decode(errors="replace").split("\0")
    return dict(zip(names, values + [""] * len(names)))


def rcm_globs(value):
    """rcm's pattern lists: words; "DIR:GLOB" applies only to that dotfiles directory (ours: ~/.dotfiles)."""
    globs = []
    for word in value.split():
        if ":" in word:
            where, glob = word.split(":", 1)
            where = os.path.expanduser(where)
            if where != "*" and os.path.normpath(os.path.join(HOME, where)) != REPO:
                continue
            word = glob
        globs.append(word)
    return globs


def matches(path, globs, unless=()):
    """rcm's is_excluded: a glob matching the path or its base name, unless one of UNLESS does."""
    for candidate in (path, os.path.basename(path)):
        if any(fnmatch.fnmatchcase(candidate, g) for g in globs):
            return not any(fnmatch.fnmatchcase(candidate, g) for g in unless)
    return False


def rcm(home):
    """rcm's lsrc/rcup: every file linked one by one under ~/.NAME (host-HOST, then tag-TAG, then the rest)."""
    settings = rcrc()
    excludes, includes = rcm_globs(settings["EXCLUDES"]), rcm_globs(settings["INCLUDES"])
    undotted, never_undotted = rcm_globs(settings["UNDOTTED"]), rcm_globs(settings["NEVER_UNDOTTED"])
    symlink_dirs, mk_dirs = rcm_globs(settings["SYMLINK_DIRS"]), rcm_globs(settings["MK_DIRS"])
    copy_always = settings["COPY_ALWAYS"].split()
    host = settings["HOSTNAME"] or os.environ.get("AGENTENV_HOST_HOSTNAME") or socket.gethostname()
    host = host.split(".")[0]
    claimed = set()

    def handle(base, rel, dest):
        source = os.path.join(REPO, base, rel)
        shown = rel if "/" in rel else f"./{rel}"
        if matches(shown, excludes, includes):
            return
        if os.path.isdir(source) and matches(shown, symlink_dirs, mk_dirs):
            place(base, rel, dest)
        elif os.path.isdir(source):
            for name in sorted(os.listdir(source)):
                if not name.startswith("."):
                    handle(base, os.path.join(rel, name), os.path.join(dest, name))
        else:
            place(base, rel, dest)

    def place(base, rel, dest):
        # host- wins over tag-, tag- over the rest: the first to claim a path keeps it
        if dest in claimed:
            return
        claimed.add(dest)
        source_rel = os.path.join(base, rel) if base else rel
        if any(fnmatch.fnmatchcase(source_rel, g) for g in copy_always):
            with open(os.path.join(REPO, source_rel), "rb") as f:
                home.copy(dest, f.read(), stat.S_IMODE(os.stat(os.path.join(REPO, source_rel)).st_mode))
        else:
            home.link(source_rel, dest)

    sources = []
    if host and os.path.isdir(os.path.join(REPO, f"host-{host}")):
        sources.append(f"host-{host}")
    for tag in settings["TAGS"].split():
        if os.path.isdir(os.path.join(REPO, f"tag-{tag}")):
            sources.append(f"tag-{tag}")
    sources.append("")
    for base in sources:
        for name in sorted(os.listdir(os.path.join(REPO, base))):
            if name.startswith("."):
                continue
            if base == "" and (name.startswith("host-") or name.startswith("tag-") or name == "hooks"):
                continue
            dotted = matches(name, undotted, never_undotted)
            handle(base, name, name if dotted else f".{name}")
    hooks = [os.path.join("hooks", h) for h in ("pre-up", "post-up") if os.path.exists(os.path.join(REPO, "hooks", h))]
    if hooks:
        name = os.environ.get("AGENTENV_ENV", "NAME")
        note(f"rcm hooks not run: {', '.join(hooks)} (to run one after the links: agentenv env set {name} dotfiles.manager=rcm dotfiles.setup={hooks[-1]})")


# ---------------------------------------------------------------- stow

# GNU stow's built-in ignore list, used when a package has no .stow-local-ignore
STOW_DEFAULT_IGNORE = [r"RCS", r".+,v", r"CVS", r"\.\#.+", r"\.cvsignore", r"\.svn", r"_darcs", r"\.hg", r"\.git", r"\.gitignore", r"\.gitmodules", r".+~", r"\#.*\#", r"^/README.*", r"^/LICENSE.*", r"^/COPYING"]


def stowrc():
    """The options of the repo's .stowrc (or ~/.stowrc) agentenv follows: --dotfiles and --ignore=REGEX."""
    options = {"dotfiles": False, "ignore": []}
    for path in (os.path.join(REPO, ".stowrc"), os.path.join(HOME, ".stowrc")):
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for word in f.read().split():
                if word == "--dotfiles":
                    options["dotfiles"] = True
                elif word.startswith("--ignore="):
                    options["ignore"].append(word[len("--ignore="):].strip("'\""))
        break
    return options


def stow(home):
    """GNU stow: each top-level directory is a package whose tree is linked into ~ (whole directories where ~ has none)."""
    options = stowrc()

    def ignore_list(package):
        local = os.path.join(REPO, package, ".stow-local-ignore")
        if os.path.isfile(local):
            with open(local, encoding="utf-8", errors="replace") as f:
                patterns = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        else:
            patterns = list(STOW_DEFAULT_IGNORE)
        return patterns + options["ignore"]

    def ignored(patterns, name, path):
        for pattern in patterns:
            try:
                if "/" in pattern:
                    if re.search(f"(?:{pattern})$", path):
                        return True
                elif re.fullmatch(pattern, name):
                    return True
            except re.error:
                continue
        return False

    def target_name(name):
        return "." + name[4:] if options["dotfiles"] and name.startswith("dot-") else name

    def tree(package, patterns, sub, dest):
        for name in sorted(os.listdir(os.path.join(REPO, package, sub))):
            rel = os.path.join(sub, name)
            if ignored(patterns, name, "/" + rel):
                continue
            source_rel = os.path.join(package, rel)
            source = os.path.join(REPO, source_rel)
            to = os.path.join(dest, target_name(name))
            target = os.path.join(HOME, to)
            if os.path.isdir(source) and not os.path.islink(source):
                if home.is_repo_dir_link(target) and os.path.realpath(target) != os.path.realpath(source):
                    home.unfold(to)  # another package's folded directory: both get their links
                if os.path.isdir(target) and not os.path.islink(target):
                    tree(package, patterns, rel, to)
                    continue
            home.link(source_rel, to)

    for package in sorted(os.listdir(REPO)):
        path = os.path.join(REPO, package)
        if package.startswith(".") or not os.path.isdir(path) or os.path.islink(path):
            continue
        tree(package, ignore_list(package), "", "")


# ---------------------------------------------------------------- chezmoi

CHEZMOI_FILE_PREFIXES = ["create_", "modify_", "remove_", "symlink_", "encrypted_", "private_", "readonly_", "empty_", "executable_"]
CHEZMOI_DIR_PREFIXES = ["remove_", "external_", "exact_", "private_", "readonly_"]


def chezmoi_name(name, prefixes):
    """NAME in the source state → its attributes and the target name (dot_ and literal_ end the prefixes)."""
    attributes = set()
    while True:
        if name.startswith("literal_"):
            name = name[len("literal_"):]
            break
        if name.startswith("dot_"):
            name = "." + name[len("dot_"):]
            break
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if not prefix:
            break
        attributes.add(prefix[:-1])
        name = name[len(prefix):]
    if name.endswith(".literal"):
        name = name[: -len(".literal")]
    elif name.endswith(".tmpl"):
        attributes.add("template")
        name = name[: -len(".tmpl")]
    if "encrypted" in attributes:
        name = re.sub(r"\.(age|asc)$", "", name)
    return attributes, name


def chezmoi_glob(pattern):
    """A .chezmoiignore pattern (doublestar) as a regex over target paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def chezmoi_condition(expression):
    """The value of a template's `if` on what agentenv knows (.chezmoi.os/arch/hostname); None when it cannot tell."""
    known = {
        ".chezmoi.os": "linux",
        ".chezmoi.arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        ".chezmoi.hostname": (os.environ.get("AGENTENV_HOST_HOSTNAME") or socket.gethostname()).split(".")[0],
    }
    m = re.fullmatch(r'(eq|ne)\s+(\.chezmoi\.\w+)\s+"([^"]*)"', expression.strip())
    if not m or m.group(2) not in known:
        return None
    equal = known[m.group(2)] == m.group(3)
    return equal if m.group(1) == "eq" else not equal


def chezmoi_ignores(root):
    """.chezmoiignore (a template): its patterns, the simple `if eq/ne .chezmoi.os …` blocks evaluated; lines under another condition count as ignored (uncertain)."""
    path = os.path.join(root, ".chezmoiignore")
    ignore, keep, uncertain = [], [], 0
    if not os.path.isfile(path):
        return ignore, keep, uncertain
    stack = []  # per open block: True/False (known), None (unknown)
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.strip()
            action = re.fullmatch(r"\{\{-?\s*(if|else|end)\b(.*?)-?\}\}", line)
            if action:
                word, rest = action.group(1), action.group(2)
                if word == "if":
                    stack.append(chezmoi_condition(rest))
                elif word == "else" and stack:
                    stack[-1] = None if stack[-1] is None else not stack[-1]
                elif word == "end" and stack:
                    stack.pop()
                continue
            if not line or line.startswith("#") or "{{" in line:
                continue
            if any(state is False for state in stack):
                continue
            unknown = any(state is None for state in stack)
            if line.startswith("!"):
                if not unknown:
                    keep.append(chezmoi_glob(line[1:]))
                continue
            ignore.append(chezmoi_glob(line))
            uncertain += unknown
    return ignore, keep, uncertain


def chezmoi(home):
    """chezmoi's source state, applied by agentenv: files are written (copies, with their modes), as chezmoi does."""
    root = REPO
    marker = os.path.join(REPO, ".chezmoiroot")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            root = os.path.normpath(os.path.join(REPO, f.read().strip()))
        if not inside(root, REPO) or not os.path.isdir(root):
            raise SystemExit(f"agentenv: .chezmoiroot names {root}, which is not a directory of the repo")
    ignore, keep, uncertain = chezmoi_ignores(root)
    try:
        with open(CHEZMOI_MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = {}
    written = {}
    not_applied = {"templates": [], "scripts": [], "encrypted": [], "modify_": []}

    def is_ignored(rel):
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(p.fullmatch(c) for p in ignore for c in candidates)
        return hit and not any(p.fullmatch(rel) for p in keep)

    def owned(rel, current):
        return manifest.get(rel) == hashlib.sha256(current).hexdigest()

    def tree(source_dir, dest):
        for name in sorted(os.listdir(source_dir)):
            source = os.path.join(source_dir, name)
            if name.startswith("."):
                if name == ".chezmoiscripts":
                    not_applied["scripts"] += [os.path.relpath(os.path.join(source, s), REPO) for s in sorted(os.listdir(source))]
                continue
            if os.path.isdir(source) and not os.path.islink(source):
                attributes, target_name = chezmoi_name(name, CHEZMOI_DIR_PREFIXES)
                rel = os.path.join(dest, target_name)
                if is_ignored(rel):
                    continue
                if "remove" in attributes:
                    path = os.path.join(HOME, rel)
                    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
                        os.rmdir(path)
                        home.say(f"removed ~/{rel}/ (empty)")
                    continue
                mode = None
                if "private" in attributes or "readonly" in attributes:
                    mode = 0o755 & (~0o077 if "private" in attributes else 0o777) & (~0o222 if "readonly" in attributes else 0o777)
                if home.directory(rel, mode):
                    tree(source, rel)
                continue
            if name.startswith("run_"):
                not_applied["scripts"].append(os.path.relpath(source, REPO))
                continue
            attributes, target_name = chezmoi_name(name, CHEZMOI_FILE_PREFIXES)
            rel = os.path.join(dest, target_name)
            if is_ignored(rel):
                continue
            shown = os.path.relpath(source, REPO)
            if "template" in attributes:
                not_applied["templates"].append(shown)
                continue
            if "encrypted" in attributes:
                not_applied["encrypted"].append(shown)
                continue
            if "modify" in attributes:
                not_applied["modify_"].append(shown)
                continue
            path = os.path.join(HOME, rel)
            if "remove" in attributes:
                if os.path.lexists(path) and not os.path.isdir(path) and home.clear(rel):
                    home.say(f"removed ~/{rel}")
                continue
            with open(source, "rb") as f:
                data = f.read()
            if "symlink" in attributes:
                home.symlink(rel, data.decode(errors="replace").strip())
                continue
            if "create" in attributes and os.path.lexists(path):
                continue
            if not data and "empty" not in attributes:
                continue
            mode = 0o755 if "executable" in attributes else 0o644
            if "private" in attributes:
                mode &= ~0o077
            if "readonly" in attributes:
                mode &= ~0o222
            home.copy(rel, data, mode, owned)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    if f.read() == data:
                        written[rel] = hashlib.sha256(data).hexdigest()

    tree(root, "")
    os.makedirs(STATE, exist_ok=True)
    with open(CHEZMOI_MANIFEST + ".tmp", "w", encoding="utf-8") as f:
        json.dump(written, f, indent=0, sort_keys=True)
    os.rename(CHEZMOI_MANIFEST + ".tmp", CHEZMOI_MANIFEST)
    names = sorted(n for n in os.listdir(root) if n.startswith(".chezmoiexternal"))
    if names:
        note(f"chezmoi externals not fetched: {', '.join(names)}")
    what = {
        "templates": "chezmoi templates not applied (agentenv does not evaluate them; chezmoi on PATH would, e.g. from ~/flake.nix)",
        "scripts": "chezmoi scripts not run",
        "encrypted": "encrypted files not applied",
        "modify_": "modify_ scripts not run",
    }
    for kind, files in not_applied.items():
        if files:
            shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
            note(f"{what[kind]}: {shown}")
    if uncertain:
        note(f".chezmoiignore: {uncertain} pattern(s) under a condition agentenv cannot evaluate, taken as ignored")


def chezmoi_itself():
    """chezmoi on PATH applies its own source state (templates and scripts included)."""
    tty = sys.stdin.isatty()
    command = ["chezmoi", "apply", "--source", REPO, "--destination", HOME, "--force"] + ([] if tty else ["--no-tty"])
    note(f"chezmoi is on PATH: running {' '.join(command)}")
    return subprocess.run(command).returncode


# ---------------------------------------------------------------- snapshot and diff


def entries():
    """Every path of the home (agentenv's state and ~/.dotfiles aside) → what it is: type, mode, size, time, link target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(HOME):
        rel_dir = os.path.relpath(dirpath, HOME)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in dirnames if not (rel_dir == "" and d == ".dotfiles") and os.path.join(rel_dir, d) != STATE_REL]
        for name in dirnames + filenames:
            rel = os.path.join(rel_dir, name)
            try:
                st = os.lstat(os.path.join(HOME, rel))
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ["l", os.readlink(os.path.join(HOME, rel))]
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ["d", stat.S_IMODE(st.st_mode)]
            else:
                found[rel] = ["f", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns]
    return found


def diff(before_file):
    with open(before_file, encoding="utf-8") as f:
        before = json.load(f)
    after = entries()
    added = [r for r in after if r not in before and after[r][0] != "d"]
    removed = [r for r in before if r not in after and before[r][0] != "d"]
    changed = [r for r in after if r in before and after[r] != before[r] and not (after[r][0] == "d" and before[r][0] == "d")]
    links = sum(1 for r in added if after[r][0] == "l")
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"--- the home after the setup: {len(added)} added ({links} links), {len(changed)} changed, {len(removed)} removed\n")
        for mark, rels in (("+", added), ("~", changed), ("-", removed)):
            for rel in sorted(rels)[:200]:
                log.write(f"{mark} ~/{rel}" + (f" -> {after[rel][1]}" if rel in after and after[rel][0] == "l" else "") + "\n")
    print(len(added), len(changed), len(removed), links)


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "detect":
        print(detect())
    elif command == "apply" and len(argv) == 3 and argv[2] in MANAGERS:
        if argv[2] == "chezmoi" and shutil.which("chezmoi"):
            return chezmoi_itself()
        home = Home()
        try:
            globals()[argv[2]](home)
        finally:
            home.finish()
    elif command == "snapshot" and len(argv) == 3:
        with open(argv[2], "w", encoding="utf-8") as f:
            json.dump(entries(), f)
    elif command == "diff" and len(argv) == 3:
        diff(argv[2])
    else:
        print(f"usage: {argv[0]} detect | apply {'|'.join(MANAGERS)} | snapshot FILE | diff FILE", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
