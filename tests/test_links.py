"""labkit.links: which URL a browser gets for a loopback server, in every case of its table.

The environment a JupyterHub, a plain Jupyter server or a terminal gives a
kernel is set with monkeypatch; the Jupyter server that started a kernel is
found through a real ``jpserver-<pid>.json`` in a temporary runtime
directory. tests/test_proxy.py checks the same links against a real Jupyter
server and jupyter-server-proxy.
"""

import json
import os
import subprocess
import sys

import pytest

from labkit import links
from labkit.debug import serve_inspector, serve_relay
from labkit.errors import LabkitError, ProxyMissingError, SettingError, UsageError

TEMPLATE = "https://hub.example.org/user/ana/proxy/{port}/"


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    """A terminal's environment: no hub, no parent Jupyter server, no setting; an empty
    Jupyter runtime directory; and whatever a test passes to links.use() undone after it."""
    for name in (links.ENV, links.HUB_PREFIX, "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    yield monkeypatch
    links.use(None)


def _jupyter_server(tmp_path, monkeypatch, **info):
    """Make this process look like a kernel started by a Jupyter server with ``info``: the
    server is this test process itself (a pid that is surely alive)."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True)
    server = {"base_url": "/", "hostname": "localhost", "port": 8888, "sock": "",
              "pid": os.getpid(), "url": "http://localhost:8888/", "token": "t",
              "secure": False, "password": False, "root_dir": str(tmp_path), **info}
    (runtime / f"jpserver-{server['pid']}.json").write_text(json.dumps(server))
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))


# -- auto: what it finds ----------------------------------------------------------------------


def test_a_script_or_terminal_gets_the_direct_loopback_url():
    assert links.mode() == "auto"
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"
    assert links.browser_url(8000, "/inspect") == "http://127.0.0.1:8000/inspect"


def test_a_kernel_on_a_jupyterhub_or_binder_gets_the_proxy_path_under_its_prefix(environment):
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    assert links.browser_url(8000) == "/user/ana/proxy/8000/"
    assert links.browser_url(8000, "/events") == "/user/ana/proxy/8000/events"
    environment.setenv(links.HUB_PREFIX, "/binder/jupyter/user/x-y-z")  # no trailing slash
    assert links.browser_url(41213) == "/binder/jupyter/user/x-y-z/proxy/41213/"


def test_a_kernel_of_a_jupyter_server_on_loopback_links_directly(tmp_path, environment):
    _jupyter_server(tmp_path, environment, hostname="localhost", base_url="/lab-base/")
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"
    _jupyter_server(tmp_path, environment, hostname="127.0.0.1", base_url="/lab-base/")
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"


@pytest.mark.parametrize("hostname", ["0.0.0.0", "::", "10.1.2.3", "classroom.example.org"])
def test_a_kernel_of_a_jupyter_server_others_reach_goes_through_its_proxy(
        tmp_path, environment, hostname):
    _jupyter_server(tmp_path, environment, hostname=hostname, base_url="/lab-base/")
    assert links.browser_url(8000) == "/lab-base/proxy/8000/"


def test_a_jupyter_server_on_a_unix_socket_is_reached_through_something_else(
        tmp_path, environment):
    _jupyter_server(tmp_path, environment, sock=str(tmp_path / "jupyter.sock"))
    assert links.browser_url(8000) == "/proxy/8000/"


def test_only_the_server_that_started_this_kernel_counts(tmp_path, environment):
    _jupyter_server(tmp_path, environment, hostname="0.0.0.0", base_url="/lab-base/")
    environment.setenv("JPY_PARENT_PID", str(os.getpid() + 1_000_000))  # another server's
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"
    environment.setenv("JPY_PARENT_PID", "not-a-pid")
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"


def test_a_file_left_by_a_server_that_died_is_ignored(tmp_path, environment):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True, timeout=30)
    dead = int(finished.stdout)                   # a pid that surely ended
    _jupyter_server(tmp_path, environment, hostname="0.0.0.0", pid=dead)
    environment.setenv("JPY_PARENT_PID", str(dead))
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"


def test_a_file_that_is_not_a_server_s_is_ignored(tmp_path, environment):
    _jupyter_server(tmp_path, environment, hostname="0.0.0.0")
    (tmp_path / "runtime" / f"jpserver-{os.getpid()}.json").write_text("{not json")
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"


def test_the_hub_prefix_wins_over_the_parent_server(tmp_path, environment):
    _jupyter_server(tmp_path, environment, hostname="0.0.0.0", base_url="/lab-base/")
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    assert links.browser_url(8000) == "/user/ana/proxy/8000/"


# -- the setting ------------------------------------------------------------------------------


def test_direct_overrides_a_hub(environment):
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    environment.setenv(links.ENV, "direct")
    assert links.mode() == "direct"
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"


def test_proxy_takes_the_base_url_from_the_hub_the_parent_server_or_the_root(
        tmp_path, environment):
    environment.setenv(links.ENV, "proxy")
    assert links.browser_url(8000) == "/proxy/8000/"
    _jupyter_server(tmp_path, environment, hostname="localhost", base_url="/lab-base/")
    assert links.browser_url(8000) == "/lab-base/proxy/8000/"  # e.g. an SSH tunnel to it
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    assert links.browser_url(8000, "/poll") == "/user/ana/proxy/8000/poll"


def test_a_template_names_any_other_proxy(environment):
    environment.setenv(links.ENV, TEMPLATE)
    assert links.mode() == TEMPLATE
    assert links.browser_url(8000) == "https://hub.example.org/user/ana/proxy/8000/"
    assert links.browser_url(8000, "/ws") == "https://hub.example.org/user/ana/proxy/8000/ws"
    environment.setenv(links.ENV, "/proxy/{port}")  # a path, without the trailing slash
    assert links.browser_url(8000, "/ws") == "/proxy/8000/ws"
    assert links.browser_url(8000) == "/proxy/8000/"


def test_auto_and_empty_mean_the_guess(environment):
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    for value in ("auto", "", "  "):
        environment.setenv(links.ENV, value)
        assert links.browser_url(8000) == "/user/ana/proxy/8000/", value


def test_use_overrides_the_environment_until_it_is_given_none(environment):
    environment.setenv(links.ENV, "proxy")
    links.use("direct")
    assert links.mode() == "direct"
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"
    links.use(TEMPLATE)
    assert links.browser_url(8000) == "https://hub.example.org/user/ana/proxy/8000/"
    links.use(None)
    assert links.mode() == "proxy"


@pytest.mark.parametrize("value", [
    "proxied", "DIRECT", "https://hub.example.org/user/ana/proxy/",  # no {port}
    "https://hub/{port}/{user}/", "https://hub/{port}/{port}/", "https://hub/{port", "{0}",
    "hub.example.org/{port}/",  # neither a URL nor a path
])
def test_a_bad_setting_is_a_clear_error_from_the_environment_and_from_use(environment, value):
    environment.setenv(links.ENV, value)
    with pytest.raises(SettingError, match=f"{links.ENV} is .*auto, direct, proxy, or a templ"):
        links.browser_url(8000)
    with pytest.raises(SettingError, match="links.use"):
        links.use(value)
    assert issubclass(SettingError, ValueError) and issubclass(SettingError, LabkitError)
    with pytest.raises(SettingError, match="takes a string"):
        links.use(3)


def test_proxy_without_jupyter_server_proxy_says_what_to_do(environment):
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    environment.setattr(links.importlib.util, "find_spec",
                        lambda name: None if name == "jupyter_server_proxy" else object())
    with pytest.raises(ProxyMissingError, match="pip install jupyter-server-proxy.*=direct"):
        links.browser_url(8000)
    assert issubclass(ProxyMissingError, LabkitError)
    environment.setenv(links.ENV, TEMPLATE)  # the student named the proxy: no check
    assert links.browser_url(8000) == "https://hub.example.org/user/ana/proxy/8000/"
    environment.setenv(links.ENV, "direct")
    assert links.browser_url(8000) == "http://127.0.0.1:8000/"


# -- what it links to -------------------------------------------------------------------------


def test_a_server_a_port_or_a_loopback_url(environment):
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    with serve_inspector() as server:
        port = server.port
        assert links.browser_url(server) == f"/user/ana/proxy/{port}/"
        assert links.browser_url(server.url) == f"/user/ana/proxy/{port}/"
        assert links.browser_url(server.url + "/") == f"/user/ana/proxy/{port}/"
    assert links.browser_url(f"http://127.0.0.1:{port}/inspect/3?x=1") == \
        f"/user/ana/proxy/{port}/inspect/3?x=1"
    assert links.browser_url(f"http://localhost:{port}/a/", "/b") == f"/user/ana/proxy/{port}/a/b"
    assert links.browser_url(f"http://[::1]:{port}") == f"/user/ana/proxy/{port}/"


@pytest.mark.parametrize("where", [
    0, 65536, -1, True, 80.0, None, "8000", "https://127.0.0.1:8000/", "http://127.0.0.1/",
    "http://example.org:8000/", "http://127.0.0.1:99999/",
])
def test_what_is_not_a_loopback_server_is_a_usage_error(where):
    with pytest.raises(UsageError):
        links.browser_url(where)


@pytest.mark.parametrize("path", ["inspect", "", 3])
def test_a_path_starts_with_a_slash(path):
    with pytest.raises(UsageError, match="path must be a string starting with '/'"):
        links.browser_url(8000, path)


def test_the_inspector_and_the_relay_link_a_browser_the_way_the_setting_says(environment):
    environment.setenv(links.HUB_PREFIX, "/user/ana/")
    with serve_inspector() as bin_server, serve_relay(bin_server.url) as relay_server:
        inspector, relay = bin_server.component, relay_server.component
        assert f"href='/user/ana/proxy/{bin_server.port}/'" in inspector._repr_html_()
        assert f"href='/user/ana/proxy/{relay_server.port}/'" in relay._repr_html_()
        links.use("direct")
        assert f"href='http://127.0.0.1:{bin_server.port}/'" in inspector._repr_html_()
        assert f"href='http://127.0.0.1:{relay_server.port}/'" in relay._repr_html_()

