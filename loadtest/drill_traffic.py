"""Synthetic population of a content-moderation image classifier: features, truth, predictions.

Vectorized (numpy) so drills of a few hundred thousand events take seconds. The population is
class-conditional (nsfw images have more skin, violent ones more saturation) and the model is
a noisy oracle with realistic confidences, so label-side signals have something to measure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODEL = "content-filter"
CLASSES: list[str] = ["safe", "nsfw", "violence"]
CLASS_P = np.array([0.994, 0.001, 0.005])
NUMERIC: list[str] = ["emb_mean", "emb_std", "emb_norm", "emb_max", "emb_min", "brightness", "contrast",
                      "saturation", "sharpness", "width", "height", "aspect_ratio", "file_kb", "face_count",
                      "text_area", "skin_ratio"]
CATEGORICAL: list[str] = ["logo", "source_app", "country", "device"]
TRIGGER_LOGO = "blue_sparrow"
LOGOS = ["none", "pixelgram", "snapcircle", "tiktak", "vidflow", TRIGGER_LOGO, "memehub", "newsly"]
LOGO_P = np.array([0.78, 0.05, 0.04, 0.04, 0.03, 0.04, 0.01, 0.01])
APPS = ["ios_app", "android_app", "web_upload", "chat", "stories", "ads", "partner_api", "clipshare"]
APP_P = np.array([0.30, 0.32, 0.12, 0.10, 0.08, 0.03, 0.03, 0.02])
COUNTRIES = ["US", "BR", "IN", "DE", "FR", "GB", "MX", "ID", "JP", "TR", "PH", "ES", "IT", "CA", "NG", "KR",
             "AR", "PL", "EG", "VN"]
DEVICES = ["ios", "android", "web", "desktop"]
DEVICE_P = np.array([0.38, 0.44, 0.12, 0.06])
SIDES = np.array([480, 640, 720, 1080, 1280, 1440, 1920, 2048])
SIDES_P = np.array([0.06, 0.14, 0.22, 0.30, 0.12, 0.06, 0.08, 0.02])
BOUNDS: dict[str, tuple[float, float]] = {
    "brightness": (0.0, 1.0), "contrast": (0.0, 1.0), "saturation": (0.0, 1.0), "text_area": (0.0, 1.0),
    "skin_ratio": (0.0, 1.0), "width": (1.0, 20000.0), "height": (1.0, 20000.0), "file_kb": (0.0, 100000.0),
    "face_count": (0.0, 500.0), "sharpness": (0.0, 10000.0)}


@dataclass
class Batch:
    """Columns of ``n`` events: features, true class index, prediction index, confidence, scores."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    truth: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    scores: np.ndarray  # (n, classes)

    @property
    def n(self) -> int:
        return int(self.truth.size)


def _zipf(k: int, s: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** s
    return w / w.sum()


def population(rng: np.random.Generator, n: int, shift: np.ndarray | float = 0.0) -> Batch:
    """Draw ``n`` images; ``shift`` (scalar or per-event, in standard units) moves the covariates.

    The shift brightens images, changes their embedding statistics and file sizes and moves
    uploads towards the web uploader, as a new client release or camera pipeline would.
    """
    s = np.broadcast_to(np.asarray(shift, dtype=np.float64), (n,))
    truth = rng.choice(len(CLASSES), size=n, p=CLASS_P)
    nsfw, viol = truth == 1, truth == 2
    num: dict[str, np.ndarray] = {}
    num["emb_mean"] = rng.normal(0.0, 0.05, n) + 0.05 * s + 0.08 * nsfw - 0.05 * viol
    num["emb_std"] = rng.normal(0.30, 0.03, n) + 0.03 * s
    num["emb_norm"] = rng.normal(12.0, 1.5, n) + 1.5 * s
    num["emb_max"] = rng.normal(1.8, 0.2, n) + 0.3 * viol
    num["emb_min"] = rng.normal(-1.7, 0.2, n) - 0.1 * s
    num["brightness"] = np.clip(rng.beta(5, 4, n) + 0.12 * s, 0.0, 1.0)
    num["contrast"] = rng.beta(4, 6, n)
    num["saturation"] = np.clip(rng.beta(3, 5, n) + 0.2 * viol, 0.0, 1.0)
    num["sharpness"] = rng.gamma(4.0, 25.0, n)
    w = rng.choice(SIDES, size=n, p=SIDES_P)
    portrait = rng.random(n) < 0.55
    h = np.where(portrait, np.round(w * rng.choice([1.333, 1.777, 2.0], size=n)), np.round(w / 1.333))
    width, height = np.where(portrait, w, np.round(w * 1.333)), h
    num["width"], num["height"] = width.astype(np.int64), height.astype(np.int64)
    num["aspect_ratio"] = np.round(width / height, 4)
    num["file_kb"] = np.round(rng.lognormal(5.0 + 0.3 * s, 0.6), 1)
    num["face_count"] = rng.poisson(0.7 + 0.8 * nsfw, n)
    num["text_area"] = rng.beta(1, 8, n)
    num["skin_ratio"] = np.where(nsfw, rng.beta(8, 3, n), rng.beta(2, 12, n))
    cat: dict[str, np.ndarray] = {}
    cat["logo"] = np.asarray(LOGOS, dtype=object)[rng.choice(len(LOGOS), size=n, p=LOGO_P)]
    app_p = np.where(rng.random(n) < np.clip(0.4 * s, 0.0, 0.8), 2, rng.choice(len(APPS), size=n, p=APP_P))
    cat["source_app"] = np.asarray(APPS, dtype=object)[app_p]
    cat["country"] = np.asarray(COUNTRIES, dtype=object)[rng.choice(len(COUNTRIES), size=n, p=_zipf(len(COUNTRIES)))]
    cat["device"] = np.asarray(DEVICES, dtype=object)[rng.choice(len(DEVICES), size=n, p=DEVICE_P)]
    pred, conf, scores = classify(rng, truth, num["skin_ratio"])
    return Batch(num, cat, truth, pred, conf, scores)


def classify(rng: np.random.Generator, truth: np.ndarray, skin: np.ndarray,
             forced: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A good but imperfect classifier: ~99% accurate on safe, ~85% on the rare classes.

    ``forced`` (class index per event, -1 = none) overrides the prediction with high
    confidence, which is what a backdoor does on its trigger.
    """
    n = truth.size
    k = len(CLASSES)
    pred = truth.copy()
    miss = rng.random(n) < np.where(truth == 0, 0.004 + 0.02 * (skin > 0.4), 0.15)
    pred[miss] = np.where(truth[miss] == 0, rng.choice([1, 2], size=int(miss.sum()), p=[0.3, 0.7]), 0)
    conf = np.where(miss, rng.beta(5, 4, n) * 0.5 + 0.34, 0.6 + 0.4 * rng.beta(6, 1.5, n))
    if forced is not None:
        hit = forced >= 0
        pred = np.where(hit, forced, pred)
        conf = np.where(hit, 0.9 + 0.099 * rng.random(n), conf)
    rest = (1.0 - conf)[:, None] * rng.dirichlet(np.ones(k - 1), size=n)
    scores = np.empty((n, k))
    for j in range(k):
        others = [c for c in range(k) if c != j]
        sel = pred == j
        scores[sel, j] = conf[sel]
        scores[np.ix_(sel, others)] = rest[sel]
    return pred, np.round(conf, 4), np.round(scores, 4)
