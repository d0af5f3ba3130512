import pytest
from pydantic import ValidationError

from detectors.spec import AlertPolicySpec, FeatureSpec, ModelSpec, MonitorSpec, TriggerSpec


def model(**kw):
    base = dict(name="m", classes=["a", "b"], versions=["v1"], features=[FeatureSpec(name="x", type="numeric")])
    base.update(kw)
    return ModelSpec(**base)


def test_valid_defaults():
    m = model()
    assert m.reference_size == 2000 and m.canary.enabled
    assert MonitorSpec(models=[m]).max_tracked_versions == 16


@pytest.mark.parametrize("kw, msg", [
    (dict(classes=["a", "a"]), "duplicate classes"),
    (dict(stable_version="v9"), "not in versions"),
    (dict(triggers=[TriggerSpec(name="t", feature="nope", equals="x")]), "unknown feature"),
    (dict(triggers=[TriggerSpec(name="t", feature="x", one_of=["a"])]), "one_of needs a categorical"),
    (dict(unknown_key=1), "Extra inputs"),
])
def test_model_errors(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        model(**kw)


def test_feature_and_trigger_errors():
    with pytest.raises(ValidationError, match="must be below max"):
        FeatureSpec(name="x", type="numeric", min=2, max=1)
    with pytest.raises(ValidationError, match="only apply to numeric"):
        FeatureSpec(name="x", type="categorical", min=0)
    with pytest.raises(ValidationError, match="needs a condition"):
        TriggerSpec(name="t", feature="x")
    with pytest.raises(ValidationError, match="use one of"):
        TriggerSpec(name="t", feature="x", equals="a", above=1)


def test_alert_policy_signals_validated():
    with pytest.raises(ValidationError, match="unknown signals"):
        AlertPolicySpec(page_signals=["nope"])


def test_duplicate_models():
    with pytest.raises(ValidationError, match="duplicate model names"):
        MonitorSpec(models=[model(), model()])
