import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream import allocator, cli
from stream.allocator import limit_arenas
from stream.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]

# Four threads allocate while alive together; malloc_info then lists the process's arenas.
PROBE = r"""
import ctypes, os, sys, tempfile, threading
sys.path.insert(0, sys.argv[2])
from stream.allocator import _glibc, limit_arenas
print(limit_arenas(int(sys.argv[1])))
held, together = [], threading.Barrier(5)
def work():
    held.append(bytearray(100_000))  # below the mmap threshold: from the thread's arena
    together.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
together.wait()
for t in threads:
    t.join()
libc = _glibc()
libc.fopen.restype = ctypes.c_void_p
fd, path = tempfile.mkstemp()
os.close(fd)
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(f))
libc.fclose(ctypes.c_void_p(f))
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""

def _arenas(limit: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(limit), str(ROOT)], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    return out[0], int(out[1])

def test_one_arena_is_shared_by_every_thread():
    assert _arenas(1) == ("True", 1)
    applied, arenas = _arenas(0)  # the C library's default: threads get arenas of their own
    assert applied == "False" and arenas > 1


def test_zero_leaves_the_default():
    assert limit_arenas(0) is False


def _example() -> dict:
    return yaml.safe_load((ROOT / "examples" / "content-filter.yaml").read_text())


def test_a_service_command_takes_the_limit_from_its_configuration(monkeypatch, tmp_path):
    doc = _example()
    seen: list[int] = []
    monkeypatch.setattr(allocator, "limit_arenas", lambda count: seen.append(count) or True)
    for section, want in (({"malloc_arenas": 3}, 3), (None, 1)):  # the default: one arena
        if section is None:
            doc.pop("process", None)
        else:
            doc["process"] = section
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        assert cli._start_service(argparse.Namespace(config=str(path), log_level="WARNING")) is not None
        assert seen[-1] == want


def test_the_limit_is_validated_naming_its_key(tmp_path):
    doc = _example()
    doc["process"] = {"malloc_arenas": -1}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"process\.malloc_arenas"):
        load_config(path)
