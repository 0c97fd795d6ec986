"""What blipexp counts as a secret, and the one rule that keeps each kind out of what it prints and writes:

- a URI's password (and a query parameter named like a secret) is shown as *** (`masked`, `scrubbed`);
- a name that says token, password or secret names a secret (`names_secret`): a trainer field named so is refused;
- a file that looks like a secret (credentials, .env, keys, password files) or holds one (a private-key block, a
  secret-named key with a value) is named in a run's uncommitted.diff, never copied (`secret_file`, `holds_secret`).

Imports nothing heavy: tracking, sweep, access and the command line all print URIs through it.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import unquote

MASK = "***"
SECRET_PARTS = ("password", "passwd", "secret")  # a name containing one of these names a secret (PGPASSWORD too)
SECRET_WORDS = ("token",)  # ... and one with this as a word (hub_token, not max_new_tokens or tokenizer)
# file names that hold secrets by convention: credentials, .env files, keys, password and netrc files
SECRET_FILE = re.compile(r"credentials|^\.env|\.(pem|key)$|^\.pgpass$|^id_|^[._]?netrc$", re.IGNORECASE)
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# `key = value`, `key: value`, `key=value`, `"key": value`: the value is anything but nothing (or `==`)
ASSIGNMENT = re.compile(r"""([A-Za-z_][\w.-]*)["']?[ \t]*[:=][ \t]*[^\s=]""")
# scheme://user:password@: the password runs to the last @ before the query (it may hold / or @ unencoded)
_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@?#]*):([^?#]*)@")
_QUERY_VALUE = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def names_secret(name: str) -> bool:
    """Whether a name says password or secret (DB_PASSWORD, PGPASSWORD, apiSecret), or has token as a word
    (hub_token, HF_TOKEN, accessToken; not max_new_tokens)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)  # camelCase -> camel Case
    return (any(part in name.lower() for part in SECRET_PARTS)
            or any(word.lower() in SECRET_WORDS for word in re.split(r"[\W_]+", spaced)))


def masked(uri: str) -> str:
    """`uri` as blipexp prints it: the password of user:password@ and each query value named like a secret
    (?password=...) shown as ***. Anything else, a path or a URI without secrets, is returned as it is."""
    shown = _USERINFO.sub(lambda m: f"{m[1]}:{MASK}@", uri, count=1)
    return _QUERY_VALUE.sub(lambda m: f"{m[1]}{m[2]}={MASK}" if names_secret(unquote(m[2])) else m[0], shown)


def password_masked(uri: str) -> str | None:
    """`uri` masked, or None when it holds no secret to mask."""
    shown = masked(uri)
    return shown if shown != uri else None


def scrubbed(text: str, *uris: str | None) -> str:
    """`text` (e.g. an exception's message, which may quote a URI) with the secrets of `uris` masked."""
    for uri in filter(None, uris):
        text = text.replace(uri, masked(uri))
        for secret in _secrets_of(uri):
            text = text.replace(secret, MASK)
    return text


def _secrets_of(uri: str) -> set[str]:
    """The secret values in `uri`, as written and percent-decoded."""
    found = {m[2] for m in _USERINFO.finditer(uri)}
    found |= {m[3] for m in _QUERY_VALUE.finditer(uri) if names_secret(unquote(m[2]))}
    return {value for secret in found if secret for value in (secret, unquote(secret))}


def secret_file(path: str) -> bool:
    """Whether a file's name looks like a secret's: in a credentials folder or named credentials, .env*, *.pem,
    *.key, .pgpass, id_* (SSH keys), netrc, or a name that says token, password or secret."""
    parts = PurePosixPath(path).parts
    return any(SECRET_FILE.search(part) for part in parts) or names_secret(PurePosixPath(path).stem)


def holds_secret(text: str) -> bool:
    """Whether `text` holds a private-key block or a secret-named key with a value (`token = ...`,
    `password: ...`, `DB_PASSWORD=...`)."""
    return bool(PRIVATE_KEY.search(text)) or any(names_secret(m[1]) for m in ASSIGNMENT.finditer(text))
