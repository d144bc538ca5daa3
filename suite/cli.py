"""The command line: thin, calling what the tests call.

    suite list                         studies with their question and run count
    suite validate FILE...             check study files (exit 2 on the first error)
    suite study NAME [--smoke]         train what is missing, then write reports/NAME/
    suite report NAME                  rebuild reports/NAME/ from MLflow alone
    suite check NAME                   exit 1 when a claim of the study is contradicted
    suite evaluate RUN                 reload a run's weights and evaluate the test split again
    suite tune NAME [--trials N]       Optuna search over the study's `search` space
    suite smoke                        every study in smoke mode, into a throw-away store
    suite ui [--port 5000]             MLflow's UI over the store; prints each study's runs link
    suite push NAME --to URI           copy a study's finished runs to another store (idempotent by run key)
    suite server start|stop            a team store here: PostgreSQL + an MLflow tracking server (.server/)

Every user error is one line on stderr and a non-zero exit: 2 for bad input, 1 when the
work could not be done, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import shlex
import signal
import sys
import tempfile
import urllib.parse
from pathlib import Path

from . import plural
from .errors import OptionError, SuiteError, error_line


def _common(p: argparse.ArgumentParser, store: bool = True, optuna: bool = True, throwaway: bool = False,
            reports: bool = True, links: bool = True) -> None:
    """The options every command that reads studies takes; `reports`: it writes reports, `links`: they link runs."""
    p.add_argument("--studies-dir", type=_given, default="studies", help="where study files live (default: studies)")
    if store:
        p.add_argument("--tracking-uri", type=_given, help="MLflow store (default: " + ("a throw-away one)" if throwaway else
                                              "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"))
        if optuna:
            p.add_argument("--storage", type=_given, help="Optuna storage for searches and tuning (default: " + ("a throw-away one)" if throwaway else
                                             "$OPTUNA_STORAGE or sqlite:///optuna.db)"))
    if store and reports:
        p.add_argument("--reports-dir", type=_given, default="reports", help="where reports are written (default: reports)")
    if store and reports and links:
        p.add_argument("--ui-url", type=_given, help="MLflow UI that reports link runs to, e.g. http://127.0.0.1:5000 (default: $SUITE_UI_URL; "
                                        "unset: reports name run keys, no links)")


def _executor(p: argparse.ArgumentParser, runs: bool = True) -> None:
    """Executor options; `runs` False for commands that only need to know how runs were computed."""
    if runs:
        p.add_argument("--executor", choices=("serial", "local", "ray"), default="local",
                       help="where runs train: serial (in this process), local (a pool of processes, default), ray")
        p.add_argument("--workers", type=int, help="runs trained at once (default: cores / threads, capped by memory)")
        p.add_argument("--ray-address", type=_given, help="with --executor ray: auto (the cluster of `ray start --head` here), HEAD:6379 (from "
                                              "another node), or ray://HEAD:10001 (Ray Client: needs ray[client]); default: a private local Ray")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1; part of a run's identity)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when this machine has it (on Ray: cpu unless cuda); part of a run's identity")
    p.add_argument("--fused-optimizer", action="store_true",
                   help="PyTorch's fused sgd/adam/adamw kernels for every run (a study may fix this: base.execution."
                        "fused_optimizer): faster, last-bit different numbers (other run keys)")
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=None,
                   help="train MLP runs that differ only in seed, lr, weight decay, dropout, augmentation, label noise or smoothing, "
                        "patience as one "
                        "packed model (default: on with CUDA, off on a CPU); last-bit different numbers (other run keys)")
    if runs:
        p.add_argument("--pack-size", type=int, help="members per packed model (default: as many as the GPU's memory or the CPU's cache holds)")


def settings(args):
    from .execute import Settings

    return Settings(executor=getattr(args, "executor", "serial"), workers=getattr(args, "workers", None), threads=args.threads,
                    device=args.device, ray_address=getattr(args, "ray_address", None), fused_optimizer=args.fused_optimizer,
                    pack=args.pack, pack_size=getattr(args, "pack_size", None))


def _not_empty(advice: str):
    """An argparse type refusing an empty value (`--reports-dir ""`, an unset shell variable) with `advice`."""
    def check(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"empty; {advice}")
        return value
    return check


_given = _not_empty("leave the option out for its default")  # a path or URL option: not read as the default or the current folder
_required = _not_empty("give a value")  # a value an argument must have (`--to`, a run)


class _Parser(argparse.ArgumentParser):
    """argparse, saying a bad option or argument in one line (its usage block is what --help is for)."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


