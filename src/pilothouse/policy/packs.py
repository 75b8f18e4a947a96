"""The built-in rule packs: on by default, each pack and each rule switchable in the document.

Each rule is a test over what the action does, read with the shell and SQL parsers (not a
pattern over its text): ``rm -rf /`` hidden in ``sudo sh -c '...'`` is seen, ``echo "rm -rf /"``
is not.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from pilothouse.policy.document import Channel, Verdict
from pilothouse.policy.engine import Facts
from pilothouse.policy.shell import SHELLS, Invocation

SHELL_LIKE = frozenset({Channel.SHELL, Channel.GIT})


@dataclass(frozen=True)
class BuiltinRule:
    """A rule of a built-in pack: its test reads the action's facts."""

    id: str
    pack: str
    channels: frozenset[Channel]
    decision: Verdict
    reason: str
    test: Callable[[Facts], bool]


def _flags(inv: Invocation) -> set[str]:
    """Its short options one letter each (``-rf`` -> r, f) and its long ones as given."""
    found: set[str] = set()
    for arg in inv.args:
        if arg.startswith("--"):
            found.add(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            found.update(arg[1:])
    return found


def _operands(inv: Invocation) -> list[str]:
    return [a for a in inv.args if not a.startswith("-")]


# --- destructive filesystem ---------------------------------------------------------------

PRECIOUS = (
    "/", "/*", "~", "~/", "~/*", "$HOME", "$HOME/", "${HOME}", "${HOME}/", "$HOME/*", "*",
    "..", "../", "/home", "/home/*", "/etc", "/usr", "/var", "/bin", "/boot", "/lib",
    "/opt", "/root", "/srv", "/sbin", "/dev", "/proc", "/sys",
)  # fmt: skip


def _precious(path: str) -> bool:
    if path in PRECIOUS:
        return True
    if path.startswith(("/", "~")):  # "/./", "//", "/etc/..", "~/x/.." name the same places
        path = posixpath.normpath(path)
        path = "/" if path.startswith("//") else path
    return path in PRECIOUS or (path.rstrip("/") or "/") in PRECIOUS


def _rm_precious(facts: Facts) -> bool:
    for inv in facts.programs:
        recursive = {"r", "R", "--recursive"} & _flags(inv)
        if inv.name == "rm" and recursive and any(_precious(p) for p in _operands(inv)):
            return True
    return False


def _wipes_disk(facts: Facts) -> bool:
    for inv in facts.programs:
        if inv.name.startswith("mkfs") or inv.name in ("wipefs", "fdisk", "sfdisk", "parted"):
            return True
        if inv.name == "dd" and any(a.startswith("of=/dev/") for a in inv.args):
            return True
        if inv.name == "shred" and any(a.startswith("/dev/") for a in _operands(inv)):
            return True
    return False


def _find_deletes_precious(facts: Facts) -> bool:
    for inv in facts.programs:
        if inv.name == "find" and "-delete" in inv.args:
            roots = [a for a in inv.args[: inv.args.index("-delete")] if not a.startswith("-")]
            if roots and _precious(roots[0]):
                return True
    return False


# --- destructive SQL against production ---------------------------------------------------

PRODUCTION = frozenset({"production", "prod"})


def _in_production(facts: Facts) -> bool:
    labels = facts.subject.labels
    return any(labels.get(k, "").lower() in PRODUCTION for k in ("env", "environment"))


def _destructive_sql_in_production(facts: Facts) -> bool:
    return _in_production(facts) and any(s.destructive for s in facts.sql)


def _unreadable_sql_in_production(facts: Facts) -> bool:
    return _in_production(facts) and any(s.kind == "unreadable" for s in facts.sql)


# --- git history on protected branches ----------------------------------------------------

PROTECTED = ("main", "master", "production", "prod", "release/*", "release-*", "trunk")


def _protected(ref: str) -> bool:
    name = ref.removeprefix("+").split(":")[-1].removeprefix("refs/heads/")
    return any(fnmatchcase(name, p) for p in PROTECTED)


def _git(facts: Facts, sub: str) -> Iterable[Invocation]:
    for inv in facts.programs:
        if inv.name == "git":
            args = _operands(inv)
            if args and args[0] == sub:
                yield inv


def _force_push_protected(facts: Facts) -> bool:
    for inv in _git(facts, "push"):
        flags = _flags(inv)
        refs = _operands(inv)[2:]  # push REMOTE REF...
        forced = bool({"f", "--force", "--force-with-lease", "--mirror"} & flags)
        if forced and (not refs or any(_protected(r) for r in refs)):
            return True
        if any(r.startswith("+") and _protected(r) for r in refs):
            return True
        if "--delete" in flags and any(_protected(r) for r in refs):
            return True
    return False


def _rewrites_history(facts: Facts) -> bool:
    return any(
        inv.name == "git-filter-repo" or (inv.name == "git" and _operands(inv)[:1] == [sub])
        for inv in facts.programs
        for sub in ("filter-branch", "filter-repo")
    )


# --- destructive cloud and cluster commands -----------------------------------------------


def _cloud_destroys(facts: Facts) -> bool:
    for inv in facts.programs:
        words = _operands(inv)
        flags = _flags(inv)
        wide = {"--all", "-A", "--all-namespaces"} & flags or (
            len(words) > 1 and words[1] in ("namespace", "namespaces", "ns", "all", "pv")
        )
        if inv.name == "kubectl" and words[:1] == ["delete"] and wide:
            return True
        if inv.name in ("terraform", "tofu", "pulumi") and (
            words[:1] == ["destroy"] or (words[:1] == ["apply"] and "-destroy" in inv.args)
        ):
            return True
        if inv.name == "helm" and words[:1] in (["uninstall"], ["delete"]):
            return True
        if inv.name == "aws" and (
            words[:2] == ["s3", "rb"] or (words[:2] == ["s3", "rm"] and "--recursive" in flags)
        ):
            return True
        if inv.name == "aws" and any(w.startswith(("delete-", "terminate-")) for w in words[1:2]):
            return True
        if inv.name == "gcloud" and "delete" in words:
            return True
        if inv.name == "az" and "delete" in words:
            return True
    return False


# --- pipe-to-shell installs ---------------------------------------------------------------

INTERPRETERS = SHELLS | {"python", "python3", "perl", "ruby", "node", "php"}
FETCHERS = frozenset({"curl", "wget", "fetch", "http", "https"})


def _pipe_to_shell(facts: Facts) -> bool:
    # An interpreter fed by a fetcher and given no script file runs what was fetched.
    return any(
        inv.name in INTERPRETERS and inv.piped_from in FETCHERS and not _operands(inv)
        for inv in facts.programs
    )


# --- credential files ---------------------------------------------------------------------

CREDENTIALS = (
    "*/.ssh/id_*", "~/.ssh/id_*", ".ssh/id_*", "*/.aws/credentials", "~/.aws/credentials",
    "*/.netrc", "~/.netrc", ".netrc", "*/.git-credentials", "~/.git-credentials", "*/.npmrc",
    "~/.npmrc", "*/.pypirc", "~/.pypirc", "*/.docker/config.json", "~/.docker/config.json",
    "*/.kube/config", "~/.kube/config", "*/.config/gcloud/*", "~/.config/gcloud/*", ".env",
    "*/.env", ".env.*", "*/.env.*", "*.pem", "*.key", "*/id_rsa", "*/id_ed25519",
)  # fmt: skip
READERS = frozenset(
    {"cat", "less", "more", "head", "tail", "cp", "scp", "rsync", "base64", "xxd", "od", "grep"}
    | {"strings", "tar", "zip", "curl", "nc", "sed", "awk", "vim", "vi", "nano", "tac", "bat"}
)


def _credential(path: str) -> bool:
    if path.endswith(".pub"):  # a public key
        return False
    cleaned = path.removeprefix("./").replace("$HOME", "~").replace("${HOME}", "~")
    cleaned = cleaned.removeprefix("@")  # curl --data @file
    return any(fnmatchcase(cleaned, p) for p in CREDENTIALS)


def _reads_credentials(facts: Facts) -> bool:
    if facts.action.channel == Channel.FILE_READ:
        return facts.action.path is not None and _credential(facts.action.path)
    return any(
        inv.name in READERS and any(_credential(a) for a in inv.args) for inv in facts.programs
    )


# --- exfiltration: paste sites, request bins, tunnels -------------------------------------

EXFILTRATION = (
    "pastebin.com", "*.pastebin.com", "paste.ee", "hastebin.com", "dpaste.org", "dpaste.com",
    "termbin.com", "ix.io", "0x0.st", "transfer.sh", "file.io", "paste.rs", "rentry.co",
    "controlc.com", "ghostbin.*", "privatebin.net", "pastes.io", "justpaste.it",
    "webhook.site", "*.webhook.site", "requestbin.net", "*.requestbin.net", "*.pipedream.net",
    "beeceptor.com", "*.beeceptor.com", "hookbin.com", "requestcatcher.com",
    "*.requestcatcher.com", "*.oast.fun", "*.oast.pro", "*.oast.live", "*.oast.site",
    "*.oast.online", "*.oast.me", "interact.sh", "*.interact.sh", "*.burpcollaborator.net",
    "*.ngrok.io", "*.ngrok-free.app", "*.ngrok.app", "*.trycloudflare.com", "*.loca.lt",
    "localtunnel.me", "serveo.net", "*.serveo.net", "*.localhost.run", "bore.pub",
)  # fmt: skip


def _exfil_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatchcase(host, p) for p in EXFILTRATION)


