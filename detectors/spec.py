"""Configuration of the detection core (pydantic v2 models, unknown keys rejected).

``stream/config.py`` composes :class:`MonitorSpec` with the Kafka/Redis sections; the core
only needs these models.

>>> spec = ModelSpec(name="filter", classes=["safe", "nsfw"], versions=["v1"],
...                  features=[FeatureSpec(name="x", type="numeric")])
>>> spec.reference_size
2000
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from detectors.detection import DETECTORS, SIGNALS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One model input: numeric (histogram + sequential detectors) or categorical (bounded top-k)."""

    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical"]
    min: float | None = None  # values below are counted as out-of-range (input integrity)
    max: float | None = None  # values above are counted as out-of-range (input integrity)
    bins: int = Field(default=10, ge=2, le=64)  # quantile bins learned from the reference
    top_k: int = Field(default=32, ge=1, le=1024)  # tracked categories; the rest go to "other"

    @model_validator(mode="after")
    def _check_range(self) -> "FeatureSpec":
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max only apply to numeric features")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"feature {self.name!r}: min/max must be finite")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"feature {self.name!r}: min ({self.min}) must be below max ({self.max})")
        return self


class TriggerSpec(_Strict):
    """A predicate on one feature whose events are watched for backdoor behaviour.

    Use ``equals`` or ``one_of`` (categorical or exact numeric match), or ``above`` and/or
    ``below`` (numeric, strict inequalities).
    """

    name: str = Field(min_length=1)
    feature: str = Field(min_length=1)
    equals: str | float | None = None
    one_of: list[str] | None = None
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _check_predicate(self) -> "TriggerSpec":
        exact = (self.equals is not None) + (self.one_of is not None)
        ranged = self.above is not None or self.below is not None
        if exact > 1 or (exact and ranged):
            raise ValueError(f"trigger {self.name!r}: use one of equals, one_of, or above/below")
        if not exact and not ranged:
            raise ValueError(f"trigger {self.name!r}: needs a condition (equals, one_of, above or below)")
        if self.one_of is not None and not self.one_of:
            raise ValueError(f"trigger {self.name!r}: one_of must not be empty")
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ValueError(f"trigger {self.name!r}: above ({self.above}) must be below 'below' ({self.below})")
        return self


class CanaryPolicy(_Strict):
    """When a canary counts as diverging from stable (tests must be significant AND exceed the effect size)."""

    enabled: bool = True
    min_events: int = Field(default=500, ge=50)  # canary predictions before any comparison
    window: int = Field(default=1000, ge=100)  # canary predictions per comparison window
    max_prediction_js: float = Field(default=0.01, gt=0, le=1)  # JS divergence of class rates
    max_confidence_drop: float = Field(default=0.05, gt=0, le=1)  # mean confidence canary below stable
    max_error_rate_increase: float = Field(default=0.03, gt=0, le=1)  # error rate canary above stable
    min_labels: int = Field(default=200, ge=20)  # joined labels per side before comparing error rates
    false_alarm_probability: float = Field(default=1e-4, gt=0, lt=0.5)  # per comparison
    # What rolls a canary back: ``signal`` or ``signal/detector`` entries. A
    # ``canary_divergence`` detection (canary compared with stable) always qualifies; any other
    # listed signal needs a page-severity detection on the canary while the stable version has no
    # open alert of the same signal (the drift is on the canary alone). Labeler
    # (label_disagreement), label-based (performance, label_drift) and input-side signals are
    # left out by default: they do not say the canary version is at fault.
    rollback_signals: list[str] = ["canary_divergence", "prediction_drift", "confidence_drift",
                                   "trigger/p_class_given_trigger"]

    @field_validator("rollback_signals")
    @classmethod
    def _known_rollback_signals(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s.split("/", 1)[0] not in SIGNALS
               or ("/" in s and s.split("/", 1)[1] not in DETECTORS.get(s.split("/", 1)[0], ()))]
        if bad:
            raise ValueError(f"canary.rollback_signals: unknown signal or signal/detector {bad}; "
                             f"known signals: {list(SIGNALS)}")
        return v


