"""What a command line runs, read with the bash grammar: every program, through every wrapper,
with its arguments as the program receives them, and nothing that is only text."""

from __future__ import annotations

import pytest

from pilothouse.policy.shell import invocations
from pilothouse.policy.sql import sql_of, statements

RM_ROOT = ("rm", "-rf", "/")

# (command line, argv lists it must run, program names it must not run)
RUNS: list[tuple[str, list[tuple[str, ...]], set[str]]] = [
    ("rm -rf /", [RM_ROOT], set()),
    ("/bin/rm -rf /", [("/bin/rm", "-rf", "/")], set()),
    ("rm -rf / &", [RM_ROOT], set()),
    ("echo 'rm -rf /'", [("echo", "rm -rf /")], {"rm"}),
    ('echo "rm -rf /"', [("echo", "rm -rf /")], {"rm"}),
    ("printf '%s\\n' 'sudo rm -rf /'", [], {"rm", "sudo"}),
    ("git commit -m 'rm -rf / is bad'", [("git", "commit", "-m", "rm -rf / is bad")], {"rm"}),
    ("grep -r 'DROP DATABASE' .", [], {"psql"}),
    ("# rm -rf /", [], {"rm"}),
    ("ls && rm -rf /", [("ls",), RM_ROOT], set()),
    ("ls || rm -rf /", [RM_ROOT], set()),
    ("ls; rm -rf /", [RM_ROOT], set()),
    ("true\nrm -rf /", [RM_ROOT], set()),
    ("(cd / && rm -rf /)", [("cd", "/"), RM_ROOT], set()),
    ("{ rm -rf /; }", [RM_ROOT], set()),
    ("if true; then rm -rf /; fi", [RM_ROOT], set()),
    ("while false; do rm -rf /; done", [RM_ROOT], set()),
    ("for f in a b; do rm -rf $f; done", [("rm", "-rf", "$f")], set()),
    ("case x in x) rm -rf /;; esac", [RM_ROOT], set()),
    ("f() { rm -rf /; }; f", [RM_ROOT], set()),
    ("! rm -rf /", [RM_ROOT], set()),
    ("echo $(rm -rf /)", [RM_ROOT], set()),
    ("echo `rm -rf /`", [RM_ROOT], set()),
    ("cat <(rm -rf /)", [RM_ROOT], set()),
    ('echo "$(rm -rf /)"', [RM_ROOT], set()),
    ("X=$(rm -rf /) ls", [RM_ROOT, ("ls",)], set()),
    ("X=$(rm -rf /)", [RM_ROOT], set()),
    ("export X=$(rm -rf /)", [RM_ROOT], set()),
    ("'rm' -rf /", [RM_ROOT], set()),
    ('"rm" "-rf" "/"', [RM_ROOT], set()),
    ("r\\m -rf /", [RM_ROOT], set()),
    ("$'rm' -rf /", [RM_ROOT], set()),
    ('r"m" -r"f" /', [RM_ROOT], set()),
    ('rm -rf "$HOME"', [("rm", "-rf", "$HOME")], set()),
    ("rm -rf ~/", [("rm", "-rf", "~/")], set()),
    ("sudo rm -rf /", [RM_ROOT], set()),
    ("sudo -u root -H rm -rf /", [RM_ROOT], set()),
    ("sudo -- rm -rf /", [RM_ROOT], set()),
    ("doas rm -rf /", [RM_ROOT], set()),
    ("env rm -rf /", [RM_ROOT], set()),
    ("env -i PATH=/bin X=1 rm -rf /", [RM_ROOT], set()),
    ("env -u HOME rm -rf /", [RM_ROOT], set()),
    ("FOO=1 BAR=2 rm -rf /", [RM_ROOT], set()),
    ("nohup rm -rf / &", [RM_ROOT], set()),
    ("time rm -rf /", [RM_ROOT], set()),
    ("nice -n 10 rm -rf /", [RM_ROOT], set()),
    ("timeout 5 rm -rf /", [RM_ROOT], set()),
    ("timeout -s KILL 5 rm -rf /", [RM_ROOT], set()),
    ("command rm -rf /", [RM_ROOT], set()),
    ("exec rm -rf /", [RM_ROOT], set()),
    ("stdbuf -o0 rm -rf /", [RM_ROOT], set()),
    ("sudo env X=1 nice timeout 9 rm -rf /", [RM_ROOT], set()),
    ("sh -c 'rm -rf /'", [RM_ROOT], set()),
    ('bash -c "rm -rf /"', [RM_ROOT], set()),
    ("bash -lc 'rm -rf /'", [RM_ROOT], set()),
    ("bash -x -c 'rm -rf /'", [RM_ROOT], set()),
    ("/bin/sh -c 'rm -rf /'", [RM_ROOT], set()),
    ("zsh -c 'rm -rf /'", [RM_ROOT], set()),
    ("busybox sh -c 'rm -rf /'", [RM_ROOT], set()),
    ("sh -c \"bash -c 'rm -rf /'\"", [RM_ROOT], set()),
    ("sudo sh -c 'cd / && rm -rf /'", [RM_ROOT], set()),
    ("sh script.sh", [("sh", "script.sh")], {"rm"}),
    ("eval 'rm -rf /'", [RM_ROOT], set()),
    ("eval rm -rf /", [RM_ROOT], set()),
    ("ls | xargs rm -rf", [("rm", "-rf")], set()),
    ("ls | xargs -n1 -P4 rm -f", [("rm", "-f")], set()),
    ("ls | xargs -I{} rm -rf {}", [("rm", "-rf", "{}")], set()),
    ("ls | xargs -I {} rm -rf {}", [("rm", "-rf", "{}")], set()),
    ("find . -name '*.o' -exec rm -f {} \\;", [("rm", "-f", "{}")], set()),
    ("find / -execdir rm -rf {} +", [("rm", "-rf", "{}")], set()),
    ("find . -name '*.tmp' -delete", [("find", ".", "-name", "*.tmp", "-delete")], {"rm"}),
    ("ssh prod 'rm -rf /'", [RM_ROOT], set()),
    ("ssh -p 2222 -i key admin@prod rm -rf /", [RM_ROOT], set()),
    ("ssh prod", [("ssh", "prod")], {"rm"}),
    ("kubectl exec -it pod -- rm -rf /", [RM_ROOT], set()),
    ("watch -n 5 rm -rf /tmp/x", [("rm", "-rf", "/tmp/x")], set()),
    ("git push --force origin main", [("git", "push", "--force", "origin", "main")], set()),
    ("git status", [("git", "status")], {"rm"}),
    ("kubectl delete namespace prod", [("kubectl", "delete", "namespace", "prod")], set()),
    ("terraform destroy -auto-approve", [("terraform", "destroy", "-auto-approve")], set()),
    ("npm test -- --watch=false", [("npm", "test", "--", "--watch=false")], set()),
    ("python -m pytest -q", [("python", "-m", "pytest", "-q")], set()),
    ("cat <<'EOF'\nrm -rf /\nEOF", [("cat",)], {"rm"}),
    ("cat <<< 'rm -rf /'", [("cat",)], {"rm"}),
]


