"""``TrainedModel``: prediction, introspection, and the safe on-disk artifact.

Artifact layout (a directory)::

    manifest.json   format, task, classes, signature, ONNX I/O, SHA-256 of every other file
    model.skops     preprocessor + refit ensemble members (skops, explicit trusted types)
    model.onnx      the whole ensemble as one graph, when every member converts
    encoding.json   how raw columns become the ONNX input matrix (plain data)
    report.json     the model card: leaderboard, scores, timings, feature importance

Nothing is ever pickled. ``load`` checks every file against the manifest before parsing
anything and refuses a tampered or incomplete directory with ``ArtifactIntegrityError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from aiaas.automl.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    InvalidConfig,
    InvalidData,
)
from aiaas.automl.preprocess import TabularPreprocessor

__all__ = ["TRUSTED_TYPES", "TrainedModel", "load"]

FORMAT = "aiaas.automl"
FORMAT_VERSION = 1

# Every type skops may rebuild when loading our artifacts. Fixed here on purpose: it is never
# derived from the file being loaded (skops' get_untrusted_types output is not a trust list).
TRUSTED_TYPES: list[str] = sorted(
    {
        "aiaas.automl.preprocess.TabularPreprocessor",
        "collections.OrderedDict",
        "numpy.dtype",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "sklearn.pipeline.Pipeline",
        "sklearn.compose._column_transformer.ColumnTransformer",
        "sklearn.compose._column_transformer._RemainderColsList",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._target_encoder.TargetEncoder",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.linear_model._coordinate_descent.ElasticNet",
        "sklearn.neighbors._classification.KNeighborsClassifier",
        "sklearn.neighbors._regression.KNeighborsRegressor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.ensemble._forest.ExtraTreesRegressor",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._classes.ExtraTreeClassifier",
        "sklearn.tree._classes.ExtraTreeRegressor",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.link.Interval",
        "sklearn.utils._bunch.Bunch",
        "builtins.slice",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        # HistGradientBoosting with categorical features keeps partial(check_array, ...);
        # partial is only as powerful as the callable it wraps, which must be trusted too
        "functools.partial",
        "sklearn.utils.validation.check_array",
    }
)


class TrainedModel:
    """A fitted AutoML model: preprocessing + a weighted ensemble of refit members."""

    def __init__(
        self,
        *,
        task: str,
        metric: str,
        preprocessor: TabularPreprocessor,
        members: Sequence[Any],
        weights: Sequence[float],
        families: Sequence[str],
        classes: Sequence[Any] | None,
        y_mean: float,
        y_std: float,
        leaderboard: list[dict[str, Any]],
        report: dict[str, Any],
        feature_importance: dict[str, float],
    ) -> None:
        self.task = task
        self.metric = metric
        self.preprocessor = preprocessor
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        self.families = list(families)
        self._classes = None if classes is None else list(classes)
        self.y_mean = float(y_mean)
        self.y_std = float(y_std)
        self.leaderboard = leaderboard
        self._report = report
        self.feature_importance = feature_importance
        self._onnx_session: Any = None
        self._onnx_bytes: bytes | None = None
        self._onnx_raw_bytes: bytes | None = None
        self._onnx_skipped: str | None = None  # why this model has no ONNX form on purpose

    # ------------------------------------------------------------------------- introspection
    @property
    def classes_(self) -> NDArray[Any]:
        """Class labels (classification), in the column order of ``predict_proba``."""
        if self._classes is None:
            raise InvalidConfig("a regression model has no classes")
        out = np.empty(len(self._classes), dtype=object)
        out[:] = self._classes
        return out

    @property
    def signature(self) -> dict[str, Any]:
        """Input columns (name, type, how used) and the output."""
        inputs = [
            {"name": s["name"], "type": s["dtype"], "used": s["kind"] != "dropped"}
            for s in self.preprocessor.specs_
        ]
        if self.task == "regression":
            output: dict[str, Any] = {"type": "number"}
        else:
            output = {"type": "label", "classes": self._classes}
        return {"inputs": inputs, "output": output}

    def report(self) -> dict[str, Any]:
        """The model card (JSON-serialisable)."""
        return json.loads(json.dumps(self._report, default=_json_default))  # type: ignore[no-any-return]

    # ---------------------------------------------------------------------------- prediction
    def _frame(self, data: Any) -> pd.DataFrame:
        if isinstance(data, pd.DataFrame):
            return data
        if isinstance(data, Mapping):
            return pd.DataFrame(dict(data))
        if isinstance(data, list) and (not data or isinstance(data[0], Mapping)):
            return pd.DataFrame(data)
        if hasattr(data, "to_pandas"):
            return pd.DataFrame(data.to_pandas())
        raise InvalidData("data must be a pandas DataFrame, a mapping of columns or a list of rows")

    def transform(self, data: Any) -> NDArray[np.float32]:
        """Raw rows → the float32 matrix the members (and the ONNX graph) take."""
        return self.preprocessor.transform(self._frame(data))

    def _raw(self, X: NDArray[np.float32], backend: str) -> NDArray[np.float64]:
        if backend == "onnx":
            sess = self.onnx_session()
            out = sess.run(None, {"input": X})[0]
            return np.asarray(out, dtype=np.float64)
        if backend != "native":
            raise InvalidConfig("backend must be 'native' or 'onnx'")
        import warnings

        total: NDArray[np.float64] | None = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for est, w in zip(self.members, self.weights, strict=True):
                if self.task == "regression":
                    p = np.asarray(est.predict(X), dtype=np.float64).reshape(-1, 1)
                else:
                    p = np.asarray(est.predict_proba(X), dtype=np.float64)
                total = p * w if total is None else total + p * w
        assert total is not None
        if self.task == "regression":
            total = total * self.y_std + self.y_mean
        return total

    def predict_proba(self, data: Any, *, backend: str = "native") -> NDArray[np.float64]:
        """Class probabilities ``(n, n_classes)``, columns in the order of ``classes_``."""
        if self.task == "regression":
            raise InvalidConfig("predict_proba is for classification models")
        p = self._raw(self.transform(data), backend)
        return np.asarray(p / np.clip(p.sum(axis=1, keepdims=True), 1e-15, None))

    def predict(self, data: Any, *, backend: str = "native") -> NDArray[Any]:
        """Predicted labels (classification) or values (regression)."""
        if self.task == "regression":
            return self._raw(self.transform(data), backend).ravel()
        proba = self.predict_proba(data, backend=backend)
        return np.asarray(self.classes_[np.argmax(proba, axis=1)])

    # ---------------------------------------------------------------------------------- ONNX
    def to_onnx(self) -> bytes | None:
        """The ensemble as one serialized ONNX graph, or ``None`` when a member cannot convert."""
        if self._onnx_bytes is not None:
            return self._onnx_bytes
        if self._onnx_skipped is not None:
            return None
        from aiaas.automl.onnx_export import UnsupportedForOnnx, ensemble_to_onnx, member_to_onnx

        n = len(self.preprocessor.feature_names_out_)
        is_cls = self.task != "regression"
        try:
            graphs = [member_to_onnx(m, n, is_cls) for m in self.members]
        except UnsupportedForOnnx:
            return None
        model = ensemble_to_onnx(
            graphs,
            self.weights,
            n,
            is_cls=is_cls,
            n_classes=len(self._classes or []),
            y_mean=self.y_mean,
            y_std=self.y_std,
        )
        self._onnx_bytes = model.SerializeToString()
        return self._onnx_bytes

    def to_onnx_raw(self) -> bytes | None:
        """The ensemble with the column encoding in the graph: one input per raw column.

        ``None`` when the model has no ONNX form or uses datetime columns (their parts are
        computed in Python). See :func:`aiaas.automl.onnx_export.raw_input_head`.
        """
        if self._onnx_raw_bytes is not None:
            return self._onnx_raw_bytes
        core_bytes = self.to_onnx()
        if core_bytes is None:
            return None
        import onnx

        from aiaas.automl.onnx_export import raw_input_head

        merged = raw_input_head(self.preprocessor.specs_, onnx.load_from_string(core_bytes))
        if merged is None:
            return None
        self._onnx_raw_bytes = bytes(merged.SerializeToString())
        return self._onnx_raw_bytes

    def skip_onnx(self, reason: str) -> None:
        """Give this model no ONNX form (it serves natively); ``reason`` says why."""
        self._onnx_skipped = reason
        self._onnx_bytes = self._onnx_raw_bytes = None

    def onnx_raw_inputs(self, data: Any) -> dict[str, NDArray[Any]]:
        """Raw rows → the feeds of :meth:`to_onnx_raw` (floats, or strings with "" = missing)."""
        frame = self._frame(data)
        feeds: dict[str, NDArray[Any]] = {}
        for spec in self.preprocessor.specs_:
            if spec["kind"] == "dropped":
                continue
            col = frame[spec["name"]]
            if spec["kind"] == "numeric":
                values = pd.to_numeric(col, errors="coerce").astype("float64")
                feeds[spec["name"]] = values.to_numpy(np.float32, na_value=np.nan).reshape(-1, 1)
            else:
                from aiaas.automl.preprocess import _as_strings

                text = _as_strings(col).fillna("")
                feeds[spec["name"]] = np.asarray(text.to_numpy(), dtype=object).reshape(-1, 1)
        return feeds

    def onnx_session(self) -> Any:
        """An ONNX Runtime session over :meth:`to_onnx` (raises if the model does not convert)."""
        if self._onnx_session is None:
            import onnxruntime as ort

            data = self.to_onnx()
            if data is None:
                raise InvalidConfig("this model has no ONNX form (a member does not convert)")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._onnx_session = ort.InferenceSession(
                data, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        return self._onnx_session

    # ------------------------------------------------------------------------------- saving
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the artifact directory atomically (temp dir + rename); returns its path."""
        target = Path(directory)
        if target.exists() and any(target.iterdir()):
            raise ArtifactError(f"output directory {str(target)!r} exists and is not empty")
        target.parent.mkdir(parents=True, exist_ok=True)
        files = self._artifact_files()
        files["manifest.json"] = _dumps(self._manifest(files))
        _write_dir_atomic(target, files)
        return target

    def _artifact_files(self) -> dict[str, bytes]:
        """Every file but the manifest, in the order they are written."""
        files: dict[str, bytes] = {"model.skops": self._skops_blob()}
        onnx_bytes = self.to_onnx()
        if onnx_bytes is not None:
            files["model.onnx"] = onnx_bytes
            raw_bytes = self.to_onnx_raw()
            if raw_bytes is not None:
                files["model_raw.onnx"] = raw_bytes
        files["encoding.json"] = _dumps(
            {
                "columns": self.preprocessor.specs_,
                "features": self.preprocessor.feature_names_out_,
                "categorical_missing_code": -1,
                "dtype": "float32",
            }
        )
        files["report.json"] = _dumps(
            {
                "report": self._report,
                "leaderboard": self.leaderboard,
                "feature_importance": self.feature_importance,
            }
        )
        return files

    def _skops_blob(self) -> bytes:
        """The preprocessor and members as skops bytes, refused if a type is not trusted."""
        import skops.io as sio

        state = {
            "preprocessor": self.preprocessor,
            "members": list(self.members),
        }
        blob: bytes = sio.dumps(state)
        untrusted = set(sio.get_untrusted_types(data=blob)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ArtifactError(f"model holds types outside the trusted list: {sorted(untrusted)}")
        return blob

    def _manifest(self, files: Mapping[str, bytes]) -> dict[str, Any]:
        """``manifest.json``: what the artifact is, its ONNX I/O and the SHA-256 of ``files``."""
        output = "prediction" if self.task == "regression" else "probabilities"
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "metric": self.metric,
            "classes": self._classes,
            "signature": self.signature,
            "ensemble": {
                "families": self.families,
                "weights": self.weights,
                "y_mean": self.y_mean,
                "y_std": self.y_std,
            },
            "onnx": None
            if "model.onnx" not in files
            else {
                "file": "model.onnx",
                "input": "input",
                "input_encoding": "encoding.json",
                "n_features": len(self.preprocessor.feature_names_out_),
                "output": output,
            },
            "onnx_raw": None
            if "model_raw.onnx" not in files
            else {"file": "model_raw.onnx", "inputs": self._raw_inputs(), "output": output},
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }

    def _raw_inputs(self) -> list[dict[str, Any]]:
        """The inputs of ``model_raw.onnx``: one ``[N, 1]`` tensor per used column."""
        return [
            {
                "name": spec["name"],
                "type": "float" if spec["kind"] == "numeric" else "string",
                "shape": [None, 1],
                "missing": "NaN" if spec["kind"] == "numeric" else "",
            }
            for spec in self.preprocessor.specs_
            if spec["kind"] != "dropped"
        ]


