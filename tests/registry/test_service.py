"""register_trained, purge_files and sweep_orphans without HTTP: fields, idempotency, names,
numbering, hostile model directories and crash consistency."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from aiaas.db import get_session_factory
from aiaas.errors import Conflict, InvalidInput
from aiaas.registry import service as registry_service
from aiaas.registry import sweep
from aiaas.registry.models import ModelVersion, RegisteredModel
from aiaas.storage import ArtifactStore
from tests.registry.conftest import copy_model, model_files, rewrite_manifest, sha256


def _count(settings, model) -> int:
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_register_stores_files_first_and_fills_the_row(tenants, register, store, saved_model):
    lineage = {"dataset_id": "ds_1", "dataset_version": 3, "job_id": "job_1"}
    mv = register(tenants.a, "churn", lineage=lineage, extra_metrics={"trials_per_min": 12.5})
    assert mv.number == 1
    assert mv.task == "binary"
    assert mv.metric == "roc_auc"
    assert 0.5 < mv.metrics["cv_score"] <= 1.0
    assert mv.metrics["holdout_score"] is None
    assert mv.metrics["trials_per_min"] == 12.5
    assert mv.lineage == lineage
    assert [c["name"] for c in mv.signature["inputs"]] == ["a", "b", "colour"]
    colour = mv.signature["inputs"][2]
    assert colour["required"] is True
    assert sorted(colour["categories"]) == ["blue", "green", "red"]
    assert mv.report["leaderboard"][0]["state"] == "complete"
    names = sorted(p.name for p in saved_model.iterdir())
    assert [a["path"] for a in mv.artifacts] == names
    assert mv.size_bytes == sum((saved_model / n).stat().st_size for n in names)
    assert mv.storage_prefix == f"models/{mv.model_id}/{mv.id}"
    for entry in mv.artifacts:
        assert entry["sha256"] == sha256(saved_model / entry["path"])
        key = f"{mv.storage_prefix}/{entry['path']}"
        assert store.get_bytes(tenants.a.org_id, key) == (saved_model / entry["path"]).read_bytes()
    assert mv.card.startswith("# churn — version 1\n")
    assert "ds\\_1" not in mv.card
    assert "`ds_1` version 3" in mv.card


def test_idempotent_by_job_id(settings, tenants, register, store):
    first = register(tenants.a, job_id="job_same")
    files = model_files(store, tenants.a.org_id)
    again = register(tenants.a, job_id="job_same")
    assert again.id == first.id
    assert again.number == 1
    assert _count(settings, ModelVersion) == 1
    assert model_files(store, tenants.a.org_id) == files  # stored once
    with pytest.raises(Conflict):  # a job id of another organization is no shortcut
        register(tenants.b, job_id="job_same")


def test_purge_files_keeps_a_version_found_registered(tenants, register, store):
    first = register(tenants.a, job_id="job_keep")
    found = register(tenants.a, job_id="job_keep")
    registry_service.purge_files(store, found)  # the worker's commit failed after the lookup
    assert len(model_files(store, tenants.a.org_id)) == len(first.artifacts)
    registry_service.purge_files(store, first)  # a version it created: every file goes
    assert model_files(store, tenants.a.org_id) == []
    registry_service.purge_files(store, first)  # missing files are fine


def test_names_are_case_insensitive_and_numbers_grow(settings, tenants, register):
    v1 = register(tenants.a, "Churn")
    v2 = register(tenants.a, "CHURN")
    v3 = register(tenants.a, "churn")
    assert (v1.number, v2.number, v3.number) == (1, 2, 3)
    assert v1.model_id == v2.model_id == v3.model_id
    assert v3.model_name == "Churn"  # the name as first registered
    other = register(tenants.b, "churn")  # names are per organization
    assert other.model_id != v1.model_id
    assert other.number == 1
    assert _count(settings, RegisteredModel) == 2


@pytest.mark.parametrize("name", ["", "a b", "../x", "x/y", "ünï", "-x", "a" * 201, "x\x00", "x\n"])
def test_bad_model_names_are_refused(tenants, register, store, name):
    with pytest.raises(InvalidInput):
        register(tenants.a, name)
    assert model_files(store, tenants.a.org_id) == []


def _tamper_cases():
    def link(d: Path) -> None:
        (d / "report.json").unlink()
        os.symlink("/etc/passwd", d / "report.json")

    def extra(d: Path) -> None:
        (d / "extra.bin").write_bytes(b"x")

    def changed(d: Path) -> None:
        with (d / "model.onnx").open("ab") as fh:
            fh.write(b"\0")

    def folder(d: Path) -> None:
        (d / "sub").mkdir()

    def no_manifest(d: Path) -> None:
        (d / "manifest.json").unlink()

    def bad_json(d: Path) -> None:
        (d / "manifest.json").write_text("{nope")

    def odd_name(d: Path) -> None:
        (d / ".hidden").write_bytes(b"x")

    def fifo(d: Path) -> None:
        (d / "report.json").unlink()
        os.mkfifo(d / "report.json")

    def no_task(d: Path) -> None:
        rewrite_manifest(d, lambda m: m.pop("task"))

    return [link, extra, changed, folder, fifo, no_manifest, bad_json, odd_name, no_task]


@pytest.mark.parametrize("tamper", _tamper_cases(), ids=lambda f: f.__name__)
def test_a_tampered_model_directory_is_refused(
    settings, tenants, register, store, saved_model, tmp_path, tamper
):
    model_dir = copy_model(saved_model, tmp_path / "model")
    tamper(model_dir)
    with pytest.raises(InvalidInput):
        register(tenants.a, model_dir=model_dir)
    assert model_files(store, tenants.a.org_id) == []
    assert _count(settings, ModelVersion) == 0


def test_hostile_report_values_are_stored_safely(
    settings, tenants, register, saved_model, tmp_path
):
    model_dir = copy_model(saved_model, tmp_path / "model")
    report = (model_dir / "report.json").read_text()
    report = report.replace('"holdout_score": null', '"holdout_score": NaN', 1)
    report = report.replace('"warnings": []', '"warnings": ["# head\\u0000\\ud800 [x](http://e)"]')
    (model_dir / "report.json").write_text(report)
    rewrite_manifest(
        model_dir, lambda m: m["files"].update({"report.json": sha256(model_dir / "report.json")})
    )
    mv = register(tenants.a, model_dir=model_dir)
    assert mv.metrics["holdout_score"] is None
    assert "- \\# head" in mv.card  # escaped: no heading, no link
    assert "\\[x\\]\\(http://e\\)" in mv.card
    assert "\x00" not in mv.card


class _CrashingStore(ArtifactStore):
    """The real store until the ``fail_after``-th put; then puts and deletes fail, as if
    the process died mid-upload (nothing cleans up)."""

    def __init__(self, inner: ArtifactStore, fail_after: int):
        self.inner, self.left = inner, fail_after

    def put_file(self, org_id, key, local_path):
        if self.left == 0:
            raise OSError("disk went away")
        self.left -= 1
        self.inner.put_file(org_id, key, local_path)

    def put_bytes(self, org_id, key, data):
        raise OSError("disk went away")

    def delete_prefix(self, org_id, prefix):
        raise OSError("disk went away")

    def delete(self, org_id, key):
        raise OSError("disk went away")

    def open(self, org_id, key):
        return self.inner.open(org_id, key)

    def exists(self, org_id, key):
        return self.inner.exists(org_id, key)

    def list(self, org_id, prefix):
        return self.inner.list(org_id, prefix)

    def modified(self, org_id, key):
        return self.inner.modified(org_id, key)

    def local_path(self, org_id, key):
        return self.inner.local_path(org_id, key)


def test_crash_mid_upload_leaves_no_row_and_the_sweep_removes_the_files(
    settings, tenants, register, store
):
    kept = register(tenants.a, "kept")
    crashing = _CrashingStore(store, fail_after=3)
    with pytest.raises(OSError, match="disk went away"):
        register(tenants.a, "churn", use_store=crashing)
    assert _count(settings, ModelVersion) == 1  # only "kept": no row without its files
    partial = [k for k in model_files(store, tenants.a.org_id) if kept.id not in k]
    assert len(partial) == 3
    factory = get_session_factory(settings.resolved_database_url)
    assert sweep.sweep_orphans(factory, store) == 0  # too young: may be registering now
    assert sweep.sweep_orphans(factory, store, older_than_s=0) == 1
    remaining = model_files(store, tenants.a.org_id)
    assert remaining == [f"{kept.storage_prefix}/{a['path']}" for a in kept.artifacts]


def test_a_failed_upload_removes_what_it_stored(settings, tenants, register, store, monkeypatch):
    calls: list[str] = []
    real = store.put_file

    def flaky(org_id, key, local_path):
        if len(calls) == 2:
            raise OSError("quota")
        calls.append(key)
        real(org_id, key, local_path)

    monkeypatch.setattr(store, "put_file", flaky)
    with pytest.raises(OSError, match="quota"):
        register(tenants.a)
    assert model_files(store, tenants.a.org_id) == []
    assert _count(settings, ModelVersion) == 0


def test_sweep_removes_the_stores_old_temporary_files(settings, tenants, register, store):
    mv = register(tenants.a)
    folder = store.local_path(tenants.a.org_id, mv.storage_prefix)
    assert folder is not None
    (folder / ".tmp-deadbeef").write_bytes(b"half")
    factory = get_session_factory(settings.resolved_database_url)
    assert sweep.sweep_orphans(factory, store, older_than_s=0) == 1
    assert not (folder / ".tmp-deadbeef").exists()
    assert len(model_files(store, tenants.a.org_id)) == len(mv.artifacts)


def test_in_use_checks_are_an_extension_point(settings, tenants, register, store, monkeypatch):
    monkeypatch.setattr(registry_service, "_IN_USE_CHECKS", list(registry_service._IN_USE_CHECKS))
    mv = register(tenants.a)

    @registry_service.register_in_use_check
    def served(session, version):
        return "endpoint 'prod' serves it" if version.id == mv.id else None

    registry_service.register_in_use_check(served)  # twice: still one check
    assert registry_service._IN_USE_CHECKS.count(served) == 1
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session:
        version = session.get(ModelVersion, mv.id)
        assert version is not None
        assert registry_service.in_use_reasons(session, version) == ["endpoint 'prod' serves it"]


def test_concurrent_first_registrations_share_one_model(settings, tenants, register):
    barrier = threading.Barrier(3)
    results: list[ModelVersion] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(register(tenants.a, "race"))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(v.number for v in results) == [1, 2, 3]
    assert len({v.model_id for v in results}) == 1
    assert _count(settings, RegisteredModel) == 1


def test_too_many_files_are_refused(tenants, register, saved_model, tmp_path, store):
    model_dir = copy_model(saved_model, tmp_path / "model")
    for i in range(40):
        (model_dir / f"f{i}.bin").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="more than 32 entries"):
        register(tenants.a, model_dir=model_dir)
    assert model_files(store, tenants.a.org_id) == []


def test_serve_sweeps_model_files_at_startup(settings, tenants, register, store):
    from aiaas.cli.main import _sweep_model_files

    mv = register(tenants.a)
    orphan = f"models/{mv.model_id}/mv_gone/model.onnx"
    store.put_bytes(tenants.a.org_id, orphan, b"left by a crash")
    quick = SimpleNamespace(
        resolved_database_url=settings.resolved_database_url,
        data=SimpleNamespace(orphan_min_age_s=0),
    )
    _sweep_model_files(quick, store)
    assert not store.exists(tenants.a.org_id, orphan)
    assert len(model_files(store, tenants.a.org_id)) == len(mv.artifacts)
