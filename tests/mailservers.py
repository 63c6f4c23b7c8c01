"""Real mail servers for tests: a private Dovecot IMAP server and an aiosmtpd SMTP sink.

``DovecotServer`` runs ``dovecot -c FILE`` with its own ``base_dir`` and ``instance_name``,
listening on 127.0.0.1 only (plain IMAP; with ``tls=(cert, key)`` also STARTTLS on that
port and implicit TLS on a second one), with a static passdb (every user name is accepted
with the one password) and Maildir++ storage under ``root/users/<user>``.
Tests put mail in place the way an MDA does (``tmp/`` then rename into ``new/``) and
Dovecot picks it up, IDLE included.

``SmtpSink`` is an aiosmtpd server in a thread of its own that keeps every message it
is handed, can require AUTH (PLAIN/LOGIN), can answer 4xx on purpose and, given a
``tls_context``, offers STARTTLS (and optionally implicit TLS on a second port).

``make_self_signed_cert`` makes a throwaway certificate for ``127.0.0.1``/``localhost``
with the ``openssl`` command-line tool; ``server_tls_context`` turns it into the
``ssl.SSLContext`` a server side needs.

The mail processes of Dovecot run as ``nobody:nogroup``, so the root given to
``DovecotServer.start`` must be reachable by that user (every parent directory
searchable); pytest's own temporary directories are mode 0700 and are not.
"""

from __future__ import annotations

import asyncio
import base64
import grp
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiosmtpd is imported when an SmtpSink starts
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

