"""Pure stream algorithms: windows, bounded summaries, drift metrics; no Kafka, no clock.

Every kernel here has one shape: a fold over plain, serialisable state (dicts,
lists, numbers, strings: what the agent stores in its table and a replay
rebuilds), held apart from the object that folds it (configuration and caches
only). Its functions are:

* ``initialize``: the state before the first event;
* ``update``: count a batch of events (columns, ``streams.batch``) into it;
* ``close``: close what the watermark (event time, kept in the state) has
  passed, returning the state and the reports due;
* each module's docstring says what bounds its state.

The pipelines:

=============  =====================================  ==========================================
pipeline       state                                  fold
=============  =====================================  ==========================================
drift          ``drift.state.VersionState``           ``drift.monitor.DriftMonitor``:
                                                      ``initialize``, ``update``, ``close_ready``
KPI            ``kpi.window.WindowState`` a window,   ``kpi.window.KpiWindow``: ``initialize``,
               ``kpi.series.SeriesState`` a series'   ``add_predictions``/``add_labeled``/...,
               windows                                ``report``; ``kpi.series``: ``initialize``,
                                                      ``arrive``, ``close``, ``report``
label join     entries in the agent's byte store,     ``join.LabelJoin``: ``add_predictions``,
               one per waiting prediction             ``add_labels``: matches, expired
poisoning      ``poisoning.guard.GuardState``         ``poisoning.guard.PoisoningGuard``
policy         ``policy.state.ModelState``            ``policy.decide.decide(state, event)``:
                                                      new state and commands
=============  =====================================  ==========================================

Agents (``agents/<pipeline>/``) decode, read state, call the fold, write the state
back and send the reports; nothing else.
"""

from streams.batch import FeatureBatch
from streams.windows import window_starts_ms

__all__ = ["FeatureBatch", "window_starts_ms"]
