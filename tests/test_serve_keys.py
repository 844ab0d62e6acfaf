"""API keys from ``--api-key``, ``RAGKIT_API_KEYS`` and ``--api-key-file``, and that no key reaches a log."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from ragkit.errors import ConfigError
from ragkit.serve.keys import ENV_VAR, KeyRedactor, bearer_matches, collect_api_keys, read_key_file


def test_a_key_file_has_one_key_per_line_with_comments_and_blank_lines(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# production keys\n\n  k-alpha-1  \n#k-disabled\nk-beta-2\r\n\n", encoding="utf-8")
    path.chmod(0o600)
    assert read_key_file(path) == ["k-alpha-1", "k-beta-2"]


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n  # another\n"])
def test_a_key_file_without_keys_is_an_error(tmp_path, content):
    path = tmp_path / "keys"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no key"):
        read_key_file(path)


def test_an_unreadable_key_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the API key file .*missing"):
        read_key_file(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read"):
        read_key_file(tmp_path)  # a directory
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00k")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_key_file(binary)
    if os.name == "posix" and os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked"
        locked.write_text("k-locked-1\n")
        locked.chmod(0)
        with pytest.raises(ConfigError, match="cannot read.*ermission"):
            read_key_file(locked)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_world_readable_key_file_gets_a_warning_that_names_no_key(tmp_path, caplog):
    path = tmp_path / "keys"
    path.write_text("k-world-readable-1\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert read_key_file(path) == ["k-world-readable-1"]
    assert "every user" in caplog.text and "chmod 600" in caplog.text
    assert "k-world-readable-1" not in caplog.text
    caplog.clear()
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        read_key_file(path)
    assert caplog.text == ""


def test_keys_add_up_from_the_command_line_the_environment_and_a_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("k-file-1\nk-cli-1\n")
    path.chmod(0o600)
    env = {ENV_VAR: " k-env-1 ,k-env-2,, "}
    assert collect_api_keys(["k-cli-1"], key_file=path, environ=env) == [
        "k-cli-1",
        "k-env-1",
        "k-env-2",
        "k-file-1",
    ]
    assert collect_api_keys(environ={}) == []
    assert collect_api_keys(key_file=path, environ={}) == ["k-file-1", "k-cli-1"]


def test_the_environment_is_read_by_default(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "k-from-env-1")
    assert collect_api_keys() == ["k-from-env-1"]


@pytest.mark.parametrize("value", ["", " ", ",,", " , "])
def test_an_empty_environment_variable_does_not_silently_open_the_server(value):
    with pytest.raises(ConfigError, match=f"{ENV_VAR} is set but holds no key"):
        collect_api_keys(environ={ENV_VAR: value})


@pytest.mark.parametrize("bad", ["", "  ", None, 3])
def test_an_empty_command_line_key_is_an_error(bad):
    with pytest.raises(ConfigError, match="non-empty string"):
        collect_api_keys([bad], environ={})


def test_bearer_matches_only_the_bearer_scheme_and_whole_keys():
    keys = [b"k-one-1", b"k-two-2"]
    assert bearer_matches("Bearer k-one-1", keys) and bearer_matches("bearer  k-two-2 ", keys)
    for header in (None, "", "k-one-1", "Basic k-one-1", "Bearer k-one", "Bearer k-one-1x", "Bearer "):
        assert not bearer_matches(header, keys)
    assert not bearer_matches("Bearer \udcff", keys)  # a lone surrogate is no error, just no match


def test_the_redactor_hides_keys_in_messages_arguments_and_tracebacks():
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    handler = Collect()
    handler.addFilter(KeyRedactor(["k-secret-123456"]))
    log = logging.getLogger("ragkit.test_keys")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("direct k-secret-123456 in the message")
        log.warning("as an argument: %s", "Bearer k-secret-123456")
        try:
            raise ValueError("bad key k-secret-123456")
        except ValueError:
            log.exception("failed")
        log.warning("nothing to hide %d", 5)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert len(seen) == 4
    assert not any("k-secret-123456" in line for line in seen)
    assert seen[0] == "direct *** in the message" and seen[1] == "as an argument: Bearer ***"
    assert "ValueError: bad key ***" in seen[2] and seen[3] == "nothing to hide 5"


def test_install_adds_the_redactor_to_the_handlers_of_the_server_loggers_once():
    handler = logging.StreamHandler()
    log = logging.getLogger("uvicorn.access")
    log.addHandler(handler)
    try:
        redactor = KeyRedactor(["k-abcdef"])
        redactor.install()
        redactor.install()
        assert handler.filters.count(redactor) == 1
    finally:
        log.removeHandler(handler)


FILE_KEY = "k-from-file-7f3a9c"
ENV_KEY = "k-from-env-51d2e8"
CLI_KEY = "k-from-cli-c0ffee"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keys_from_a_file_and_the_environment_work_and_never_reach_the_log(qwen3_embedding_dir, tmp_path):
    # The real command at debug level with uvicorn's access log on: every line it writes is checked.
    import subprocess
    import sys
    import time

    import httpx

    pytest.importorskip("uvicorn")
    key_file = tmp_path / "keys"
    key_file.write_text(f"# the service's key\n{FILE_KEY}\n")
    key_file.chmod(0o600)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "ragkit", "serve", "--embedder", str(qwen3_embedding_dir)]
    argv += ["--device", "cpu", "--port", str(port), "--log-level", "debug", "--api-key-file", str(key_file)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, env={**os.environ, ENV_VAR: ENV_KEY}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=30) as http:
            for key in (FILE_KEY, ENV_KEY):
                r = http.post(
                    "/v1/embeddings", json={"input": "hello"}, headers={"authorization": f"Bearer {key}"}
                )
                assert r.status_code == 200, r.text
            wrong = http.post(
                "/v1/embeddings", json={"input": "x"}, headers={"authorization": f"Bearer {CLI_KEY}"}
            )
            assert wrong.status_code == 401 and CLI_KEY not in wrong.text
            # A client that puts the key where it does not belong: the access log shows the path, masked.
            assert http.get(f"/health?api_key={FILE_KEY}").status_code == 200
            bad = {"authorization": f"Bearer {ENV_KEY}"}
            assert http.post("/v1/embeddings", content=b"{not json", headers=bad).status_code == 400
        if os.path.exists(f"/proc/{proc.pid}/cmdline"):
            assert FILE_KEY.encode() not in open(f"/proc/{proc.pid}/cmdline", "rb").read()
    finally:
        proc.terminate()
        proc.wait(60)
    text = log_path.read_text()
    assert '"POST /v1/embeddings HTTP/1.1" 200' in text and '"GET /health?api_key=*** HTTP/1.1" 200' in text
    for secret in (FILE_KEY, ENV_KEY, CLI_KEY):
        assert secret not in text
    assert "authorization" not in text.lower() and "bearer " not in text.lower()


def test_the_command_refuses_an_empty_environment_variable_and_a_bad_key_file(tmp_path, monkeypatch, caplog):
    from ragkit.serve import serve_main

    ragkit_logger = logging.getLogger("ragkit")
    monkeypatch.setattr(ragkit_logger, "level", ragkit_logger.level)  # serve_main sets it
    argv = ["--embedder", str(tmp_path / "never-loaded"), "--port", "0", "--log-level", "error"]
    monkeypatch.setenv(ENV_VAR, " , ")
    with caplog.at_level(logging.ERROR, logger="ragkit"):
        assert serve_main(argv) == 1
    assert f"{ENV_VAR} is set but holds no key" in caplog.text
    monkeypatch.delenv(ENV_VAR)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="ragkit"):
        assert serve_main([*argv, "--api-key-file", str(tmp_path / "absent")]) == 1
    assert "cannot read the API key file" in caplog.text


@pytest.mark.parametrize("bad", ["clé-sécrète-42", "two words", "tab\\there", "k-\u00a0nbsp"])
def test_a_key_that_is_not_visible_ascii_is_refused_from_every_source(tmp_path, bad, monkeypatch):
    bad = bad.replace("\\t", "\t")
    with pytest.raises(ConfigError, match="visible ASCII"):
        collect_api_keys([bad], environ={})
    if "," not in bad:
        with pytest.raises(ConfigError, match="visible ASCII"):
            collect_api_keys(environ={ENV_VAR: f"k-ok-1,{bad}"})
    path = tmp_path / "keys"
    path.write_text(f"k-ok-1\n{bad}\n", encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="visible ASCII"):
        collect_api_keys(key_file=path, environ={})


def test_the_command_with_workers_refuses_a_non_ascii_key_before_any_worker_starts(
    tmp_path, monkeypatch, caplog
):
    import ragkit.serve.workers as workers_module
    from ragkit.serve import serve_main

    started = []
    monkeypatch.setattr(workers_module, "run_workers", lambda *a, **kw: started.append(1) or 0)
    ragkit_logger = logging.getLogger("ragkit")
    monkeypatch.setattr(ragkit_logger, "level", ragkit_logger.level)  # serve_main sets it
    monkeypatch.setenv(ENV_VAR, "clé-sécrète-42")
    argv = ["--embedder", str(tmp_path / "never-loaded"), "--workers", "2", "--log-level", "error"]
    with caplog.at_level(logging.ERROR, logger="ragkit"):
        assert serve_main(argv) == 1
    assert started == [] and caplog.text.count("visible ASCII") == 1
    assert "clé" not in caplog.text
