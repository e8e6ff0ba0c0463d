"""The ``driftline`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings
from schemas.errors import DriftlineError
from schemas.policy import Policy, PolicyError, load_policy


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        broker=getattr(args, "broker", None),
        app_id=getattr(args, "app_id", None),
        policy=getattr(args, "policy", None),
        partitions=getattr(args, "partitions", None),
        store=getattr(args, "store", None),
        log_level=getattr(args, "log_level", None),
        topic_prefix=getattr(args, "topic_prefix", None),
        registry=getattr(args, "registry", None),
        issuers=getattr(args, "issuers", None),
    )


def _reached(settings: Settings) -> Settings:
    """``settings`` once its broker answered; else one line naming the address, within
    ``connect_timeout_s`` (DRIFTLINE_CONNECT_TIMEOUT_S): every verb that talks to Kafka
    calls this first."""
    from agents.kafka import probe

    probe(settings.bootstrap, timeout_s=settings.connect_timeout_s)
    return settings


def _policy(settings: Settings) -> Policy:
    return load_policy(settings.policy) if settings.policy else Policy()


def cmd_broker(args: argparse.Namespace) -> int:
    from agents.dev.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    broker.start()
    try:
        print(f"embedded broker ready; bootstrap servers: {broker.bootstrap}", flush=True)
        print("(memory storage: everything is gone when it stops; Ctrl-C to stop)", flush=True)
        return broker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def cmd_worker(args: argparse.Namespace) -> int:
    from agents.app import Worker, create_app
    from agents.kafka import Security
    from agents.runtime import partitions
    from agents.topics import check_configs, ensure_topics

    settings = _settings(args)
    policy = _policy(settings)  # refuse a bad policy before touching Kafka
    if settings.issuers and {"policy", "controller"} & set(args.agents.split(",")):
        from agents.controller import issuers
        from agents.controller.keys import command_key

        issuers.load(settings, worker_key=command_key(settings))  # and a bad issuers file
    security = Security.from_env()  # and incomplete SASL/SSL settings
    logging.getLogger("driftline").info("Kafka at %s: %s", settings.bootstrap,
                                        security.describe())
    _reached(settings)  # fail at start, in one line, rather than retry for ever
    ensure_topics(settings)
    check_configs(settings)  # warns when deployments/commands would delete records
    # Each agent's table gets the partition count of its input topics; topics read
    # together with different counts stop the worker here, with what to do.
    counts = partitions.plan(settings, args.agents.split(","))
    app = create_app(settings, policy=policy, agents=args.agents.split(","), partitions=counts)
    if settings.metrics_port:
        from agents import metrics

        metrics.serve(settings.metrics_port)
    worker = Worker(app, loglevel=settings.log_level, quiet=True,
                    shutdown_grace_s=settings.shutdown_grace_s, gc_gen0=settings.gc_gen0)
    worker.execute_from_commandline()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agents.dev import demo

    return demo.run(duration_s=args.duration, rate=args.rate, time_scale=args.time_scale)


def cmd_simulate(args: argparse.Namespace) -> int:
    from agents.dev import simulate
    from agents.topics import ensure_topics

    settings = _reached(_settings(args))
    ensure_topics(settings)
    sent = simulate.run(
        bootstrap=settings.bootstrap, topic=settings.topic("predictions"), rate=args.rate,
        duration_s=args.duration, scenario=args.scenario, shift_at=args.shift_at,
        time_scale=args.time_scale, batch_size=args.batch_size, seed=args.seed,
        model=args.model, version=args.version,
        labels_topic=None if args.no_labels else settings.topic("labels"),
        label_delay_s=args.label_delay, label_share=args.label_share,
        training_topic=settings.topic("training-data")
        if args.training_data or args.scenario == "poisoning" else None,
        flood_at=args.shift_at if args.scenario == "poisoning" else None,
        form=args.format,
    )
    print(f"published {sent} prediction events ({args.format}) to "
          f"{settings.topic('predictions')}"
          + ("" if args.no_labels else f" and their labels to {settings.topic('labels')}"))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from agents.operator import tail, view

    settings = _reached(_settings(args))
    topic = settings.topic(args.topic)
    try:
        for msg in tail.messages(settings.bootstrap, topic, from_beginning=args.from_beginning,
                                 idle_timeout_s=args.idle_timeout):
            if not tail.matches(msg.value(), model=args.model, status=args.status):
                continue
            print(msg.value().decode() if args.json else view.render(args.topic, msg.value()),
                  flush=True)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_reference_build(args: argparse.Namespace) -> int:
    from agents.controller.keys import command_key
    from agents.inputs.pii import Pseudonymizer
    from agents.operator import reference_build

    settings = _settings(args)
    full = _policy(settings)
    if not args.no_publish:
        _reached(settings)  # before the work of profiling, not after it
    policy = full.drift_for(args.model)
    pii = Pseudonymizer(full.pii, command_key(settings)) if full.pii else None
    built = reference_build.profile_file(
        Path(args.data), model=args.model, version=args.version, policy=policy, pii=pii,
        roles=reference_build.ColumnRoles(
            label=args.label_column, score=args.score_column, prediction=args.prediction_column,
            ids=frozenset(_names(args.id_columns)), timestamp=args.timestamp_column,
            keep=frozenset(_names(args.keep_columns))),
        trusted_rows=args.trusted_rows, kpi=full.kpi_for(args.model))
    profile = built.profile
    print(f"reference profile for {args.model}@{args.version}: {profile.n} records, "
          f"{len(profile.features)} columns")
    print(built.describe())
    if profile.calibration is not None:
        cal = profile.calibration
        print(f"score calibration (performance estimates before labels): {len(cal.probability)} "
              f"isotonic blocks over {sum(cal.count)} scored, labeled rows")
    else:
        print("no score calibration: the KPI agent will not estimate performance before labels "
              "(needs --score-column and --label-column values of both classes, and a "
              "classification KPI policy)")
    if profile.concept is not None:
        c = profile.concept
        scaled = f", errors scaled by {c.scale:.4g}" if c.scale else ""
        print(f"concept detector {c.detector} calibrated on {c.errors} reference errors: "
              f"{c.params}{scaled}; false alarms in {c.false_alarm_rate:.3g} of {c.windows} "
              f"windows of {c.window_events} errors (target {c.target_false_alarm_rate:g}; "
              f"uncalibrated {c.uncalibrated_false_alarm_rate:.3g})"
              + ("" if c.met else ": target not met, the reference's errors are not stable"))
    else:
        print("concept detector uncalibrated: needs --label-column and --prediction-column "
              "values (200 rows or more), ddm only on a classifier's 0/1 errors, "
              "and concept_false_alarm_rate")
    if profile.bands is not None:
        b = profile.bands
        print(f"KPI bands from {b.windows} reference windows of {b.window_events} labels: "
              + ", ".join(f"{k} {m.mean:.4g} (sd {m.std:.3g})" for k, m in b.metrics.items()))
    elif built.bands_reason:
        print(f"no KPI bands (kpi.reference_bands): {built.bands_reason}")
    if args.out:
        Path(args.out).write_text(profile.model_dump_json(indent=2))
        print(f"written to {args.out}")
    if not args.no_publish:
        from agents.topics import ensure_topics

        ensure_topics(settings)
        reference_build.publish(profile, settings)
        print(f"published to {settings.topic('references')} as {args.model}@{args.version}")
    return 0


_REFERENCE_COLUMNS = """\
columns that are not profiled as features (agents/operator/reference_columns.py):
  the label (--label-column); the model's score and prediction (profiled as
  the outputs @score and @prediction);
  id: --id-columns, or named id, request_id, record_id, event_id, uuid, or text
    whose values are all different (at least 100 of them);
  timestamp: --timestamp-column, or named ts, timestamp, event_time, time,
    datetime, created_at, or every value a date or date-time (ISO 8601);
  event field: model, model_version, source, variant, latency_ms, error,
    segment, probabilities; and columns with no value at all.
