"""MLflow, the single source of truth: every run, its params, per-epoch metrics and artifacts.

The store is `--tracking-uri`, else $MLFLOW_TRACKING_URI, else MLflow's embedded
`sqlite:///mlflow.db` in the current directory (browse it with `make ui`). One experiment
per study, named after it; one MLflow run per run spec, found again by its `suite.run_key`
tag. Only this module imports mlflow, and it talks to the store through an explicit
`MlflowClient` (no global active run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

from .spec.config import METRIC_ALIASES, METRIC_DIRECTIONS
from .errors import OptionError, SuiteError, error_line

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_STORAGE = "sqlite:///optuna.db"
FINISHED = "FINISHED"
INTERRUPTED = "interrupted"  # a trial's fail_reason (Optuna user attr, tag suite.fail_reason) when a kill, not the trial, ended it
ERRORS = "test_errors.json"  # a classification run's artifact: test confusion matrix, first misclassified examples
GALLERY_FILE = "misclassified.npz"  # ... and their raw images (uint8), labels and test indices
TRACEBACK = "traceback.txt"  # a run that failed on an unexpected exception: where, in full
NOTE = "mlflow.note.content"  # an experiment's description, a run's note: markdown the UI shows

def tracking_uri(cli_value: str | None = None) -> str:
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    given = "--tracking-uri " if cli_value else "MLFLOW_TRACKING_URI="
    if ("://" not in uri and not uri.startswith("databricks")) or uri.startswith("file:"):  # a folder: MLflow's deprecated file store
        raise OptionError(f"{given}{uri}: a store is sqlite:///PATH (a file; sqlite:///{uri.removeprefix('file://').removeprefix('file:')} "
                          "here?) or a tracking server's http://HOST:PORT")
    db = _check_sqlite(uri, given, "a store is sqlite:///PATH or a tracking server's http://HOST:PORT", options=False)
    if db is not None and not _is_sqlite(db):  # (before its lock file is made beside it)
        raise OptionError(f"{given}{uri}: {db} is not a SQLite database (MLflow cannot open it as a store); a store is "
                          "sqlite:///PATH of an MLflow store's file")
    return uri


def storage_url(cli_value: str | None = None) -> str:
    """The Optuna storage (searches, tuning, and a team store's run claims): --storage, else $OPTUNA_STORAGE."""
    url = cli_value or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE
    given = "--storage " if cli_value else "OPTUNA_STORAGE="
    if "://" not in url:
        raise OptionError(f"{given}{url}: an Optuna storage is sqlite:///PATH (a file; sqlite:///{url} here?) or a database URL "
                          "(postgresql+psycopg://...)")
    db = _check_sqlite(url, given, "an Optuna storage is sqlite:///PATH or a database URL (postgresql+psycopg://...)", options=True)
    if db is not None and not _is_sqlite(db):
        raise OptionError(f"{given}{url}: {db} is not a SQLite database; an Optuna storage is sqlite:///PATH (a new or an Optuna "
                          "file) or a database URL")
    if db is not None and db.is_file() and "experiments" in (_tables(db) or ()):  # (Optuna added its tables to it, then failed)
        raise OptionError(f"{given}{url}: {db} is an MLflow store, not an Optuna storage; give each its own file")
    return url


def _check_sqlite(url: str, given: str, what: str, options: bool) -> Path | None:
    """Refused before anything trains: a sqlite URL without a file (an in-memory store, lost at exit), naming a folder,
    or, for the MLflow store (`options` False), with `?options` (the suite's lock and template take the whole text
    after sqlite:/// as the file's name: a second file and lock beside the store). Other schemes are the stores' to
    judge when they open (one line then). Returns the sqlite file's path, None for another scheme."""
    if not url.lower().startswith("sqlite:"):
        return None
    path = url.split("://", 1)[-1].removeprefix("/").split("?", 1)[0]
    no_file = path in ("", ":memory:") or path.endswith("/")
    if not no_file and Path(path).is_dir():
        raise OptionError(f"{given}{url!r}: {path} is a folder; {what}, with a file's path")
    if no_file or "\n" in url or ("?" in url and not options):
        raise OptionError(f"{given}{url!r}: {what}, with a file's path" + ("" if options else " and nothing after it")
                          + " (an in-memory store keeps nothing" + ("" if options else "; options after '?' are not taken") + ")")
    return Path(path)


def check_separate(uri: str, storage: str) -> None:
    """MLflow and Optuna each keep their own tables and schema versions: one sqlite file cannot be both (Optuna's
    tables landed in the MLflow store, and each then blamed the other's schema version)."""
    mlflow_db = _sqlite_path(uri)
    if mlflow_db is not None and same_store(uri, storage):
        raise OptionError(f"the MLflow store and the Optuna storage are one file, {mlflow_db}; give each its own "
                          "(--tracking-uri / $MLFLOW_TRACKING_URI, --storage / $OPTUNA_STORAGE)")


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def same_store(a: str, b: str) -> bool:
    """Two URIs of one store: naming one sqlite file (sqlite:///mlflow.db and sqlite:////abs/mlflow.db), or one URL."""
    one, other = _sqlite_path(a), _sqlite_path(b)
    if one is not None and other is not None:
        return one.resolve() == other.resolve()
    return a.rstrip("/") == b.rstrip("/")  # (a server's URL with or without its trailing slash)


_locked: set[Path] = set()  # stores this process holds the lock of (a nested store_lock is a no-op)


@contextmanager
def store_lock(uri: str):
    """Hold an exclusive lock beside a sqlite store: one writing process at a time.

    Other stores (a tracking server, PostgreSQL) take many writers: there each run is claimed
    through `suite.execute.leases` instead.
    """
    db = _sqlite_path(uri)
    if db is None or db.resolve() in _locked:
        yield
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        handle = open(f"{db}.lock", "w")
    except OSError as err:
        raise SuiteError(f"cannot open the MLflow store {uri}: {err.strerror or err}: {err.filename or db}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SuiteError(f"another suite process is writing to {db}; wait for it to finish or pass another --tracking-uri") from None
        _locked.add(db.resolve())
        try:
            yield
        finally:
            _locked.discard(db.resolve())


def connect(uri: str, create: bool = True):
    """An MlflowClient on the store (created, with its schema, on first use; not by a reader: `create=False`)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded artifact drowns the output
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # two "View run" lines per run on a server store
    for noisy in ("alembic", "mlflow"):  # after mlflow's import, which sets its own levels
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # its SQL store logs every database error with a traceback before raising it; the raised error is ours to report, in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    db = _sqlite_path(uri)
    present = db is not None and db.is_file() and db.stat().st_size > 0
    if not create and db is not None and db.name != ":memory:" and not present:
        empty = " (an empty file)" if db.is_file() else ""  # (MLflow would write a store's tables into it)
        raise SuiteError(f"no MLflow store at {db}{empty}; run a study first (make study STUDY=...) or pass --tracking-uri")
    tables = _tables(db) if present else None
    if tables and "experiments" not in tables:  # (no tables yet, or a store MLflow is still migrating: MLflow's to finish)
        raise OptionError(f"{db} is a SQLite database, but not an MLflow store (MLflow would add its tables to it); pass "
                          "--tracking-uri the store's file")
    user = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # MLflow's own default in this process (it resolves a server's artifact URIs against it)
    if user is None:  # ... and not the user's variable, which it sets too: the suite reads that as their default store
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user
    _reachable(uri)
    try:
        _start_from_template(uri)
        _artifacts_beside(uri)
        return MlflowClient(tracking_uri=uri)
    except Exception as err:  # a bad URI or an unreachable server
        from .provenance import redact

        if "unsupported URI" in str(err):  # a scheme MLflow has no store for (its message lists them, 40 at length)
            raise OptionError(f"{redact(uri)}: MLflow has no store for the scheme '{uri.split(':', 1)[0]}' (a store is "
                              "sqlite:///PATH, a tracking server's http://HOST:PORT or a database URL)") from None
        detail = " ".join((str(err).strip().splitlines() or [type(err).__name__])[0].split())
        raise SuiteError(f"cannot open the MLflow store {redact(uri)}: "
                         + (detail if len(detail) <= 200 else detail[:200].rsplit(" ", 1)[0] + " ...")) from None


MLFLOW_TABLES = {"experiments", "alembic_version"}  # (among its ~30) what a whole MLflow store has: the cached template must


def _is_sqlite(db: Path) -> bool:
    """A file SQLite wrote (its 16-byte header); also no file, an empty one (SQLite's to fill) or one that cannot be
    read (whoever opens it then says why)."""
    try:
        with open(db, "rb") as f:
            head = f.read(16)
    except OSError:
        return True
    return head in (b"", b"SQLite format 3\x00")


def _tables(db: Path) -> set[str] | None:
    """The tables of the SQLite file `db`, read without writing; None where SQLite cannot read it (MLflow then says
    so in its own words)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(str(db.resolve()))}?mode=ro", uri=True)) as conn:
            return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return None


_reached: set[str] = set()  # tracking-server URIs that answered `_reachable` in this process


def _reachable(uri: str, timeout: float = 10.0) -> None:
    """A tracking server's URI that no server answers fails here, in one line, at once: MLflow itself retries each
    request for minutes. Any HTTP answer (even an error: a login, a missing /health) or a TLS handshake that this
    machine cannot verify (MLflow checks certificates with its own settings) means a server is there."""
    if not uri.startswith(("http://", "https://")) or uri in _reached:
        return
    for name, least in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 0), ("MLFLOW_HTTP_REQUEST_TIMEOUT", 1),
                        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 0), ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 0)):
        value = os.environ.get(name, str(least)).strip()  # (MLflow reads them request by request: a traceback mid-study)
        try:
            ok = (float(value) if name.endswith("JITTER") else int(value)) >= least
        except ValueError:
            ok = False
        if not ok:
            raise OptionError(f"{name}={os.environ[name]!r}: a {'number' if name.endswith('JITTER') else 'whole number'}, "
                              f"{least} or more")
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    from .provenance import redact

    try:
        parts = urllib.parse.urlsplit(uri)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port else host  # without user:password@ (that is MLflow's to send)
        if not netloc:
            raise ValueError("no host")
        urllib.request.urlopen(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        pass
    except (ValueError, http.client.InvalidURL) as err:  # a port that is no number, a malformed address
        raise SuiteError(f"cannot open the MLflow store {redact(uri)}: not a valid URL ({err})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:  # refused, unknown host, timed out, not HTTP
        why = getattr(err, "reason", None) or err
        if not (isinstance(why, ssl.SSLError) or isinstance(err, ssl.SSLError)):
            why = " ".join(str(why).split())[:150] or type(err).__name__  # one line, whatever the other end sent
            raise SuiteError(f"cannot reach the MLflow tracking server at {redact(uri)} ({why}); start it "
                             "(`make server` for a team store here) or pass another --tracking-uri") from None
    _reached.add(uri)  # once per process: a study connects several times (MLflow's own retries cover a server lost later)


def _artifacts_beside(uri: str) -> None:
    """A sqlite store keeps the artifacts of the experiments it creates in `mlruns/` beside its database file, whatever
    the folder the command runs in (MLflow's default is `./mlruns` of the current folder: a store elsewhere scattered
    its artifacts over the folders it was used from). MLflow builds one store object per URI and process and reads
    the root then, from the variable its server sets; for the default store, ./mlflow.db, this is ./mlruns as before."""
    from mlflow.tracking._tracking_service import utils

    db = _sqlite_path(uri)
    if db is None or db.name == ":memory:":
        return
    saved = os.environ.get(utils._SERVER_ARTIFACT_ROOT_ENV_VAR)
    os.environ[utils._SERVER_ARTIFACT_ROOT_ENV_VAR] = str(db.resolve().parent / "mlruns")  # (a path, as MLflow makes its default)
    try:
        utils._get_store(uri)
    finally:
        if saved is None:
            os.environ.pop(utils._SERVER_ARTIFACT_ROOT_ENV_VAR)
        else:
            os.environ[utils._SERVER_ARTIFACT_ROOT_ENV_VAR] = saved


def _start_from_template(uri: str) -> None:
    """A sqlite store that does not exist yet starts as a copy of an empty store that MLflow made once on
    this machine for its version (cached beside adam.c's build, $XDG_CACHE_HOME/suite/): a new store
    otherwise runs MLflow's ~50 schema migrations, 2-4 s. The template holds no experiment: MLflow adds
    its Default one, with this store's artifact location, when it opens the copy."""
    import shutil
    import sqlite3

    import mlflow
    from mlflow.tracking import MlflowClient

    from . import cache_dir

    db = _sqlite_path(uri)
    if db is None or db.exists() or not db.parent.is_dir() or db.name == ":memory:":
        return
    cache = cache_dir()
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    if template.exists() and not MLFLOW_TABLES <= (_tables(template) or set()):  # damaged: made again
        with contextlib.suppress(OSError):
            template.unlink()
    if not template.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                made = Path(tmp) / "empty.db"
                MlflowClient(f"sqlite:///{made}").search_experiments()
                with sqlite3.connect(made) as conn:
                    conn.execute("DELETE FROM experiments WHERE experiment_id = 0")
                conn.close()
                os.replace(made, template)
        except OSError:  # no writable cache: MLflow creates the store as it always has
            return
    try:  # a whole copy appears at once, and never over a store another process has just made
        fd, tmp = tempfile.mkstemp(dir=db.parent, prefix=f".{db.name}.")
        os.close(fd)
        try:
            shutil.copyfile(template, tmp)
            os.link(tmp, db)
        finally:
            os.unlink(tmp)
    except OSError:  # it exists now, or this file system has no hard links: MLflow creates or opens it as usual
        pass


def experiment_name(study: str, smoke: bool) -> str:
    """Smoke runs live in their own experiment, `<study>/smoke`, never beside the full runs."""
    return f"{study}/smoke" if smoke else study


def experiment_id(client, name: str, create: bool = True, description: str | None = None, metric: str | None = None,
                  columns=()) -> str | None:
    """The experiment's id (created, or restored from the bin, when `create`).

    `description` becomes the experiment's note (the UI's Description); `metric` and `columns` (the
    parameters the study varies) become its runs view, the one the links we print open.
    """
    found = client.get_experiment_by_name(name)
    if found is None and not create:
        return None
    if found is None:
        try:
            exp_id = client.create_experiment(name)
        except Exception:  # another driver created it a moment ago: use theirs
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found is not None:
        exp_id = found.experiment_id
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    if create:
        current = found.tags if found is not None else {}
        tags = {NOTE: description} if description else {}
        if metric:
            tags.update({"suite.metric": metric, "suite.columns": json.dumps(list(columns))})
            if _view_state(current.get(VIEW_TAG)) != view_state(metric, columns):
                now = int(time.time() * 1000)
                tags[VIEW_TAG] = json.dumps({"name": "suite: metric and varied parameters", "createdAt": now, "updatedAt": now,
                                             "state": json.dumps(view_state(metric, columns))})
        for key, value in tags.items():
            if current.get(key) != value:
                try:
                    client.set_experiment_tag(exp_id, key, value)
                except Exception as err:  # another driver wrote this tag a moment ago: MLflow's write is a select, then
                    if "UniqueViolation" not in str(err) and "UNIQUE constraint" not in str(err):  # an insert
                        raise
                    client.set_experiment_tag(exp_id, key, value)  # now an update
    return exp_id


# MLflow 3.17's UI (read from its bundle): an experiment opens on its runs table only with
# `workflowType=machine_learning` in the hash URL (the `mlflow.experimentKind` tag is ignored), and
# the URL cannot choose columns; a "shared view" (experiment tag `mlflow.sharedViewState.<key>`,
# opened with `viewStateShareKey=<key>`) can: its state holds the sort and the selected columns.
VIEW_KEY = "suite"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_ATTRIBUTES = ("attributes.`Dataset`",)  # Source, Version, User: one click away (Columns)


def view_state(metric: str, columns) -> dict:
    """The runs table we want: the study's metric and varied parameters as columns, best run first."""
    logged = METRIC_ALIASES.get(metric, metric)
    return {"searchFilter": "", "orderByKey": f"metrics.`{logged}`", "orderByAsc": METRIC_DIRECTIONS.get(metric) != "max",
            "selectedColumns": [*VIEW_ATTRIBUTES, f"metrics.`{logged}`", *[f"params.`{c}`" for c in columns]]}


def _view_state(tag: str | None) -> dict | None:
    try:
        return json.loads(json.loads(tag)["state"]) if tag else None
    except (ValueError, KeyError, TypeError):
        return None


def search(client, exp_id: str, kind: str = "run", status: str | None = None) -> list:
    """All live runs of one kind (`run`, `summary`, `trial`, `search`) in an experiment."""
    query = f"tags.`suite.kind` = '{kind}'" + (f" and attributes.status = '{status}'" if status else "")
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=query, max_results=5000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def newest_per_key(runs) -> list:
    """One run per `suite.run_key`, the newest: a key finished twice (a --force driver killed between its new run's
    end and the old run's deletion) counts once, with its newer run."""
    newest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        newest[run.data.tags.get("suite.run_key")] = run
    return list(newest.values())


def runs_with_key(client, exp_id: str, run_key: str) -> list:
    """Every live run of one run key, in any state."""
    return client.search_runs([exp_id], filter_string=f"tags.`suite.run_key` = '{run_key}'", max_results=1000)


def start_run(client, exp_id: str, name: str, tags: dict, params: dict, config: dict) -> str:
    """A RUNNING MLflow run with its tags, flattened params and the resolved config as an artifact."""
    from mlflow.entities import Param

    run = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
    run_id = run.info.run_id
    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])
    client.log_dict(run_id, config, "resolved_config.json")
    return run_id


