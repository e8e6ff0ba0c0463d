"""The drift monitor's state: plain, serialisable dicts, one ``VersionState`` per
``model@version`` in the drift agent's table, and how it starts.

Bounds on that state, all from the policy:

* features tracked: ``max_features`` (the names of up to ``MAX_UNTRACKED_NAMES``
  more are kept in ``untracked`` for the report);
* open windows: ``max_open_windows`` (the oldest closes early beyond that).
  Windows are counted in panes (``streams.windows``): tumbling windows are
  their own panes; hopping windows (``hop``) keep panes of ``hop``, at most
  ``max_open_windows + window / hop - 1`` of them, and each window is the
  merge of its ``window / hop`` panes when it closes. Calendar windows are
  tumbling (one pane each, however long the period); count windows keep one
  open window, the partial chunk, plus ``counted``. The bounds below are
  per pane;
* per numeric feature and window: ``bins + 1`` counts, or a log-bucket sketch
  (at most 2,048 buckets) while the reference is still being built;
* per categorical feature and window: ``CategoricalSummary.MAX_CATEGORIES`` counts;
* multivariate signal, per window: six numbers (count, sum and sum of squares
  of the events' reconstruction errors; events beyond the limits, the farthest
  value and its feature; about 100 bytes as JSON); while the warm-up reference
  is being built, instead, two halves of moments of ``d`` summed columns
  (``p <= multivariate_max_features`` numeric features and ``mv.SLOTS``
  indicator columns for each of ``q <= mv.MAX_CATEGORICAL`` categorical ones),
  ``2 + 5d + d(d+1)`` numbers (1,082 for d = 30, about 20 KB as JSON; 4,218 for
  the defaults' largest d = 62) per open window and in ``warmup``; and, in the
  version's state, the categories of the indicator columns (at most
  ``mv.SLOTS`` per categorical feature) and each numeric feature's limits (two
  numbers per tracked feature, until the reference is built).

The reference is the first window(s) of the version, until at least
``min_reference_events`` events have been seen (a *warm-up* reference; reports
say so). Numeric bins are the reference's quantiles (``bins`` of them);
categorical bins are its ``top_k`` categories plus "other". Its multivariate
part (``streams.drift.multivariate``) is a PCA of the first
``multivariate_max_features`` numeric features by name and the first
``mv.MAX_CATEGORICAL`` categorical ones (frequency-encoded), chosen when the
first warm-up batch with two of them arrives (features first seen later are not
in it), fitted on the warm-up's even events and measured on its odd ones:
``5e + ke + 4`` numbers for ``e`` features and ``k < e`` components, plus at most
``mv.SLOTS`` category frequencies per categorical feature: at most 1,360 (about
27 KB as JSON) for e = 34.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NotRequired, TypedDict, cast

from schemas.reference import ReferenceProfile
from schemas.reports import ReferenceInfo
from streams.batch import Categories, Kind
from streams.drift import multivariate as mv
from streams.drift.reference import ReferenceFeature
from streams.summaries.categorical import CategoricalState
from streams.summaries.numeric import NumericState

#: Pseudo-features for the model's output; reported under ``prediction``.
SCORE = "@score"
PREDICTION = "@prediction"
OUTPUTS = {SCORE: "score", PREDICTION: "class"}


def policy_name(name: str) -> str:
    """The name a feature has in the report and in the policy's ``drift.features``:
    the outputs are ``prediction.score`` and ``prediction.class``."""
    return f"prediction.{OUTPUTS[name]}" if name in OUTPUTS else name


#: Names of features beyond ``max_features`` remembered for the report.
MAX_UNTRACKED_NAMES = 20
#: The multivariate signal's name in ``drifted_features``, and its key in ``streaks``.
MULTIVARIATE = "multivariate.reconstruction_error"
MV_STREAK = "@multivariate"
Cats = list[str | None] | Categories


class WindowAcc(TypedDict):
    start_ms: int
    n: int
    numeric: dict[str, NumericState]
    categorical: dict[str, CategoricalState]
    # [n, sum, sum of squares] of reconstruction errors; None: some events of the
    # window were counted before the reference was complete, so it is not judged.
    mv: NotRequired[mv.ErrorSums | None]
    mv_halves: NotRequired[mv.Halves | None]  # warm-up only: moments of halves A and B
    # count windows (``window: {events: N}``): the earliest and latest event times
    first_ms: NotRequired[int]
    last_ms: NotRequired[int]


class Reference(TypedDict):
    """Warm-up: built from the version's first windows. Profile: from training data
    (``driftline reference build``); then ``start_ms``/``end_ms`` are its build time."""

    kind: Literal["warmup", "profile"]
    start_ms: int
    end_ms: int
    n: int
    features: dict[str, ReferenceFeature]
    source: NotRequired[str]
    # None: not enough numeric features; absent: built before the signal existed.
    multivariate: NotRequired[mv.PcaReference | None]


class VersionState(TypedDict):
    model: str
    model_version: str
    kinds: dict[str, Kind]
    anchors: dict[str, float]
    untracked: list[str]
    reference: Reference | None
    warmup: WindowAcc | None
    windows: dict[str, WindowAcc]
    watermark_ms: int | None
    closed_until_ms: int | None
    late: int
    streaks: dict[str, int]  # windows in a row each judged feature has been flagged
    mv_names: NotRequired[list[str]]  # warm-up only: the multivariate signal's features
    # Warm-up only: its categorical features -> the categories of their indicator
    # columns (at most mv.SLOTS each, the first seen); absent in states of earlier
    # versions (numeric features only).
    mv_categorical: NotRequired[dict[str, list[str]]]
    # Warm-up only: numeric feature -> [lo, hi] its values are clipped to in the
    # multivariate signal (mv.limits_of its first values); absent: not clipped.
    mv_limits: NotRequired[dict[str, list[float] | None]]
    # While the reference changes: the one windows before reference_from_ms keep.
    previous_reference: NotRequired[Reference | None]
    reference_from_ms: NotRequired[int | None]
    # Stored only: what the references kept apart from the state were (see
    # streams.drift.reference_switch, which puts them back).
    reference_stamp: NotRequired[str | None]
    # Count windows (``window: {events: N}``) only: the version's events counted so
    # far, in the order the agent folds them; event i is in window ``i // N``. Stored
    # with the windows, so a restart (crash and redo) closes the same windows.
    counted: NotRequired[int]
    # Messages in a row wholly beyond the future bound (streams.windows.bound_future),
    # kept by the caller that applies it.
    ahead: NotRequired[list[int] | None]


def reference_info(ref: Reference) -> ReferenceInfo:
    if ref["kind"] == "warmup":
        return ReferenceInfo(
            kind="warmup",
            window_start=iso(ref["start_ms"]),
            window_end=iso(ref["end_ms"]),
            n=ref["n"],
            note="warm-up reference: the first events of this version",
        )
    return ReferenceInfo(
        kind="profile",
        n=ref["n"],
        note=f"reference profile from {ref.get('source') or 'training data'}, built "
        f"{iso(ref['start_ms']).isoformat()}",
    )


def iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def reference_from_profile(profile: ReferenceProfile) -> Reference:
    """The reference a published ``ReferenceProfile`` stands for, multivariate part included."""
    at = int(profile.created_at.timestamp() * 1000)
    return {
        "kind": "profile",
        "start_ms": at,
        "end_ms": at,
        "n": profile.n,
        "source": profile.source,
        "features": {
            k: cast(ReferenceFeature, v.model_dump()) for k, v in profile.features.items()
        },
        "multivariate": _pca_of(profile),
    }


def _pca_of(profile: ReferenceProfile) -> mv.PcaReference | None:
    """The profile's multivariate part; a profile built before values were clipped
    (``limits`` null) is read without limits: nothing is clipped."""
    if profile.multivariate is None:
        return None
    pca = profile.multivariate.model_dump()
    if pca.get("limits") is None:
        pca.pop("limits", None)
    return cast(mv.PcaReference, pca)




def initialize(model: str, model_version: str) -> VersionState:
    """A version's state before its first event."""
    return {
        "model": model,
        "model_version": model_version,
        "kinds": {},
        "anchors": {},
        "untracked": [],
        "reference": None,
        "warmup": None,
        "windows": {},
        "watermark_ms": None,
        "closed_until_ms": None,
        "late": 0,
        "streaks": {},
        # set later, here from the start: the stored bytes then do not depend on which
        # message first set them (a state is compared byte for byte across recoveries)
        "previous_reference": None,
        "reference_from_ms": None,
        "reference_stamp": None,
        "ahead": None,
    }


def new_window(start_ms: int) -> WindowAcc:
    return {"start_ms": start_ms, "n": 0, "numeric": {}, "categorical": {}}