Names compare case-insensitively; --keep-columns overrides the id, timestamp
and event-field rules.
Records with a "features" object: only its members are candidates.
CSV: a column of only true/false (any case) and blanks is boolean.
The command prints which columns it profiled and which it left out, and why."""


def _names(text: str | None) -> list[str]:
    """``a,b, c`` as names."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def cmd_bench(args: argparse.Namespace) -> int:
    from agents.dev import bench

    try:
        forms = bench.parse_forms(args.forms)
    except ValueError as exc:
        raise SystemExit(f"driftline bench: {exc}") from None
    if not forms and not args.labels:
        raise SystemExit("driftline bench: nothing to measure (--forms none without --labels)")
    if args.broker:
        _reached(_settings(args))
    result = bench.run(events=args.events, batch_size=args.batch_size, repeat=args.repeat,
                       broker=args.broker, windows=args.windows, forms=forms,
                       labels=args.labels, label_events=args.label_events,
                       labels_form=args.labels_format)
    print(bench.render(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result.flat(), option=orjson.OPT_INDENT_2))
        print(f"figures written to {args.json}")
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    from agents.operator import commands as operator

    if args.action == "shadow" and bool(args.version) == bool(args.off):
        raise DriftlineError("driftline command shadow needs --version V (start a shadow) or "
                             "--off (stop it), not both; the command was NOT sent")
    settings = _settings(args)
    try:
        _reached(settings)
    except DriftlineError as exc:
        raise DriftlineError(f"{exc}; the command was NOT sent") from None
    who = {"issuer": args.issuer, "key_file": args.key_file}
    if args.action == "approve":
        command = operator.operator_command(settings, "approve", args.model, approves=args.id,
                                            reason=args.reason or "", **who)
    else:
        command = operator.operator_command(
            settings, args.action.replace("-", "_"), args.model, to_version=args.version,
            weight=getattr(args, "weight", None), reason=args.reason or "", **who)
    try:
        operator.send(settings, command)
    except DriftlineError as exc:
        raise DriftlineError(f"{exc}; the command {command.command_id} was NOT sent (or not "
                             "confirmed: `driftline tail commands` shows it if it was)") from None
    print(f"sent {command.type} {command.command_id} for {command.model} to "
          f"{settings.topic('commands')}; follow it with `driftline tail deployments "
          f"--model {command.model}`")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from agents.operator import commands as operator

    check, _ = operator.audit(_reached(_settings(args)), model=args.model)
    if check.intact:
        print(f"audit chain intact: {check.events} events, {check.models} models"
              + (f", {check.duplicates} redelivered (identical) events" if check.duplicates
                 else "")
              + (f", {check.unchained} refusals for unknown models (unchained)"
                 if check.unchained else ""))
        return 0
    print(f"audit chain BROKEN at event {check.broken_at} of {check.events}: {check.reason}")
    return 1