def log_metric_items(client, run_id: str, items) -> None:
    """(name, value, step) triples, in batches of MLflow's limit of 1,000 metrics."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v, step in items]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def log_dataset(client, run_id: str, name: str, digest: str, source: str, profile: dict) -> None:
    """The run's dataset as an MLflow dataset input (the UI's Dataset column): name, digest, split sizes."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                      profile=json.dumps(profile, sort_keys=True))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])


def set_tags(client, run_id: str, tags: dict) -> None:
    from mlflow.entities import RunTag

    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def end_run(client, run_id: str, status: str = FINISHED, tags: dict | None = None) -> None:
    set_tags(client, run_id, tags or {})
    client.set_terminated(run_id, status=status)


def end_run_unless_deleted(client, run_id: str, status: str, tags: dict) -> None:
    """`end_run`, unless another process deleted the run meanwhile (then nothing: a deleted run stays deleted)."""
    from mlflow.exceptions import MlflowException

    try:
        end_run(client, run_id, status, tags)
    except MlflowException:
        if client.get_run(run_id).info.lifecycle_stage != "deleted":
            raise


def delete_runs(client, run_ids) -> None:
    for run_id in run_ids:
        client.delete_run(run_id)


def copy_run(src, dst, run, exp_id: str, tags: dict) -> None:
    """`run` of the store `src` made again in experiment `exp_id` of `dst` with `tags`: its params, every metric's
    whole history, dataset inputs and artifacts, then its status and times."""
    from mlflow.entities import Metric, Param

    new = dst.create_run(exp_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)
    run_id = new.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        dst.log_batch(run_id, params=params[i:i + 100])
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in run.data.metrics for m in src.get_metric_history(run.info.run_id, key)]
    for i in range(0, len(metrics), 1000):
        dst.log_batch(run_id, metrics=metrics[i:i + 1000])
    if run.inputs and run.inputs.dataset_inputs:
        dst.log_inputs(run_id, datasets=list(run.inputs.dataset_inputs))
    with tempfile.TemporaryDirectory() as tmp:
        if src.list_artifacts(run.info.run_id):
            local = src.download_artifacts(run.info.run_id, "", tmp)
            dst.log_artifacts(run_id, local)
    dst.set_terminated(run_id, status=run.info.status, end_time=run.info.end_time)


