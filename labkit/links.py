"""The URL a browser should use for a server the kit runs on loopback.

Every server labkit starts listens on ``127.0.0.1`` only. When the browser
runs on the same machine as the kernel, ``http://127.0.0.1:<port>/`` is the
right link. In a classroom it often is not: the kernel runs behind a Jupyter
server (JupyterHub gives each student ``/user/<name>/``, Binder too) and the
student's browser is on another machine, where ``127.0.0.1`` is the
student's own computer. There, ``jupyter-server-proxy`` forwards
``<base_url>proxy/<port>/<path>`` on the Jupyter server's own origin to
``127.0.0.1:<port>/<path>``, for whoever is logged in to that server. A path
on that origin works as a link and in an ``IFrame`` in JupyterLab.

:func:`browser_url` decides which of the two to give, on its own where it
can tell reliably:

============================================  ==========================================
what it finds                                 the URL it gives
============================================  ==========================================
``JUPYTERHUB_SERVICE_PREFIX`` is set (a       ``<prefix>proxy/<port>/<path>``: JupyterHub
JupyterHub or Binder single-user server;      and Binder set it for the single-user
kernels inherit it)                           server, and the browser is elsewhere
the kernel's own Jupyter server (its          ``<base_url>proxy/<port>/<path>``: students
``jpserver-<pid>.json`` whose ``pid`` is      reach that server over the network
``JPY_PARENT_PID``) listens on an address
that is not loopback (``0.0.0.0``, a name,
an interface's address) or a Unix socket
anything else (a script, a terminal, a        ``http://127.0.0.1:<port>/<path>``
Jupyter server on ``localhost``)
============================================  ==========================================

One setting overrides the guess, for what it cannot see (an SSH tunnel to a
server on localhost; a server started with ``--ip='*'``, which records
itself as ``localhost``; Windows, where ``JPY_PARENT_PID`` is a handle; any
other proxy in front of the kernel): the environment variable
``LABKIT_BROWSER_URL``, or :func:`use` with the same values from a cell.

=========================================  ================================================
``LABKIT_BROWSER_URL`` / ``use(...)``      meaning
=========================================  ================================================
``auto`` (the default; unset or empty)     the table above
``direct``                                 always ``http://127.0.0.1:<port>/<path>``
``proxy``                                  always ``<base_url>proxy/<port>/<path>``, the base
                                           URL from ``JUPYTERHUB_SERVICE_PREFIX``, else from
                                           the kernel's Jupyter server, else ``/``
a template with ``{port}``, e.g.           that template with the port filled in, then the
``https://hub.example.org/user/ana/``      path: for any other proxy in front of the kernel
``proxy/{port}/``
=========================================  ================================================

A value that is none of these is a :class:`~labkit.errors.SettingError`
naming it. A proxy URL (``proxy``, or ``auto`` choosing it) needs
``jupyter-server-proxy``; when this kernel's Python cannot import it,
:func:`browser_url` raises :class:`~labkit.errors.ProxyMissingError` with
what to do rather than give a link that answers 404. (The check is made in
the kernel's environment, where labkit and its dependencies are installed.)

Example (a notebook cell)::

    from labkit import links
    links.browser_url(server)                  # '/user/ana/proxy/41213/' on a JupyterHub
    links.browser_url(server, "/inspect")      # a page of that server
    links.use("direct")                        # this notebook: the browser is on this machine
    links.mode()                               # 'direct'

A Python client (``requests``, a test) must keep using the loopback URL
(``server.url``): the proxy asks for the student's Jupyter login.

Thread-safety: :func:`browser_url` only reads the environment, the setting
and the Jupyter runtime directory, so any thread may call it. :func:`use`
changes the setting for the whole process; call it from a cell.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import string
from typing import Any
from urllib.parse import urlsplit

from labkit.errors import ProxyMissingError, SettingError, UsageError

__all__ = ["browser_url", "use", "mode", "ENV", "MODES"]

ENV = "LABKIT_BROWSER_URL"
"""The environment variable that overrides the guess (see the module docstring)."""

MODES = ("auto", "direct", "proxy")
"""The named values of the setting; anything else must be a template with ``{port}``."""

HUB_PREFIX = "JUPYTERHUB_SERVICE_PREFIX"
"""Set by JupyterHub (and Binder) for the single-user server, e.g. ``/user/ana/``."""

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")

_chosen: str | None = None
"""The value given to :func:`use`, or None to follow the environment variable."""


def use(value: str | None) -> None:
    """Set how :func:`browser_url` links, for this process: a value of ``LABKIT_BROWSER_URL``
    (``"auto"``, ``"direct"``, ``"proxy"`` or a template with ``{port}``), or None to
    follow the environment variable again. A bad value raises :class:`SettingError`."""
    global _chosen
    if value is not None:
        _check(value, "links.use()")
    _chosen = value


def mode() -> str:
    """The setting in force: ``"auto"``, ``"direct"``, ``"proxy"`` or the template."""
    if _chosen is not None:
        return _chosen
    return _check(os.environ.get(ENV, "").strip() or "auto", ENV)


def browser_url(where: Any, path: str | None = None) -> str:
    """The URL a browser should open for ``path`` on a loopback server.

    ``where`` is a port, anything with a ``port`` (a ``lab.Server``, a
    ``LiveRace``) or a loopback URL such as ``server.url`` or
    ``inspector.page_url``. ``path`` (starting with ``/``) is added to the
    URL's own path; without it, a port or server gives ``/`` and a URL its
    own path and query. See the module docstring for which URL it gives.
    """
    port, path = _target(where, path)
    setting = mode()
    if setting == "direct":
        return f"http://127.0.0.1:{port}{path}"
    if setting not in MODES:  # a template
        return setting.format(port=port).rstrip("/") + path
    base = _proxy_base(setting == "proxy")
    if base is None:
        return f"http://127.0.0.1:{port}{path}"
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        raise ProxyMissingError(
            f"a browser elsewhere reaches port {port} only through jupyter-server-proxy "
            f"({base}proxy/{port}/), which this kernel's Python cannot import: "
            f"`pip install jupyter-server-proxy` where the Jupyter server runs and restart "
            f"it, or set {ENV}=direct when the browser runs on this machine")
    return f"{base}proxy/{port}{path}"


def _check(value: str, where: str) -> str:
    """``value`` if it is a valid setting, else a :class:`SettingError` naming ``where``."""
    if not isinstance(value, str):
        raise SettingError(f"{where} takes a string, got {value!r}")
    if value in MODES:
        return value
    problem = None
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as error:
        fields, problem = [], str(error)
    if problem is None and fields != ["port"]:
        problem = "a template holds {port} once and no other {field}"
    elif problem is None and not value.startswith(("http://", "https://", "/")):
        problem = "a template is a URL (http:// or https://) or a path starting with /"
    if problem is None:
        return value
    raise SettingError(
        f"{where} is {value!r}, which labkit does not understand ({problem}): use auto, "
        f"direct, proxy, or a template such as https://hub.example.org/user/ana/proxy/{{port}}/")


def _target(where: Any, path: str | None) -> tuple[int, str]:
    """The port and the path (starting with ``/``) that ``where`` and ``path`` name."""
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise UsageError(f"path must be a string starting with '/', got {path!r}")
    if isinstance(where, str):
        parts = urlsplit(where)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "http" or port is None or \
                not (_is_loopback(host) or host in ("0.0.0.0", "::")):
            raise UsageError(f"{where!r} is not a loopback URL such as http://127.0.0.1:8000: "
                             f"pass a server, its port, or its url")
        own = parts.path.rstrip("/") if path is not None else (parts.path or "/")
        query = f"?{parts.query}" if parts.query and path is None else ""
        return port, own + (path or "") + query
    port = getattr(where, "port", where)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise UsageError(f"browser_url needs a port from 1 to 65535, a served server or its "
                         f"url, got {where!r}")
    return port, path or "/"


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, ``127.x``, ``::1``)."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proxy_base(forced: bool) -> str | None:
    """The Jupyter base URL to proxy through, or None when the browser can go direct.

    ``forced`` (the setting is ``proxy``): a base URL in every case, ``/`` at worst.
    """
    prefix = os.environ.get(HUB_PREFIX, "").strip()
    if prefix:
        return _slashed(prefix)
    server = _parent_server()
    if server is not None and (forced or not _listens_on_loopback_only(server)):
        return _slashed(server.get("base_url") or "/")
    return "/" if forced else None


def _parent_server() -> dict | None:
    """The info of the Jupyter server that started this kernel, or None.

    A kernel started by a Jupyter server has ``JPY_PARENT_PID`` (jupyter_client
    sets it to the server's pid on POSIX) and that server has written
    ``jpserver-<pid>.json`` into the runtime directory. Read that one file:
    ``jupyter_server.serverapp.list_running_servers`` would do the same after
    importing the whole server, about 1.5 s of a lesson's first link.
    """
    parent = os.environ.get("JPY_PARENT_PID", "")
    if not parent.isdigit():
        return None
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        with open(os.path.join(jupyter_runtime_dir(), f"jpserver-{parent}.json")) as file:
            info = json.load(file)
    except (ImportError, OSError, ValueError):
        return None
    if not isinstance(info, dict) or str(info.get("pid")) != parent or not _alive(int(parent)):
        return None                       # not its file, or a stale one a crash left behind
    return info


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _listens_on_loopback_only(server: dict) -> bool:
    """Whether a Jupyter server's info says only this machine can reach it."""
    if server.get("sock"):
        return False  # a Unix socket: something else carries the browser's requests to it
    return _is_loopback(str(server.get("hostname") or "localhost"))


def _slashed(base: str) -> str:
    """``base`` with one leading and one trailing ``/``."""
    return "/" + base.strip("/") + "/" if base.strip("/") else "/"