HOST = "127.0.0.1"
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")
_PASSWORD_RE = re.compile(r"^[!-~]+$")
_delivery_counter = itertools.count(1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def make_self_signed_cert(
    directory: Path, *, name: str = "localhost", days: int = 2
) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for ``127.0.0.1`` and ``localhost``.

    Writes ``directory/<name>.crt`` and ``directory/<name>.key`` (an unencrypted P-256
    key, mode 0600) with ``openssl req -x509`` and returns ``(cert, key)``. The
    certificate is its own CA (basicConstraints CA:TRUE), so a client can trust it with
    ``cafile=cert``; a client with the system trust store refuses it.
    Raises ``FileNotFoundError`` when the ``openssl`` tool is missing.
    """
    binary = shutil.which("openssl")
    if binary is None:
        raise FileNotFoundError("the openssl command-line tool is not installed")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    result = subprocess.run(
        [
            binary,
            "req",
            "-x509",
            "-nodes",
            "-batch",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            str(days),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyCertSign",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            "openssl could not make a certificate: "
            + result.stderr.decode(errors="replace").strip()[-2000:]
        )
    key.chmod(0o600)
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context with ``cert``/``key`` (no client certificates)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


def _mail_ids() -> tuple[int, int]:
    return pwd.getpwnam(MAIL_USER).pw_uid, grp.getgrnam(MAIL_GROUP).gr_gid


def _chown(path: Path) -> None:
    uid, gid = _mail_ids()
    os.chown(path, uid, gid)


def _make_dirs(path: Path, stop_at: Path) -> None:
    """``mkdir -p`` that gives every directory it creates below ``stop_at`` to nobody."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != stop_at:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        _chown(directory)


def imap_utf7(name: str) -> str:
    """Encode a mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3), as Dovecot stores it."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name; a zombie is gone for us.
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class DovecotServer:
    """A private Dovecot IMAP server on 127.0.0.1 for one test session.

    ``start(root)`` writes ``root/dovecot.conf`` and runs Dovecot with ``base_dir``
    ``root/run``, state in ``root/state``, its log in ``root/dovecot.log`` and mail in
    ``root/users/<user>/Maildir`` (Maildir++: folder ``X`` is ``Maildir/.X``). Any user
    name logs in with ``password``. Call ``stop()`` when done.

    ``start(root, tls=(cert, key))`` turns TLS on: the plain port then offers STARTTLS
    (plaintext LOGIN stays allowed before it) and ``tls_port`` speaks implicit TLS (imaps).
    """

    def __init__(self) -> None:
        self._root: Path | None = None
        self._port: int | None = None
        self._tls_port: int | None = None
        self._tls: tuple[Path, Path] | None = None
        self._password = "secret"
        self._pid: int | None = None

    # -- properties -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address Dovecot listens on (always 127.0.0.1)."""
        return HOST

    @property
    def port(self) -> int:
        """The plain-IMAP port."""
        if self._port is None:
            raise RuntimeError("DovecotServer is not started")
        return self._port

    @property
    def tls_port(self) -> int:
        """The implicit-TLS (imaps) port; only when started with ``tls``."""
        if self._tls_port is None:
            raise RuntimeError("DovecotServer is not started with TLS")
        return self._tls_port

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """The (certificate, key) files Dovecot serves, or None without TLS."""
        return self._tls

    @property
    def password(self) -> str:
        """The one password every user logs in with."""
        return self._password

    @property
    def root(self) -> Path:
        """The directory holding the configuration, the log, the runtime files and the mail."""
        if self._root is None:
            raise RuntimeError("DovecotServer is not started")
        return self._root

    @property
    def config_path(self) -> Path:
        """The configuration file given to ``dovecot -c``."""
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        """Dovecot's log file (errors and info)."""
        return self.root / "dovecot.log"

    @property
    def pid(self) -> int | None:
        """PID of the Dovecot master process, or None when not running."""
        return self._pid

    @property
    def running(self) -> bool:
        """Whether the master process is alive."""
        return self._pid is not None and _process_alive(self._pid)

    def read_log(self) -> str:
        """The log so far (for assertion messages when something goes wrong)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- life cycle -------------------------------------------------------------------

    def start(
        self,
        root: Path,
        password: str = "secret",
        *,
        startup_timeout: float = 15.0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """Write the configuration under ``root`` and start Dovecot; wait for its greeting.

        With ``tls=(cert, key)`` (PEM files, e.g. from ``make_self_signed_cert``) Dovecot
        offers STARTTLS on ``port`` and implicit TLS on ``tls_port``.

        Raises ``FileNotFoundError`` when Dovecot is not installed and ``RuntimeError``
        when it does not come up (the message carries the end of its log).
        """
        if self._pid is not None:
            raise RuntimeError("DovecotServer is already started")
        if not _PASSWORD_RE.match(password):
            raise ValueError("password must be printable ASCII without spaces")
        binary = shutil.which("dovecot") or (
            "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
        )
        if binary is None:
            raise FileNotFoundError("dovecot is not installed (apt-get install dovecot-imapd)")
        if tls is not None:
            tls = (Path(tls[0]).resolve(), Path(tls[1]).resolve())
            for file in tls:
                if not file.is_file():
                    raise FileNotFoundError(f"TLS file not found: {file}")
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self._root = root
        self._password = password
        self._tls = tls
        (root / "state").mkdir(exist_ok=True)
        users = root / "users"
        users.mkdir(exist_ok=True)
        users.chmod(0o755)
        _chown(users)
        self._check_reachable(users)
        stale_pid = root / "run" / "master.pid"  # left by an earlier, killed run in this root
        if stale_pid.exists():
            try:
                alive = _process_alive(int(stale_pid.read_text().strip()))
            except ValueError:
                alive = False
            if not alive:
                stale_pid.unlink()

        last_error = ""
        for _attempt in range(3):  # a port picked by free_port() can be taken meanwhile
            port = free_port()
            tls_port = free_port() if tls is not None else None
            while tls_port == port:
                tls_port = free_port()
            self.config_path.write_text(self._config(port, tls_port))
            # Not a pipe: the daemonized master would keep it open and never let go.
            output_path = root / "dovecot-start.out"
            with open(output_path, "wb") as output:
                result = subprocess.run(
                    [binary, "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=30,
                    check=False,
                )
            if result.returncode != 0:
                last_error = output_path.read_text(errors="replace").strip()
                if "in use" in last_error:
                    continue
                break
            self._port = port
            self._tls_port = tls_port
            try:
                self._pid = self._wait_for_pid(startup_timeout)
                self._wait_for_greeting(startup_timeout)
                return
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
                if "in use" not in self.read_log():
                    break
        self._port = None
        self._tls_port = None
        raise RuntimeError(
            f"Dovecot did not start: {last_error}\n--- {self.log_path}:\n{self.read_log()[-3000:]}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (``doveadm stop``, then signals to the master PID if needed)."""
        pid = self._pid
        if pid is None:
            return
        if _process_alive(pid):
            children = _children(pid)
            doveadm = shutil.which("doveadm")
            if doveadm is not None:
                subprocess.run(
                    [doveadm, "-c", str(self.config_path), "stop"],
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
            if not self._wait_gone(pid, timeout):
                os.kill(pid, signal.SIGTERM)
                if not self._wait_gone(pid, timeout):
                    os.kill(pid, signal.SIGKILL)
                    self._wait_gone(pid, timeout)
            for child in children:  # only after a hard kill can these outlive the master
                if _process_alive(child):
                    os.kill(child, signal.SIGKILL)
        self._pid = None

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- mail on disk -----------------------------------------------------------------

    def maildir(self, user: str) -> Path:
        """The user's Maildir (``root/users/<user>/Maildir``), created owned by nobody."""
        if not _USER_RE.match(user):
            raise ValueError(f"unsupported test user name: {user!r}")
        users = self.root / "users"
        path = users / user / "Maildir"
        for sub in ("cur", "new", "tmp"):
            _make_dirs(path / sub, users)
        return path

    def folder_path(self, user: str, folder: str | None = None) -> Path:
        """Directory of a folder: None or ``INBOX`` is the Maildir itself, else ``Maildir/.NAME``
        (``.`` separates levels; non-ASCII names are stored in modified UTF-7)."""
        base = self.maildir(user)
        if folder is None or folder.upper() == "INBOX":
            return base
        if not folder or folder.startswith(".") or "/" in folder or folder.endswith("."):
            raise ValueError(f"unsupported folder name: {folder!r}")
        return base / ("." + imap_utf7(folder))

    def create_folder(self, user: str, name: str) -> Path:
        """Create folder ``name`` (and its parents) for ``user``; the IMAP name uses ``.`` as
        hierarchy separator. Returns its directory. The folder is not subscribed (LIST shows
        it, LSUB does not). ``INBOX`` is the Maildir itself and always exists."""
        base = self.maildir(user)
        if name.upper() == "INBOX":
            return base
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = self.folder_path(user, ".".join(parts[:depth]))
            for sub in ("cur", "new", "tmp"):
                _make_dirs(path / sub, base)
            marker = path / "maildirfolder"
            if not marker.exists():
                marker.touch(mode=0o600)
                _chown(marker)
        return self.folder_path(user, name)

    def deliver(self, user: str, raw: bytes, folder: str | None = None, *, flags: str = "") -> Path:
        """Put one message into a folder the way an MDA does; returns its final path.

        The message is written into ``tmp/`` and renamed into ``new/`` (or into ``cur/``
        with Maildir ``flags`` such as ``"S"`` for \\Seen), owned by nobody. A missing
        folder is created. Dovecot serves bare-LF line ends as CRLF: use CRLF in ``raw``
        to get the very same bytes back from a FETCH.
        """
        if not raw:
            raise ValueError("an empty message cannot be delivered")
        path = self.create_folder(user, folder) if folder else self.maildir(user)
        now = time.time()
        seconds, micros = int(now), int((now % 1) * 1_000_000)
        name = f"{seconds}.M{micros}P{os.getpid()}Q{next(_delivery_counter)}.cctest"
        temporary = path / "tmp" / name
        with open(temporary, "wb") as handle:
            handle.write(raw)
        temporary.chmod(0o600)
        _chown(temporary)
        if flags:
            final = path / "cur" / f"{name}:2,{''.join(sorted(set(flags)))}"
        else:
            final = path / "new" / name
        os.rename(temporary, final)
        return final

    def message_files(self, user: str, folder: str | None = None) -> list[Path]:
        """The message files of a folder (``new/`` and ``cur/``), oldest name first."""
        path = self.folder_path(user, folder)
        files = [p for sub in ("new", "cur") for p in (path / sub).iterdir() if p.is_file()]
        return sorted(files, key=lambda p: p.name)

    def delete_all(self, user: str, folder: str | None = None) -> int:
        """Remove every message of a folder behind Dovecot's back; returns how many."""
        files = self.message_files(user, folder)
        for file in files:
            file.unlink(missing_ok=True)
        return len(files)

    def reset_uidvalidity(
        self, user: str, folder: str | None = None, *, keep_flags: bool = True
    ) -> None:
        """Make Dovecot give the folder a new UIDVALIDITY while keeping its messages.

        Removes the folder's ``dovecot-uidlist`` and ``dovecot.index*`` files, as if the
        mailbox had been rebuilt: the next sync numbers the messages from UID 1 again
        under a new, higher UIDVALIDITY (Dovecot takes the next value from the
        ``dovecot-uidvalidity`` file at the Maildir root). Flags live in the file names
        and survive, unless ``keep_flags=False`` moves every message back to ``new/``
        without flags.

        A session that has the folder selected at that moment (IDLE included) gets
        ``* BYE IMAP session state is inconsistent, please relogin.`` on its next sync
        and is disconnected by Dovecot, as a real server does; reconnect afterwards.
        """
        path = self.folder_path(user, folder)
        for entry in path.iterdir():
            if entry.is_file() and (
                entry.name == "dovecot-uidlist" or entry.name.startswith("dovecot.index")
            ):
                entry.unlink(missing_ok=True)
        if not keep_flags:
            for file in sorted((path / "cur").iterdir()):
                if file.is_file():
                    os.rename(file, path / "new" / file.name.split(":2,", 1)[0])

    # -- internals --------------------------------------------------------------------

    def _config(self, port: int, tls_port: int | None = None) -> str:
        root = self.root
        users = root / "users"
        if self._tls is not None and tls_port is not None:
            cert, key = self._tls
            ssl_settings = f"""ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}"""
            imaps = f"""address = 127.0.0.1
    port = {tls_port}
    ssl = yes"""
        else:
            ssl_settings = "ssl = no"
            imaps = "port = 0"
        return f"""# Written by tests/mailservers.py: a private test instance, 127.0.0.1 only.
base_dir = "{root / "run"}"
state_dir = "{root / "state"}"
instance_name = "cctest-{port}"
listen = 127.0.0.1
protocols = imap
{ssl_settings}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %u
auth_failure_delay = 0
log_path = "{self.log_path}"
mail_location = "maildir:{users}/%u/Maildir"
mail_uid = {MAIL_USER}
mail_gid = {MAIL_GROUP}
first_valid_uid = 100
first_valid_gid = 1
mail_fsync = never
mail_max_userip_connections = 100
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = static
  args = password={self._password.replace("%", "%%")}
}}
userdb {{
  driver = static
  args = home={users}/%u
}}
# No auth penalty: one failed login must not slow every later login from 127.0.0.1.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
"""

    def _check_reachable(self, directory: Path) -> None:
        uid, gid = _mail_ids()
        for parent in [directory, *directory.parents]:
            mode = parent.stat()
            if mode.st_uid == uid:
                ok = bool(mode.st_mode & 0o100)
            elif mode.st_gid == gid:
                ok = bool(mode.st_mode & 0o010)
            else:
                ok = bool(mode.st_mode & 0o001)
            if not ok:
                raise RuntimeError(
                    f"{parent} is not searchable by {MAIL_USER}; Dovecot's mail processes "
                    "could not reach the mail (use a root outside pytest's 0700 temp dirs)"
                )

    def _wait_for_pid(self, timeout: float) -> int:
        pid_file = self.root / "run" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return int(pid_file.read_text().strip())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"{pid_file} did not appear")

    def _wait_for_greeting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._pid is None or not _process_alive(self._pid):
                raise RuntimeError("the Dovecot master process exited")
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as sock:
                    greeting = sock.recv(512)
                if greeting.startswith(b"* OK"):
                    return
                last = greeting.decode(errors="replace")
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RuntimeError(f"no IMAP greeting on {HOST}:{self.port}: {last}")

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _process_alive(pid):
                return True
            time.sleep(0.05)
        return not _process_alive(pid)


# --------------------------------------------------------------------------------------
# SMTP


@dataclass(frozen=True)
class ReceivedMail:
    """One message the SMTP sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    auth_user: str | None = None
    mail_options: list[str] = field(default_factory=list)
    tls: bool = False
    """Whether the message came over an encrypted connection (STARTTLS or implicit TLS)."""


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.sink.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = self.sink._take_failure()
        if failure is not None:
            return f"{failure} 4.3.0 Temporary failure (test), try again later"
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        login = getattr(session.auth_data, "login", None)  # a LoginPassword after AUTH
        transport = server.transport
        encrypted = transport is not None and transport.get_extra_info("ssl_object") is not None
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            content=bytes(content),
            auth_user=login.decode("utf-8", "replace") if isinstance(login, bytes) else None,
            mail_options=list(envelope.mail_options),
            tls=encrypted,
        )
        self.sink._add(mail)
        return "250 2.0.0 Message accepted"


class SmtpSink:
    """An SMTP server on 127.0.0.1 (aiosmtpd, in its own thread) that keeps what it gets.

    With ``auth_required=True`` it offers AUTH PLAIN and LOGIN and refuses MAIL FROM with
    530 until the client logged in as ``username``/``password``.
    ``fail_next(n)`` makes the next ``n`` DATA commands answer a 4xx.

    With a server-side ``tls_context`` (see ``server_tls_context``) ``port`` offers
    STARTTLS, and AUTH is offered only after it (aiosmtpd answers 538 before);
    ``require_starttls=True`` refuses every mail command until STARTTLS. With
    ``implicit_tls=True`` as well, a second server on ``tls_port`` speaks TLS from the
    first byte (SMTPS), sharing the messages; aiosmtpd does not count such a connection
    as TLS for ``auth_require_tls``, so AUTH is allowed on it right away.
    Without a ``tls_context`` AUTH works on the plain connection, as before.
    """

    def __init__(
        self,
        *,
        auth_required: bool = False,
        username: str = "smtp-user",
        password: str = "smtp-secret",
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
    ) -> None:
        if (require_starttls or implicit_tls) and tls_context is None:
            raise ValueError("require_starttls and implicit_tls need a tls_context")
        self.auth_required = auth_required
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self._messages: list[ReceivedMail] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._tls_controller: Controller | None = None
        self._port: int | None = None
        self._tls_port: int | None = None

    @property
    def host(self) -> str:
        """The address the sink listens on (always 127.0.0.1)."""
        return HOST

    @property
    def port(self) -> int:
        """The SMTP port."""
        if self._port is None:
            raise RuntimeError("SmtpSink is not started")
        return self._port

    @property
    def tls_port(self) -> int:
        """The implicit-TLS (SMTPS) port; only with ``implicit_tls=True``."""
        if self._tls_port is None:
            raise RuntimeError("SmtpSink is not started with implicit_tls")
        return self._tls_port

    @property
    def messages(self) -> list[ReceivedMail]:
        """A snapshot of the messages accepted so far, in order."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._lock:
            self._messages.clear()

    def fail_next(self, count: int = 1, code: int = 451) -> None:
        """Answer the next ``count`` DATA commands with ``code`` (a 4xx) instead of accepting."""
        if not 400 <= code <= 599:
            raise ValueError("code must be a 4xx or 5xx SMTP reply code")
        with self._lock:
            self._failures.extend([code] * count)

    def start(self, port: int | None = None) -> None:
        """Start the server on ``port`` or a free one (and the SMTPS one on another, if
        asked for); a stopped sink can start again on its old port, keeping its messages."""
        if self._controller is not None:
            raise RuntimeError("SmtpSink is already started")
        kwargs: dict[str, Any] = {}
        if self.auth_required:
            # AUTH is enforced by the handler (530 at MAIL FROM), which keeps aiosmtpd
            # from warning about auth_required without TLS. With TLS on offer, AUTH
            # waits for STARTTLS as on a real submission server.
            kwargs = {
                "auth_require_tls": self.tls_context is not None,
                "authenticator": self._authenticate,
            }
        if self.tls_context is not None:
            kwargs["tls_context"] = self.tls_context
            kwargs["require_starttls"] = self.require_starttls
        self._controller, self._port = self._start_controller(kwargs, port)
        if self.implicit_tls:
            tls_kwargs: dict[str, Any] = {"ssl_context": self.tls_context}
            if self.auth_required:
                # The connection is encrypted, but aiosmtpd only knows about STARTTLS.
                tls_kwargs |= {"auth_require_tls": False, "authenticator": self._authenticate}
            try:
                self._tls_controller, self._tls_port = self._start_controller(tls_kwargs)
            except BaseException:
                self.stop()
                raise

    def _start_controller(
        self, kwargs: dict[str, Any], fixed_port: int | None = None
    ) -> tuple[Controller, int]:
        from aiosmtpd.controller import Controller

        last_error: Exception | None = None
        for _attempt in range(3 if fixed_port is None else 20):
            port = fixed_port or free_port()
            controller = Controller(
                _SinkHandler(self),
                hostname=HOST,
                port=port,
                server_hostname="smtp-sink.test",
                ready_timeout=10,
                **kwargs,
            )
            try:
                controller.start()
            except Exception as exc:  # port taken meanwhile: try another one
                last_error = exc
                if fixed_port is not None:
                    time.sleep(0.25)  # the old socket may linger a moment
                continue
            return controller, port
        raise RuntimeError(f"SMTP sink did not start: {last_error}")

    def stop(self) -> None:
        """Stop the server(s)."""
        for attribute in ("_tls_controller", "_controller"):
            controller = getattr(self, attribute)
            setattr(self, attribute, None)
            if controller is not None:
                controller.stop()
        self._port = None
        self._tls_port = None

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def wait_for(
        self,
        count: int,
        timeout: float = 10,  # noqa: ASYNC109 - a plain deadline is the simpler API here
    ) -> list[ReceivedMail]:
        """Wait until at least ``count`` messages arrived; returns all of them.

        Raises ``TimeoutError`` when they do not arrive in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"SMTP sink got {len(messages)} message(s) in {timeout}s, wanted {count}"
                )
            await asyncio.sleep(0.02)

    # -- called from the server thread ------------------------------------------------

    def _add(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.username.encode()
            and data.password == self.password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)
