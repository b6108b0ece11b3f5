"""The lockfile: pins, history, diff, rollback, verification before use, sync, gc, and kills."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.tiny_gguf import write_tiny_model
from variantlab import lock
from variantlab.errors import IntegrityError, LockError
from variantlab.lock import gc as gc_lib
from variantlab.store import Store, fetch


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory (the lock goes here) and two tiny models, a and b, in the store."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("VARIANTLAB_LOCKFILE", raising=False)
    for name, layers in (("a", 2), ("b", 3), ("spare", 4)):
        fetch(f"file:{write_tiny_model(tmp_path / f'{name}.gguf', n_layers=layers)}", name=name)
    return folder


def _flip_a_byte(path: Path) -> None:
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        byte = f.read(1)
        f.seek(-10, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_add_writes_a_readable_lock_and_a_history(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("lock", "add", "chat", "a", "-m", "first pin", "--fingerprint", "none").code == 0
    data = tomllib.loads((project / "variantlab.lock").read_text())
    pin = data["roles"]["chat"]
    assert data["revision"] == 1 and pin["model"] == "a" and len(pin["sha256"]) == 64 and pin["size"] > 0
    assert pin["source"].startswith("file:") and pin["fetch"].startswith("file:")
    (entry,) = lock.history("chat")
    assert entry.message == "first pin" and entry.before is None and entry.after.model == "a"
    shown = json.loads(cli("lock", "show", "--json").out)
    assert shown["roles"]["chat"]["sha256"] == pin["sha256"]


def test_rollback_history_and_diff(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    lock.add("chat", "a")
    lock.add("chat", "b", message="try b")
    lock.add("complete", "spare")
    entry = lock.rollback("chat")
    assert entry.after.model == "a" and entry.before.model == "b" and entry.revision == 4
    assert [e.after.model for e in lock.history("chat")] == ["a", "b", "a"]
    (change,) = lock.diff(1, 2)
    assert change.role == "chat" and change.before.model == "a" and change.after.model == "b"
    assert {c.role for c in lock.diff(0, 3)} == {"chat", "complete"}
    assert lock.rollback("chat", to=2).after.model == "b"
    out = cli("lock", "diff", "1", "2")
    assert out.code == 0 and "chat" in out.out


def test_a_flipped_byte_is_refused_by_verify_and_by_loading(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    lock.add("chat", "a")
    assert cli("lock", "verify").code == 0
    assert lock.resolve_for_use("chat").manifest.name == "a"  # hashed once, cached by size + mtime
    pin = lock.read_lock(project / "variantlab.lock").roles["chat"]
    _flip_a_byte(Store().blob_path(pin.sha256))
    result = cli("lock", "verify")
    assert result.code == 1 and "bytes changed on disk" in result.out
    with pytest.raises(IntegrityError, match=pin.sha256):
        lock.resolve_for_use("chat")
    with pytest.raises(IntegrityError):
        lock.resolve_for_use("a")  # the pinned name, not only the role
    for command in (["bench", "chat", "--reps", "1"], ["eval", "chat", "--limit", "1"]):
        refused = cli(*command)
        assert refused.code == 2 and "sha256 mismatch" in refused.err and "lock sync" in refused.err, refused.err


def test_sync_fetches_a_missing_or_damaged_blob_again(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    lock.add("chat", "a")
    blob = Store().blob_path(lock.read_lock(project / "variantlab.lock").roles["chat"].sha256)
    _flip_a_byte(blob)
    assert cli("lock", "sync").code == 0
    assert cli("lock", "verify").code == 0
    blob.chmod(0o644)
    blob.unlink()
    assert cli("lock", "verify").code == 1
    assert lock.sync() == ["chat"]
    assert all(c.ok for c in lock.verify())


def test_bad_input_changes_nothing(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    lock.add("chat", "a")
    path = project / "variantlab.lock"
    before = path.read_bytes()
    for args, words in ((["lock", "rollback", "chat", "--to", "9"], "revision 9 does not exist"),
                        (["lock", "rollback", "chat"], "no earlier pin"),
                        (["lock", "rollback", "nope"], "role 'nope' is not in"),
                        (["lock", "add", "Chat!", "a"], "role name"),
                        (["lock", "add", "chat", "no-such-model"], "unknown model"),
                        (["lock", "diff", "0", "5"], "revision 5 does not exist")):
        result = cli(*args)
        assert result.code == 2 and words in result.err, (args, result.err)
        assert path.read_bytes() == before
    path.write_text(before.decode().replace("revision = 1", "revision = = 1"))
    broken = path.read_bytes()
    result = cli("lock", "add", "chat", "b", "--fingerprint", "none")
    assert result.code == 2 and "not valid TOML" in result.err
    assert path.read_bytes() == broken  # the user's file is not overwritten


def test_rollback_to_a_blob_no_longer_stored_says_how_to_get_it(project: Path) -> None:
    lock.add("chat", "a")
    lock.add("chat", "b")
    a_blob = Store().blob_path(lock.history("chat")[0].after.sha256)
    a_blob.chmod(0o644)
    a_blob.unlink()
    with pytest.raises(LockError, match="not in the store") as err:
        lock.rollback("chat")
    assert "models fetch file:" in str(err.value)
    assert lock.read_lock(project / "variantlab.lock").roles["chat"].model == "b"


def test_gc_plans_then_removes_only_what_nothing_refers_to(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    lock.add("chat", "a")
    plan = gc_lib.plan()
    names = {n for names in plan.remove.values() for n in names}
    assert names == {"b", "spare"} and plan.bytes_freed > 0
    dry = cli("models", "gc", "--dry-run")
    assert dry.code == 0 and "2 blobs to remove" in dry.err
    assert len(Store().manifests()) == 3
    assert cli("models", "gc", "--yes").code == 0
    assert [m.name for m in Store().manifests()] == ["a"]
    assert cli("lock", "verify").code == 0


def test_a_draft_pinned_with_a_role_is_verified_synced_and_kept_by_gc(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    entry = lock.add("chat", "spare", draft="a")
    assert entry.after is not None and entry.after.draft is not None and entry.after.draft["model"] == "a"
    assert "[roles.chat.draft]" in (project / "variantlab.lock").read_text()
    checks = {c.role: c.ok for c in lock.verify()}
    assert checks == {"chat": True, "chat (draft)": True}
    plan = gc_lib.plan()
    assert {n for names in plan.remove.values() for n in names} == {"b"}  # the draft's blob is pinned too
    refused = cli("lock", "add", "chat", "a", "--draft", "spare", "--fingerprint", "none")
    assert refused.code == 2 and "not smaller than the target" in refused.err
    assert lock.read_lock(project / "variantlab.lock").roles["chat"].model == "spare"  # nothing changed
    _flip_a_byte(Store().blob_path(entry.after.draft["sha256"]))
    got = cli("lock", "verify")
    assert got.code == 1 and "FAIL chat (draft): a" in got.out


# -- kills at random points ---------------------------------------------------------------------

def _variantlab(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from variantlab.cli.app import main; sys.exit(main(sys.argv[1:]))", *args]


def _kill_at_random(args: list[str], cwd: Path, rng: random.Random, longest: float) -> None:
    proc = subprocess.Popen(_variantlab(*args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    time.sleep(rng.uniform(0, longest))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _consistent(project: Path, being_synced: str | None = None) -> None:
    """Every stored name has its blob (except the one a sync is bringing back) and both files parse."""
    store = Store()
    for m in store.manifests():
        assert m.sha256 == being_synced or store.blob_path(m.sha256).is_file(), f"manifest {m.name} without its blob"
    lock.read_lock(project / "variantlab.lock")  # parses
    lock.history()  # parses


@pytest.mark.parametrize("operation", ["add", "sync", "gc"])
def test_a_kill_at_any_point_leaves_lock_and_store_consistent(project: Path, operation: str) -> None:
    rng = random.Random(operation)
    lock.add("chat", "a")
    lock.add("complete", "b")
    t0 = time.monotonic()
    subprocess.run(_variantlab("lock", "verify"), cwd=project, check=True, capture_output=True)
    longest = (time.monotonic() - t0) * 1.5
    for round_ in range(12):
        if operation == "add":
            args = ["lock", "add", "chat", ["a", "spare"][round_ % 2], "-m", f"round {round_}", "--fingerprint", "none"]
        elif operation == "sync":
            pin = lock.read_lock(project / "variantlab.lock").roles["complete"]
            blob = Store().blob_path(pin.sha256)
            if blob.exists():
                blob.chmod(0o644)
                blob.unlink()
            args = ["lock", "sync"]
        else:
            fetch(f"file:{write_tiny_model(project.parent / f'junk{round_}.gguf', n_layers=5 + round_)}", name=f"junk{round_}")
            args = ["models", "gc", "--yes", "--keep-days", "0"]
        _kill_at_random(args, project, rng, longest)
        _consistent(project, lock.read_lock(project / "variantlab.lock").roles["complete"].sha256 if operation == "sync" else None)
        checks = lock.verify()
        if operation == "sync":  # a killed sync may not have fetched yet; it never leaves bad bytes
            assert all(c.ok or c.found is None for c in checks)
            lock.sync()
        assert all(c.ok for c in lock.verify()), [c.problem for c in lock.verify()]


def test_add_takes_what_models_fetch_takes(project: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """Issue 16, defect 4: `lock add chat file:/path/to/a.gguf` said "no such file" for a file that exists.
    A file: spec (or a bare path) is fetched into the store, verified and pinned; so is an hf: spec."""
    new = write_tiny_model(tmp_path / "fresh-model.gguf", n_layers=5)
    result = cli("lock", "add", "chat", f"file:{new}", "--json", "--fingerprint", "none")
    assert result.code == 0, result.err
    pin = lock.read_lock(project / "variantlab.lock").roles["chat"]
    stored = Store().manifest("fresh-model")
    assert stored is not None and pin.sha256 == stored.sha256 and pin.model == "fresh-model"
    assert Store().blob_path(pin.sha256).read_bytes() == new.read_bytes()
    # the same name made from other bytes later: the pin follows the file, not the old store entry
    write_tiny_model(new, n_layers=6)
    assert cli("lock", "add", "complete", str(new), "--fingerprint", "none").code == 0
    assert Store().blob_path(lock.read_lock(project / "variantlab.lock").roles["complete"].sha256).read_bytes() \
        == new.read_bytes()
    missing = cli("lock", "add", "infill", f"file:{tmp_path / 'nope.gguf'}", "--fingerprint", "none")
    assert missing.code == 2 and "does not exist" in missing.err
    assert "infill" not in lock.read_lock(project / "variantlab.lock").roles


def test_add_fetches_an_hf_spec_from_the_hub(project: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                             monkeypatch: pytest.MonkeyPatch, cli) -> None:
    from tests.hub_server import HubRepo, serve_hub

    (tmp_path / "hub").mkdir()
    served = write_tiny_model(tmp_path / "hub" / "tiny-coder.Q8_0.gguf", n_layers=2)
    repo = HubRepo()
    repo.add_commit("c1" * 20, {"tiny-coder.Q8_0.gguf": served.read_bytes()})
    with serve_hub({"someone/tiny-coder-GGUF": repo}) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        result = cli("lock", "add", "chat", "hf:someone/tiny-coder-GGUF/tiny-coder.Q8_0.gguf", "--fingerprint", "none")
    assert result.code == 0, result.err
    pin = lock.read_lock(project / "variantlab.lock").roles["chat"]
    assert Store().blob_path(pin.sha256).read_bytes() == served.read_bytes()
    assert pin.fetch and pin.fetch.startswith("hf:someone/tiny-coder-GGUF/tiny-coder.Q8_0.gguf")