class ModelSpec(_Strict):
    """One monitored model: its classes, listed versions, features and triggers."""

    name: str = Field(min_length=1)
    classes: list[str] = Field(min_length=1)
    versions: list[str] = Field(min_length=1)
    stable_version: str | None = None
    features: list[FeatureSpec] = []
    triggers: list[TriggerSpec] = []
    reference_size: int = Field(default=2000, ge=100)  # first N events of a version form its reference
    label_reference_size: int = Field(default=500, ge=50)  # first N joined labels form the label reference
    reference_file: str | None = None  # profile made by `driftline profile` (loaded by stream/)
    low_confidence: float = Field(default=0.5, ge=0, le=1)
    canary: CanaryPolicy = CanaryPolicy()

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        for what, names in (("classes", self.classes), ("versions", self.versions),
                            ("features", [f.name for f in self.features]),
                            ("triggers", [t.name for t in self.triggers])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"model {self.name!r}: duplicate {what}: {dup}")
        if self.stable_version is not None and self.stable_version not in self.versions:
            raise ValueError(f"model {self.name!r}: stable_version {self.stable_version!r} is not in versions")
        kinds = {f.name: f.type for f in self.features}
        for t in self.triggers:
            if t.feature not in kinds:
                raise ValueError(f"trigger {t.name!r}: unknown feature {t.feature!r}")
            if (t.above is not None or t.below is not None) and kinds[t.feature] != "numeric":
                raise ValueError(f"trigger {t.name!r}: above/below need a numeric feature")
            if t.one_of is not None and kinds[t.feature] != "categorical":
                raise ValueError(f"trigger {t.name!r}: one_of needs a categorical feature")
        return self


class CalibrationSpec(_Strict):
    """Window sizes and the false-alarm budget thresholds are derived from.

    ``false_alarms_per_million`` is the target expected number of detections per million
    events of one (version, deployment) stream, per signal and key (feature, class, source,
    trigger) on a stationary stream; each signal splits it across its detectors. A stream
    has one key per feature, class, trigger and label source (label signals count per million
    joined labels), typically 30 to 60 in all, so the default of 0.01 is about 0.5 false
    detections per million events of a stream: at 100 events/s, one every few days.
    """

    false_alarms_per_million: float = Field(default=0.01, gt=0, le=10_000)
    window: int = Field(default=1000, ge=100, le=1_000_000)  # events per tumbling test window
    label_window: int = Field(default=500, ge=50, le=1_000_000)  # joined labels per label test window
    # CUSUM reference values (drifts) of scores (numeric features and confidence: normal scores; label sources and
    # the canary: difference scores), in standard deviations of the score: each targets shifts of about twice
    # its size; more drifts cost only log(count) of threshold
    cusum_drifts: list[float] = Field(default=[0.1, 0.25, 0.6], min_length=1, max_length=8)
    # odds ratios the CUSUMs of 0/1 indicators (class, category, never-seen, low confidence, trigger, label,
    # error) target, up and down
    rate_ratios: list[float] = Field(default=[1.5, 3.0, 8.0], min_length=1, max_length=8)
    block_size: int = Field(default=32, ge=1, le=4096)  # unused since state format 3 (per-event CUSUMs); accepted
    ph_delta: float = Field(default=0.5, gt=0)  # unused since state format 3; accepted in old configurations
    ph_alpha: float = Field(default=1 - 1e-4, gt=0.9, le=1)  # unused since state format 3; accepted
    min_shift: float = Field(default=0.0, ge=0)  # minimum rate difference for a per-source disagreement alarm
    dominance_share: float = Field(default=0.9, gt=0.5, lt=1)  # one class above this share = dominance
    min_class_labels: int = Field(default=30, ge=5)  # labels of a class per window before its error test
    min_source_labels: int = Field(default=100, ge=10)  # labels of a source per window before its test
    min_trigger_events: int = Field(default=50, ge=5)  # triggered events before P(class|trigger) is tested
    max_sources: int = Field(default=64, ge=1, le=4096)  # tracked label sources; others pooled
    max_known_categories: int = Field(default=4096, ge=1, le=1_000_000)  # reference values kept for "unseen"


    @field_validator("cusum_drifts")
    @classmethod
    def _drifts(cls, v: list[float]) -> list[float]:
        if any(not (0.01 <= d <= 1.5) for d in v):
            raise ValueError("cusum_drifts must lie in [0.01, 1.5] (standard deviations of the rank score)")
        return v

    @field_validator("rate_ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not (1.05 <= r <= 1000) for r in v):
            raise ValueError("rate_ratios must lie in [1.05, 1000]")
        return v


class AlertPolicySpec(_Strict):
    """Deduplication, cool-down, grouping and resolution, all on event time."""

    cooldown_seconds: float = Field(default=300.0, ge=0)
    group_window_seconds: float = Field(default=5.0, ge=0)
    resolve_after_quiet_seconds: float = Field(default=600.0, gt=0)
    page_signals: list[str] = ["version_integrity", "trigger", "label_disagreement", "performance",
                               "prediction_drift", "canary_divergence"]

    @field_validator("page_signals")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SIGNALS]
        if bad:
            raise ValueError(f"unknown signals {bad}; known: {list(SIGNALS)}")
        return v


class MonitorSpec(_Strict):
    """Everything the core needs: the monitored models and shared calibration/alerting."""

    models: list[ModelSpec] = Field(min_length=1)
    calibration: CalibrationSpec = CalibrationSpec()
    alerts: AlertPolicySpec = AlertPolicySpec()
    max_tracked_versions: int = Field(default=16, ge=1, le=1024)

    @model_validator(mode="after")
    def _unique(self) -> "MonitorSpec":
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate model names: {dup}")
        return self
