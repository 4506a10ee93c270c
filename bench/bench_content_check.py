"""Content-check benchmark: what it catches, what it wrongly refuses, what it costs.

- false refusals and flags on the model's validation split (where the cut-offs were chosen)
  and on the site sample (never used to choose anything), with exact 95 % intervals, with
  the shipped cut-offs and after ``calibrate --site`` refits them on the site's own films
  (the site figure after is in sample; its leave-one-out count is printed too);
- catches on the non-chest reference set (``model/nonchest.py``), as header-less PNGs and
  inside a CR chest PA header, through the worker's reader, with both sets of cut-offs; on
  the adult chest film of ``tests/adults.py`` (seven encodings: never refused as not a chest
  radiograph); and on inverted and gamma-changed validation images;
- why children cross the cut-off: the distance of 200 validation images under controlled
  changes (exposure, rotation, framing of a small child in a large field, a tight crop,
  drawn lines, tubes and ECG electrodes);
- the cost per image: the logit alone (the network) against the two-output model the worker
  runs (logit and distance in one pass), batches of 1 and 32. Usage:

    python bench/bench_content_check.py [--model DIR] [--data ../shared/data/pediatric-cxr]
        [--compare OLD_CONTENT_CHECK.npz]

``--compare`` repeats the refusal figures with another content check of the same model
(the one this branch replaced, for the before/after table).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image, ImageDraw
from scipy.stats import beta

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest import load_scorable, read_image  # noqa: E402
from model import dataset  # noqa: E402
from model.content_check import CONTENT_CHECK_FILE, ContentCheck, site_cut_offs  # noqa: E402
from model.nonchest import nonchest_images, to_uint8  # noqa: E402
from model.predict import Classifier  # noqa: E402
from model.preprocess import resize_square, to_model_levels  # noqa: E402
from tests import adults  # noqa: E402
from tests.ingest.dicom_factory import base_dataset, set_pixels, write  # noqa: E402


def interval(k: int, n: int) -> str:
    """Clopper-Pearson 95 % interval of k/n, in percent."""
    low = beta.ppf(0.025, k, n - k + 1) if k else 0.0
    high = beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return f"{k}/{n} = {k / n:.1%} (95% CI {low:.1%}-{high:.1%})"


def distances(classifier: Classifier, images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(
        [classifier.logits_and_distances(images[i : i + 32])[1] for i in range(0, len(images), 32)]
    )


def report_population(name: str, found: np.ndarray, check: ContentCheck) -> None:
    rejected = int((found > check.reject_threshold).sum())
    flagged_or = int((found > check.population_threshold).sum())
    print(
        f"  {name}: rejected {interval(rejected, len(found))}; "
        f"rejected or flagged {interval(flagged_or, len(found))}"
    )


def caught(found: np.ndarray, check: ContentCheck) -> str:
    return interval(int((found > check.reject_threshold).sum()), len(found))


def with_check(classifier: Classifier, npz: Path) -> Classifier:
    """The same network and card with another content_check.npz."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(npz, Path(folder) / CONTENT_CHECK_FILE)
        check = ContentCheck.load(Path(folder), classifier.version)
    return Classifier(classifier.network, classifier.card, check)