def cmd_audit_report(args: argparse.Namespace) -> int:
    from agents.controller.registry import open_registry
    from agents.operator import audit_report
    from agents.operator.inventory import policy_in_force

    settings = _settings(args)
    policy_in_force(settings.policy)  # a bad policy file fails before Kafka
    start, end = _time_ms(args.from_, 0), _time_ms(args.to, 2**62)
    _reached(settings)
    page = audit_report.build(settings, args.model, start_ms=start, end_ms=end,
                              registry=open_registry(settings.registry))
    Path(args.out).write_text(page, encoding="utf-8")
    print(f"audit report of {args.model} written to {args.out} ({len(page) // 1024} KB)")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from agents.controller.registry import open_registry

    registry = open_registry(_settings(args).registry)
    if args.action == "register":
        from agents.operator.inventory import read_card
        from schemas.evaluation import is_flat

        metadata = orjson.loads(args.metadata) if args.metadata else None
        card = read_card(args.model_card, evaluation=args.evaluation)
        try:
            version = registry.register(args.model, args.version, Path(args.artifact),
                                        metadata=metadata, model_card=card)
        except DriftlineError as exc:
            where = f" ({args.model_card})" if args.model_card else " (no --model-card given)"
            raise DriftlineError(f"{exc}{where}") from None
        print(f"registered {version.model}@{version.version} sha256 {version.sha256[:16]}...")
        evaluation = (card or {}).get("evaluation")
        if isinstance(evaluation, dict) and is_flat(evaluation):
            print("note: its evaluation is a flat {metric: value} file: it names no held-out "
                  "set (sha256, size), so a gate with min_held_out_size refuses it")
        return 0
    models = [args.model] if args.model else registry.models()
    for model in models:
        state, _ = registry.load(model)
        print(f"{model}: champion {state.champion}, canary {state.canary} "
              f"({state.canary_weight:g}), last known good {state.last_known_good}"
              + (f", shadow {state.shadow}" if state.shadow else "")
              + (f", standby {state.standby}" if state.standby else ""))
        for v in registry.versions(model):
            print(f"  {v.version}  {v.created_at:%Y-%m-%d %H:%M}  sha256 {v.sha256[:16]}...  "
                  f"owner {v.model_card.get('owner') or 'missing'}, risk tier "
                  f"{v.model_card.get('risk_tier') or 'missing'}")
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    from agents.controller.registry import open_registry
    from agents.operator import inventory, inventory_render

    settings = _settings(args)
    inventory.policy_in_force(settings.policy)  # a bad policy file fails before Kafka
    registry = open_registry(settings.registry)
    found = inventory.collect(_reached(settings), registry, last_n=args.last,
                              last_inputs=args.last_inputs)
    if args.json:
        print(inventory_render.to_json(found))
    elif args.csv:
        sys.stdout.write(inventory_render.to_csv(found))
    else:
        print(inventory_render.text(found))
    if args.html:
        page = inventory_render.to_html(found)
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"inventory of {len(found.models)} models written to {args.html} "
              f"({len(page) // 1024} KB)", file=sys.stderr)
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from agents.operator import quarantine

    settings = _reached(_settings(args))
    if args.action == "release":
        note = quarantine.release(settings, args.record_id, model=args.model,
                                  reason=args.reason)
        print(f"released {args.model}/{args.record_id} to "
              f"{settings.topic('training-data.clean')} (recorded by {note.released_by})")
        return 0
    items = quarantine.held(settings, model=args.model)
    for item in items:
        d = quarantine.describe(item)
        print(orjson.dumps(d).decode() if args.json else
              f"{d['ts']}  {d['model']}  {d['record_id']}  source {d['source']}  "
              f"label {d['label']}  {', '.join(d['reasons'])}")
    print(f"{len(items)} records in quarantine", file=sys.stderr)
    return 0