def histories(client, run_ids, keys) -> list[tuple[str, str, int, float]]:
    """(run_id, metric, step, value) for every logged value of `keys`."""
    rows = []
    for run_id in run_ids:
        for key in keys:
            rows.extend((run_id, key, m.step, m.value) for m in client.get_metric_history(run_id, key))
    return rows


def searches(client, exp_id: str) -> dict:
    """(search name, dataset) -> (trials counted, best values or None, best objective or None, fingerprint or None),
    from the parent runs (the fingerprint of the configuration searched; None on a parent from before fingerprints)."""
    found = {}
    for run in search(client, exp_id, "search"):
        tags, metrics = run.data.tags, run.data.metrics
        best = json.loads(tags["suite.best_params"]) if "suite.best_params" in tags else None
        value = next((v for k, v in metrics.items() if k.startswith("best_") and k != "best_trial"), None)
        found[tags.get("suite.search"), tags.get("suite.dataset")] = (int(metrics.get("trials", 0)), best, value,
                                                                     tags.get("suite.search_fingerprint"))
    return found


def find_run(client, run_id_or_key: str):
    """A run by its MLflow run id, else the FINISHED run whose `suite.run_key` it is."""
    try:
        return client.get_run(run_id_or_key)
    except Exception as err:  # not a run id of this store; another failure (a server's 5xx) is no bad input
        if getattr(err, "error_code", None) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise SuiteError(f"cannot read run {run_id_or_key} from the store: {error_line(err)}") from None
    found = []
    if re.fullmatch(r"[0-9a-f]{16}", run_id_or_key):  # what a run key looks like (spec.study.run_key): nothing else goes into the filter
        query = f"tags.`suite.run_key` = '{run_id_or_key}' and attributes.status = '{FINISHED}'"
        ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(ids, filter_string=query, max_results=1) if ids else []
    if not found:
        raise OptionError(f"no run with id or run key '{run_id_or_key}' in this store; `make ui` lists them")
    return found[0]


