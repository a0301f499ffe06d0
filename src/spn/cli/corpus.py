"""``spn corpus``: build the photo corpus (``photos:corpus``) from installed packages, or list its sources.

``spn corpus build [--out DIR]`` writes the folder of :func:`spn.data.corpus.build_corpus`
(default ``$SPN_CORPUS`` or ``~/.cache/spn/corpus``); ``spn corpus list`` shows each source
package, whether it is installed, and how many photos it gives. ``make corpus`` installs the
packages and builds.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from spn.utils.config import ConfigBase, option

from .options import add_config_options, build_config

HELP = "build the photo corpus (photos:corpus) from photographs shipped in installed packages"

log = logging.getLogger("spn")


@dataclass
class CorpusConfig(ConfigBase):
    out: str | None = option(None, help="the folder to write", metavar="DIR",
                             default_help="$SPN_CORPUS, else ~/.cache/spn/corpus")
    max_side: int = option(1600, minimum=16, help="shrink photos whose longer side is larger (pixels)")
    missing: str = option("error", choices=("error", "skip"),
                          help="a source package that is not installed: stop, or build without it")
    force: bool = option(False, help="replace the corpus already in --out")
    cutouts: bool = option(True, help="", negative="--no-cutouts", negative_value=False,
                           negative_help="leave out the hand-cut photographic stamps of tuxpaint-stamps-default "
                                         "(the composites' real objects)")
    json: bool = option(False, help="print the manifest's per-package counts as JSON")


def add_arguments(p) -> None:
    p.add_argument("action", choices=("build", "list"), help="build the corpus, or list its source packages")
    add_config_options(p, CorpusConfig, config_file=False)


def _list(cfg: CorpusConfig) -> int:
    from spn.data import corpus

    rows = []
    for src in corpus.SOURCES:
        try:
            version = corpus._package_info(src)[0]
        except FileNotFoundError:
            version = None
        rows.append({"package": src.package, "kind": src.kind, "version": version, "photos": len(src.photos)})
    if cfg.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['package']:30s} {r['kind']:4s} {r['version'] or 'NOT INSTALLED':16s} {r['photos']:3d} photos")
    return 0


def run(args) -> int:
    from pathlib import Path

    from spn.data.corpus import build_corpus, default_corpus_dir

    cfg = build_config(CorpusConfig, args)
    if args.action == "list":
        return _list(cfg)
    out = Path(cfg.out).expanduser() if cfg.out else default_corpus_dir()
    manifest = build_corpus(out, max_side=cfg.max_side, missing=cfg.missing, force=cfg.force,
                            progress=log.debug, cutouts=cfg.cutouts)
    counts = {k: {"version": v["version"], "train": v.get("train", v.get("cutouts_train", 0)),
                  "val": v.get("val", v.get("cutouts_val", 0))} for k, v in manifest["packages"].items()}
    if cfg.json:
        print(json.dumps({"out": str(out), "count": manifest["count"], "packages": counts}, indent=2))
    else:
        for k, v in counts.items():
            print(f"{k:30s} {v['version']:16s} train {v['train']:3d}  val {v['val']:3d}")
        n_cut = len(manifest.get("cutouts", []))
        print(f"{manifest['count']} photos" + (f" and {n_cut} cut-out objects" if n_cut else "")
              + f" in {out} (read it as --data photos:{out})")
    return 0