STUDY_HELP = "study name (studies/NAME.yaml, the file's name) or path to a YAML file"


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="suite", description="Reproducible benchmark and ablation studies.")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list studies with their question and run count")
    _common(p, store=False)

    sub.add_parser("schema", help="print the reference of every study-file field (markdown; docs/study-reference.md)")

    p = sub.add_parser("validate", help="check study files")
    p.add_argument("files", nargs="+", help="study names (studies/NAME.yaml) or paths to YAML files")
    _common(p, store=False)

    for name, text in (("study", "run a study (skips runs already finished) and write its report"),
                       ("smoke", "run every study in smoke mode")):
        p = sub.add_parser(name, help=text)
        if name == "study":
            p.add_argument("name", help=STUDY_HELP)
            p.add_argument("--smoke", action="store_true", help="the seconds-long version of the study")
            p.add_argument("--force", action="store_true", help="rerun runs that already finished")
        p.add_argument("--keep-weights", choices=("final", "none"), default="final",
                       help="final: log each run's tested weights as its artifact weights.pt (default); none: keep none")
        p.add_argument("--data-dir", type=_given, help="dataset root (default: $SUITE_DATA_DIR or ./data)")
        _executor(p)
        _common(p, throwaway=name == "smoke")

    p = sub.add_parser("tune", help="search hyperparameters with Optuna (the study's search block)")
    p.add_argument("name", help=STUDY_HELP)
    p.add_argument("--trials", type=int, help="total trials to reach (default: the study's search.trials)")
    p.add_argument("--smoke", action="store_true", help="a few trials on the smoke-sized data")
    p.add_argument("--data-dir", type=_given, help="dataset root (default: $SUITE_DATA_DIR or ./data)")
    _executor(p)
    _common(p, links=False)  # a search report links no runs

    p = sub.add_parser("evaluate", help="reload a run's weights into a fresh model and evaluate the test split")
    p.add_argument("run", type=_required, help="MLflow run id or suite run key")
    p.add_argument("--data-dir", type=_given, help="dataset root (default: $SUITE_DATA_DIR or ./data)")
    p.add_argument("--tracking-uri", type=_given, help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")

    p = sub.add_parser("ui", help="MLflow's UI over the store (one light process); prints each study's runs link")
    p.add_argument("--tracking-uri", type=_given, help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db); "
                                         "an http(s):// tracking server: print its links, start nothing")
    p.add_argument("--host", default=os.environ.get("SUITE_UI_HOST") or "127.0.0.1", help="address to listen on (default: $SUITE_UI_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $SUITE_UI_PORT or 5000)")

    p = sub.add_parser("push", help="copy a study's finished runs (params, metrics, tags, artifacts) to another MLflow store")
    p.add_argument("name", help=STUDY_HELP)
    p.add_argument("--to", type=_required, required=True, help="the target store, e.g. the team store's http://127.0.0.1:PORT")
    _common(p, optuna=False, reports=False)

    p = sub.add_parser("server", help="start or stop a team store on this machine: PostgreSQL and an MLflow tracking server")
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument("--dir", type=_given, default=".server", help="where the database, logs and artifacts live (default: .server)")
    p.add_argument("--port", type=int, help="the tracking server's port (default: a free one, then the same each start)")
    p.add_argument("--pg-port", type=int, help="PostgreSQL's port (default: a free one, then the same each start)")

    for name, text in (("report", "rebuild a study's report from MLflow, without training"),
                       ("check", "exit 1 when a claim of the study is contradicted")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help=STUDY_HELP)
        p.add_argument("--smoke", action="store_true", help="report on the smoke runs")
        if name == "report":
            p.add_argument("--from-runs", action="store_true",
                           help="read the runs from the report's own runs.csv/curves.csv, not the store (a committed report)")
        _executor(p, runs=False)
        _common(p, optuna=False, reports=name == "report")  # reports read MLflow alone; check writes none
    return top