def download(client, run_id: str, name: str, folder: Path, why_missing: str = "") -> Path:
    """One artifact of a run, into `folder`; `why_missing`: what the error adds where the run has none."""
    try:
        return Path(client.download_artifacts(run_id, name, str(folder)))
    except Exception:
        pass
    root = client.get_run(run_id).info.artifact_uri
    parsed = urllib.parse.urlparse(root)
    local = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme in ("", "file") else None
    if local is not None and not local.is_dir():
        raise SuiteError(f"the artifacts of run {run_id} are not at {local}, where the store says they are (moved, or deleted "
                         "with their mlruns/ folder?)")
    raise SuiteError(f"run {run_id} has no artifact {name}{why_missing}")


def artifact_names(artifact_uri: str) -> set[str]:
    """The top-level artifacts at a run's `info.artifact_uri`: read there, without asking the tracking store for the run
    again (`client.list_artifacts` looks the run up first: ~70 ms a run for a report's three artifact calls)."""
    import mlflow.artifacts

    return {a.path.rsplit("/", 1)[-1] for a in mlflow.artifacts.list_artifacts(artifact_uri=artifact_uri)}  # (paths start with the URI's last part)


def download_at(artifact_uri: str, name: str, folder: Path) -> Path:
    """One artifact of the run whose `info.artifact_uri` this is, into `folder`."""
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{name}", dst_path=str(folder)))


