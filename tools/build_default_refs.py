"""Build the reference set built into pikfix (``pikfix/default_refs``): photos, credits, store.

    .venv/bin/python tools/build_default_refs.py PHOTOS_DIR FACE_RECOGNITION_SRC_DIR

PHOTOS_DIR is the development photo folder (see its SOURCES.md and CREDITS-gcompris.txt);
FACE_RECOGNITION_SRC_DIR is the unpacked source archive of PyPI ``face_recognition==1.3.0``
(``pip download --no-deps --no-binary :all: face_recognition==1.3.0``), whose test images are
official White House photographs, works of the US government.  Only public-domain and CC0
photos are taken, none of the validation split of the shipped model (seed 0, val_fraction
0.1), each downscaled to 512 px on the long side.  The store is built with the default
retrieval features and its manifest records the photo folder relative to the store, so the
installed package finds it wherever it lives.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from PIL import Image

from pikfix.retrieval import build_or_update
from pikfix.retrieval.store import MANIFEST, manifest_checksum

LONG_SIDE = 512
QUALITY = 88
OUT = Path(__file__).resolve().parent.parent / "pikfix" / "default_refs"
WH = "Official White House photograph (Pete Souza), work of the US federal government"

# (output name, source, subject, licence, author / credit, original)
PHOTOS = [
    ("people-astronaut.jpg", "photos:skimage__astronaut.jpg", "people", "Public domain (NASA)", "NASA", "scikit-image data: astronaut"),
    ("people-biden.jpg", "face:biden.jpg", "people", "Public domain (US government work)", WH, "face_recognition 1.3.0 tests/test_images/biden.jpg"),
    ("people-obama.jpg", "face:obama.jpg", "people", "Public domain (US government work)", WH, "face_recognition 1.3.0 tests/test_images/obama.jpg"),
    ("people-obama2.jpg", "face:obama2.jpg", "people", "Public domain (US government work)", WH, "face_recognition 1.3.0 tests/test_images/obama2.jpg"),
    ("people-obama3.jpg", "face:obama3.jpg", "people", "Public domain (US government work)", WH, "face_recognition 1.3.0 tests/test_images/obama3.jpg"),
    ("place-eiffel-tower.jpg", "photos:gcompris__france-eiffelTower.jpg", "places", "Public domain", "Tognopop", "https://commons.wikimedia.org/wiki/File:Eiffel_Tower_20051010.jpg"),
    ("place-mont-st-michel.jpg", "photos:gcompris__france-montStMichel.jpg", "places", "CC0-1.0", "Ali Sabbagh", "https://commons.wikimedia.org/wiki/File:Mont_Saint-Michel_IMG_5109_(48875955288).jpg"),
    ("place-neuschwanstein.jpg", "photos:gcompris__germany-neuschwansteinCastle.jpg", "places", "CC0-1.0", "cameralends", "https://commons.wikimedia.org/wiki/File:Neuschwanstein_Castle_(532850).jpg"),
    ("place-hawa-mahal.jpg", "photos:gcompris__india-hawaMahal.jpg", "places", "Public domain", "Janwiki", "https://commons.wikimedia.org/wiki/File:Hawa_Mahal,_Jaipur,_India.jpg"),
    ("place-mount-rushmore.jpg", "photos:gcompris__usa-mountRushmore.jpg", "places", "CC0-1.0", "Eekim", "https://commons.wikimedia.org/wiki/File:Mount_Rushmore,_Keystone,_South_Dakota.jpg"),
    ("place-colosseum.jpg", "photos:gcompris__wonders-colosseum.jpg", "places", "Public domain", "Urse Ovidiu", "https://commons.wikimedia.org/wiki/File:Colosseum_Roma_2009.jpg"),
    ("place-great-wall.jpg", "photos:gcompris__wonders-greatWallofChina.jpg", "places", "CC0-1.0", "Nicolas Perrault III", "https://commons.wikimedia.org/wiki/File:Great_Wall_of_China_July_2006.JPG"),
    ("place-machu-picchu.jpg", "photos:gcompris__wonders-machuPicchu.jpg", "places", "CC0-1.0", "Guillaume Pascal", "https://commons.wikimedia.org/wiki/File:Yet_another_pic_of_machu_picchu.jpg"),
    ("place-canyon-de-chelly.jpg", "photos:gcompris__usa-canyondeChelly.jpg", "places", "Public domain", "Nikater", "https://commons.wikimedia.org/wiki/File:Canyon_de_chelly09.jpg"),
    ("place-pont-du-gard.jpg", "photos:gcompris__france-pontduGard.jpg", "places", "Public domain", "Mimova", "https://commons.wikimedia.org/wiki/File:Pontdugard.jpg"),
    ("place-statue-of-liberty.jpg", "photos:gcompris__usa-statueofLiberty.jpg", "places", "Public domain", "Ypsilonatshared", "https://commons.wikimedia.org/wiki/File:Liberty_enlightening_the_world.JPG"),
    ("place-brandenburg-gate.jpg", "photos:gcompris__germany-brandenburgGate.jpg", "places", "Public domain", "Evans1551", "https://commons.wikimedia.org/wiki/File:Brandenburg_Gate_(summer_2005).JPG"),
    ("nature-sea-shore.jpg", "photos:gcompris__resource-sea1.jpg", "nature", "CC0-1.0", "Ruthven", "https://commons.wikimedia.org/wiki/File:Parco_archeologico_di_Baia_-_via_herculanea_2.jpg"),
    ("nature-black-coral.jpg", "photos:gcompris__resource-sea4.jpg", "nature", "Public domain", "Pseudopanax", "https://commons.wikimedia.org/wiki/File:Black_coral_at_Milford_Sound_Underwater_Observatory.jpg"),
    ("nature-underwater.jpg", "photos:gcompris__resource-sea5.jpg", "nature", "Public domain", "Rita Segantini", "https://commons.wikimedia.org/wiki/File:DSCN1716.JPG"),
    ("nature-starfish.jpg", "photos:gcompris__resource-sea6.jpg", "nature", "Public domain", "U.S. Fish and Wildlife Service", "https://commons.wikimedia.org/wiki/File:Basket_starfish_underwater_astrophyton_muriatum.jpg"),
    ("animal-cat.jpg", "photos:gcompris__animals-cat.jpg", "animals", "Public domain", "Loliloli", "https://commons.wikimedia.org/wiki/File:Spielendes_K%C3%A4tzchen.JPG"),
    ("animal-cow.jpg", "photos:gcompris__animals-cow.jpg", "animals", "Public domain", "Dohduhdah", "https://commons.wikimedia.org/wiki/File:Cow-IMG_2050.JPG"),
    ("animal-duck.jpg", "photos:gcompris__animals-duck.jpg", "animals", "CC0-1.0", "Bernard Spragg", "https://commons.wikimedia.org/wiki/File:Aylesbury_Duck._(9373723157).jpg"),
    ("animal-giraffe.jpg", "photos:gcompris__animals-giraffe.jpg", "animals", "CC0-1.0", "Mike and Lara Wolfe", "https://commons.wikimedia.org/wiki/File:Giraffe_courtship_(25657342808).jpg"),
    ("animal-jaguar.jpg", "photos:gcompris__animals-jaguar.jpg", "animals", "CC0-1.0", "Frieda Bredesen", "https://commons.wikimedia.org/wiki/File:Two_Jaguar_Sisters.jpg"),
    ("animal-panda.jpg", "photos:gcompris__animals-panda.jpg", "animals", "Public domain", "Jeff Kubina", "https://commons.wikimedia.org/wiki/File:Giant_Panda_2004-03-2.jpg"),
    ("animal-sheep.jpg", "photos:gcompris__animals-sheep.jpg", "animals", "CC0-1.0", "Rob Mitchell", "https://commons.wikimedia.org/wiki/File:Sheep_(33625876592).jpg"),
    ("animal-owl.jpg", "photos:gcompris__animals-owl.jpg", "animals", "CC0-1.0", "Lepale", "https://commons.wikimedia.org/wiki/File:Owl_The_Nightbird.jpg"),
    ("animal-macaw.jpg", "photos:gcompris__animals-scarlet_macaw.jpg", "animals", "CC0-1.0", "Dcoetzee", "https://commons.wikimedia.org/wiki/File:Scarlet_macaw_at_Cougar_Mountain_Zoological_Park.jpg"),
    ("animal-moose.jpg", "photos:gcompris__animals-moose.jpg", "animals", "Public domain", "Ryan Hagerty", "https://commons.wikimedia.org/wiki/File:Male_Moose.jpg"),
    ("animal-polar-bear.jpg", "photos:gcompris__animals-polar_bear.jpg", "animals", "Public domain", "anonymous", "https://commons.wikimedia.org/wiki/File:Churchill_Wildlife_Management_Area_polar_bear30.JPG"),
    ("animal-chicken.jpg", "photos:gcompris__animals-chicken.jpg", "animals", "Public domain", "Tranquilles", "https://commons.wikimedia.org/wiki/File:Chickens_at_Tranquilles_B%26B.JPG"),
]


def main(photos_dir: Path, face_dir: Path) -> None:
    sources = {"photos": photos_dir, "face": face_dir / "tests" / "test_images"}
    photo_out, store_out = OUT / "photos", OUT / "store"
    shutil.rmtree(photo_out, ignore_errors=True)
    shutil.rmtree(store_out, ignore_errors=True)
    photo_out.mkdir(parents=True)
    lines = [
        "# The built-in reference set",
        "",
        "Photos used by `pikfix fix` when no `--ref`, `--refs` or `--index` is given, downscaled to",
        f"{LONG_SIDE} px on the long side. All are public domain or CC0; built by `tools/build_default_refs.py`.",
        "",
        "| file | subject | licence | author / credit | original |",
        "|---|---|---|---|---|",
    ]
    for name, source, subject, licence, author, original in PHOTOS:
        kind, file = source.split(":", 1)
        image = Image.open(sources[kind] / file).convert("RGB")
        image.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
        image.save(photo_out / name, quality=QUALITY)
        lines.append(f"| {name} | {subject} | {licence} | {author} | {original} |")
    (OUT / "CREDITS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    build_or_update(photo_out, store_out, device="cpu")
    manifest_path = store_out / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["refs_dir"] = "../photos"  # relative to the store: the package may be installed anywhere
    manifest["checksum"] = manifest_checksum(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(PHOTOS)} photos, {total / 1e6:.1f} MB in {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