def main(argv: list[str] | None = None) -> int:
    from .execute.recorder import install_signal_handlers

    args = parser().parse_args(argv)
    previous = install_signal_handlers()  # Ctrl-C and SIGTERM stop the workers, never halfway through a store write
    try:
        return COMMANDS[args.command](args)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        left = INTERRUPTED.get(args.command, "nothing was changed")
        if getattr(args, "force", False):  # the same command would retrain every run again
            left = ("the runs retrained so far replaced their old ones, the others kept theirs; run the same command to "
                    "retrain them all again, or drop --force to keep what is there")
        print(f"\ninterrupted: {left}", file=sys.stderr)
        return 130
    except BrokenPipeError as err:
        if not _output_closed():
            return _failed(err, args.command)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit's flush would fail again)
        if args.command in WORKING:  # a reader that stops reading (`| head`) stops the work, as for any Unix tool
            print(f"stopped: its output was closed; {INTERRUPTED[args.command]}", file=sys.stderr)
        return 1
    except Exception as err:
        return _failed(err, args.command)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _failed(err: Exception, command: str) -> int:
    """A store (or disk) that failed under the command: one line; anything else is a bug, whose traceback is what we need."""
    message = store_failure(err)
    if message is None:
        raise err
    after = "finished runs are kept, run the same command again to resume" if command in WORKING else "run it again once that is mended"
    if any(damaged in message for damaged in ("database disk image is malformed", "file is not a database")):
        after = "the store's file is damaged: restore it from a copy, or pass another --tracking-uri"  # (running again cannot mend it)
    print(f"error: {message}; {after}", file=sys.stderr)
    return 1


def _output_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (as after `suite ... | head -1`)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLERR)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


WORKING = ("study", "smoke", "tune", "push")  # the commands that record runs
INTERRUPTED = {  # what an interrupted command leaves (read-only commands: nothing was changed)
    **dict.fromkeys(WORKING, "finished runs are kept; run the same command again to resume"),
    "report": "the report's files are left whole; run the same command again to rebuild it",
    "ui": "the UI stopped", "server": "`suite server stop` (with the same --dir) stops what it had started"}


def run() -> None:
    """The `suite` command: main(), then out without the interpreter's final teardown.

    With torch, MLflow and pandas loaded that teardown takes ~3 s and does nothing a finished
    command needs: threads are joined and atexit handlers run (Ray's shutdown among them) as on a
    normal exit, output is flushed, then the process ends. An uncaught exception (a bug), a profiler or a
    debugger get the normal exit."""
    import atexit
    import threading

    try:
        code = main()
    except KeyboardInterrupt:  # before main's own handling began (Ctrl-C during the first imports)
        print("\ninterrupted", file=sys.stderr)
        code = 130
    if sys.getprofile() or sys.gettrace():  # a profiler or debugger writes its results in the teardown
        raise SystemExit(code)
    threading._shutdown()  # what the interpreter does first at exit: wait for non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):  # (None where the command started with the stream closed: `suite ... >&-`)
        if stream is not None:
            stream.flush()
    os._exit(code)