def _draw_devices(level: np.ndarray, seed: int) -> np.ndarray:
    """Bright wires, a tube and three ECG electrodes drawn on a 192 px model-level image."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(level)
    draw = ImageDraw.Draw(image)
    for _ in range(2):  # leads running off the film
        points = [(float(x), float(y)) for x, y in rng.uniform(10, 182, size=(4, 2))]
        draw.line(points, fill=250, width=2)
    draw.line([(96, 0), (98, 60), (100, 110)], fill=245, width=4)  # a tube down the midline
    for x, y in rng.uniform(40, 150, size=(3, 2)):
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=250)
    return np.asarray(image)


def _framed(level: np.ndarray, scale: float) -> np.ndarray:
    """A small child in a large field (scale < 1, black around) or a tight crop (> 1)."""
    size = level.shape[0]
    if scale < 1:
        inner = int(size * scale)
        small = np.asarray(Image.fromarray(level).resize((inner, inner), Image.BILINEAR))
        out = np.zeros_like(level)
        start = (size - inner) // 2
        out[start : start + inner, start : start + inner] = small
        return out
    crop = int(size / scale)
    start = (size - crop) // 2
    return np.asarray(
        Image.fromarray(level[start : start + crop, start : start + crop]).resize(
            (size, size), Image.BILINEAR
        )
    )


PERTURBATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "none": lambda x, i: x,
    "under-exposed (gamma 1.6)": lambda x, i: ((x / 255.0) ** 1.6 * 255).astype(np.uint8),
    "over-exposed (gamma 0.6)": lambda x, i: ((x / 255.0) ** 0.6 * 255).astype(np.uint8),
    "rotated 10 degrees": lambda x, i: np.asarray(Image.fromarray(x).rotate(10 if i % 2 else -10)),
    "small child in a large field (65 %)": lambda x, i: _framed(x, 0.65),
    "tight crop (130 %)": lambda x, i: _framed(x, 1.3),
    "lines, tube and ECG electrodes": _draw_devices,
}


def why_children_cross(classifiers: dict[str, Classifier], sample: list[np.ndarray]) -> None:
    """Median distance and refusals under each change, in units of each check's cut-off."""
    levels = [to_model_levels(resize_square(g, 192)) for g in sample]
    print("why children cross the cut-off (200 validation images; distance / refusal cut-off):")
    for name, change in PERTURBATIONS.items():
        changed = [change(level, i).astype(np.float32) for i, level in enumerate(levels)]
        parts = []
        for label, classifier in classifiers.items():
            check = classifier.content_check
            assert check is not None
            found = distances(classifier, changed) / check.reject_threshold
            parts.append(
                f"{label}: median {np.median(found):.2f}, refused {int((found > 1).sum())}/200"
            )
        print(f"  {name:38s} " + "; ".join(parts))