def _time_ms(value: str | None, default_ms: int) -> int:
    """RFC 3339, epoch seconds, or nothing (the default)."""
    from schemas.events import event_time_ms

    if not value:
        return default_ms
    try:
        return event_time_ms(float(value) if value.replace(".", "", 1).isdigit() else value)
    except ValueError as exc:
        raise DriftlineError(str(exc)) from exc


def cmd_replay(args: argparse.Namespace) -> int:
    import time

    from agents.operator import replay

    settings = _settings(args)
    policy = _policy(settings)
    _reached(settings)
    result = replay.run(settings, policy, from_ms=_time_ms(args.from_, 0),
                        to_ms=_time_ms(args.to, int(time.time() * 1000) + 1),
                        model=args.model, verify=args.verify)
    if args.json:
        for kind, reports in (("drift", result.drift), ("kpi", result.kpi),
                              ("command", result.commands)):
            for r in reports:
                print(orjson.dumps({"kind": kind, **r}).decode())
    print(f"replayed {result.messages} input messages: {len(result.drift)} drift and "
          f"{len(result.kpi)} KPI reports, {len(result.commands)} commands of the policy agent",
          file=sys.stderr)
    if not args.verify:
        return 0
    for d in result.differences:
        print(f"DIFFERENT {d.key}: {d.what}" + (f" ({', '.join(d.fields)})" if d.fields
                                                 else ""))
    if result.differences:
        print(f"verify: {len(result.differences)} differences in {result.compared} "
              "reports compared")
        return 1
    print(f"verify: {result.compared} reports compared, all identical to the live run")
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import arrow_schema_text, arrow_schemas, json_schemas

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / f"{name}.schema.json").write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2))
    for topic, arrow_schema in arrow_schemas().items():
        (out / f"{topic}.arrow-schema").write_bytes(arrow_schema.serialize().to_pybytes())
        (out / f"{topic}.arrow-schema.txt").write_text(arrow_schema_text(topic))
    print(f"wrote {len(json_schemas())} JSON Schema files and the Arrow schemas of "
          f"{', '.join(arrow_schemas())} (.arrow-schema, .arrow-schema.txt) to {out}")
    return 0