def store_failure(err: BaseException) -> str | None:
    """One line for a store that failed under us (a tracking server gone, a database down, a full disk); None for anything else."""
    import errno

    from .provenance import redact

    kinds = {"MlflowException": "the MLflow store failed", "RequestException": "the tracking server cannot be reached",
             "ConnectionError": "the tracking server cannot be reached", "OperationalError": "the database failed",
             "StorageInternalError": "the Optuna storage failed"}
    names = {c.__name__ for c in type(err).__mro__}
    lost = re.match(r"API request to (\S+) failed with exception (.*)", str(err), re.S)
    if "MlflowException" in names and lost:  # the client's retries ran out
        parts = urllib.parse.urlsplit(lost.group(1))
        server = redact(f"{parts.scheme}://{parts.netloc}")
        answered = re.search(r"too many (\d+) error responses", lost.group(2))
        if answered:  # a live server failing (5xx: its database down, as a rule), not one gone
            return f"the tracking server {server} answered HTTP {answered.group(1)} to every retry (its database may be down; see its log)"
        why = re.search(r"\[Errno -?\d+\] [^'\")\]]+", lost.group(2)) or re.search(r"\w*(Error|Exception)\(.*", lost.group(2))
        why = " ".join((why.group(0) if why else lost.group(2)).split())[:160]
        return f"the tracking server cannot be reached: {server} ({why})"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({err.filename or err.strerror})"
    if isinstance(err, OSError) and err.filename and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                                                                   errno.EISDIR):  # the store's files or artifacts, as a rule
        return f"{err.strerror}: {err.filename}"
    for name, what in kinds.items():
        if name in names:
            # (SQLAlchemy may open with a line about its autoflush before the database's own error)
            lines = [line for line in str(err).splitlines() if line.strip() and not line.startswith("(raised as a result of")]
            detail = lines[0][:160] if lines else type(err).__name__
            return f"{what}: {redact(detail)}"
    return None


def cmd_list(args) -> int:
    from .errors import StudyError
    from .spec.study import list_studies, load_study

    studies, invalid = [], []
    for path in list_studies(Path(args.studies_dir)):
        try:
            studies.append(load_study(str(path)))
        except StudyError as err:  # every broken file, one line each, after the good ones
            invalid.append(str(err))
    counts = [_count(s) for s in studies]
    name_width, count_width = max((len(s.name) for s in studies), default=0), max(map(len, counts), default=0)
    for study, count in zip(studies, counts):
        print(f"{study.name:<{name_width}}  {count:<{count_width}}  {study.question}")
    for line in invalid:
        print(f"invalid: {line}", file=sys.stderr)
    for name in sorted(name for name, count in collections.Counter(s.name for s in studies).items() if count > 1):
        files = " and ".join(str(s.path.name) for s in studies if s.name == name)
        print(f"warning: {files} both name their study '{name}': their runs and reports would mix; rename one", file=sys.stderr)
    _misnamed(studies, Path(args.studies_dir))
    if invalid:
        raise SuiteError(f"{len(invalid)} of {len(studies) + len(invalid)} study files are invalid (listed above)")
    return 0


def _misnamed(studies, studies_dir: Path) -> None:
    """Commands find a study of the studies folder by its file's name; its `name:` names its experiment and report folder.
    (A file elsewhere is called by its path.)"""
    for s in studies:
        if s.path.stem != s.name and s.path.parent.resolve() == studies_dir.resolve():
            print(f"warning: {s.path.name} names its study '{s.name}': commands call it '{s.path.stem}' (its file's name), "
                  f"its runs and reports go under '{s.name}'; give both one name", file=sys.stderr)


def _count(study) -> str:
    """What a study trains: its runs, and with a `tune` block the tuned runs and the tuning trials too."""
    if study.tune is None:
        return plural(study.run_count, "run")
    trials = len(study.configs) * study.tune.trials
    return f"{study.run_count} + {plural(study.run_count, 'tuned run')}, {plural(trials, 'trial')}"


def cmd_schema(args) -> int:
    from .spec.schema import reference

    print(reference(), end="")
    return 0


