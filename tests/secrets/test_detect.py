"""The credential detector: every kind it looks for by default is found where it is, ordinary
code and prose raise nothing, a finding never holds what it matched, and detect-secrets stays
quiet and leaves the process's logging and warnings alone.

Credentials are made up here at run time, from pieces, so this file holds none a scanner would
flag."""

from __future__ import annotations

import base64
import json
import random
import string
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pilothouse.secrets.detect import NOT_BY_DEFAULT, CredentialDetector, Finding

ROOT = Path(__file__).resolve().parents[2]
DETECTOR = CredentialDetector()
_rng = random.Random(2026)

ALNUM = string.ascii_letters + string.digits
LOWER = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"


def _r(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _b64url(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


_JWT = f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{_b64url({'sub': '42'})}."

# kind -> (a line holding a credential, the credential as the finding spans it)
EXAMPLES: dict[str, tuple[str, str]] = {}


def _example(kind: str, line: str, credential: str) -> None:
    assert credential in line
    EXAMPLES[kind] = (line, credential)


_aws = "AK" + "IA" + _r(string.ascii_uppercase + string.digits, 16)
_example("AWS Access Key", f"export AWS_ACCESS_KEY_ID={_aws}", _aws)
_art = "AK" + "C" + _r(ALNUM, 14)
_example("Artifactory Credentials", f'artifactory_token: "{_art}"', f'"{_art}"')
_azure = "Account" + "Key=" + _r(ALNUM, 86) + "=="
_example("Azure Storage Account access key", f"DefaultEndpointsProtocol=https;{_azure}", _azure)
_password = _r(ALNUM, 14)
_example("Basic Auth Credentials", f"DATABASE_URL=postgres://app:{_password}@db:5432/x", _password)
_cloudant = _r(HEX, 64)
_example("Cloudant Credentials", f'cloudant_password = "{_cloudant}"', _cloudant)
_discord = "M" + _r(ALNUM, 23) + "." + _r(ALNUM, 6) + "." + _r(ALNUM, 27)
_example("Discord Bot Token", f"DISCORD_TOKEN={_discord}", _discord)
_github = "gh" + "p_" + _r(ALNUM, 36)
_example("GitHub Token", f"GITHUB_TOKEN={_github}", _github)
_gitlab = "gl" + "pat-" + _r(ALNUM, 20)
_example("GitLab Token", f"PRIVATE-TOKEN: {_gitlab}", _gitlab)
_cos = _r(HEX, 48)
_example("IBM COS HMAC Credentials", f'cos_hmac_secret_access_key = "{_cos}"', _cos)
_iam = _r(ALNUM, 44)
_example("IBM Cloud IAM Key", f'ibm_cloud_iam_key = "{_iam}"', _iam)
_example("JSON Web Token", f"Authorization: Bearer {_JWT}{_r(ALNUM, 43)}", _JWT)
_mailchimp = _r(LOWER, 32) + "-us" + "12"
_example("Mailchimp Access Key", f"MAILCHIMP_KEY={_mailchimp}", _mailchimp)
_npm = "np" + "m_" + _r(ALNUM, 36)
_example("NPM tokens", "//registry.example.org/:_auth" + f"Token={_npm}", _npm)
_openai = "sk-" + _r(ALNUM, 20) + "T3Blbk" + "FJ" + _r(ALNUM, 20)
_example("OpenAI Token", f"OPENAI_API_KEY={_openai}", _openai)
_private = "BEGIN RSA " + "PRIVATE KEY"
_example("Private Key", f"-----{_private}-----", _private)
_pypi = "pypi-" + "AgEIcHlwaS5vcmc" + _r(ALNUM, 80)
_example("PyPI Token", f"password = {_pypi}", _pypi)
_sendgrid = "SG" + "." + _r(ALNUM, 22) + "." + _r(ALNUM, 43)
_example("SendGrid API Key", f"SENDGRID_API_KEY={_sendgrid}", _sendgrid)
_slack = "xo" + "xb-" + _r(string.digits, 12) + "-" + _r(string.ascii_lowercase, 24)
_example("Slack Token", f"SLACK_BOT_TOKEN={_slack}", _slack)
_softlayer = _r(LOWER, 64)
_example("SoftLayer Credentials", f'softlayer_api_key: "{_softlayer}"', _softlayer)
_square = "sq0" + "csp-" + _r(ALNUM, 43)
_example("Square OAuth Secret", f"SQUARE_SECRET={_square}", _square)
_stripe = "sk" + "_live_" + _r(ALNUM, 24)
_example("Stripe Access Key", f"stripe.api_key = '{_stripe}'", _stripe)
_telegram = _r(string.digits, 9) + ":" + _r(ALNUM, 35)
_example("Telegram Bot Token", f"TELEGRAM_TOKEN={_telegram}", _telegram)
_twilio = "A" + "C" + _r(LOWER, 32)
_example("Twilio API Key", f"TWILIO_ACCOUNT_SID={_twilio}", _twilio)

PROSE = """\
The gateway forwards each call to the provider named by the model, after the policy has
decided. A budget of 25.00 USD a month applies to the team; see docs/configuration.md and
https://example.com/docs/budgets#windows. Run `pilothouse serve --port 8000` and open
http://127.0.0.1:8000/ in a browser. Keys are referenced as {"$env": "OPENAI_API_KEY"}.
"""


def test_the_default_plugins_are_every_shipped_one_but_the_noisy_ones() -> None:
    available = set(CredentialDetector.available())
    assert set(DETECTOR.kinds) == available - NOT_BY_DEFAULT
    assert available >= NOT_BY_DEFAULT
    assert set(EXAMPLES) == set(DETECTOR.kinds)  # a new plugin needs an example here


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_kind_is_found_where_it_is(kind: str) -> None:
    line, credential = EXAMPLES[kind]
    text = f"# config\nname = 'demo'\n    {line}\nport = 8000\n"
    findings = DETECTOR.scan(text)
    start = text.index(credential)
    assert findings == [Finding(kind, start, start + len(credential))]


def test_findings_come_in_order_of_where_they_start() -> None:
    kinds = ["Stripe Access Key", "AWS Access Key", "GitHub Token"]
    text = "\n".join(EXAMPLES[kind][0] for kind in kinds)
    findings = DETECTOR.scan(text)
    assert [f.kind for f in findings] == kinds
    assert [f.start for f in findings] == sorted(f.start for f in findings)
    assert all(text[f.start : f.end] == EXAMPLES[f.kind][1] for f in findings)


def test_a_json_body_on_one_line_is_scanned_with_offsets_into_it() -> None:
    kinds = ["GitHub Token", "Basic Auth Credentials", "Private Key"]
    lines = [EXAMPLES[kind][0] for kind in kinds]
    body = json.dumps({"messages": [{"role": "user", "content": PROSE + "\n".join(lines)}]})
    findings = DETECTOR.scan(body)
    assert [f.kind for f in findings] == kinds
    for finding in findings:
        assert body[finding.start : finding.end] == EXAMPLES[finding.kind][1]


def test_ordinary_code_and_prose_raise_nothing() -> None:
    sources = sorted((ROOT / "src" / "pilothouse").rglob("*.py"))
    assert len(sources) > 50
    for path in sources:
        assert DETECTOR.scan(path.read_text(), limit=10**8) == [], path
    assert DETECTOR.scan(PROSE) == []
    assert DETECTOR.scan(json.dumps({"content": PROSE})) == []


def test_placeholders_and_templates_are_not_credentials() -> None:
    sequential = "postgres://app:abcdefghijkl@db/x"
    templated = "postgres://app:{password}@db/x"
    not_a_jwt = "ey" + "JhbGciOi.eyJzdWIi.c2lnbmF0dXJl"  # shaped like one, but not JSON
    assert DETECTOR.scan(f"{sequential}\n{templated}\n{not_a_jwt}") == []
    assert len(DETECTOR.scan(EXAMPLES["Basic Auth Credentials"][0])) == 1


def _line_by_line(text: str) -> list[Finding]:
    """What reading ``text`` a line at a time, as detect-secrets does, with each default
    plugin's expressions finds (the detector's rule for short groups, the same filters)."""
    from detect_secrets.filters import heuristic
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.jwt import JwtTokenDetector

    plugins = {
        cls.secret_type: cls()
        for cls in RegexBasedDetector.__subclasses__()
        if cls.secret_type in DETECTOR.kinds
    }
    assert set(plugins) == set(DETECTOR.kinds)
    drops = (
        heuristic.is_sequential_string,
        heuristic.is_potential_uuid,
        heuristic.is_templated_secret,
        heuristic.is_prefixed_with_dollar_sign,
        heuristic.is_not_alphanumeric_string,
    )
    found = set()
    at = 0
    for line in text.split("\n"):
        for kind, plugin in plugins.items():
            checked = (
                set(plugin.analyze_string(line)) if isinstance(plugin, JwtTokenDetector) else None
            )
            for pattern in plugin.denylist:
                for match in pattern.finditer(line):
                    spans = [match.span(g) for g in range(1, pattern.groups + 1)]
                    if all(end - start < 8 for start, end in spans):
                        spans = [match.span()]
                    for start, end in spans:
                        value = line[start:end]
                        if start >= end or (checked is not None and value not in checked):
                            continue
                        if not any(drop(value) for drop in drops):
                            found.add((at + start, at + end, kind))
        at += len(line) + 1
    return [Finding(kind, start, end) for start, end, kind in sorted(found)]


def test_searching_near_required_literals_finds_what_reading_line_by_line_finds() -> None:
    sources = sorted((ROOT / "src" / "pilothouse").rglob("*.py"))[:40]
    lines = [line for line, _ in EXAMPLES.values()]
    for n, path in enumerate(sources):
        text = path.read_text().split("\n")
        for line in _rng.sample(lines, 6):
            at = _rng.randrange(len(text))
            text[at] += ("  " if n % 2 else "") + line
        for variant in ("\n".join(text), json.dumps("\n".join(text)), "Straße\n" + text[0]):
            assert DETECTOR.scan(variant, limit=10**8) == _line_by_line(variant), path


def test_a_finding_holds_no_part_of_what_it_matched() -> None:
    line, credential = EXAMPLES["GitHub Token"]
    (finding,) = DETECTOR.scan(line)
    assert credential[4:12] not in repr(finding) and credential[4:12] not in str(finding)
    assert set(Finding.__dataclass_fields__) == {"kind", "start", "end"}


def test_only_the_first_limit_characters_are_scanned() -> None:
    line, credential = EXAMPLES["AWS Access Key"]
    text = "x" * 1000 + "\n" + line
    end = text.index(credential) + len(credential)
    assert DETECTOR.scan(text, limit=end - 1) == []
    assert [f.end for f in DETECTOR.scan(text, limit=end)] == [end]
    assert [f.end for f in DETECTOR.scan(text)] == [end]


def test_an_unknown_kind_is_refused_with_the_kinds_there_are() -> None:
    with pytest.raises(ValueError, match=r"finds 'Fax Token': the kinds are 'AWS Access Key'"):
        CredentialDetector(["Fax Token"])


def test_the_noisy_plugins_can_be_chosen() -> None:
    keyword = CredentialDetector(["Secret Keyword"])
    entropy = CredentialDetector(["Base64 High Entropy String"])
    password = _r(ALNUM, 12)
    text = f'    db_password = "{password}"\n    blob = "{_r(ALNUM, 40)}"\n'
    assert [text[f.start : f.end] for f in keyword.scan(text)] == [password]
    (found,) = entropy.scan(text)
    assert text[found.start - 1] == '"' and found.end - found.start == 40
    assert entropy.kinds == ("Base64 High Entropy String",)


def test_threads_scanning_at_once_find_what_one_finds() -> None:
    text = "\n".join(line for line, _ in EXAMPLES.values()) * 20
    alone = DETECTOR.scan(text)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(DETECTOR.scan, [text] * 16))
    assert len(alone) == 20 * len(EXAMPLES)
    assert all(r == alone for r in results)


def test_detect_secrets_prints_nothing_and_leaves_logging_and_warnings_alone() -> None:
    # In a fresh interpreter: the first import of detect-secrets is what changes things.
    script = """
import logging, warnings
showwarning, handlers = warnings.showwarning, list(logging.getLogger().handlers)
level = logging.getLogger().level
from pilothouse.secrets.detect import CredentialDetector
detector = CredentialDetector(CredentialDetector.available())
detector.scan("password = 'x'\\nAKIA + 1.2.3.4 " * 50)
assert warnings.showwarning is showwarning, "warnings are captured by logging"
assert logging.getLogger().handlers == handlers and logging.getLogger().level == level
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