def cmd_deadletter_fetch(args: argparse.Namespace) -> int:
    from agents.operator import deadletter

    got = deadletter.fetch(_reached(_settings(args)), letter=args.letter,
                           letter_partition=args.letter_partition, topic=args.topic,
                           partition=args.partition, offset=args.offset)
    checked = got.check()
    try:
        if args.output == "-":
            sys.stdout.buffer.write(got.value)
            sys.stdout.buffer.flush()
        else:
            Path(args.output).write_bytes(got.value)
    except OSError as exc:
        raise DriftlineError(f"cannot write {args.output}: {exc.strerror}") from exc
    print(f"{len(got.value)} bytes of {got.topic}[{got.partition}]@{got.offset} written to "
          f"{'stdout' if args.output == '-' else args.output}, sha256 {got.sha256}; {checked}",
          file=sys.stderr)
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    policy = load_policy(args.file)
    print(f"{args.file}: valid; models with overrides: {sorted(policy.models) or 'none'}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="bootstrap servers (env DRIFTLINE_BROKER)")
    p.add_argument("--topic-prefix", help="prefix for every topic (env DRIFTLINE_TOPIC_PREFIX)")


def _signer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--issuer", metavar="NAME",
                   help="sign as operator:NAME (default: your login name)")
    p.add_argument("--key-file", metavar="PATH",
                   help="sign with the key in this file: your own issuer key when the "
                   "controller has an issuers file (default: the command key)")