def cmd_validate(args) -> int:
    from .spec.study import load_study

    for file in args.files:
        study = load_study(file, Path(args.studies_dir))
        print(f"{study.path}: ok ({_count(study)}: {plural(len(study.datasets), 'dataset')} x {plural(len(study.variants), 'variant')} x "
              f"{plural(len(study.seeds), 'seed')})")
        _misnamed([study], Path(args.studies_dir))
    return 0


def _run(name: str, args, smoke: bool, uri: str, throwaway: bool = False):
    """Train what a study lacks and write its report: its Outcome (`_failures` says which runs failed). `throwaway`:
    the store is deleted after the command (`suite smoke`): no link into it."""
    from . import tracking
    from . import data_root
    from .execute import execution
    from .execute.plan import run_study
    from .provenance import redact
    from .spec.study import load_study

    study = load_study(name, Path(args.studies_dir))
    tracking.check_separate(uri, tracking.storage_url(args.storage))  # (searches, tuning and a team store's claims use it)
    chosen = settings(args)
    reports_dir = Path(args.reports_dir)
    _writable(reports_dir)  # before anything trains
    if args.ui_url or os.environ.get("SUITE_UI_URL"):  # (the report module's imports take seconds: only to check one)
        from . import report

        report.ui_url(args.ui_url)

    def write_report() -> None:
        from . import report  # imported while the workers trained (plan.run_study)

        how = execution(chosen)
        if study.tune is not None:  # search reports come from the Optuna store; the study's report reads MLflow alone
            report.build_tuning_searches(study, smoke, reports_dir, args.storage, tracking.tracking_uri(uri), how)
        out = report.build(study, smoke=smoke, uri=tracking.tracking_uri(uri), reports_dir=reports_dir,
                           execution=how, ui=report.ui_url(args.ui_url), throwaway=throwaway)
        print(f"report: {out}")

    outcome = run_study(study, smoke=smoke, uri=uri, data_dir=data_root(args.data_dir), force=getattr(args, "force", False),
                        storage=args.storage, settings=chosen, keep_weights=args.keep_weights == "final", report=write_report)
    from . import report

    print(f"{study.name}: {outcome.trained} trained, {outcome.skipped} already done, {outcome.diverged} diverged, "
          f"{len(outcome.failed)} failed" + (f", {len(outcome.lost)} taken over by other drivers" if outcome.lost else ""))
    if outcome.reported_elsewhere:
        print("report: written by another driver from these same runs (`suite report` rebuilds it here)")
    if not throwaway:
        link = tracking.experiment_link(tracking.connect(uri), tracking.experiment_name(study.name, smoke), _ui_base(args, uri))
        try:
            default = tracking.same_store(uri, tracking.tracking_uri())
        except OptionError:  # (MLFLOW_TRACKING_URI names no store: `make ui` would say so)
            default = False
        ui = "make ui" if default else f"suite ui --tracking-uri {shlex.quote(redact(uri))}"
        print(f"runs: {link}" + ("" if report.ui_url(args.ui_url) or tracking.is_server(uri) else f"  (after `{ui}`)"))
    return outcome


def _failures(outcome, throwaway: bool = False) -> None:
    """A study whose runs failed: its one-line error (the runs that finished are kept). `throwaway`: in a store that
    the command deletes (`suite smoke`)."""
    from . import tracking

    if outcome.failed:
        traced = ("; their tracebacks: each run's artifact " + tracking.TRACEBACK
                  + (" (in this throw-away store: --tracking-uri keeps them)" if throwaway else " (`runs:` above)")) if outcome.traced else ""
        raise SuiteError(f"{plural(len(outcome.failed), 'run')} failed (first: {outcome.failed[0]}){traced}; run the same "
                         "command again to retrain them (once the cause is mended)")


def _writable(reports_dir: Path) -> None:
    """A folder reports can be written into (made if missing), else a one-line error."""
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SuiteError(f"cannot write reports into {reports_dir}: {err.strerror or err}; pass another --reports-dir") from None
    if not os.access(reports_dir, os.W_OK | os.X_OK):
        raise SuiteError(f"cannot write reports into {reports_dir}: permission denied; pass another --reports-dir")