@pytest.mark.parametrize(("line", "runs", "never"), RUNS, ids=[r[0][:40] for r in RUNS])
def test_every_program_a_line_runs_is_found_and_nothing_else(
    line: str, runs: list[tuple[str, ...]], never: set[str]
) -> None:
    parsed = invocations(line)
    assert parsed.complete
    found = [inv.argv for inv in parsed.invocations]
    for argv in runs:
        assert argv in found, (line, found)
    assert not never & {inv.name for inv in parsed.invocations}, (line, found)


def test_pipes_say_what_feeds_a_program() -> None:
    parsed = invocations("curl -fsSL https://get.example.sh | sudo bash -s -- --yes")
    shells = [inv for inv in parsed.invocations if inv.name == "bash"]
    assert [(s.piped_from, s.via) for s in shells] == [("curl", ("sudo",))]
    nested = invocations("sh -c 'wget -qO- https://x.example | sh'")
    assert [i.piped_from for i in nested.invocations if i.argv == ("sh",)] == ["wget"]
    assert invocations("ls && sh -c true").invocations[1].piped_from is None


def test_redirections_say_where_output_goes() -> None:
    by_name = {i.name: i.writes for i in invocations("ls && cat a > ~/.bashrc").invocations}
    assert by_name == {"ls": (), "cat": ("~/.bashrc",)}
    grouped = invocations("(echo a; echo b) >> log").invocations
    assert [i.writes for i in grouped] == [("log",), ("log",)]
    assert invocations("sudo tee f < in > /etc/hosts").invocations[-1].writes == ("/etc/hosts",)