def _host_of(arg: str) -> str:
    text = arg if "://" in arg else "http://" + arg
    try:
        return (urlsplit(text).hostname or "").lower()
    except ValueError:
        return ""


def _exfiltrates(facts: Facts) -> bool:
    if facts.action.channel == Channel.HTTP:
        return _exfil_host(facts.domain)
    return any(
        _exfil_host(_host_of(arg))
        for inv in facts.programs
        if inv.name in FETCHERS | {"nc", "ncat", "socat", "scp", "rsync", "ssh", "httpie", "xh"}
        for arg in inv.args
        if "." in arg and not arg.startswith("-")
    )


# --- the hooks themselves -----------------------------------------------------------------

HOOK_FILES = (
    "*.claude/settings.json", "*.claude/settings.local.json", ".claude/settings.json",
    ".claude/settings.local.json", "*.codex/hooks.json", ".codex/hooks.json",
    "*.codex/config.toml", ".codex/config.toml", "*/managed-settings.json",
)  # fmt: skip
EDITORS = frozenset({"rm", "mv", "cp", "sed", "tee", "truncate", "chmod", "ln", "perl", "jq"})


def _hook_file(path: str) -> bool:
    return any(fnmatchcase(path.removeprefix("./"), p) for p in HOOK_FILES)


