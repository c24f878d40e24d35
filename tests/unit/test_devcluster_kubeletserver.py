"""The node agent's kubelet log endpoint over real TLS: the apiserver's way in, tails, follow, and no stranger."""

from __future__ import annotations

import http.client
import ssl
import threading
import time

import pytest

from chitu_devcluster import certs
from chitu_devcluster.kubeletserver import KubeletServer, tail_offset


@pytest.fixture
def node(tmp_path):
    """A pod's log file and the server, with the run reported finished once `done` is set."""
    paths = certs.generate(tmp_path / "certs")
    log_file = tmp_path / "pods" / "ns" / "cats-worker-0" / "uid-1" / "log"
    log_file.parent.mkdir(parents=True)
    log_file.write_bytes(b"one\ntwo\nthree\n")
    done = threading.Event()
    server = KubeletServer(
        tmp_path / "pods",
        paths.serving_cert,
        paths.serving_key,
        paths.ca_cert,
        is_running=lambda path: path == log_file and not done.is_set(),
    ).start()
    yield server, paths, log_file, done
    server.close()


def get(server, paths, query: str, *, client_cert: bool = True) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(paths.ca_cert))
    if client_cert:
        context.load_cert_chain(paths.client_cert, paths.client_key)
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    connection.request("GET", f"/containerLogs/ns/cats-worker-0/worker{query}")
    response = connection.getresponse()
    return response.status, response.read()


def test_a_log_is_served_whole_or_its_tail(node):
    server, paths, _, _ = node
    assert get(server, paths, "") == (200, b"one\ntwo\nthree\n")
    assert get(server, paths, "?tailLines=2") == (200, b"two\nthree\n")
    assert get(server, paths, "?limitBytes=5") == (200, b"one\nt")


def test_follow_streams_appended_lines_until_the_process_ends(node):
    server, paths, log_file, done = node

    def write_more():
        time.sleep(0.5)
        with open(log_file, "ab") as out:
            out.write(b"four\n")
        time.sleep(0.5)
        done.set()

    threading.Thread(target=write_more).start()
    started = time.monotonic()
    assert get(server, paths, "?follow=true&tailLines=1") == (200, b"three\nfour\n")
    assert 0.9 < time.monotonic() - started < 5


def test_a_client_without_a_cluster_certificate_is_refused(node):
    server, paths, _, _ = node
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
        get(server, paths, "", client_cert=False)


def test_tail_offset_counts_a_last_line_without_newline():
    assert tail_offset(b"a\nb\nc", 1) == 4 and tail_offset(b"a\nb\n", 1) == 2 and tail_offset(b"a\n", 5) == 0