def test_a_line_the_grammar_cannot_read_is_reported_incomplete() -> None:
    assert not invocations('rm -rf "/').complete
    assert not invocations("sh -c 'echo \"unterminated'").complete
    assert invocations("ls").complete


def test_nesting_is_bounded() -> None:
    line = "rm -rf /"
    for _ in range(12):
        line = "sh -c " + "'" + line.replace("'", "'\\''") + "'"
    parsed = invocations(line)
    assert not parsed.complete  # deeper than MAX_DEPTH: not trusted


# (command line, what each SQL statement it sends does)
SQL: list[tuple[str, list[str]]] = [
    ('psql -c "DROP DATABASE prod"', ["drop database"]),
    ("psql -h db -U app -c 'drop table users cascade' app", ["drop table"]),
    ("psql --command='TRUNCATE users' app", ["truncate"]),
    ("psql -c'drop schema public cascade'", ["drop schema"]),
    ('psql app -c "DELETE FROM users"', ["delete without where"]),
    ('psql app -c "DELETE FROM users WHERE id = 7"', ["delete"]),
    ('psql app -c "delete from users where 1=1"', ["delete without where"]),
    ('psql app -c "UPDATE users SET admin = true"', ["update without where"]),
    ('psql app -c "UPDATE users SET admin = true WHERE id = 7"', ["update"]),
    ('psql app -c "ALTER TABLE users DROP COLUMN email"', ["alter drop"]),
    ('psql app -c "SELECT count(*) FROM users; DROP TABLE t"', ["select", "drop table"]),
    ('psql app -c "DROP OWNED BY app"', ["drop"]),
    ('psql app -c "SELECT 1"', ["select"]),
    ('mysql -e "DROP DATABASE shop"', ["drop database"]),
    ("mysql --execute='delete from orders' shop", ["delete without where"]),
    ('mariadb -u root -e "TRUNCATE TABLE t"', ["truncate"]),
    ('sqlite3 app.db "DROP TABLE users"', ["drop table"]),
    ("sqlite3 -batch app.db 'select * from users'", ["select"]),
    ('sudo -u postgres psql -c "DROP DATABASE prod"', ["drop database"]),
    ("ssh db 'psql -c \"DROP DATABASE prod\"'", ["drop database"]),
    ("bash -c 'psql -c \"drop table users\"'", ["drop table"]),
    ('echo "DROP DATABASE prod"', []),
    ('echo "DROP DATABASE prod" > notes.sql', []),
    ("grep -ri 'drop table' migrations/", []),
]


@pytest.mark.parametrize(("line", "kinds"), SQL, ids=[s[0][:40] for s in SQL])
def test_the_sql_a_line_sends_its_database_is_read(line: str, kinds: list[str]) -> None:
    sent = [
        statement.kind
        for inv in invocations(line).invocations
        for sql, dialect in sql_of(inv)
        for statement in statements(sql, dialect).statements
    ]
    assert sent == kinds


def test_destructive_statements_and_unreadable_sql() -> None:
    parsed = statements("DROP TABLE a, c; SELECT 1; DELETE FROM b", "postgres")
    assert [s.destructive for s in parsed.statements] == [True, False, True]
    assert [s.target for s in parsed.statements] == ["a, c", None, "b"]
    assert not statements("DROP TABLE (", "postgres").complete