def _write_dir_atomic(target: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (fsynced) to a temporary sibling directory, then rename it to ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        for p in tmp.glob("*"):
            p.unlink()
        tmp.rmdir()
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, default=_json_default, ensure_ascii=False).encode()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(directory: str | os.PathLike[str]) -> TrainedModel:
    """Load a saved model after verifying every file against its manifest."""
    import skops.io as sio

    root = Path(directory)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{str(root)!r} is not a saved model (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactIntegrityError("manifest.json is not valid JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactIntegrityError("manifest.json is not an aiaas.automl manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"unsupported model format version {manifest.get('format_version')!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.skops" not in files:
        raise ArtifactIntegrityError("manifest.json lists no model file")
    present = {p.name for p in root.iterdir() if p.is_file()} - {"manifest.json"}
    extra = present - set(files)
    if extra:
        raise ArtifactIntegrityError(f"unexpected file(s) in the model directory: {sorted(extra)}")
    for name, digest in files.items():
        path = root / str(name)
        if Path(str(name)).name != name or not path.is_file():
            raise ArtifactIntegrityError(f"file {name!r} of the manifest is missing")
        if _sha256(path) != digest:
            raise ArtifactIntegrityError(
                f"file {name!r} does not match its SHA-256 in the manifest"
            )
    try:
        state = sio.load(root / "model.skops", trusted=TRUSTED_TYPES)
    except Exception as exc:
        raise ArtifactError(f"cannot read model.skops: {type(exc).__name__}: {exc}"[:300]) from exc
    meta = json.loads((root / "report.json").read_text(encoding="utf-8"))
    ens = manifest["ensemble"]
    model = TrainedModel(
        task=manifest["task"],
        metric=manifest["metric"],
        preprocessor=state["preprocessor"],
        members=state["members"],
        weights=ens["weights"],
        families=ens["families"],
        classes=manifest["classes"],
        y_mean=ens["y_mean"],
        y_std=ens["y_std"],
        leaderboard=meta["leaderboard"],
        report=meta["report"],
        feature_importance=meta["feature_importance"],
    )
    if "model.onnx" in files:
        model._onnx_bytes = (root / "model.onnx").read_bytes()
    return model