def log_files(client, run_id: str, paths, folder: str | None = None) -> None:
    for path in paths:
        client.log_artifact(run_id, str(path), folder)


def log_text(client, run_id: str, text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        client.log_artifact(run_id, str(path))


# ---------------------------------------------------------------- the UI


def runs_url(base: str, exp_id: str, view: bool = True) -> str:
    """The experiment's runs table in the classic (not GenAI) UI; `view`: with our saved columns and sort."""
    query = {"workflowType": "machine_learning", **({"viewStateShareKey": VIEW_KEY} if view else {})}
    return f"{base}/#/experiments/{exp_id}/runs?" + urllib.parse.urlencode(query)


def run_url(base: str, exp_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"


def experiment_link(client, name: str, base: str) -> str:
    found = client.get_experiment_by_name(name)
    return runs_url(base, found.experiment_id, VIEW_TAG in found.tags) if found else f"{base}/#/experiments?workflowType=machine_learning"


def study_links(client, base: str) -> list[tuple[str, str]]:
    """(experiment name, runs link) for every experiment a study wrote, by name."""
    found = client.search_experiments(filter_string="tags.`suite.metric` != ''", max_results=1000)
    return [(e.name, runs_url(base, e.experiment_id)) for e in sorted(found, key=lambda e: e.name)]


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def serve_ui(uri: str, host: str, port: int, on_ready) -> None:
    """MLflow's UI and REST API over `uri`, in this one process (no worker pool, no job runner), until Ctrl-C.

    `mlflow ui` starts uvicorn with 4 workers and a job runner (18 processes, ~3 GiB here); one
    in-process uvicorn serves one person's browser just as well. `on_ready()` runs once it listens.
    """
    import threading
    import warnings

    warnings.filterwarnings("ignore", module="mlflow.server.fastapi_app")  # starlette's WSGI bridge deprecation: MLflow's to fix
    from mlflow.server import ARTIFACT_ROOT_ENV_VAR, BACKEND_STORE_URI_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR

    connect(uri, create=False)  # a store that is not there, or not MLflow's: one line here, before the server starts
    os.environ.update({BACKEND_STORE_URI_ENV_VAR: uri, SERVE_ARTIFACTS_ENV_VAR: "true",
                       "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    os.environ.setdefault(ARTIFACT_ROOT_ENV_VAR, str(Path("mlartifacts").resolve()))
    import uvicorn

    server = uvicorn.Server(uvicorn.Config("mlflow.server.fastapi_app:app", host=host, port=port, workers=1,
                                           log_level="critical", access_log=False))

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            on_ready()

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        pass
    if not server.started:
        raise SuiteError(f"the MLflow UI could not listen on {host}:{port}: {_why_not_listening(host, port)}")


def _why_not_listening(host: str, port: int) -> str:
    """What binding `host:port` says, in words a user can act on."""
    import errno
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        return f"'{host}' is not a host name or address this machine knows (pass --host 127.0.0.1 or 0.0.0.0)"
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return "the port is in use (pick another with PORT=... / --port)"
            if err.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine (pass --host 127.0.0.1 or 0.0.0.0)"
            return err.strerror or str(err)
    return "uvicorn did not start (in use? pick another port with PORT=... / --port)"