def _ui_base(args, uri: str) -> str:
    """Where the UI of this store is: --ui-url / $SUITE_UI_URL, the tracking server itself, else `make ui`'s address."""
    from . import report, tracking

    return report.ui_url(args.ui_url) or (uri.rstrip("/") if tracking.is_server(uri) else "http://127.0.0.1:5000")


def cmd_study(args) -> int:
    from .tracking import tracking_uri

    _failures(_run(args.name, args, args.smoke, tracking_uri(args.tracking_uri)))
    return 0


def cmd_smoke(args) -> int:
    """Every study, smoke mode; a temporary store and Optuna storage unless --tracking-uri / --storage name them."""
    from . import tracking
    from .provenance import redact
    from .spec.study import list_studies

    paths, trained, failed = list_studies(Path(args.studies_dir)), 0, []
    with tempfile.TemporaryDirectory(prefix="suite-smoke-") as tmp:
        uri = tracking.tracking_uri(args.tracking_uri) if args.tracking_uri else f"sqlite:///{tmp}/mlflow.db"
        args.storage = args.storage or f"sqlite:///{tmp}/optuna.db"
        for path in paths:  # each study in turn, whatever became of the ones before it
            try:
                outcome = _run(str(path), args, True, uri, throwaway=not args.tracking_uri)
                trained += outcome.trained
                _failures(outcome, throwaway=not args.tracking_uri)
            except SuiteError as err:
                print(f"error: {path.stem}: {err}", file=sys.stderr, flush=True)
                failed.append(path.stem)
    kept = f"in {redact(uri)}" if args.tracking_uri else "in a throw-away store, now deleted (--tracking-uri keeps them)"
    print(f"smoke: {len(paths)} stud{'y' if len(paths) == 1 else 'ies'}, {plural(trained, 'run')} trained {kept}; reports in "
          f"{Path(args.reports_dir) / 'smoke'}/" + (f"; {len(failed)} failed: {', '.join(failed)} (errors above)" if failed else ""))
    return 1 if failed else 0


def cmd_report(args) -> int:
    from . import report
    from .spec.study import load_study
    from .tracking import tracking_uri

    from .execute import execution

    study = load_study(args.name, Path(args.studies_dir))
    chosen = settings(args)
    if args.from_runs and chosen.device == "auto":  # a report's own files: the runs they hold, not this machine's device
        chosen = dataclasses.replace(chosen, device="cpu")
    uri = None if args.from_runs else tracking_uri(args.tracking_uri)  # (--from-runs opens no store)
    out = report.build(study, smoke=args.smoke, uri=uri, reports_dir=Path(args.reports_dir),
                       execution=execution(chosen, trains=False), ui=report.ui_url(args.ui_url), from_runs=args.from_runs)
    print(f"report: {out}")
    return 0


def cmd_check(args) -> int:
    from . import report
    from .spec.study import load_study
    from .tracking import tracking_uri

    from .execute import execution

    study = load_study(args.name, Path(args.studies_dir))
    if not study.claims:
        print(f"study '{study.name}' makes no claims (a `claims:` list in its file); nothing to check")
        return 0
    claims, missing = report.claim_table(study, smoke=args.smoke, uri=tracking_uri(args.tracking_uri),
                                         execution=execution(settings(args), trains=False))
    for row in claims.itertuples():
        print(f"{row.verdict:<13} {row.claim}  [{row.dataset}: {row.detail}]")
    if missing:  # (a variant never trained read as inconclusive, and exit 0: a CI check passed on runs it never saw)
        from .spec.study import commands

        print(f"error: {plural(missing, 'run')} of study '{study.name}' {'is' if missing == 1 else 'are'} not in the store "
              f"(not trained yet, failed, or computed another way): the verdicts above are from the others; `{commands(study, args.smoke)[0]}` trains them",
              file=sys.stderr)
        return 1
    return 1 if (claims["verdict"] == "contradicted").any() else 0