def _disables_hooks(facts: Facts) -> bool:
    if facts.action.channel == Channel.FILE_WRITE:
        return facts.action.path is not None and _hook_file(facts.action.path)
    for inv in facts.programs:
        if any(_hook_file(w) for w in inv.writes):
            return True
        if inv.name in EDITORS and any(_hook_file(a) for a in inv.args):
            return True
        if inv.name == "claude" and "--bare" in inv.args:
            return True
    return False


def _unreadable_shell(facts: Facts) -> bool:
    return facts.action.command is not None and not facts.shell.complete


ASK, DENY = Verdict.ASK, Verdict.DENY
SHELL = frozenset({Channel.SHELL})
BUILTIN: tuple[BuiltinRule, ...] = (
    BuiltinRule(
        "shell.unreadable", "shell", SHELL_LIKE, ASK,
        "the command line could not be read completely, so its effect is not known",
        _unreadable_shell,
    ),
    BuiltinRule(
        "fs.rm-recursive-precious", "destructive-filesystem", SHELL, DENY,
        "recursive delete of the root, a home or a system directory", _rm_precious,
    ),
    BuiltinRule(
        "fs.wipe-disk", "destructive-filesystem", SHELL, DENY,
        "formats, partitions or overwrites a disk device", _wipes_disk,
    ),
    BuiltinRule(
        "fs.find-delete-precious", "destructive-filesystem", SHELL, DENY,
        "find -delete from the root, a home or a system directory", _find_deletes_precious,
    ),
    BuiltinRule(
        "sql.destructive-production", "destructive-sql", SHELL, DENY,
        "drops, truncates, or deletes or updates every row in a production environment",
        _destructive_sql_in_production,
    ),
    BuiltinRule(
        "sql.unreadable-production", "destructive-sql", SHELL, ASK,
        "SQL for a production environment that could not be read", _unreadable_sql_in_production,
    ),
    BuiltinRule(
        "git.force-push-protected", "git-history", SHELL_LIKE, DENY,
        "force-push, mirror or delete on a protected branch", _force_push_protected,
    ),
    BuiltinRule(
        "git.rewrite-history", "git-history", SHELL_LIKE, ASK,
        "rewrites the repository's history", _rewrites_history,
    ),
    BuiltinRule(
        "cloud.destroy", "cloud-destroy", SHELL, ASK,
        "deletes cloud or cluster resources", _cloud_destroys,
    ),
    BuiltinRule(
        "install.pipe-to-shell", "pipe-to-shell", SHELL, DENY,
        "runs code fetched from the network straight into an interpreter", _pipe_to_shell,
    ),
    BuiltinRule(
        "secrets.credential-files", "credential-files",
        frozenset({Channel.SHELL, Channel.FILE_READ}), ASK,
        "reads a credential file (keys, tokens, .env)", _reads_credentials,
    ),
    BuiltinRule(
        "exfil.paste-bin-tunnel", "exfiltration", frozenset({Channel.SHELL, Channel.HTTP}), DENY,
        "sends data to a paste site, request bin or tunnel", _exfiltrates,
    ),
    BuiltinRule(
        "hooks.disable", "hooks", frozenset({Channel.SHELL, Channel.FILE_WRITE}), DENY,
        "changes or bypasses the agent's hook configuration", _disables_hooks,
    ),
)  # fmt: skip
PACKS = frozenset(rule.pack for rule in BUILTIN)