def per_batch_ms(run, inputs: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for batch in inputs:
        run(batch)
    return (time.perf_counter() - started) / len(inputs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/pediatric-cxr")
    parser.add_argument("--compare", type=Path, default=None, help="another content_check.npz")
    args = parser.parse_args()
    classifier = Classifier.load(args.model)
    check = classifier.content_check
    if check is None:
        raise SystemExit("this model has no content check: run `cxr-triage content-check fit`")
    print(
        f"model {classifier.version}; content check {check.dimension} features, flag above "
        f"{check.population_threshold:.2f}, reject above {check.reject_threshold:.2f}, "
        f"ceiling {check.ceiling:.2f}"
    )
    checks = {"this check": classifier}
    if args.compare is not None:
        checks["compared check"] = with_check(classifier, args.compare)

    split = dataset.training_split(args.data, classifier.card)
    validation = [read_image(r.path).pixels for r in split.validation]
    site_dir = args.data.parent / "pediatric-cxr-site"
    site: list[np.ndarray] = []
    if (site_dir / "MANIFEST.csv").is_file():
        with (site_dir / "MANIFEST.csv").open(newline="") as f:
            site = [
                load_scorable(site_dir / r["label"] / r["filename"])[0].pixels
                for r in csv.DictReader(f)
            ]
    with tempfile.TemporaryDirectory() as folder:
        png_images, dicom_images, names = [], [], []
        for name, grey in nonchest_images():
            pixels = to_uint8(grey)
            png = Path(folder) / f"{name}.png"
            Image.fromarray(pixels, mode="L").save(png)
            dicom = write(
                set_pixels(base_dataset(*pixels.shape), pixels), Path(folder) / f"{name}.dcm"
            )
            png_images.append(load_scorable(png)[0].pixels)
            dicom_images.append(load_scorable(dicom)[0].pixels)
            names.append(name)
        adult_images = (
            [load_scorable(p)[0].pixels for p in adults.adult_chest_files(Path(folder)).values()]
            if adults.available()
            else []
        )
    sample = validation[:200]
    inverted = [255.0 - to_model_levels(g) for g in sample]
    curve = [np.asarray(to_model_levels(g), dtype=np.float32) ** 0.5 for g in sample]

    for label, scorer in checks.items():
        shipped = scorer.content_check
        assert shipped is not None
        found = {
            "validation split (cut-offs placed here)": distances(scorer, validation),
            "site sample (measured only)": distances(scorer, site) if site else np.zeros(0),
        }
        nonchest = {"PNG": distances(scorer, png_images), "DICOM": distances(scorer, dicom_images)}
        calibrated = site_cut_offs(shipped, found["site sample (measured only)"]) if site else None
        print(f"{label} ({shipped.dimension} features, layers {', '.join(shipped.layers)}):")
        for stage, cut in (("shipped cut-offs", shipped), ("after calibrate --site", None)):
            current = cut if cut is not None else (calibrated.check if calibrated else None)
            if current is None:
                continue
            print(
                f" {stage}: flag above {current.population_threshold:.2f}, reject above "
                f"{current.reject_threshold:.2f}"
            )
            for name, values in found.items():
                if len(values):
                    report_population(name, values, current)
            if cut is None and calibrated is not None:
                print(
                    "  site sample, leave-one-out refusals: "
                    f"{calibrated.record['refused_after_leave_one_out']}/{len(site)}"
                )
            print(f"  non-chest set as header-less PNG: caught {caught(nonchest['PNG'], current)}")
            print(
                "  non-chest set in a CR chest PA header: caught "
                f"{caught(nonchest['DICOM'], current)}"
            )
            missed = [
                n
                for n, d in zip(names, nonchest["PNG"], strict=True)
                if d <= current.reject_threshold
            ]
            print(f"  missed: {', '.join(missed) or 'none'}")
            if adult_images:
                adult = distances(scorer, adult_images)
                refused = adult > current.reject_threshold
                flagged = (adult > current.population_threshold) & ~refused
                print(
                    f"  adult chest film, {len(adult)} encodings: refused as not a chest "
                    f"radiograph {int(refused.sum())}, flagged {int(flagged.sum())}"
                    f" (distance {adult.min():.1f}-{adult.max():.1f})"
                )
            for name, images in (
                ("inverted (MONOCHROME1 shown as 2)", inverted),
                ("gamma 0.5 curve", curve),
            ):
                report_population(f"validation images, {name}", distances(scorer, images), current)
    why_children_cross(checks, sample)

    network, batch_in = classifier.network, classifier.inputs
    scoring = classifier._scoring  # the two-output model the worker runs
    assert scoring is not None
    pool = (validation * 2)[:1024]
    for batch in (1, 32):
        repeats = 32 if batch == 1 else 8
        inputs = [batch_in(pool[i : i + batch]) for i in range(0, batch * repeats, batch)]
        network.predict_on_batch(inputs[0])
        scoring.predict_on_batch(inputs[0])
        logit_ms, both_ms = [], []
        for _ in range(5):  # alternate, keep the best round of each: the machine is shared
            logit_ms.append(per_batch_ms(network.predict_on_batch, inputs) / batch)
            both_ms.append(per_batch_ms(scoring.predict_on_batch, inputs) / batch)
        logit, both = min(logit_ms), min(both_ms)
        print(
            f"batch {batch:>2}: network, logit only {logit:.2f} ms/img; logit + content-check "
            f"distance {both:.2f} ms/img; the check adds {(both - logit) / logit:+.1%} "
            "(best of 5 alternating rounds)"
        )
    layers = [name for name in check.layers if not name.startswith("input_")]
    extra = check.dimension * check.dimension + sum(
        int(np.prod(network.get_layer(name).output.shape[1:])) for name in layers
    )
    extra += 2 * 192 * 192  # the input's histogram and block averages: one pass each
    print(
        f"the check's extra arithmetic: {extra / 1e6:.2f} M multiply-adds per image "
        f"(global averages, the input's histogram and layout, the {check.dimension} x "
        f"{check.dimension} whitening)"
    )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