def cmd_tune(args) -> int:
    from . import data_root, report, tracking, tune
    from .execute import execution
    from .spec.study import load_study
    from .tracking import tracking_uri

    if args.trials is not None and args.trials < 1:
        raise OptionError("--trials takes a positive number")
    study = load_study(args.name, Path(args.studies_dir))
    storage = tracking.storage_url(args.storage)
    tracking.check_separate(tracking_uri(args.tracking_uri), storage)
    chosen = settings(args)
    _writable(Path(args.reports_dir))  # before anything trains
    target = tune.search_target(study, args.smoke, execution(chosen))  # (trials computed another way are another search)
    search = tune.run_search(target, uri=tracking_uri(args.tracking_uri), storage=storage, data_dir=data_root(args.data_dir),
                             trials=args.trials, settings=chosen)
    target = tune.placed(target, storage)  # under the name run_search kept its trials
    out = report.build_search(target, search, Path(args.reports_dir), storage, tracking_uri(args.tracking_uri))
    print(f"{target.name}: {tune.counted(search.get_trials(deepcopy=False))} trials; report: {out}")
    return 0


def cmd_evaluate(args) -> int:
    """Rebuild the run's model from its resolved config, load its weights, evaluate the test split."""
    import json

    from . import components, tracking
    from .spec.config import RunConfig
    from . import data_root
    from .execute.recorder import WEIGHTS
    from .execute.worker import evaluate_weights, loaded

    client = tracking.connect(tracking.tracking_uri(args.tracking_uri), create=False)
    run = tracking.find_run(client, args.run)
    kind = run.data.tags.get("suite.kind")
    if kind != "run":
        what = {"summary": "a study's report run", "search": "a search's parent run", "trial": "a search trial"}.get(kind, "not a suite run")
        raise OptionError(f"run {run.info.run_id} is {what}: `suite evaluate` takes a study's run (its id or run key)")
    if run.info.status != tracking.FINISHED:
        raise OptionError(f"run {run.info.run_id} is {run.info.status}: only a finished run has tested weights")
    def read(path: Path, parse):
        try:
            return parse(path)
        except Exception as err:  # a damaged or edited artifact: json's, torch's (unpickling, a truncated zip), the file system's
            raise SuiteError(f"run {run.info.run_id}: its {path.name} cannot be read ({error_line(err)})") from None

    with tempfile.TemporaryDirectory() as tmp:
        config = read(tracking.download(client, run.info.run_id, "resolved_config.json", Path(tmp)), lambda p: json.loads(p.read_text()))
        weights = read(tracking.download(client, run.info.run_id, WEIGHTS, Path(tmp),
                                         " (runs recorded with --keep-weights none, or before weights were kept, have none)"),
                       lambda p: loaded(p.read_bytes()))
    try:
        components.load_plugins(config.get("plugins", []))  # the study's `plugins:` modules (entry points load by themselves)
        resolved = RunConfig(**config["config"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # a plug-in this environment lacks, an edited file
        raise SuiteError(f"run {run.info.run_id}: its config does not validate here ({' '.join(str(err).split())[:300]})") from None
    metrics = evaluate_weights(resolved, weights, str(data_root(args.data_dir).resolve()))
    for name, value in metrics.items():
        logged = run.data.metrics.get(name)
        same = "" if logged is None else f"  (logged {logged:.6g}: {'identical' if logged == value else 'DIFFERENT'})"
        print(f"{run.info.run_name} {name} {value:.6g}{same}")
    return 0


def cmd_ui(args) -> int:
    """Serve the store's UI here (or, for a tracking server, only print its links)."""
    from . import tracking
    from .provenance import redact

    if not args.host.strip() or not args.host.isprintable() or " " in args.host:  # ('' listens on every interface)
        raise OptionError(f"--host {args.host!r}: an address to listen on, e.g. 127.0.0.1 (0.0.0.0: every interface)")
    uri = tracking.tracking_uri(args.tracking_uri)
    if tracking.is_server(uri):
        if args.port is not None:  # (like the other options that would change nothing)
            raise OptionError(f"--port: the UI of the tracking server {redact(uri)} is its own, at its address; nothing starts here")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a link printer need not wait minutes for a dead server
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            _print_links(uri.rstrip("/"), uri)
        except SuiteError:
            raise
        except Exception as err:
            raise SuiteError(f"cannot reach the tracking server {uri}: {str(err).splitlines()[0][:160]}") from None
        return 0
    given = "--port" if args.port is not None else "SUITE_UI_PORT"
    if args.port is None:
        try:
            args.port = int(os.environ.get("SUITE_UI_PORT") or 5000)
        except ValueError:
            raise OptionError(f"SUITE_UI_PORT={os.environ['SUITE_UI_PORT']} is not a port number (1-65535)") from None
    if not 0 < args.port < 65536:
        raise OptionError(f"{given} takes 1-65535, not {args.port}")
    base = f"http://[{args.host}]:{args.port}" if ":" in args.host else f"http://{args.host}:{args.port}"  # (IPv6 in brackets)
    try:
        tracking.serve_ui(uri, args.host, args.port, lambda: _print_links(base, uri, ready=True))
    except KeyboardInterrupt:  # uvicorn shuts down cleanly on Ctrl-C, then passes the signal on
        pass
    print("MLflow UI stopped", file=sys.stderr)
    return 0


def cmd_push(args) -> int:
    from . import push, tracking
    from .spec.study import load_study

    study = load_study(args.name, Path(args.studies_dir))
    source = tracking.tracking_uri(args.tracking_uri)
    done = push.push(study.name, source, args.to)
    for name, (copied, present) in done.counts.items():  # (smoke runs are their own experiment, <study>/smoke)
        print(f"{name}: {plural(copied, 'run')} copied to {args.to}, {present} already there")
    return 0


def cmd_server(args) -> int:
    from . import server

    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"--dir {folder} is a file; the team store's folder holds its database, logs and artifacts")
    if args.action == "stop":
        print(f"stopped the team store in {folder}" if server.stop(folder) else f"no team store is running in {folder}")
        return 0
    for port in (args.port, args.pg_port):
        if port is not None and not 0 < port < 65536:
            raise OptionError(f"ports are 1-65535, not {port}")
    state = server.start(folder, args.port, args.pg_port)
    env = server.write_env(folder, state)
    shown = server.uris(state, password=False)
    stop = "make server-stop" + ("" if folder.resolve() == Path(server.DEFAULT_DIR).resolve() else
                                 f" ARGS=\"--dir {shlex.quote(str(folder.resolve()))}\"")
    print(f"team store running in {folder.resolve()} (`{stop}` stops it)")
    print(f"  MLFLOW_TRACKING_URI={shown['MLFLOW_TRACKING_URI']}   (the MLflow UI too)")
    print(f"  OPTUNA_STORAGE={shown['OPTUNA_STORAGE']}")
    print(f"point every driver at it: source {env}   (holds the password; readable by you alone)")
    return 0


def _print_links(base: str, uri: str, ready: bool = False) -> None:
    from . import tracking
    from .provenance import redact

    links = tracking.study_links(tracking.connect(uri), base)
    print(f"MLflow UI ready at {base}/ over {redact(uri)}  (Ctrl-C stops it)" if ready else f"MLflow UI of the tracking server {redact(base)}/",
          flush=True)
    for name, url in links:
        print(f"  {name:<28} {url}", flush=True)
    if not links:
        print("  no study has run in this store yet: make study STUDY=...", flush=True)


COMMANDS = {"tune": cmd_tune, "list": cmd_list, "schema": cmd_schema, "validate": cmd_validate, "study": cmd_study, "smoke": cmd_smoke,
            "report": cmd_report, "check": cmd_check, "evaluate": cmd_evaluate, "ui": cmd_ui,
            "server": cmd_server, "push": cmd_push}