#: A verb's own options: (name, add_argument's keywords) each.
Options = tuple[tuple[str, dict[str, Any]], ...]
_VERSION_WEIGHT: Options = (("--version", {}), ("--weight", {"type": float}))
#: `driftline command`'s verbs: their help and their own options, which come after the
#: common options and --model, before --reason and the signer's (one parser shape for all).
COMMAND_VERBS: dict[str, tuple[str, Options]] = {
    "rollback": ("drop the canary, or return the champion to the last known good version",
                 _VERSION_WEIGHT),
    "promote": ("make --version the champion", _VERSION_WEIGHT),
    "canary": ("serve --version as the canary at --weight", _VERSION_WEIGHT),
    "set-canary-weight": ("change the canary's traffic share", _VERSION_WEIGHT),
    "retrain": ("run the retrain hook", _VERSION_WEIGHT),
    "switch": ("blue-green: move all traffic to --version at once, keeping the champion on "
               "standby (a rollback switches back)", (("--version", {"required": True}),)),
    "shadow": ("run --version beside the champion on the same requests without serving its "
               "answers; --off stops it",
               (("--version", {}),
                ("--off", {"action": "store_true", "help": "stop the model's shadow"}))),
    "approve": ("approve a command awaiting approval",
                (("id", {"help": "the command_id to approve"}),)),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="driftline", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu)")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("worker", help="run the agents (a Faust worker)")
    _common(p)
    p.add_argument("--policy", help="policy YAML file (env DRIFTLINE_POLICY)")
    p.add_argument("--agents", default="drift,kpi,poisoning,policy,controller",
                   help="comma-separated subset of agents (default: all: "
                   "drift,kpi,poisoning,policy,controller)")
    p.add_argument("--registry", help="model registry: a directory or mlflow+<uri> "
                   "(env DRIFTLINE_REGISTRY)")
    p.add_argument("--issuers", help="issuers file (YAML): each command issuer's own key, "
                   "models and command types (env DRIFTLINE_ISSUERS; default: off, one "
                   "command key for everyone)")
    p.add_argument("--app-id", help="Faust app id = consumer group (env DRIFTLINE_APP_ID)")
    p.add_argument("--partitions", type=int, help="partitions for topics it creates")
    p.add_argument("--store", help="table store: memory:// or rocksdb://")
    p.add_argument("--log-level", choices=["crit", "error", "warn", "info", "debug"])
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="broker + worker + drifting traffic in one terminal")
    p.add_argument("--duration", type=float, default=120.0, help="seconds (default 120)")
    p.add_argument("--rate", type=float, default=2000.0, help="events per second")
    p.add_argument("--time-scale", type=float, default=10.0, help="event seconds per second")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="publish realistic fraud-model traffic")
    _common(p)
    p.add_argument("--scenario", default="none",
                   choices=["none", "drift", "concept", "poisoning"],
                   help="drift: two features shift; concept: P(label | features) changes; "
                   "poisoning: a 'bot' source floods training-data with one record")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--duration", type=float, default=60.0, help="wall seconds")
    p.add_argument("--shift-at", type=float, default=0.45, help="fraction of the duration")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="fraud-detector")
    p.add_argument("--version", default="v1")
    p.add_argument("--label-delay", type=float, default=300.0,
                   help="mean label delay, event seconds (default 300)")
    p.add_argument("--label-share", type=float, default=0.9,
                   help="share of predictions that ever get a label (default 0.9)")
    p.add_argument("--no-labels", action="store_true", help="publish predictions only")
    p.add_argument("--training-data", action="store_true",
                   help="also publish each labeled prediction as a TrainingRecord")
    p.add_argument("--format", choices=["json", "arrow"], default="json",
                   help="predictions and labels as JSON batches (default) or Arrow IPC streams "
                   "(header content-type: application/vnd.apache.arrow.stream); training "
                   "records stay JSON")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("tail", help="print a topic readably (drift, deadletter, ...)")
    _common(p)
    p.add_argument("topic")
    p.add_argument("--json", action="store_true", help="raw JSON values, one per line")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--model")
    p.add_argument("--status")
    p.add_argument("--idle-timeout", type=float, help="stop after this many quiet seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("reference", help="reference profiles of model versions")
    rsub = p.add_subparsers(dest="action", required=True)
    r = rsub.add_parser(
        "build", help="profile training data and publish it to `references`",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_REFERENCE_COLUMNS)
    _common(r)
    r.add_argument("--model", required=True)
    r.add_argument("--version", required=True)
    r.add_argument("--data", required=True, help="CSV, JSON lines or Parquet file")
    r.add_argument("--policy", help="policy YAML (bins, fine_bins, top_k); env DRIFTLINE_POLICY")
    r.add_argument("--score-column", default="score",
                   help="the model's score, if present: profiled as @score, not as a feature")
    r.add_argument("--prediction-column", default="prediction",
                   help="the model's prediction, if present: profiled as @prediction, not as a "
                   "feature")
    r.add_argument("--label-column", default="label",
                   help="the label, never profiled: labeled records become the poisoning "
                   "guard's trusted set")
    r.add_argument("--id-columns", help="identifier columns to leave out, comma-separated")
    r.add_argument("--timestamp-column", help="the event-time column, left out")
    r.add_argument("--keep-columns",
                   help="profile these columns (comma-separated) although the id or time "
                   "rules would leave them out")
    r.add_argument("--trusted-rows", type=int, default=5000,
                   help="rows in the trusted set (stratified sample; 0: none)")
    r.add_argument("--out", help="also write the profile as JSON to this file")
    r.add_argument("--no-publish", action="store_true", help="do not publish to Kafka")
    r.set_defaults(func=cmd_reference_build)

    p = sub.add_parser("bench", help="measure the drift agent's throughput per input form "
                       "(and the label join's)")
    p.add_argument("--forms", default="json,arrow,arrow5k",
                   help="input forms to time, comma-separated: json (500-event JSON batches), "
                   "arrow (500-event Arrow messages), arrow5k (5,000-event Arrow messages); "
                   "none: only --labels (default: all three)")
    p.add_argument("--events", type=int, default=500_000,
                   help="events per form (default 500000: 10 Arrow messages of 5,000 a window)")
    p.add_argument("--windows", type=int, default=10,
                   help="one-minute windows the events span (default 10)")
    p.add_argument("--labels", action="store_true",
                   help="also time the KPI agent's label join (labels.* figures)")
    p.add_argument("--label-events", type=int, default=200_000,
                   help="labels to time with --labels (default 200000)")
    p.add_argument("--labels-format", choices=["json", "arrow"], default="json",
                   help="how predictions and labels are sent with --labels (default json)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="events per message of json, arrow and the labels (arrow5k: 5,000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per in-process figure")
    p.add_argument("--broker", help="use this broker instead of starting the embedded one")
    p.add_argument("--json", help="also write the figures to this file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("schemas", help="JSON Schema of the public models, Arrow schemas")
    ssub = p.add_subparsers(dest="action", required=True)
    e = ssub.add_parser("export", help="write one .schema.json per model into DIR, and the "
                        "Arrow schema (.arrow-schema, .arrow-schema.txt) of each input topic")
    e.add_argument("dir")
    e.set_defaults(func=cmd_schemas_export)

    p = sub.add_parser(
        "command", help="issue or approve a command to the controller",
        description="Sign a command and publish it on `commands`. It is signed with "
        "--key-file if given (your own key, listed for operator:<issuer> in the "
        "controller's issuers file), else with the issuer's key if a local issuers file "
        "(DRIFTLINE_ISSUERS) lists the issuer, else with the command key "
        "(DRIFTLINE_COMMAND_KEY / DRIFTLINE_COMMAND_KEY_FILE). With an issuers file the "
        "controller refuses, and records, a command signed with another issuer's key or "
        "for a model or command type the issuer may not touch.")
    csub = p.add_subparsers(dest="action", required=True)
    for verb, (text, options) in COMMAND_VERBS.items():
        c = csub.add_parser(verb, help=text)
        _common(c)
        c.add_argument("--model", required=True)
        for name, settings in options:
            c.add_argument(name, **settings)
        c.add_argument("--reason")
        _signer(c)
        c.set_defaults(func=cmd_command)

    p = sub.add_parser("replay", help="recompute drift and KPI reports from the input topics, "
                       "and the policy agent's decisions from the reports")
    _common(p)
    p.add_argument("--from", dest="from_", help="RFC 3339 or epoch seconds (default: the start)")
    p.add_argument("--to", help="RFC 3339 or epoch seconds (default: now)")
    p.add_argument("--model")
    p.add_argument("--policy", help="the policy to replay with (env DRIFTLINE_POLICY)")
    p.add_argument("--verify", action="store_true",
                   help="compare with the live drift and KPI reports and commands; exit 1 on "
                   "a difference")
    p.add_argument("--json", action="store_true", help="print the recomputed reports")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("audit", help="audit the deployment decisions")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("verify", help="check the hash chain of `deployments`")
    _common(a)
    a.add_argument("--model")
    a.set_defaults(func=cmd_audit_verify)
    a = asub.add_parser("report", help="one self-contained HTML file for a reviewer")
    _common(a)
    a.add_argument("--model", required=True)
    a.add_argument("--from", dest="from_", help="RFC 3339 or epoch seconds (default: all)")
    a.add_argument("--to", help="RFC 3339 or epoch seconds (default: all)")
    a.add_argument("--out", required=True, help="the HTML file to write")
    a.add_argument("--policy", help="the policy in force, shown and hashed in the report (env "
                   "DRIFTLINE_POLICY; default: the built-in defaults)")
    a.add_argument("--registry", help="the registry whose versions, checksums and model cards "
                   "the report shows: a directory or mlflow+<uri> (env DRIFTLINE_REGISTRY)")
    a.set_defaults(func=cmd_audit_report)

    p = sub.add_parser("registry", help="the controller's model registry")
    gsub = p.add_subparsers(dest="action", required=True)
    g = gsub.add_parser("register", help="register a model version (file or directory)")
    g.add_argument("--registry", help="a directory or mlflow+<uri> (env DRIFTLINE_REGISTRY)")
    g.add_argument("--model", required=True)
    g.add_argument("--version", required=True)
    g.add_argument("--artifact", required=True)
    g.add_argument("--metadata", help="JSON object")
    g.add_argument("--model-card", help="JSON file of model-card fields; owner and risk_tier "
                   "(minimal, limited or high) are required, purpose and training_data "
                   "{description, sha256} recommended (docs/governance.md)")
    g.add_argument("--evaluation", help="JSON file of the offline evaluation, kept as the "
                   "card's `evaluation`: metrics {name: value} on a held-out set, held_out "
                   "{sha256, size}, optional segments {segment: {name: value}}; the policy's "
                   "gates judge it (docs/governance.md)")
    g.set_defaults(func=cmd_registry)
    g = gsub.add_parser("list", help="models, their state and versions")
    g.add_argument("--registry", help="a directory or mlflow+<uri> (env DRIFTLINE_REGISTRY)")
    g.add_argument("--model")
    g.set_defaults(func=cmd_registry)

    p = sub.add_parser("inventory", help="the AI register: every model, its owner, risk "
                       "tier, versions, serving state and latest status")
    _common(p)
    p.add_argument("--registry", help="a directory or mlflow+<uri> (env DRIFTLINE_REGISTRY)")
    p.add_argument("--policy", help="the policy in force, hashed in the inventory (env "
                   "DRIFTLINE_POLICY; default: the built-in defaults)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the inventory as JSON")
    form.add_argument("--csv", action="store_true", help="print one CSV row per version")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    p.add_argument("--last", type=int, default=2000, metavar="N",
                   help="messages read from the end of each partition of drift, kpi and "
                   "poisoning for the latest reports (default 2000)")
    p.add_argument("--last-inputs", type=int, default=200, metavar="N",
                   help="messages read from the end of each partition of predictions to find "
                   "unregistered models (default 200)")
    p.set_defaults(func=cmd_inventory)

    p = sub.add_parser("quarantine", help="training records held back by the poisoning guard")
    qsub = p.add_subparsers(dest="action", required=True)
    q = qsub.add_parser("list", help="quarantined records not released")
    _common(q)
    q.add_argument("--model")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_quarantine)
    q = qsub.add_parser("release", help="release a record to training-data.clean (recorded)")
    _common(q)
    q.add_argument("record_id")
    q.add_argument("--model", required=True)
    q.add_argument("--reason", required=True, help="why it is safe, for the record")
    q.set_defaults(func=cmd_quarantine)

    p = sub.add_parser("deadletter", help="dead letters: get the original message of one")
    dsub = p.add_subparsers(dest="action", required=True)
    d = dsub.add_parser("fetch", help="write the exact bytes of a dead letter's original "
                        "message, read from its input topic while retention keeps it")
    _common(d)
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--letter", type=int, metavar="OFFSET",
                       help="the dead letter's own offset on `deadletter`: its original is "
                       "checked against its length and sha256")
    which.add_argument("--offset", type=int, help="the original's offset, as the dead letter "
                       "gives it (with --topic and --partition)")
    d.add_argument("--letter-partition", type=int, default=0, metavar="N",
                   help="the dead letter's partition on `deadletter` (default 0)")
    d.add_argument("--topic", help="the input topic as the dead letter names it")
    d.add_argument("--partition", type=int, default=0, help="with --offset (default 0)")
    d.add_argument("--output", "-o", default="-", metavar="FILE",
                   help="where to write the bytes (default -: stdout)")
    d.set_defaults(func=cmd_deadletter_fetch)

    p = sub.add_parser("policy", help="policy file tools")
    psub = p.add_subparsers(dest="action", required=True)
    c = psub.add_parser("check", help="validate a policy file without starting anything")
    c.add_argument("file")
    c.set_defaults(func=cmd_policy_check)
    return ap


_LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = os.environ.get("DRIFTLINE_LOG_LEVEL", "warn").lower()
    logging.basicConfig(
        level=_LEVELS.get(level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from confluent_kafka import KafkaException

    try:
        return int(args.func(args))
    except (PolicyError, DriftlineError) as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:  # e.g. the broker went away after the probe
        error = exc.args[0] if exc.args else None
        print(f"driftline: Kafka error: {error.str() if hasattr(error, 'str') else exc}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
